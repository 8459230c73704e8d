"""The collector: an ASGI app (Starlette, served by uvicorn) that takes client events into ``events``.

Routes: ``POST /i/user/open_app`` and ``POST /i/usage/time`` (the GoAnalytics client API),
``POST /v1/events`` (batches), and for operators ``GET /healthz`` (liveness: the process answers),
``GET /readyz`` (503 while MongoDB does not answer a ping within a second) and ``GET /metrics``
(Prometheus text: requests by route and status, events stored, insert batch sizes and latency; see
docs/metrics.md). Checks run cheapest first: the client address's rate limit (429), body size
(413), app (404), signature (401), the app's rate limit (429), shape (400), timestamps (422); any
refusal answers ``{"error": reason}`` and stores nothing of the request. Refusals are counted
(``etcdcron_collector_refused_total``) and summed up in at most one log line a minute, so a flood of
bad requests costs no log line each; unknown app ids are remembered in a bounded cache of their own,
so that they cost one MongoDB read per id and second and never push the known apps out.

Writes are batched by group commit: each accepted request hands its documents to the
:class:`BatchWriter` and waits; the writer inserts everything that queued up while the previous
insert was running in one ``insert_many``. A request is answered once its events are stored, so a
2xx means stored (or stored before: a repeated event id counts as a duplicate and is not stored again).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import math
import re
import time
from collections import Counter, OrderedDict
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from etcdcron.metrics import CollectorMetrics

from .errors import MongoError, Refused
from .events import (MAX_BATCH_BYTES, MAX_SMALL_BODY, App, admit, batch_events, batch_sign, goa_event, goa_sign,
                     verify_any)
from .store import AnalyticsStore

log = structlog.get_logger("analytics.collector")

APP_TTL = 30.0  # seconds an app (and its key) is cached
MISS_TTL = 1.0  # seconds an unknown app id is remembered as unknown
MAX_UNKNOWN = 10_000  # unknown app ids remembered at most (least recently seen forgotten first)
APP_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # anything else is no app id: refused without a lookup
READY_TIMEOUT = 1.0  # seconds /readyz waits for MongoDB's answer (probes time out after about that)
LOG_EVERY = 60.0  # seconds between two summary lines of refused requests
MAX_BUCKETS = 100_000  # token buckets kept per scope (least recently used dropped first)


class AppCache:
    """Apps by id, read from MongoDB at most every APP_TTL seconds each. Unknown ids are remembered
    for MISS_TTL in a separate LRU of at most ``max_unknown`` ids, so a flood of made-up ids costs
    one lookup each and never pushes a known app out (known apps are as many as the store holds)."""

    def __init__(self, store: AnalyticsStore, clock: Callable[[], float] = time.monotonic,
                 max_unknown: int = MAX_UNKNOWN, metrics: CollectorMetrics | None = None) -> None:
        self.store, self.clock, self.max_unknown, self.metrics = store, clock, max_unknown, metrics
        self.known: dict[str, tuple[App, float]] = {}
        self.unknown: OrderedDict[str, float] = OrderedDict()

    async def get(self, app_id: str | None) -> App:
        if not app_id:
            raise Refused(404, "unknown app: no appId given")
        if not APP_ID_RE.fullmatch(app_id):
            raise Refused(404, f"unknown app {app_id[:64]!r}")
        now = self.clock()
        hit = self.known.get(app_id)
        if hit is not None and now < hit[1]:
            return hit[0]
        until = self.unknown.get(app_id)
        if until is not None and now < until:
            self.unknown.move_to_end(app_id)
            raise Refused(404, f"unknown app {app_id!r}")
        if self.metrics is not None:
            self.metrics.app_lookups.inc()
        found = await asyncio.to_thread(self.store.find_app, app_id)
        if found is not None and found.id != app_id:
            found = None  # the collector takes ids only, not names
        if found is None:
            self.known.pop(app_id, None)  # an app deleted since
            self.unknown[app_id] = now + MISS_TTL
            self.unknown.move_to_end(app_id)
            while len(self.unknown) > self.max_unknown:
                self.unknown.popitem(last=False)
            raise Refused(404, f"unknown app {app_id!r}")
        self.unknown.pop(app_id, None)
        self.known[app_id] = (found, now + APP_TTL)
        return found


@dataclass(frozen=True)
class Limits:
    """The collector's rate limits: token buckets of requests per second, one per app (counted once
    the request's signature is verified) and one per client address (IPv6 by /64: one host holds a
    whole /64), each refilling at ``*_rate`` up to ``*_burst``. A rate of 0 turns that limit off."""

    app_rate: float = 1000.0
    app_burst: int = 2000
    client_rate: float = 50.0
    client_burst: int = 200

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> "Limits":
        return cls(app_rate=cfg["collect.app_rate"], app_burst=cfg["collect.app_burst"],
                   client_rate=cfg["collect.client_rate"], client_burst=cfg["collect.client_burst"])

    @classmethod
    def off(cls) -> "Limits":
        return cls(app_rate=0.0, client_rate=0.0)


class RateLimited(Refused):
    """A request refused because its token bucket is empty: 429 with ``Retry-After`` (whole seconds)."""

    def __init__(self, scope: str, retry_after: float) -> None:
        self.scope = scope
        self.retry_after = max(1, math.ceil(retry_after))
        what = "this app" if scope == "app" else "this client address"
        super().__init__(429, f"rate limit of {what} reached: retry after {self.retry_after} s")


class TokenBuckets:
    """Token buckets by key, refilling at ``rate`` per second up to ``burst``. At most ``max_keys``
    are kept, the least recently used dropped first: a dropped bucket comes back full, which is what
    an idle one would be anyway."""

    def __init__(self, rate: float, burst: int, max_keys: int = MAX_BUCKETS) -> None:
        self.rate, self.burst, self.max_keys = rate, float(burst), max_keys
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str, now: float) -> float:
        """Take one token of ``key``'s bucket: 0.0 when taken, else the seconds until one is there."""
        if self.rate <= 0:
            return 0.0
        tokens, then = self.buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + max(0.0, now - then) * self.rate)
        wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
        self.buckets[key] = (tokens - 1 if not wait else tokens, now)
        if len(self.buckets) > self.max_keys:
            self.buckets.popitem(last=False)
        return wait


