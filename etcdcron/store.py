"""The etcd adapter: the only module that talks gRPC.

It uses the generated stubs of etcd-sdk-python (``pyetcd.etcdrpc``) directly, so that every call has a
timeout, every response gives us its revision, and liveness (lease keep-alive, watches) is ours to
supervise rather than a helper thread's. grpc errors are mapped to :mod:`etcdcron.errors`.

Security. TLS is used when an endpoint is ``https://`` or any of ``ca``, ``cert``, ``key`` is given
(given files state the intent: an ``http://`` endpoint with a CA still gets TLS, never plaintext);
``http://`` and ``https://`` endpoints cannot be mixed. Without ``ca`` the server certificate is
checked against the system's roots. ``cert`` and ``key`` (a client certificate) go together. With
``user``, the store authenticates once (``Auth.Authenticate``) and sends the token as ``token`` metadata
on every call and stream; when etcd says the token is invalid (simple tokens expire after
``--auth-token-ttl`` idle seconds, and are lost when a member restarts) it authenticates again and
retries the call once. TLS and auth failures raise StoreTLSError, StoreAuthFailed and
StorePermissionDenied, not StoreUnavailable: they are configuration errors, not outages to wait out.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterable, NamedTuple, Sequence
from urllib.parse import urlparse

# grpc's C core logs each failed TLS handshake on stderr at INFO; the error we raise already says it,
# and the CLI promises one line. Read once, when grpc is first imported (only this module imports it).
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc  # noqa: E402
import structlog  # noqa: E402
from pyetcd import etcdrpc  # noqa: E402

from .errors import (  # noqa: E402
    InvalidInput,
    StoreAuthFailed,
    StoreCompacted,
    StoreError,
    StorePermissionDenied,
    StoreTLSError,
    StoreUnavailable,
)

if TYPE_CHECKING:
    from .watch import Watch

log = structlog.get_logger("etcdcron.store")

_UNAVAILABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
_KINDS = {StoreUnavailable: "unavailable", StoreCompacted: "compacted"}  # errors by kind, for metrics
_CHANNEL_OPTIONS = [
    # Detect a dead or blackholed connection within seconds, not minutes. etcd refuses pings more
    # often than --grpc-keepalive-min-time (5 s) and pings without an open stream (GOAWAY too_many_pings).
    ("grpc.keepalive_time_ms", 6000),
    ("grpc.keepalive_timeout_ms", 3000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
]
# get_prefix reads in pages: PAGE_KEYS keys first; then the rest in about PAGES answers (etcd 3.5 walks
# every key from a page's first to the range's end to count them, whatever the limit, so a listing
# of n keys in pages of k costs etcd n²/2k: 2,000-key pages made a 1,000,000-key relist take 49 s),
# each at most PAGE_BYTES (half the 64 MiB above); restarted at most _RELIST_TRIES times when compacted
# mid-way.
PAGE_KEYS = 2000
PAGES = 8
PAGE_BYTES = 32 * 1024 * 1024
_RELIST_TRIES = 5
TXN_OPS = 128  # etcd's default --max-txn-ops: the most operations one transaction may hold


class KV(NamedTuple):
    """One key as etcd returns it (a tuple: a node makes one per watch event, several per firing)."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


class Event(NamedTuple):
    kind: str  # "put" | "delete"
    kv: KV


@dataclass(frozen=True)
class TxnResult:
    succeeded: bool
    revision: int
    ranges: list[list[KV]]


def _kv(raw) -> KV:
    return KV(raw.key.decode(), raw.value, raw.create_revision, raw.mod_revision, raw.version, raw.lease)


def _b(s: str | bytes) -> bytes:
    return s.encode() if isinstance(s, str) else s


def prefix_end(prefix: str | bytes) -> bytes:
    """The range end that selects every key starting with ``prefix``."""
    p = bytearray(_b(prefix))
    for i in range(len(p) - 1, -1, -1):
        if p[i] < 0xFF:
            p[i] += 1
            return bytes(p[: i + 1])
    return b"\0"


# --- transaction building blocks -------------------------------------------------------------

_RESULTS = {"==": etcdrpc.Compare.EQUAL, "!=": etcdrpc.Compare.NOT_EQUAL, ">": etcdrpc.Compare.GREATER, "<": etcdrpc.Compare.LESS}


