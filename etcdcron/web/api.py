"""Placeholder until the api helper writes it."""
from fastapi import APIRouter

router = APIRouter()
