"""`analytics import` (issue 12): placeholder, filled in by the import work."""

from __future__ import annotations

import typer


def register_import(analytics: typer.Typer) -> None:
    """Add `analytics import` to the `analytics` group."""