def _compare(target: str, key: str, op: str, value) -> "etcdrpc.Compare":
    c = etcdrpc.Compare(key=_b(key), result=_RESULTS[op])
    if target == "version":
        c.target, c.version = etcdrpc.Compare.VERSION, value
    elif target == "create":
        c.target, c.create_revision = etcdrpc.Compare.CREATE, value
    elif target == "mod":
        c.target, c.mod_revision = etcdrpc.Compare.MOD, value
    else:
        c.target, c.value = etcdrpc.Compare.VALUE, _b(value)
    return c


def version(key: str, op: str, value: int):
    return _compare("version", key, op, value)


def create_rev(key: str, op: str, value: int):
    return _compare("create", key, op, value)


def mod_rev(key: str, op: str, value: int):
    return _compare("mod", key, op, value)


def value_is(key: str, value: bytes | str):
    return _compare("value", key, "==", value)


def put(key: str, value: bytes | str, lease: int = 0):
    return etcdrpc.RequestOp(request_put=etcdrpc.PutRequest(key=_b(key), value=_b(value), lease=lease))


def delete(key: str, prefix: bool = False):
    req = etcdrpc.DeleteRangeRequest(key=_b(key))
    if prefix:
        req.range_end = prefix_end(key)
    return etcdrpc.RequestOp(request_delete_range=req)


def get(key: str):
    return etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=_b(key)))


def get_count(key: str):
    """How many keys are ``key`` (0 or 1): a Range that sends back no key and no value."""
    return etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=_b(key), count_only=True))


def get_prefix(prefix: str, limit: int = 0):
    return etcdrpc.RequestOp(request_range=etcdrpc.RangeRequest(key=_b(prefix), range_end=prefix_end(prefix), limit=limit))


def none_under(prefix: str):
    """True iff no key exists under ``prefix`` (etcd compares a range key by key; an empty range
    compares as a zero key, whose version is 0)."""
    c = _compare("version", prefix, "==", 0)
    c.range_end = prefix_end(prefix)
    return c


# --- the adapter ------------------------------------------------------------------------------


def _split_endpoints(spec: str | Sequence[str]) -> list[tuple[str, str]]:
    """``"http://a:2379,b"`` -> ``[("http", "a:2379"), ("", "b:2379")]`` (no scheme: "")."""
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        url = urlparse(item if "://" in item else "//" + item)
        if url.scheme not in ("", "http", "https") or not url.hostname:
            raise InvalidInput(f"bad etcd endpoint {item!r} (want http://HOST:PORT or https://HOST:PORT)")
        try:
            port = url.port or 2379
        except ValueError:
            raise InvalidInput(f"bad etcd endpoint {item!r}: bad port") from None
        host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname  # an IPv6 address
        out.append((url.scheme, f"{host}:{port}"))
    if not out:
        raise InvalidInput("no etcd endpoint given")
    return out


def parse_endpoints(spec: str | Sequence[str]) -> list[str]:
    """``"http://a:2379,b:2379"`` -> ``["a:2379", "b:2379"]``."""
    return [target for _, target in _split_endpoints(spec)]


