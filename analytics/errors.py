"""The analytics part of etcdcron's one error tree (the root and ``InvalidInput`` live in
:mod:`etcdcron.errors`)::

    EtcdCronError
    ├── InvalidInput                  the CLI exits 2; nothing is written
    │   ├── InvalidZone               (etcdcron.errors) a zone that is not an IANA name
    │   ├── InvalidApp                a bad app name, a bad job --arg
    │   │   ├── AppNotFound           no app has that id or name (also a NotFound: HTTP 404)
    │   │   └── AppExists             an app of that name exists (also a ConcurrentChange: HTTP 409)
    │   └── Refused                   an event the collector refuses: an HTTP status and a reason
    └── MongoError                    MongoDB failed; pymongo errors are mapped here at the adapter
        └── MongoUnavailable          no server answered in time

pymongo exceptions never leave :mod:`analytics.store`: each is re-raised as one of these ``from exc``.
"""

from __future__ import annotations

from etcdcron.errors import ConcurrentChange, EtcdCronError, InvalidInput, NotFound


class InvalidApp(InvalidInput):
    """An app name outside the allowed pattern, an app that does not exist, or a bad job argument."""


class AppNotFound(InvalidApp, NotFound):
    """No app has that id or name (the CLI exits 2, the API answers 404)."""


class AppExists(InvalidApp, ConcurrentChange):
    """``apps create`` of a name that is taken (the CLI exits 2, the API answers 409)."""


class Refused(InvalidInput):
    """An event or a request the collector refuses; ``status`` is the HTTP status it answers with."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class MongoError(EtcdCronError):
    """MongoDB failed or refused a request."""


class MongoUnavailable(MongoError):
    """No MongoDB server answered within the timeout."""
