"""The collector: an ASGI app (Starlette, served by uvicorn) that takes client events into ``events``.

Routes: ``POST /i/user/open_app`` and ``POST /i/usage/time`` (the GoAnalytics client API),
``POST /v1/events`` (batches), and for operators ``GET /healthz`` (liveness: the process answers),
``GET /readyz`` (503 while MongoDB does not answer a ping within a second) and ``GET /metrics``
(Prometheus text: requests by route and status, events stored, insert batch sizes and latency; see
docs/metrics.md). Checks run cheapest first: body size (413), app
(404), signature (401), shape (400), timestamps (422); any refusal answers ``{"error": reason}`` and
stores nothing of the request.

Writes are batched by group commit: each accepted request hands its documents to the
:class:`BatchWriter` and waits; the writer inserts everything that queued up while the previous
insert was running in one ``insert_many``. A request is answered once its events are stored, so a
2xx means stored (or stored before: a repeated event id counts as a duplicate and is not stored again).
"""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from typing import Any, Callable

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from etcdcron.metrics import CollectorMetrics

from .errors import MongoError, Refused
from .events import (MAX_BATCH_BYTES, MAX_SMALL_BODY, App, admit, batch_events, batch_sign, goa_event, goa_sign, verify)
from .store import AnalyticsStore

log = structlog.get_logger("analytics.collector")

APP_TTL = 30.0  # seconds an app (and its key) is cached
MISS_TTL = 1.0  # seconds an unknown app id is remembered as unknown
READY_TIMEOUT = 1.0  # seconds /readyz waits for MongoDB's answer (probes time out after about that)


class AppCache:
    """Apps by id, read from MongoDB at most every APP_TTL seconds each."""

    def __init__(self, store: AnalyticsStore, clock: Callable[[], float] = time.monotonic) -> None:
        self.store, self.clock = store, clock
        self.entries: dict[str, tuple[App | None, float]] = {}

    async def get(self, app_id: str | None) -> App:
        if not app_id:
            raise Refused(404, "unknown app: no appId given")
        hit = self.entries.get(app_id)
        now = self.clock()
        if hit is None or now >= hit[1]:
            found = await asyncio.to_thread(self.store.find_app, app_id)
            if found is not None and found.id != app_id:
                found = None  # the collector takes ids only, not names
            hit = (found, now + (APP_TTL if found else MISS_TTL))
            if len(self.entries) > 10_000:
                self.entries.clear()
            self.entries[app_id] = hit
        if hit[0] is None:
            raise Refused(404, f"unknown app {app_id[:64]!r}")
        return hit[0]


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
               metrics: CollectorMetrics | None = None) -> Starlette:
    """The collector as an ASGI app over ``store``; ``clock`` gives "now" for the timestamp checks;
    ``metrics`` (a new registry when not given) is what ``/metrics`` serves."""
    apps = AppCache(store)
    metrics = metrics or CollectorMetrics()
    state: dict[str, BatchWriter] = {}

    async def submit(docs: list[dict[str, Any]]) -> tuple[int, int]:
        return await state["writer"].submit(docs)

    def goa(kind: str):
        async def endpoint(request: Request) -> JSONResponse:
            body = await _body(request, MAX_SMALL_BODY)
            params = dict(request.query_params)
            app = await apps.get(params.get("appId"))
            verify(goa_sign(params, app.key), params.get("sign"))
            docs, repeats = admit(app, [goa_event(kind, params, body)], clock())
            stored, dups = await submit(docs)
            return JSONResponse({"ok": True, "stored": stored, "duplicates": dups + repeats})
        return endpoint

    async def batch(request: Request) -> JSONResponse:
        body = await _body(request, MAX_BATCH_BYTES)
        app = await apps.get(request.query_params.get("appId"))
        verify(batch_sign(body, app.key), request.query_params.get("sign"))
        events = batch_events(body, app)
        docs, repeats = admit(app, events, clock())
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
        log.info("collector.refused", path=request.url.path, status=exc.status, reason=exc.reason)
        return JSONResponse({"error": exc.reason}, status_code=exc.status)

    async def unavailable(request: Request, exc: MongoError) -> JSONResponse:
        log.error("collector.store_failed", path=request.url.path, error=str(exc))
        return JSONResponse({"error": "storage unavailable, retry later"}, status_code=503)

    @asynccontextmanager
    async def lifespan(_app: Starlette):
        writer = state["writer"] = BatchWriter(store.insert_events, metrics=metrics)
        task = asyncio.create_task(writer.run())
        try:
            yield
        finally:
            await writer.close()
            await task

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


def serve(uri: str, host: str, port: int) -> None:
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
    server = uvicorn.Server(uvicorn.Config(create_app(store), host=host, port=port, log_level="warning",
                                           access_log=False, lifespan="on", server_header=False))
    log.info("collector.listening", host=host, port=port, mongo=uri.split("@")[-1])
    try:
        server.run()
    finally:
        store.close()
    log.info("collector.stopped", signal=signal.Signals(received[0]).name if received else None)