def client_key(host: str | None) -> str:
    """The rate limit's key of a client address: the address, an IPv6 one by its /64."""
    if not host:
        return "?"
    if ":" in host:
        try:
            return str(ipaddress.IPv6Network(f"{host}/64", strict=False))
        except ValueError:
            return host
    return host


class Refusals:
    """Refused requests: each counted in the metrics; logged as one summary line (counts by route
    and status since the last line, one reason of each status as an example) at most every
    ``every`` seconds. The first refusal after a quiet interval is logged at once."""

    def __init__(self, metrics: CollectorMetrics, clock: Callable[[], float], every: float = LOG_EVERY) -> None:
        self.metrics, self.clock, self.every = metrics, clock, every
        self.counts: Counter[tuple[str, int]] = Counter()
        self.examples: dict[int, str] = {}
        self.logged_at = -math.inf

    def note(self, route: str, exc: Refused) -> None:
        self.metrics.refused(route, exc.status)
        if isinstance(exc, RateLimited):
            self.metrics.rate_limited[exc.scope].inc()
        self.counts[(route, exc.status)] += 1
        self.examples.setdefault(exc.status, exc.reason)
        if self.clock() - self.logged_at >= self.every:
            self.flush()

    def flush(self) -> None:
        """Log what was refused since the last line (nothing when nothing was)."""
        if not self.counts:
            return
        log.info("collector.refused", requests=sum(self.counts.values()),
                    by={f"{route} {status}": n for (route, status), n in sorted(self.counts.items())},
                    examples={str(status): reason for status, reason in sorted(self.examples.items())})
        self.counts.clear()
        self.examples.clear()
        self.logged_at = self.clock()


