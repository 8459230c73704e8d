"""`apps show|set|rotate-key|counter add` (issue 12): placeholder, filled in by the settings work."""

from __future__ import annotations

import typer


def register_apps(apps: typer.Typer) -> None:
    """Add the app-settings commands to the `apps` group."""
