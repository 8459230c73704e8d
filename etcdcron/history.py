"""Long-term run history: every final record also goes to MongoDB (``job_runs``) when ``--mongo`` is
given. etcd keeps only a short window per job (see :mod:`etcdcron.leader`).

Writes are best effort and never block or fail a firing: etcd holds the record of truth, MongoDB
the archive. A record is upserted by (job, slot) and never replaces one written under a higher fence.

Reading is :func:`query_runs` (``etcdcron history`` and ``GET /api/v1/runs``): the etcd window, merged
with the archive when there is one, filtered, newest first by (slot, job), a page at a time behind an
opaque cursor; and :func:`find_run`, one firing's record with its whole stored output.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import queue
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from .claims import ETCD_OUTPUT, Claim
from .errors import InvalidInput, NotFound, StoreError
from .jobs import check_name, parse_instant
from .states import State

if TYPE_CHECKING:
    from .admin import Admin

log = structlog.get_logger("etcdcron.history")

RETENTION_DAYS = 90


class History(Protocol):
    def write(self, job: str, slot: int, record: dict[str, Any]) -> None:
        """Archive one final record; must not raise nor block for long."""

    def flush(self, timeout: float) -> bool:
        """Wait until what was written has been sent."""

    def read(self, job: str | None, limit: int) -> list[dict[str, Any]]:
        """Newest first."""


class NoHistory:
    def write(self, job: str, slot: int, record: dict[str, Any]) -> None:
        return None

    def flush(self, timeout: float = 10.0) -> bool:
        return True

    def read(self, job: str | None, limit: int) -> list[dict[str, Any]]:
        return []


class MongoHistory:
    """``job_runs`` in MongoDB: unique (job, slot), indexed by job and slot, expired by a TTL index."""

    def __init__(self, uri: str, retention_days: int = RETENTION_DAYS, timeout_ms: int = 3000) -> None:
        import pymongo  # noqa: PLC0415 - only nodes with --mongo need it

        self._pymongo = pymongo
        try:
            self.client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms,
                                              socketTimeoutMS=timeout_ms * 3)
            db = self.client.get_default_database(default="etcdcron")
            self.runs = db["job_runs"]
            self.runs.create_index([("job", 1), ("slot", -1)], unique=True, name="job_slot")
            self.runs.create_index([("slot", -1)], name="slot")
            self.runs.create_index("expires", expireAfterSeconds=0, name="ttl")
        except pymongo.errors.PyMongoError as exc:
            raise StoreError(f"MongoDB unavailable for run history: {exc}") from exc
        self.retention = retention_days * 86400
        self._queue: queue.Queue = queue.Queue()
        self._idle = threading.Condition()
        self._pending = 0
        self._thread: threading.Thread | None = None

    def write(self, job: str, slot: int, record: dict[str, Any]) -> None:
        """Queue the record; a writer thread sends what queued up in one bulk write (never blocking
        the completion path that calls this)."""
        doc = {k: v for k, v in record.items() if k != "tries"} | {"job": job, "slot": slot}
        doc["slot_at"] = datetime.fromtimestamp(slot, timezone.utc)
        doc["expires"] = datetime.fromtimestamp(slot + self.retention, timezone.utc)
        doc["fence"] = int(record.get("fence") or 0)
        if "tries" in record:
            doc["tries"] = record["tries"]
        with self._idle:
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._writer, name="history", daemon=True)
                self._thread.start()
        self._queue.put(doc)

    def flush(self, timeout: float = 10.0) -> bool:
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def _writer(self) -> None:
        pymongo = self._pymongo
        while True:
            docs = [self._queue.get()]
            while len(docs) < 500:
                try:
                    docs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            # by _id: a filter on a secondary key plus fence is planned as a scan on some servers
            ops = [pymongo.UpdateOne({"_id": f"{d['job']}|{d['slot']}", "fence": {"$lte": d["fence"]}}, {"$set": d},
                                     upsert=True) for d in docs]
            try:
                self.runs.bulk_write(ops, ordered=False)
            except pymongo.errors.BulkWriteError as exc:
                other = [e for e in exc.details.get("writeErrors", []) if e.get("code") != 11000]
                if other:  # 11000: a record under a higher fence is already there
                    log.warning("history.write_failed", errors=len(other), first=str(other[0])[:200])
            except pymongo.errors.PyMongoError as exc:
                log.warning("history.write_failed", records=len(docs), error=str(exc)[:200])
            with self._idle:
                self._pending -= len(docs)
                self._idle.notify_all()

    def read(self, job: str | None, limit: int) -> list[dict[str, Any]]:
        self.flush()
        query = {"job": job} if job else {}
        try:
            return list(self.runs.find(query, _PROJECTION).sort("slot", -1).limit(limit))
        except self._pymongo.errors.PyMongoError as exc:
            raise StoreError(f"MongoDB unavailable for run history: {exc}") from exc

    def query(self, q: "RunQuery", limit: int) -> list[dict[str, Any]]:
        """At most ``limit`` records matching ``q``, newest first by (slot, job)."""
        self.flush()
        try:
            return list(self.runs.find(q.mongo_filter(), _PROJECTION).sort([("slot", -1), ("job", -1)]).limit(limit))
        except self._pymongo.errors.PyMongoError as exc:
            raise StoreError(f"MongoDB unavailable for run history: {exc}") from exc

    def get(self, job: str, slot: int) -> dict[str, Any] | None:
        """The archived record of one firing, or None."""
        self.flush()
        try:
            return self.runs.find_one({"_id": f"{job}|{slot}"}, _PROJECTION)
        except self._pymongo.errors.PyMongoError as exc:
            raise StoreError(f"MongoDB unavailable for run history: {exc}") from exc

    def close(self) -> None:
        self.client.close()


_PROJECTION = {"_id": 0, "expires": 0, "slot_at": 0}
MAX_LIMIT = 1000  # runs per page of the API


@dataclass(frozen=True)
class RunQuery:
    """Which runs to read: every filter optional, ``since``/``until`` bound the slot (inclusive),
    ``after`` is where the previous page ended (exclusive; from :meth:`of`'s ``cursor``)."""

    job: str | None = None
    states: frozenset[str] = frozenset()
    node: str | None = None
    since: float | None = None
    until: float | None = None
    limit: int = 50
    after: tuple[int, str] | None = None

    @classmethod
    def of(cls, job: str | None = None, state: str | None = None, node: str | None = None,
           since: str | None = None, until: str | None = None, limit: int = 50,
           cursor: str | None = None) -> "RunQuery":
        """A query from user input (flags or query parameters); InvalidInput names the bad one."""
        if job:
            check_name(job)
        states = frozenset(s.strip() for s in (state or "").split(",") if s.strip())
        unknown = sorted(states - set(State))
        if unknown:
            raise InvalidInput(f"bad state {unknown[0]!r}: must be one of {', '.join(State)}")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise InvalidInput(f"bad limit {limit!r}: must be at least 1")
        lo = parse_instant(since, "since") if since else None
        hi = parse_instant(until, "until") if until else None
        for name, t in (("since", lo), ("until", hi)):
            if t is not None and not math.isfinite(t):
                raise InvalidInput(f"bad {name} {t!r}: must be ISO-8601 (2026-11-27T15:00:00Z) or Unix seconds")
        return cls(job or None, states, node or None, lo, hi, limit, decode_cursor(cursor) if cursor else None)

    def matches(self, job: str, slot: int, state: str, node: str | None) -> bool:
        return ((self.job is None or job == self.job) and (not self.states or state in self.states)
                and (self.node is None or node == self.node)
                and (self.since is None or slot >= self.since) and (self.until is None or slot <= self.until)
                and (self.after is None or (slot, job) < self.after))

    def mongo_filter(self) -> dict[str, Any]:
        f: dict[str, Any] = {}
        if self.job:
            f["job"] = self.job
        if self.states:
            f["state"] = {"$in": sorted(self.states)}
        if self.node:
            f["node"] = self.node
        slot: dict[str, Any] = {}
        if self.since is not None:
            slot["$gte"] = math.ceil(self.since)
        if self.until is not None:
            slot["$lte"] = math.floor(self.until)
        if slot:
            f["slot"] = slot
        if self.after is not None:
            s, j = self.after
            f["$or"] = [{"slot": {"$lt": s}}, {"slot": s, "job": {"$lt": j}}]
        return f


def encode_cursor(slot: int, job: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([slot, job], separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(text: str) -> tuple[int, str]:
    try:
        slot, job = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if isinstance(slot, int) and not isinstance(slot, bool) and isinstance(job, str):
            return slot, job
    except (ValueError, TypeError, binascii.Error):
        pass
    raise InvalidInput(f"bad cursor {text[:40]!r}: pass back the next_cursor of the previous page")


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_row(job: str, slot: int, record: dict[str, Any], output: int | None = ETCD_OUTPUT) -> dict[str, Any]:
    """One firing as the history shows it; ``output`` keeps that many characters of its tail (None: all)."""
    started, ended, state = record.get("started"), record.get("ended"), record.get("state")
    out = record.get("output")
    if out and output is not None:
        out = out[-output:]
    return {"job": job, "slot": slot, "slot_utc": _iso(slot), "state": None if state is None else str(state),
            "node": record.get("node"), "fence": int(record.get("fence") or 0), "attempt": int(record.get("attempt") or 0),
            "started": started, "ended": ended,
            "duration": round(ended - started, 3) if started is not None and ended is not None else None,
            "exit_code": record.get("exit_code"), "reason": record.get("reason") or record.get("killed_by"),
            "killed_by": record.get("killed_by"), "recorded_by": record.get("recorded_by"), "output": out}


def _record(c: Claim) -> dict[str, Any]:
    return {**c.data, "state": c.state, "fence": c.fence, "attempt": c.attempt}


@dataclass(frozen=True)
class RunPage:
    runs: list[dict[str, Any]]
    next_cursor: str | None  # None: this is the last page
    source: str  # "etcd" (the recent window) or "mongo" (the archive, merged with the window)


def query_runs(admin: "Admin", q: RunQuery, archive: MongoHistory | None = None) -> RunPage:
    """A page of the run history, newest first by (slot, job). From the etcd window, and with an
    archive also from MongoDB: a firing in both is shown under its higher fence (the archive's copy
    when equal: its output tail is longer), so runs still going, which only etcd has, show too."""
    rows: dict[tuple[int, str], dict[str, Any]] = {}
    if archive is not None:
        for r in archive.query(q, q.limit + 1):
            rows[(r["slot"], r["job"])] = r
    for c in admin.history(q.job, None):
        rec = _record(c)
        if not q.matches(c.job, c.slot, str(c.state), c.node):
            continue
        old = rows.get((c.slot, c.job))
        if old is None or int(old.get("fence") or 0) < c.fence:
            rows[(c.slot, c.job)] = rec | {"job": c.job, "slot": c.slot}
    ordered = sorted(rows.items(), key=lambda kv: kv[0], reverse=True)
    page = ordered[:q.limit]
    more = len(ordered) > q.limit
    return RunPage([run_row(j, s, r) for (s, j), r in page], encode_cursor(*page[-1][0]) if more and page else None,
                   "etcd" if archive is None else "mongo")


def find_run(admin: "Admin", job: str, slot: int, archive: MongoHistory | None = None) -> dict[str, Any]:
    """One firing's record with its whole stored output (and ``tries`` when it was retried), from
    etcd or the archive, whichever holds the higher fence; NotFound when neither has it."""
    check_name(job)
    kv = admin.store.get(admin.keys.claim(job, slot))
    found = _record(Claim.parse(job, slot, kv.value, kv.mod_revision)) if kv else None
    archived = archive.get(job, slot) if archive is not None else None
    if archived is not None and (found is None or int(archived.get("fence") or 0) >= found["fence"]):
        found = archived
    if found is None:
        raise NotFound(f"no record of job {job!r} at slot {slot} ({_iso(slot)})")
    row = run_row(job, slot, found, output=None)
    if found.get("tries"):
        row["tries"] = found["tries"]
    return row