class BatchWriter:
    """Group commit: documents of concurrent requests go to MongoDB in one insert."""

    def __init__(self, insert: Callable[[list[dict[str, Any]]], set[int]], max_docs: int = 5000,
                 metrics: CollectorMetrics | None = None) -> None:
        self.insert, self.max_docs = insert, max_docs
        self.metrics = metrics
        self.pending: list[tuple[list[dict[str, Any]], asyncio.Future]] = []
        self.wake = asyncio.Event()
        self.closing = False
        self.batches = 0

    async def submit(self, docs: list[dict[str, Any]]) -> tuple[int, int]:
        """Store ``docs``; returns (stored, duplicates) once they are in MongoDB."""
        if not docs:
            return 0, 0
        fut = asyncio.get_running_loop().create_future()
        self.pending.append((docs, fut))
        self.wake.set()
        return await fut

    async def run(self) -> None:
        while not (self.closing and not self.pending):
            await self.wake.wait()
            self.wake.clear()
            while self.pending:
                await self._flush()

    async def _flush(self) -> None:
        batch, n = [], 0
        while self.pending and (not batch or n + len(self.pending[0][0]) <= self.max_docs):
            item = self.pending.pop(0)
            batch.append(item)
            n += len(item[0])
        docs = [d for ds, _ in batch for d in ds]
        m, sent = self.metrics, time.monotonic()
        try:
            dups = await asyncio.to_thread(self.insert, docs)
        except Exception as exc:  # noqa: BLE001 - each waiting request answers with it
            if m is not None:
                m.insert_errors.inc()
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(exc)
            return
        if m is not None:
            m.insert_seconds.observe(time.monotonic() - sent)
            m.batch_size.observe(len(docs))
            m.events_stored.inc(len(docs) - len(dups))
            m.events_duplicate.inc(len(dups))
        self.batches += 1
        at = 0
        for ds, fut in batch:
            d = sum(1 for j in range(at, at + len(ds)) if j in dups)
            at += len(ds)
            if not fut.done():
                fut.set_result((len(ds) - d, d))

    async def close(self) -> None:
        self.closing = True
        self.wake.set()


async def _body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise Refused(413, f"body too large: {declared} bytes (limit {limit})")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, f"body too large: more than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


