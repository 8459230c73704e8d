"""The one error tree of etcdcron.

    EtcdCronError
    ├── InvalidInput            bad user input; the CLI exits 2, nothing is written
    │   ├── InvalidSchedule
    │   ├── InvalidZone
    │   ├── InvalidJobName
    │   └── InvalidSpec
    ├── JobNotFound
    ├── StoreError              etcd could not be used (grpc / etcd errors are mapped here)
    │   ├── StoreUnavailable    no endpoint answered in time
    │   ├── StoreCompacted      a watch asked for a revision etcd has compacted
    │   └── LeaseLost           our lease is gone; stop claiming
    ├── MongoError              MongoDB failed (etcdcron.analytics.errors; pymongo errors are mapped in its store)
    │   └── MongoUnavailable    no MongoDB answered in time
    └── ExecutionError          a job could not be started (not: a job that failed)

Third-party exceptions never leave an adapter: they are re-raised as one of these with ``from exc``.
"""

from __future__ import annotations


class EtcdCronError(Exception):
    """Root of every error etcdcron raises on purpose."""


class InvalidInput(EtcdCronError):
    """User input that is refused; the message is one line naming the bad part."""


class InvalidSchedule(InvalidInput):
    """A schedule expression that cannot be parsed."""


class InvalidZone(InvalidInput):
    """A time zone that is not a known IANA name."""


class InvalidJobName(InvalidInput):
    """A job name outside ``[a-z0-9][a-z0-9._-]{0,62}``."""


class InvalidSpec(InvalidInput):
    """Any other bad job option."""


class JobNotFound(EtcdCronError):
    """The named job does not exist."""


class StoreError(EtcdCronError):
    """etcd failed or refused a request."""


class StoreUnavailable(StoreError):
    """No etcd endpoint answered within the timeout."""


class StoreCompacted(StoreError):
    """The revision asked for has been compacted away."""

    def __init__(self, message: str, compact_revision: int = 0) -> None:
        super().__init__(message)
        self.compact_revision = compact_revision


class LeaseLost(StoreError):
    """The node's lease expired or was revoked."""


class ExecutionError(EtcdCronError):
    """A job could not be started at all."""