def _read_pem(path: str, flag: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise InvalidInput(f"cannot read {flag} {path}: {exc.strerror or exc}") from None
    if b"-----BEGIN " not in data:
        raise InvalidInput(f"{flag} {path} is not a PEM file")
    return data


# etcd's answers when the token it got no longer names a session: authenticate again and retry.
_STALE_TOKEN = ("invalid auth token", "auth store is old", "user name is empty")


class EtcdStore:
    """A small, typed etcd v3 client with a timeout on every call and failover across endpoints.

    ``ca``, ``cert``, ``key`` are PEM files (the CA that signed etcd's server certificate; a client
    certificate and its key); ``user`` and ``password`` authenticate (see the module docstring for when
    TLS is on). A bad endpoint, an unreadable file or a half-given pair raises InvalidInput."""

    def __init__(self, endpoints: str | Sequence[str], timeout: float = 3.0, *, ca: str | None = None,
                 cert: str | None = None, key: str | None = None, user: str | None = None,
                 password: str | None = None) -> None:
        split = _split_endpoints(endpoints)
        schemes = {scheme for scheme, _ in split}
        if {"http", "https"} <= schemes:
            raise InvalidInput(f"etcd endpoints mix http:// and https://: {endpoints!r}")
        if bool(cert) != bool(key):
            raise InvalidInput("--etcd-cert and --etcd-key go together: give both or neither")
        self.endpoints = [target for _, target in split]
        self.timeout = timeout
        self.tls = "https" in schemes or bool(ca or cert or key)
        self._ca, self._cert, self._key = ca, cert, key
        self._creds = None
        if self.tls:
            self._creds = grpc.ssl_channel_credentials(
                _read_pem(ca, "--etcd-ca") if ca else None,  # None: grpc's own roots
                _read_pem(key, "--etcd-key") if key else None,
                _read_pem(cert, "--etcd-cert") if cert else None,
            )
        self._user, self._password = user, password
        if user and not self.tls:
            log.warning("etcd.auth_without_tls", user=user, note="the password and token cross the network in clear")
        self._lock = threading.Lock()
        self._index = 0
        self._channel: grpc.Channel | None = None
        self._auth_lock = threading.Lock()
        self._token: str | None = None  # None: not authenticated yet; "": etcd has auth disabled
        self._opener = None  # the HTTP client of server_time()
        self._closed = False
        # called with the kind of every error mapped here (unavailable, compacted, other): the node's metrics
        self.on_error: Callable[[str], None] = lambda kind: None

    @classmethod
    def from_settings(cls, endpoints: str | Sequence[str], *, ca: str | None = None, cert: str | None = None,
                      key: str | None = None, user: str | None = None, password_file: str | None = None,
                      timeout: float = 3.0) -> "EtcdStore":
        """The store the configuration's etcd settings describe. The password is only ever read from
        ``password_file`` (one trailing newline stripped), never taken as a value."""
        if password_file and not user:
            raise InvalidInput(f"--etcd-password-file {password_file} needs --etcd-user")
        if user and not password_file:
            raise InvalidInput(f"--etcd-user {user} needs --etcd-password-file (the password is only read from a file)")
        password = None
        if password_file:
            try:
                with open(password_file, encoding="utf-8") as f:
                    password = f.read().removesuffix("\n")
            except (OSError, UnicodeDecodeError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                raise InvalidInput(f"cannot read --etcd-password-file {password_file}: {reason}") from None
        return cls(endpoints, timeout, ca=ca, cert=cert, key=key, user=user, password=password)

    # channel management: one channel at a time; on an unavailable endpoint, the next call tries the next one
    def _target(self) -> str:
        return self.endpoints[self._index % len(self.endpoints)]

    def _chan(self) -> grpc.Channel:
        with self._lock:
            if self._channel is None:
                target = self._target()
                if self._creds is not None:
                    self._channel = grpc.secure_channel(target, self._creds, options=_CHANNEL_OPTIONS)
                else:
                    self._channel = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
            return self._channel

    def _rotate(self) -> None:
        with self._lock:
            if len(self.endpoints) > 1 and self._channel is not None:
                self._channel.close()
                self._channel = None
                self._index += 1

    # authentication: one token for every call and stream, renewed when etcd refuses it
    def _md(self) -> tuple | None:
        """The call metadata: the auth token (authenticating first if need be), or None without a user."""
        if self._user is None:
            return None
        token = self._token
        if token is None:
            # One renewal at a time, and nobody waits for it longer than a call may take: Authenticate is
            # a raft proposal that blocks through an election, and the keep-alive must not queue behind
            # a line of threads that each try in turn (the lease would expire while they do).
            if not self._auth_lock.acquire(timeout=self.timeout):
                raise StoreUnavailable(f"etcd authentication of user {self._user!r} still under way after "
                                       f"{self.timeout:g} s")
            try:
                if self._token is None:
                    self._token = self._authenticate()
                token = self._token
            finally:
                self._auth_lock.release()
        return (("token", token),) if token else None

    def _authenticate(self) -> str:
        req = etcdrpc.AuthenticateRequest(name=self._user, password=self._password or "")
        try:
            resp = etcdrpc.AuthStub(self._chan()).Authenticate(req, timeout=self.timeout)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION and "not enabled" in (exc.details() or ""):
                log.warning("etcd.auth_not_enabled", user=self._user, note="connecting without a token")
                return ""
            raise self._map(exc, "Authenticate") from exc
        except ValueError as exc:
            raise StoreUnavailable(f"etcd channel closed: {exc}") from exc
        return resp.token

    def _stale_token(self, exc: grpc.RpcError, md: tuple | None) -> bool:
        """Was ``exc`` etcd refusing the token we sent (or the lack of one, since auth was enabled)?
        If so, forget it, so that the next call authenticates again."""
        if self._user is None or not any(s in (exc.details() or "") for s in _STALE_TOKEN):
            return False
        self._forget_token(md)
        return True

    def _forget_token(self, md: tuple | None) -> None:
        with self._auth_lock:
            if self._token == (md[0][1] if md else ""):
                self._token = None  # only the token that failed: another thread may have renewed it

    def _call(self, stub_cls, method: str, request, timeout: float | None = None):
        for attempt in (1, 2):
            md = None
            try:
                md = self._md()
                stub = stub_cls(self._chan())
                return getattr(stub, method)(request, timeout=timeout or self.timeout, metadata=md)
            except grpc.RpcError as exc:
                if attempt == 1 and self._stale_token(exc, md):
                    log.info("etcd.token_renewed", user=self._user, reason=exc.details())
                    continue
                raise self._map(exc, method, request) from exc
            except ValueError as exc:  # grpc raises ValueError on a closed channel
                raise StoreUnavailable(f"etcd channel closed: {exc}") from exc

    def _map(self, exc: grpc.RpcError, method: str = "", request=None) -> StoreError:
        err = self._mapped(exc, method, request)
        self.on_error(_KINDS.get(type(err), "other"))
        return err

    def _mapped(self, exc: grpc.RpcError, method: str = "", request=None) -> StoreError:
        code = exc.code() if hasattr(exc, "code") else None
        details = (exc.details() if hasattr(exc, "details") else str(exc)) or ""
        if code in _UNAVAILABLE:
            target = self._target()
            self._rotate()
            tls = self._tls_failure(details, target)
            if tls is not None:
                return tls
            if "Handshake read failed" in details:  # a plaintext server hangs up on our TLS hello
                details += f" (is {target} serving TLS?)"
            return StoreUnavailable(f"etcd unavailable at {','.join(self.endpoints)}: {details}")
        if code == grpc.StatusCode.PERMISSION_DENIED or "permission denied" in details:
            return StorePermissionDenied(f"etcd denied {_describe(method, request)}: permission denied for {self._who()}")
        if "authentication failed" in details:
            return StoreAuthFailed(f"etcd authentication failed for user {self._user!r}: invalid user name or password")
        if "user name is empty" in details:
            return StoreAuthFailed("etcd requires authentication: give --etcd-user and --etcd-password-file")
        if any(s in details for s in _STALE_TOKEN):
            return StoreAuthFailed(f"etcd refused the auth token of user {self._user!r}: {details}")
        if "compacted" in details:
            return StoreCompacted(f"etcd: {details}")
        return StoreError(f"etcd error {code.name if code else ''}: {details}")

    def _tls_failure(self, details: str, target: str) -> StoreTLSError | None:
        """The TLS cause in grpc's UNAVAILABLE detail, as one line; None when it is not about TLS."""
        if "CERTIFICATE_VERIFY_FAILED" in details:
            reason = details.partition("CERTIFICATE_VERIFY_FAILED:")[2].removesuffix(": OK").strip()
            by, hint = (f"--etcd-ca {self._ca}", "") if self._ca else ("the system's CA certificates", "; give --etcd-ca")
            return StoreTLSError(f"etcd TLS handshake with {target} failed: server certificate not trusted by {by}"
                                 f" ({reason or 'verify failed'}{hint})")
        if "Hostname Verification" in details or "Peer name" in details:
            return StoreTLSError(f"etcd TLS handshake with {target} failed: the server certificate does not name "
                                 f"{target.rsplit(':', 1)[0]}")
        if "ALERT_BAD_CERTIFICATE" in details or "CERTIFICATE_REQUIRED" in details or "ALERT_UNKNOWN_CA" in details:
            if not self._cert:
                return StoreTLSError(f"etcd at {target} refused the connection: a client certificate is required "
                                     f"(--etcd-cert/--etcd-key)")
            return StoreTLSError(f"etcd at {target} refused the client certificate --etcd-cert {self._cert} "
                                 f"(not signed by a CA etcd trusts, expired, or not for client auth)")
        # Any other handshake failure (a connection reset mid-handshake, a proxy restarting) may pass:
        # it stays StoreUnavailable, retried, rather than a configuration error that stops serve.
        return None

    def _who(self) -> str:
        if self._user:
            return f"user {self._user!r}"
        if self._cert:
            return f"the user named by the client certificate {self._cert}"
        return "a client without --etcd-user"


    # --- KV
    def get(self, key: str) -> KV | None:
        resp = self._call(etcdrpc.KVStub, "Range", etcdrpc.RangeRequest(key=_b(key)))
        return _kv(resp.kvs[0]) if resp.kvs else None

    def get_prefix(self, prefix: str, revision: int = 0, limit: int = 0, keys_only: bool = False,
                   page: int = PAGE_KEYS) -> tuple[list[KV], int]:
        """Every key under ``prefix`` (at ``revision``, 0 = now; at most ``limit`` keys, 0 = all), in
        key order, with the revision read at.

        Read in pages, so that no answer nears gRPC's message limit: ``page`` keys first, at
        ``revision`` (or now); the rest (its size is in that answer) in about :data:`PAGES` more,
        of at least ``page`` keys and at most :data:`PAGE_BYTES` each, every one at the first page's
        revision, so the result is one consistent snapshot. If that revision is compacted away
        between two pages, the listing starts over at a new revision."""
        tries = 0
        while True:
            try:
                return self._get_prefix_pages(prefix, revision, limit, keys_only, page)
            except StoreCompacted:
                tries += 1
                if revision or tries >= _RELIST_TRIES:
                    raise  # the caller's own revision is gone, or etcd compacts faster than we read
                log.info("store.relist_restarted", prefix=prefix, reason="compacted between pages")

    def _get_prefix_pages(self, prefix: str, revision: int, limit: int, keys_only: bool,
                          page: int) -> tuple[list[KV], int]:
        key, end = _b(prefix), prefix_end(prefix)
        out: list[KV] = []
        read_at = revision
        size = target = max(1, page)
        while True:
            want = size if not limit else min(size, limit - len(out))
            req = etcdrpc.RangeRequest(key=key, range_end=end, revision=read_at, limit=want, keys_only=keys_only)
            try:
                resp = self._call(etcdrpc.KVStub, "Range", req, timeout=max(self.timeout, 10.0))
            except StoreError as exc:
                if "RESOURCE_EXHAUSTED" not in str(exc) or want <= 1:
                    raise
                size = max(1, want // 2)  # the answer was over gRPC's limit: ask again for fewer keys
                continue
            if not read_at:
                read_at = resp.header.revision
            if not out:  # the first answer counts the whole listing: the rest in about PAGES answers
                target = max(target, -(-(resp.count - len(resp.kvs)) // PAGES))
            out.extend(_kv(kv) for kv in resp.kvs)
            if not resp.more or not resp.kvs or (limit and len(out) >= limit):
                return out, read_at
            key = resp.kvs[-1].key + b"\0"
            # and none over PAGE_BYTES, whatever the size of the keys
            nbytes = sum(len(kv.key) + len(kv.value) for kv in resp.kvs)
            size = max(1, min(target, PAGE_BYTES * len(resp.kvs) // max(1, nbytes)))

    def count_prefix(self, prefix: str) -> int:
        req = etcdrpc.RangeRequest(key=_b(prefix), range_end=prefix_end(prefix), count_only=True)
        return self._call(etcdrpc.KVStub, "Range", req).count

    def put(self, key: str, value: bytes | str, lease: int = 0) -> int:
        resp = self._call(etcdrpc.KVStub, "Put", etcdrpc.PutRequest(key=_b(key), value=_b(value), lease=lease))
        return resp.header.revision

    def delete(self, key: str, prefix: bool = False) -> int:
        req = etcdrpc.DeleteRangeRequest(key=_b(key))
        if prefix:
            req.range_end = prefix_end(key)
        return self._call(etcdrpc.KVStub, "DeleteRange", req).deleted

    def txn(self, compare: Iterable, success: Iterable = (), failure: Iterable = ()) -> TxnResult:
        req = etcdrpc.TxnRequest(compare=list(compare), success=list(success), failure=list(failure))
        resp = self._call(etcdrpc.KVStub, "Txn", req)
        ranges = [[_kv(kv) for kv in r.response_range.kvs] for r in resp.responses if r.WhichOneof("response") == "response_range"]
        return TxnResult(resp.succeeded, resp.header.revision, ranges)

    def txn_batch(self, txns: Sequence[tuple[Iterable, Iterable, Iterable]]) -> tuple[list[TxnResult], int]:
        """Several independent transactions in one round trip and one revision: each (compare,
        success, failure) is a nested transaction, judged on its own compare."""
        nested = [etcdrpc.RequestOp(request_txn=etcdrpc.TxnRequest(compare=list(c), success=list(ok), failure=list(ko)))
                  for c, ok, ko in txns]
        resp = self._call(etcdrpc.KVStub, "Txn", etcdrpc.TxnRequest(success=nested))
        out = []
        for r in resp.responses:
            inner = r.response_txn
            ranges = [[_kv(kv) for kv in x.response_range.kvs] for x in inner.responses
                      if x.WhichOneof("response") == "response_range"]
            out.append(TxnResult(inner.succeeded, resp.header.revision, ranges))
        return out, resp.header.revision

    def get_many(self, keys: Sequence[str], revision: int = 0) -> list[KV | None]:
        """The KV of each of ``keys`` (None where there is none), in order, at ``revision`` (0 = now).
        See :meth:`_read_many` for how they are read."""
        ranges = self._read_many([get(k) for k in keys], revision)
        return [_kv(r.kvs[0]) if r.kvs else None for r in ranges]

    def exists_many(self, keys: Sequence[str], revision: int = 0) -> list[bool]:
        """Whether each of ``keys`` exists, in order: as :meth:`get_many`, but etcd only counts."""
        ranges = self._read_many([get_count(k) for k in keys], revision)
        return [r.count > 0 for r in ranges]

    def _read_many(self, reads: list, revision: int) -> list:
        """The answers to ``reads`` (Range ops: :func:`get`, :func:`get_count`) in as few round trips
        as etcd allows: read-only Txns of at most :data:`TXN_OPS` Ranges, which etcd serves with a
        linearizable read and no raft write. Every Txn after the first reads at the first one's
        revision, so the answers are one snapshot; if that revision is compacted in between, the
        reading starts over."""
        tries = 0
        while True:
            at, out = revision, []
            try:
                for first in range(0, len(reads), TXN_OPS):
                    ops = reads[first:first + TXN_OPS]
                    for op in ops:
                        op.request_range.revision = at
                    resp = self._call(etcdrpc.KVStub, "Txn", etcdrpc.TxnRequest(success=ops))
                    at = at or resp.header.revision
                    out.extend(r.response_range for r in resp.responses)
                return out
            except StoreCompacted:
                tries += 1
                if revision or tries >= _RELIST_TRIES:
                    raise  # the caller's own revision is gone, or etcd compacts faster than we read
                log.info("store.read_many_restarted", keys=len(reads), reason="compacted between transactions")

    def compact(self, revision: int) -> None:
        self._call(etcdrpc.KVStub, "Compact", etcdrpc.CompactionRequest(revision=revision, physical=True))

    # --- leases
    def grant(self, ttl: int) -> int:
        resp = self._call(etcdrpc.LeaseStub, "LeaseGrant", etcdrpc.LeaseGrantRequest(TTL=ttl))
        if resp.error:
            raise StoreError(f"lease grant refused: {resp.error}")
        return resp.ID

    def keepalive(self, lease: int) -> int:
        """Refresh ``lease`` once; the remaining TTL, <= 0 when the lease is gone."""
        md = None
        try:
            md = self._md()
            stream = etcdrpc.LeaseStub(self._chan()).LeaseKeepAlive(
                iter([etcdrpc.LeaseKeepAliveRequest(ID=lease)]), timeout=self.timeout, metadata=md
            )
            for resp in stream:
                return resp.TTL
            return 0
        except grpc.RpcError as exc:
            self._stale_token(exc, md)  # the next keep-alive, a tick later, authenticates again
            raise self._map(exc, "LeaseKeepAlive") from exc
        except ValueError as exc:
            raise StoreUnavailable(f"etcd channel closed: {exc}") from exc

    def time_to_live(self, lease: int) -> int:
        """Seconds ``lease`` has left (etcd's LeaseTimeToLive); -1 when it has expired or never existed."""
        resp = self._call(etcdrpc.LeaseStub, "LeaseTimeToLive", etcdrpc.LeaseTimeToLiveRequest(ID=lease))
        return resp.TTL

    def revoke(self, lease: int) -> None:
        try:
            self._call(etcdrpc.LeaseStub, "LeaseRevoke", etcdrpc.LeaseRevokeRequest(ID=lease))
        except StoreError as exc:
            if "not found" not in str(exc):
                raise

    # --- cluster
    def status(self) -> dict:
        resp = self._call(etcdrpc.MaintenanceStub, "Status", etcdrpc.StatusRequest())
        return {"version": resp.version, "db_size": resp.dbSize, "leader": resp.leader,
                "member": resp.header.member_id, "revision": resp.header.revision, "raft_term": resp.raftTerm}

    def server_time(self) -> tuple[float, float, float]:
        """etcd's wall clock, from the ``Date`` header of its HTTP ``/version`` (1 s resolution), over
        the same TLS as the gRPC calls. Returns (local time sent, local time received, server second)."""
        import ssl
        import urllib.request
        from email.utils import parsedate_to_datetime

        target = self._target()
        if self._opener is None:  # built once: the TLS context reads the CA, certificate and key files
            ctx = None
            if self.tls:
                ctx = ssl.create_default_context(cafile=self._ca)
                if self._cert:
                    ctx.load_cert_chain(self._cert, self._key)
            # etcd is reached directly, never through an HTTP(S)_PROXY of the environment
            self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}),
                                                       urllib.request.HTTPSHandler(context=ctx))
        sent = time.time()
        try:
            with self._opener.open(f"{'https' if self.tls else 'http'}://{target}/version", timeout=self.timeout) as resp:
                date = resp.headers["Date"]
        except OSError as exc:
            reason = getattr(exc, "reason", exc)  # urllib wraps the ssl error in a URLError
            if isinstance(reason, ssl.SSLCertVerificationError):
                if "ostname" in (reason.verify_message or ""):
                    details = "Hostname Verification Check failed"
                else:
                    details = f"CERTIFICATE_VERIFY_FAILED: {reason.verify_message}"
                raise self._tls_failure(details, target) from exc
            tls = self._tls_failure(f"SSL_ERROR_SSL: {reason.reason or reason}", target) \
                if isinstance(reason, ssl.SSLError) else None
            raise tls or StoreUnavailable(f"etcd time unavailable at {target}: {exc}") from exc
        return sent, time.time(), parsedate_to_datetime(date).timestamp()

    def watch(self, prefix: str, start_revision: int, on_events: Callable[[list[Event], int], None],
              on_reset: Callable[[], int], name: str = "watch", exclude: Sequence[str] = ()) -> "Watch":
        """Start a supervised watch of ``prefix``, less the keys under each of ``exclude``; see
        :class:`etcdcron.watch.Watch`."""
        from .watch import Watch  # noqa: PLC0415 - watch.py builds on this module

        w = Watch(self, prefix, start_revision, on_events, on_reset, name, exclude)
        w.start()
        return w

    def close(self) -> None:
        with self._lock:
            self._closed = True
            if self._channel is not None:
                self._channel.close()
                self._channel = None


def _keys_of(request) -> list[str]:
    """The keys a request names, in order (compares first, then operations; nested transactions too)."""
    if isinstance(request, etcdrpc.TxnRequest):
        keys = [c.key for c in request.compare]
        for op in [*request.success, *request.failure]:
            which = op.WhichOneof("request")
            inner = getattr(op, which) if which else None
            keys += _keys_of(inner) if which == "request_txn" else [inner.key] if inner is not None else []
        return list(dict.fromkeys(k.decode(errors="replace") if isinstance(k, bytes) else k for k in keys))
    key = getattr(request, "key", None)
    return [key.decode(errors="replace")] if key else []


def _describe(method: str, request) -> str:
    """A refused request in a few words: ``write /p/x``, ``transaction on /p/a (+2 more keys)``."""
    keys = _keys_of(request) if request is not None else []
    verb = {"Range": "read", "Put": "write", "DeleteRange": "delete", "Txn": "transaction on", "Watch": "watch"}
    if not keys:
        return method or "the request"
    ranged = "*" if getattr(request, "range_end", b"") else ""
    more = f" (+{len(keys) - 1} more keys)" if len(keys) > 1 else ""
    return f"{verb.get(method, method)} {keys[0]}{ranged}{more}"


def reachable(endpoints: str, timeout: float = 0.5) -> bool:
    """Does an etcd answer at ``endpoints`` right now?"""
    store = EtcdStore(endpoints, timeout=timeout)
    try:
        store.status()
        return True
    except StoreError:
        return False
    finally:
        store.close()


def wait_ready(store: EtcdStore, deadline: float) -> None:
    """Block until etcd answers or ``deadline`` (monotonic) passes."""
    while True:
        try:
            store.status()
            return
        except StoreError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
