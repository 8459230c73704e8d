"""Command-line commands of the analytics package, mounted on the `etcdcron` app by :func:`register`."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add `collect`, `apps …` and `analytics …` to the etcdcron command line."""
