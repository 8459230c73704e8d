"""The one error tree of etcdcron.

    EtcdCronError
    ├── InvalidInput            bad user input; the CLI exits 2, nothing is written
    │   ├── InvalidSchedule
    │   ├── InvalidZone
    │   ├── InvalidJobName
    │   └── InvalidSpec
    ├── NotFound                the named thing does not exist (HTTP 404)
    │   ├── JobNotFound
    │   └── AccountNotFound
    ├── ConcurrentChange        keys changed between our read and our conditional write; that write did nothing
    │   └── AccountExists       an account of that name exists already (HTTP 409)
    ├── Unavailable             a part the request needs is not configured (``web`` without --mongo; HTTP 503)
    ├── StoreError              etcd could not be used (grpc / etcd errors are mapped here)
    │   ├── StoreUnavailable    no endpoint answered in time
    │   ├── StoreCompacted      a watch asked for a revision etcd has compacted
    │   ├── LeaseLost           our lease is gone; stop claiming
    │   ├── StoreTLSError       the TLS handshake failed: server not trusted, client certificate missing or refused
    │   ├── StoreAuthFailed     etcd refused the user name and password (or wants them)
    │   └── StorePermissionDenied  etcd's RBAC refused the operation (e.g. a key outside the user's prefix)
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


class NotFound(EtcdCronError):
    """The named job, account, app or run does not exist."""


class JobNotFound(NotFound):
    """The named job does not exist."""


class AccountNotFound(NotFound):
    """The named console/API account does not exist."""


class Unavailable(EtcdCronError):
    """A part the request needs is not configured here (analytics on a ``web`` without --mongo)."""


class ConcurrentChange(EtcdCronError):
    """A conditional write found the keys changed since they were read (another writer came between);
    that write did nothing, and running the command again reads the new state."""


class AccountExists(ConcurrentChange):
    """``accounts create`` of a name that exists (``accounts passwd`` changes a password)."""


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


# The three below are configuration errors, not outages: they are deliberately not StoreUnavailable,
# which callers retry (``serve`` waits for an unreachable etcd), so a wrong CA, a missing client
# certificate, a bad password or a missing permission fails at once with its cause instead of being
# retried forever as "unavailable". Loops that already run (watch, keep-alive, chores) catch StoreError
# and keep retrying, so a certificate or role fixed on the etcd side is picked up without a restart.


class StoreTLSError(StoreError):
    """The TLS handshake with etcd failed: its certificate is not trusted (or does not name the
    endpoint), or it refused our client certificate or the lack of one."""


class StoreAuthFailed(StoreError):
    """etcd refused the user name and password, or requires them and none were given."""


class StorePermissionDenied(StoreError):
    """etcd's role-based access control refused the operation to this user."""


class ExecutionError(EtcdCronError):
    """A job could not be started at all."""
