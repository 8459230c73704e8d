"""The MongoDB adapter of the analytics package: collections, indexes, the fenced write, error mapping.

Every derived document has a string ``_id`` built from its natural key (``app|day|dev``) and a
``fence``: the fencing token of the run that wrote it. :meth:`AnalyticsStore.fenced_set` writes with
``$set`` only where the stored fence is not higher, so a run that was fenced out (a paused node waking
up, a stale retry) can never overwrite what a newer run wrote. The ``_id`` keys also keep every write
a primary-key lookup, which matters on servers whose planner would otherwise scan the collection.

Collections (DESIGN §6): ``apps``, ``events`` (raw; ``_id`` is the app-scoped event id), ``event_days``
(which days an app has events for), ``device_day``, ``devices``, ``daily_metrics`` (rollup),
``active_users``, ``usage``, ``retention`` (one job owns each), ``job_state`` (per job and app: the
highest fence seen and the job's watermark).
"""

from __future__ import annotations

import threading
import uuid
from contextlib import contextmanager
from typing import Any, Iterable, Iterator

import pymongo
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, ConnectionFailure, DuplicateKeyError, PyMongoError, ServerSelectionTimeoutError

from etcdcron.errors import ConcurrentChange

from .errors import AppExists, AppNotFound, MongoError, MongoUnavailable
from .events import App

DEFAULT_URI = "mongodb://127.0.0.1:27017"
DEFAULT_DB = "etcdcron"
CHUNK = 1000
ID_CHUNK = 50  # ids per $in read: larger lists get slower per id on some servers

INDEXES: dict[str, list[tuple[list[tuple[str, int]], dict]]] = {
    "apps": [([("name", 1)], {"unique": True})],
    "events": [([("app", 1), ("day", 1)], {})],
    "event_days": [([("app", 1), ("day", 1)], {})],
    # device_day is read by day through its _id range (app|day|…); this index serves the returns count.
    "device_day": [([("app", 1), ("prev", 1), ("day", 1)], {})],
    "daily_metrics": [([("app", 1), ("day", 1)], {})],
    "active_users": [([("app", 1), ("day", 1)], {})],
    "usage": [([("app", 1), ("day", 1)], {})],
    "retention": [([("app", 1), ("cohort", 1)], {})],
    "active_retention": [([("app", 1), ("cohort", 1)], {})],
    "breakdowns": [([("app", 1), ("day", 1)], {})],
    "custom": [([("app", 1), ("day", 1)], {})],
    "rebuilds": [([("app", 1)], {})],
}

_indexed: set[str] = set()
_indexed_lock = threading.Lock()


def _first_line(exc: BaseException) -> str:
    if isinstance(exc, BulkWriteError) and exc.details.get("writeErrors"):
        return str(exc.details["writeErrors"][0].get("errmsg", exc))[:200]
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    for noise in (" (configured timeouts", ", Timeout:", ", full error:"):
        line = line.split(noise)[0]  # pymongo appends its whole topology description
    return line[:200]


@contextmanager
def mapped(what: str) -> Iterator[None]:
    """Re-raise pymongo errors as ours, naming the operation."""
    try:
        yield
    except (ServerSelectionTimeoutError, ConnectionFailure) as exc:
        raise MongoUnavailable(f"MongoDB unavailable during {what}: {_first_line(exc)}") from exc
    except PyMongoError as exc:
        raise MongoError(f"MongoDB {what} failed: {_first_line(exc)}") from exc


