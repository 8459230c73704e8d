"""Fixtures: the session's SecantusDB server (`mongo_server`, `mongo_uri` in tests/conftest.py); each test gets a database of its own."""

from __future__ import annotations

import pytest
import structlog

from etcdcron.analytics.events import App
from etcdcron.analytics.store import AnalyticsStore


@pytest.fixture
def astore(mongo_uri) -> AnalyticsStore:
    s = AnalyticsStore(mongo_uri)
    yield s
    s.close()


@pytest.fixture
def app_kolkata(astore) -> App:
    """An app counting days in Asia/Kolkata (UTC+05:30), grace 2 h."""
    return astore.create_app(App.new("kolkata", "Asia/Kolkata"))


@pytest.fixture(autouse=True)
def _structlog_restored():
    """Commands run in-process (typer's CliRunner) configure logging onto the runner's stderr, which
    is closed after the test: put the previous configuration back, so later tests can still log."""
    saved = structlog.get_config()
    yield
    structlog.configure(**saved)
