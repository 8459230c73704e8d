"""The console's Jinja2 templates (autoescaped), shipped in the package: no build step, no CDN."""

from __future__ import annotations

from pathlib import Path

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=HERE / "templates")


def page(request: Request, name: str, status: int = 200, **context) -> Response:
    """Render ``templates/<name>`` with ``context`` (plus ``request``)."""
    return templates.TemplateResponse(request, name, context, status_code=status)