class AnalyticsStore:
    """One MongoDB database (the URI's path, default ``etcdcron``)."""

    def __init__(self, uri: str = DEFAULT_URI, timeout: float = 5.0) -> None:
        self.uri = uri
        ms = int(timeout * 1000)
        with mapped("connect"):
            self.client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, socketTimeoutMS=max(ms, 60_000),
                                              tz_aware=False, appname="etcdcron-analytics")
            self.db = self.client.get_default_database(DEFAULT_DB)
        self.ensure_indexes()

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "AnalyticsStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def ensure_indexes(self) -> None:
        key = f"{self.uri}"
        with _indexed_lock:
            if key in _indexed:
                return
        with mapped("index creation"):
            for coll, specs in INDEXES.items():
                for keys, opts in specs:
                    self.db[coll].create_index(keys, **opts)
        with _indexed_lock:
            _indexed.add(key)

    def ping(self, timeout: float | None = None) -> None:
        """Ask the server for an answer; within ``timeout`` seconds if given (else the client's timeouts)."""
        with mapped("ping"), pymongo.timeout(timeout):
            self.client.admin.command("ping")

    # --- apps
    def create_app(self, app: App) -> App:
        try:
            with mapped("app creation"):
                self.db.apps.insert_one(app.doc())
        except MongoError as exc:
            if isinstance(exc.__cause__, DuplicateKeyError):
                raise AppExists(f"app {app.name!r} exists already") from None
            raise
        return app

    def find_app(self, ref: str) -> App | None:
        """The app whose id or name is ``ref``."""
        with mapped("app lookup"):
            doc = self.db.apps.find_one({"_id": ref}) or self.db.apps.find_one({"name": ref})
        return App.from_doc(doc) if doc else None

    def app(self, ref: str) -> App:
        found = self.find_app(ref)
        if found is None:
            raise AppNotFound(f"unknown app {ref!r}")
        return found

    def apps(self) -> list[App]:
        with mapped("app listing"):
            return [App.from_doc(d) for d in self.db.apps.find().sort("name", 1)]

    def update_app(self, app_id: str, fields: dict[str, Any], unset: tuple[str, ...] = (),
                   rev: int | None = None) -> App:
        """``$set`` settings of an app (validated by the caller); returns the app as stored now. Every
        update counts the document's ``rev`` up; with ``rev`` (as read by :meth:`app_with_rev`) the update
        applies only if nothing changed the app since (else ConcurrentChange, nothing written)."""
        update: dict[str, Any] = {"$set": fields, "$inc": {"rev": 1}}
        if unset:
            update["$unset"] = {k: "" for k in unset}
        query: dict[str, Any] = {"_id": app_id}
        if rev is not None:
            query["rev"] = rev if rev else {"$in": [0, None]}
        with mapped("app update"):
            doc = self.db.apps.find_one_and_update(query, update, return_document=pymongo.ReturnDocument.AFTER)
        if doc is None:
            if rev is not None and self.find_app(app_id) is not None:
                raise ConcurrentChange(f"app {app_id!r} changed while this command ran: nothing written, run it again")
            raise AppNotFound(f"unknown app {app_id!r}")
        return App.from_doc(doc)

    def app_with_rev(self, ref: str) -> tuple[App, int]:
        """The app (by id or name) and how many times its settings were updated, from one read (for
        :meth:`update_app`'s ``rev``)."""
        with mapped("app lookup"):
            doc = self.db.apps.find_one({"_id": ref}) or self.db.apps.find_one({"name": ref})
        if doc is None:
            raise AppNotFound(f"unknown app {ref!r}")
        return App.from_doc(doc), int(doc.get("rev") or 0)

    # --- rebuilds: days that were final and got new events (an import) are rolled up again
    def mark_rebuild(self, app_id: str, day: str) -> str:
        """Ask the next rollup to rebuild ``day`` and every later day (and the jobs after it to follow);
        returns the request's id."""
        request = f"{app_id}|{uuid.uuid4().hex}"
        with mapped("rebuild request"):
            self.db.rebuilds.insert_one({"_id": request, "app": app_id, "day": day})
        return request

    def rebuilds(self, app_id: str) -> list[tuple[str, str]]:
        """Pending rebuild requests of an app: (request id, first day)."""
        with mapped("rebuild read"):
            return [(d["_id"], d["day"]) for d in self.db.rebuilds.find({"app": app_id})]

    def clear_rebuilds(self, ids: list[str]) -> None:
        if ids:
            with mapped("rebuild clear"):
                self.db.rebuilds.delete_many({"_id": {"$in": ids}})

    def purged_before(self, app_id: str) -> str | None:
        """The day before which the purge job deleted this app's raw events (None: nothing purged)."""
        return self.state("purge", app_id).get("before")

    # --- raw events
    def insert_events(self, docs: list[dict[str, Any]]) -> set[int]:
        """Insert event documents; returns the indexes of those already stored (same event id)."""
        if not docs:
            return set()
        dups: set[int] = set()
        with mapped("event insert"):
            try:
                self.db.events.insert_many(docs, ordered=False)
            except BulkWriteError as exc:
                for err in exc.details.get("writeErrors", []):
                    if err.get("code") != 11000:
                        raise
                    dups.add(err["index"])
            days = {(d["app"], d["day"]) for d in docs}
            self.db.event_days.bulk_write([UpdateOne({"_id": f"{a}|{d}"}, {"$set": {"app": a, "day": d}}, upsert=True)
                                           for a, d in sorted(days)], ordered=False)
        return dups

    def first_event_day(self, app: str) -> str | None:
        with mapped("event day lookup"):
            days = [d["day"] for d in self.db.event_days.find({"app": app}, {"day": 1})]
        return min(days) if days else None

    def device_totals(self, app: str, day: str) -> dict[str, tuple[int, int]]:
        """Per device active on ``day``: (openApp events, usage milliseconds)."""
        pipeline = [
            {"$match": {"app": app, "day": day}},
            {"$group": {"_id": "$dev",
                        "opens": {"$sum": {"$cond": [{"$eq": ["$type", "open"]}, 1, 0]}},
                        "ms": {"$sum": {"$round": [{"$multiply": ["$sec", 1000]}, 0]}}}},
        ]
        with mapped("event aggregation"):
            return {r["_id"]: (int(r["opens"]), int(r["ms"])) for r in self.db.events.aggregate(pipeline)}

    def day_events(self, app: str, day: str) -> list[dict[str, Any]]:
        """The raw events of a local day, with the fields the rollup reads."""
        fields = {"dev": 1, "type": 1, "ts": 1, "sec": 1, "ch": 1, "pf": 1, "ver": 1, "uid": 1, "name": 1, "amt": 1, "slot": 1}
        with mapped("event read"):
            return list(self.db.events.find({"app": app, "day": day}, fields))

    def purge_events(self, app: str, before: str) -> int:
        with mapped("event purge"):
            return self.db.events.delete_many({"app": app, "day": {"$lt": before}}).deleted_count

    def count_events(self, app: str) -> int:
        with mapped("event count"):
            return self.db.events.count_documents({"app": app})

    # --- fenced writes
    def fenced_set(self, coll: str, rows: Iterable[tuple[str, dict[str, Any]]], fence: int,
                   insert_first: bool = False) -> tuple[int, int]:
        """``$set`` each row's fields on the document ``_id`` unless it carries a higher fence.

        Returns (written, refused). An upsert that finds no document it may change tries an insert;
        a duplicate key then means either a higher fence holds the document (refused) or another
        writer created it just now, so the write is tried once more before it counts as refused.
        With ``insert_first`` (rows expected to be new, flat fields only) the rows are first inserted
        in bulk, which is far cheaper, and only those already there take the guarded path.
        """
        rows = list(rows)
        if insert_first and rows:
            taken = self._insert(coll, [{"_id": _id, **fields, "fence": fence} for _id, fields in rows])
            inserted = len(rows) - len(taken)
            rows = [rows[i] for i in sorted(taken)]
        else:
            inserted = 0
        ops = [UpdateOne({"_id": _id, "fence": {"$lte": fence}}, {"$set": {**fields, "fence": fence}}, upsert=True)
               for _id, fields in rows]
        written = refused = 0
        for i in range(0, len(ops), CHUNK):
            pending = ops[i:i + CHUNK]
            for _attempt in range(2):
                failed = self._bulk(coll, pending)
                written += len(pending) - len(failed)
                pending = [pending[j] for j in failed]
                if not pending:
                    break
            refused += len(pending)
        return inserted + written, refused

    def _insert(self, coll: str, docs: list[dict[str, Any]]) -> set[int]:
        """Insert ``docs``; the indexes of those whose ``_id`` exists already."""
        taken: set[int] = set()
        with mapped(f"{coll} insert"):
            for i in range(0, len(docs), CHUNK):
                try:
                    self.db[coll].insert_many(docs[i:i + CHUNK], ordered=False)
                except BulkWriteError as exc:
                    errors = exc.details.get("writeErrors", [])
                    if any(e.get("code") != 11000 for e in errors):
                        raise
                    taken.update(i + e["index"] for e in errors)
        return taken

    def _bulk(self, coll: str, ops: list[UpdateOne]) -> list[int]:
        with mapped(f"{coll} write"):
            try:
                self.db[coll].bulk_write(ops, ordered=False)
                return []
            except BulkWriteError as exc:
                errors = exc.details.get("writeErrors", [])
                if any(e.get("code") != 11000 for e in errors):
                    raise
                return sorted(e["index"] for e in errors)

    def claim(self, kind: str, app: str, fence: int) -> bool:
        """Raise the (job kind, app) fence to ``fence``; False when a newer run holds it already."""
        written, _ = self.fenced_set("job_state", [(f"{kind}|{app}", {"kind": kind, "app": app})], fence)
        return written == 1

    def state(self, kind: str, app: str) -> dict[str, Any]:
        with mapped("job state read"):
            return self.db.job_state.find_one({"_id": f"{kind}|{app}"}) or {}

    def set_state(self, kind: str, app: str, fence: int, **fields: Any) -> bool:
        written, _ = self.fenced_set("job_state", [(f"{kind}|{app}", fields)], fence)
        return written == 1

    # --- reads of derived data
    def by_ids(self, coll: str, ids: list[str], projection: dict | None = None) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        with mapped(f"{coll} read"):
            for i in range(0, len(ids), ID_CHUNK):
                for doc in self.db[coll].find({"_id": {"$in": ids[i:i + ID_CHUNK]}}, projection):
                    out[doc["_id"]] = doc
        return out

    def day_docs(self, coll: str, app: str, day: str, projection: dict | None = None) -> list[dict[str, Any]]:
        """The documents keyed ``app|day|…`` (device_day): a range of the primary key."""
        prefix = f"{app}|{day}|"
        with mapped(f"{coll} read"):
            return list(self.db[coll].find({"_id": {"$gte": prefix, "$lt": prefix[:-1] + "}"}}, projection))

    def one(self, coll: str, _id: str) -> dict[str, Any] | None:
        with mapped(f"{coll} read"):
            return self.db[coll].find_one({"_id": _id})

    def ids(self, coll: str, query: dict[str, Any]) -> list[str]:
        with mapped(f"{coll} read"):
            return [d["_id"] for d in self.db[coll].find(query, {"_id": 1})]

    def count(self, coll: str, query: dict[str, Any]) -> int:
        with mapped(f"{coll} count"):
            return self.db[coll].count_documents(query)

    def range(self, coll: str, app: str, field: str, first: str, last: str) -> list[dict[str, Any]]:
        with mapped(f"{coll} read"):
            return list(self.db[coll].find({"app": app, field: {"$gte": first, "$lte": last}}).sort(field, 1))
