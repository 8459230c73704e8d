"""Placeholder until the console helper writes it."""
from fastapi import APIRouter

router = APIRouter()
