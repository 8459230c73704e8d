"""Long-term run history: every final record also goes to MongoDB (``job_runs``) when ``--mongo`` is
given. etcd keeps only a short window per job (see :mod:`etcdcron.leader`).

Writes are best effort and never block or fail a firing: etcd holds the record of truth, MongoDB
the archive. A record is upserted by (job, slot) and never replaces one written under a higher fence.
"""

from __future__ import annotations

import queue
import threading
from datetime import datetime, timezone
from typing import Any, Protocol

import structlog

from .errors import StoreError

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
            return list(self.runs.find(query, {"_id": 0, "expires": 0, "slot_at": 0}).sort("slot", -1).limit(limit))
        except self._pymongo.errors.PyMongoError as exc:
            raise StoreError(f"MongoDB unavailable for run history: {exc}") from exc
