"""What a request of the console or the API works with: the same core objects the CLI uses."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from ..accounts import Accounts
from ..admin import Admin
from ..errors import Unavailable


@dataclass
class WebContext:
    admin: Admin  # the CLI's core: the API calls the same methods, so the two cannot drift
    accounts: Accounts
    mongo_uri: str | None = None  # run history from MongoDB (job_runs) and analytics, when set
    _analytics: Any = field(default=None, repr=False)
    _archive: Any = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def analytics(self):
        """The analytics store (one client for the process); :class:`Unavailable` without --mongo."""
        if not self.mongo_uri:
            raise Unavailable("analytics needs MongoDB: start `etcdcron web` with --mongo")
        with self._lock:
            if self._analytics is None:
                from ..analytics.store import AnalyticsStore  # noqa: PLC0415 - only with --mongo

                self._analytics = AnalyticsStore(self.mongo_uri, timeout=3.0)
            return self._analytics

    def run_archive(self):
        """The run archive (MongoDB ``job_runs``), one client for the process; None without --mongo."""
        if not self.mongo_uri:
            return None
        with self._lock:
            if self._archive is None:
                from ..history import MongoHistory  # noqa: PLC0415 - only with --mongo

                self._archive = MongoHistory(self.mongo_uri)
            return self._archive

    def close(self) -> None:
        if self._analytics is not None:
            self._analytics.close()
        if self._archive is not None:
            self._archive.close()
        self.admin.store.close()


def ctx(request: Request) -> WebContext:
    """FastAPI dependency: the app's context."""
    return request.app.state.ctx