class _Counted:
    """ASGI middleware: every HTTP answer counted by route and status (an exception counts as 500)."""

    def __init__(self, app, metrics: CollectorMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def sending(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.request(scope["path"], status)


def create_app(store: AnalyticsStore, clock: Callable[[], float] = time.time,
               metrics: CollectorMetrics | None = None, limits: Limits = Limits(),
               monotonic: Callable[[], float] = time.monotonic, usage_compat: bool = True) -> Starlette:
    """The collector as an ASGI app over ``store``; ``clock`` gives "now" for the timestamp checks
    and key rotations, ``monotonic`` the time of the caches, rate limits and log summaries;
    ``metrics`` (a new registry when not given) is what ``/metrics`` serves. Without
    ``usage_compat``, ``/i/usage/time`` takes only the signed form (``seconds`` in the query)."""
    metrics = metrics or CollectorMetrics()
    apps = AppCache(store, monotonic, metrics=metrics)
    refusals = Refusals(metrics, monotonic)
    per_app = TokenBuckets(limits.app_rate, limits.app_burst)
    per_client = TokenBuckets(limits.client_rate, limits.client_burst)
    state: dict[str, BatchWriter] = {}

    async def submit(docs: list[dict[str, Any]]) -> tuple[int, int]:
        return await state["writer"].submit(docs)

    def limit_client(request: Request) -> None:
        wait = per_client.take(client_key(request.client.host if request.client else None), monotonic())
        if wait:
            raise RateLimited("client", wait)

    def limit_app(app: App) -> None:
        wait = per_app.take(app.id, monotonic())
        if wait:
            raise RateLimited("app", wait)

    def goa(kind: str):
        async def endpoint(request: Request) -> JSONResponse:
            limit_client(request)
            body = await _body(request, MAX_SMALL_BODY)
            params = dict(request.query_params)
            app = await apps.get(params.get("appId"))
            now = clock()
            verify_any([goa_sign(params, key) for key in app.keys(now)], params.get("sign"))
            if kind == "usage" and "seconds" not in params and not usage_compat:
                raise Refused(401, "unsigned seconds: this collector takes usage time only with seconds "
                                   "in the signed query (docs/analytics.md)")
            limit_app(app)
            docs, repeats = admit(app, [goa_event(kind, params, body)], now)
            stored, dups = await submit(docs)
            return JSONResponse({"ok": True, "stored": stored, "duplicates": dups + repeats})
        return endpoint

    async def batch(request: Request) -> JSONResponse:
        limit_client(request)
        body = await _body(request, MAX_BATCH_BYTES)
        app = await apps.get(request.query_params.get("appId"))
        now = clock()
        verify_any([batch_sign(body, key) for key in app.keys(now)], request.query_params.get("sign"))
        limit_app(app)
        events = batch_events(body, app)
        docs, repeats = admit(app, events, now)
        stored, dups = await submit(docs)
        return JSONResponse({"ok": True, "accepted": len(events), "stored": stored, "duplicates": dups + repeats})

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    async def ready(request: Request) -> JSONResponse:
        try:
            await asyncio.to_thread(store.ping, READY_TIMEOUT)
        except MongoError as exc:
            return JSONResponse({"error": f"MongoDB unreachable: {exc}"}, status_code=503)
        return JSONResponse({"ok": True})

    async def scrape(request: Request) -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    async def refused(request: Request, exc: Refused) -> JSONResponse:
        refusals.note(request.url.path, exc)
        headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, RateLimited) else None
        return JSONResponse({"error": exc.reason}, status_code=exc.status, headers=headers)

    async def unavailable(request: Request, exc: MongoError) -> JSONResponse:
        log.error("collector.store_failed", path=request.url.path, error=str(exc))
        return JSONResponse({"error": "storage unavailable, retry later"}, status_code=503)

    async def summaries() -> None:
        while True:  # a quiet collector still reports the refusals it saw since its last line
            await asyncio.sleep(LOG_EVERY)
            if monotonic() - refusals.logged_at >= LOG_EVERY:
                refusals.flush()

    @asynccontextmanager
    async def lifespan(_app: Starlette):
        writer = state["writer"] = BatchWriter(store.insert_events, metrics=metrics)
        task = asyncio.create_task(writer.run())
        summary = asyncio.create_task(summaries())
        try:
            yield
        finally:
            summary.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await summary
            await writer.close()
            await task
            refusals.flush()

    routes = [
        Route("/i/user/open_app", goa("open"), methods=["POST"]),
        Route("/i/usage/time", goa("usage"), methods=["POST"]),
        Route("/v1/events", batch, methods=["POST"]),
        Route("/healthz", health, methods=["GET"]),
        Route("/readyz", ready, methods=["GET"]),
        Route("/metrics", scrape, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan, middleware=[Middleware(_Counted, metrics=metrics)],
                     exception_handlers={Refused: refused, MongoError: unavailable})


def serve(uri: str, host: str, port: int, limits: Limits = Limits(), usage_compat: bool = True) -> None:
    """Run the collector until SIGINT/SIGTERM, then return (so the caller can clean up)."""
    import signal  # noqa: PLC0415
    import uvicorn  # noqa: PLC0415 - only the collect command needs the server

    store = AnalyticsStore(uri)
    store.ping()
    received: list[int] = []
    # uvicorn stops gracefully on these signals, then restores the handlers it found and raises the
    # signal again; with ours in place that ends here instead of killing the process before cleanup.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    asgi = create_app(store, limits=limits, usage_compat=usage_compat)
    server = uvicorn.Server(uvicorn.Config(asgi, host=host, port=port, log_level="warning", access_log=False,
                                           lifespan="on", server_header=False))
    log.info("collector.listening", host=host, port=port, mongo=uri.split("@")[-1], app_rate=limits.app_rate,
             client_rate=limits.client_rate, usage_compat=usage_compat)
    try:
        server.run()
    finally:
        store.close()
    log.info("collector.stopped", signal=signal.Signals(received[0]).name if received else None)
