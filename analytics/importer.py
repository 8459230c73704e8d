"""`etcdcron analytics import FILE --app APP`: bring an app's past events in (issue 12).

Every row passes the collector's own checks (:func:`analytics.events.parse_event`, custom events
against the app's declared counters; GoAnalytics rows through :func:`analytics.events.goa_event`)
and its future-timestamp rule. Unlike the collector an import takes days of any age, since history
is the point — but not days whose raw events the purge job deleted: rebuilding such a day from the
imported events alone would replace its metrics with those of partial data.

A file is all or nothing unless ``--skip-bad``: it is read twice, once to check every row (nothing is
stored when one is bad) and once to store, so a multi-million-line file never sits in memory; rows go
to the store in chunks of :data:`CHUNK`. Events keep their ids (``_id = <app>:<event id>``), so a
rerun of the same file, or of a file that died half-way, stores nothing twice. Once stored, one
rebuild request names the earliest day that got new events: the rollup rolls that day and every
later one up again, and the jobs after it follow.

Formats (documented for users in docs/analytics.md):

* ``ndjson`` — one event a line in the batch shape of ``POST /v1/events``; blank lines are skipped.
* ``csv`` — a header naming some of :data:`CSV_COLUMNS` (``id,type,deviceId,ts`` required), one event
  a row; an empty cell is an absent field; ``ts``, ``seconds`` and ``amount`` are read as JSON numbers.
* ``goanalytics`` — GoAnalytics' ``openAppData`` collection as ``mongoexport`` writes it (one document
  a line); each document is an open, identified like a request of the collector's GoAnalytics route.

A name ending in ``.gz`` is read through gzip.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
import sys
import time
import zlib
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Annotated, Any, Callable, ContextManager, Iterator, Optional

import typer

from etcdcron.cliopts import configured
from etcdcron.config import Config
from etcdcron.errors import InvalidInput

from .cli import AppRef, Json, _out, _store
from .days import day_of
from .errors import Refused
from .events import App, Event, check_future, goa_event, parse_event

FORMATS = ("ndjson", "csv", "goanalytics")
EXTENSIONS = {".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "ndjson", ".csv": "csv"}
CSV_COLUMNS = ("id", "type", "deviceId", "ts", "seconds", "channel", "platform", "version", "userId", "name", "amount", "slot")
CSV_REQUIRED = ("id", "type", "deviceId", "ts")
CSV_NUMBERS = ("ts", "seconds", "amount")
JSON_NUMBER = re.compile(r"-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?")
CHUNK = 5000  # events per insert, and rows between progress updates
MAX_LINE = 64 * 1024  # bytes of one NDJSON line (an event is well under 1 KiB)
SHOWN = 20  # bad rows listed (with their line numbers) besides their count


class BadRows(InvalidInput):
    """A file with bad rows, imported without ``--skip-bad``: nothing was stored. ``summary`` has the
    counts and the first bad rows."""

    def __init__(self, message: str, summary: dict[str, Any]) -> None:
        super().__init__(message)
        self.summary = summary


@dataclass
class Tally:
    """What one pass over a file saw."""

    read: int = 0
    bad: int = 0
    bad_rows: list[dict[str, Any]] = field(default_factory=list)
    first: str | None = None
    last: str | None = None

    def good(self, day: str) -> None:
        self.first = day if self.first is None else min(self.first, day)
        self.last = day if self.last is None else max(self.last, day)

    def refuse(self, line: int, reason: str) -> None:
        self.bad += 1
        if len(self.bad_rows) < SHOWN:
            self.bad_rows.append({"line": line, "reason": reason})


class _NoBar:
    def update(self, n: int) -> None:
        pass


Progress = Callable[[str], ContextManager[Any]]  # label -> a context whose value has update(bytes)


def _no_progress(label: str) -> ContextManager[Any]:
    return nullcontext(_NoBar())


# --- reading

def file_format(path: Path, given: str | None) -> str:
    """``--format``, or the one the file's extension names (``.gz`` looked through)."""
    if given is not None:
        if given not in FORMATS:
            raise InvalidInput(f"bad --format {given!r}: must be {', '.join(FORMATS)}")
        return given
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    found = EXTENSIONS.get(suffixes[-1]) if suffixes else None
    if found is None:
        raise InvalidInput(f"cannot tell the format of {path.name} from its extension: give --format {'|'.join(FORMATS)}")
    return found


def file_size(path: Path) -> int:
    try:
        if not path.is_file():
            raise InvalidInput(f"cannot read {path}: not a file")
        return path.stat().st_size
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None


@contextmanager
def _opened(path: Path) -> Iterator[tuple[IO[bytes], IO[bytes]]]:
    """(the file on disk, for the progress in bytes; the stream of its content)."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        if path.suffix.lower() == ".gz":
            with gzip.GzipFile(fileobj=raw) as stream:
                yield raw, stream  # type: ignore[misc]
        else:
            yield raw, raw
    except (OSError, EOFError, zlib.error) as exc:  # a truncated or corrupt .gz
        raise InvalidInput(f"cannot read {path}: {exc}") from None
    finally:
        raw.close()


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, bytes | None]]:
    """(line number, line) of each non-blank line; None for a line over MAX_LINE (skipped unread)."""
    number = 0
    while True:
        line = stream.readline(MAX_LINE + 1)
        if not line:
            return
        number += 1
        if len(line) > MAX_LINE and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):
                line = stream.readline(1 << 16)
            yield number, None
        elif line.strip():
            yield number, line


def _json_records(stream: IO[bytes]) -> Iterator[tuple[int, Any]]:
    """(line number, the line's JSON value, or a Refused)."""
    for number, line in _lines(stream):
        if line is None:
            yield number, Refused(400, f"line longer than {MAX_LINE} bytes")
            continue
        try:
            yield number, json.loads(line)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            yield number, Refused(400, "not JSON")


def _csv_records(stream: IO[bytes], path: Path) -> Iterator[tuple[int, Any]]:
    """(line number where the row starts, the row as a batch-shaped dict, or a Refused)."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")
    try:
        yield from _csv_rows(csv.reader(text), path)
    finally:
        text.detach()  # else closing the wrapper closes the file under it


def _csv_rows(rows: Any, path: Path) -> Iterator[tuple[int, Any]]:
    try:
        header = next(rows, None)
    except csv.Error as exc:
        raise InvalidInput(f"{path.name}: bad CSV header: {exc}") from None
    if header is None:
        raise InvalidInput(f"{path.name}: no CSV header (expected columns from {','.join(CSV_COLUMNS)})")
    header = [h.strip() for h in header]
    unknown = [h for h in header if h not in CSV_COLUMNS]
    missing = [h for h in CSV_REQUIRED if h not in header]
    if unknown or missing or len(set(header)) != len(header):
        what = (f"unknown column {unknown[0]!r}" if unknown else f"no column {missing[0]!r}" if missing
                else "a column named twice")
        raise InvalidInput(f"{path.name}: bad CSV header: {what} (columns: {','.join(CSV_COLUMNS)}; "
                           f"{','.join(CSV_REQUIRED)} required)")
    end = rows.line_num
    while True:
        start = end + 1
        try:
            row = next(rows)
        except StopIteration:
            return
        except csv.Error as exc:
            end = rows.line_num
            yield start, Refused(400, f"bad CSV: {exc}")
            continue
        end = rows.line_num
        if not any(cell.strip() for cell in row):
            continue
        if len(row) > len(header):
            yield start, Refused(400, f"{len(row)} cells, the header has {len(header)}")
            continue
        item: dict[str, Any] = {}
        for name, cell in zip(header, row):
            if cell == "":
                continue
            item[name] = json.loads(cell) if name in CSV_NUMBERS and JSON_NUMBER.fullmatch(cell) else cell
        yield start, item


def goanalytics_event(doc: Any) -> Event:
    """A GoAnalytics ``openAppData`` document (``mongoexport`` JSON, relaxed or canonical) as the
    open the collector's GoAnalytics route would have stored for the same request."""
    if not isinstance(doc, dict):
        raise Refused(400, "not an object")
    ts = doc.get("timestamp")
    if isinstance(ts, dict) and len(ts) == 1 and next(iter(ts)) in ("$numberLong", "$numberInt"):
        ts = next(iter(ts.values()))
    if isinstance(ts, float) and ts.is_integer():
        ts = int(ts)
    if isinstance(ts, int) and not isinstance(ts, bool):
        ts = str(ts)
    if not isinstance(ts, str):
        raise Refused(400, f"bad timestamp {str(ts)[:40]!r}: must be Unix seconds")
    params = {"timestamp": ts}
    for key in ("deviceId", "channel", "platform", "version", "userId"):
        value = doc.get(key)
        params[key] = value if isinstance(value, str) or value is None else repr(value)  # refused as a bad field
    return goa_event("open", params, b"")


# --- checking

def check_time(event: Event, app: App, now: float, purged_before: str | None) -> str:
    """The event's day; refuses a timestamp more than MAX_FUTURE ahead of ``now`` (the collector's
    rule) and a day whose raw events were purged. Past days are otherwise taken: that is history."""
    check_future(event, now)
    day = day_of(event.ts, app.tz)
    if purged_before is not None and day < purged_before:
        raise Refused(422, f"day {day} ({app.tz}) is before {purged_before}, where the purge job deleted the app's raw "
                           "events: importing it would rebuild that day from partial data")
    return day


def scan(path: Path, fmt: str, app: App, now: float, purged_before: str | None,
         update: Callable[[int], None]) -> Iterator[tuple[int, Event | str, str]]:
    """(line number, event or the reason it is refused, its day or "") for every row of the file;
    ``update`` gets the bytes read since its last call, every CHUNK rows and at the end."""
    with _opened(path) as (raw, stream):
        records = _csv_records(stream, path) if fmt == "csv" else _json_records(stream)
        seen = done = 0
        for number, record in records:
            seen += 1
            try:
                if isinstance(record, Refused):
                    raise record
                event = goanalytics_event(record) if fmt == "goanalytics" else parse_event(record, app)
                day = check_time(event, app, now, purged_before)
            except Refused as exc:
                yield number, exc.reason, ""
            else:
                yield number, event, day
            if seen % CHUNK == 0:
                update(raw.tell() - done)
                done = raw.tell()
        update(raw.tell() - done)


# --- importing

def import_file(store, app: App, path: Path, fmt: str, skip_bad: bool = False, now: float | None = None,
                progress: Progress = _no_progress) -> dict[str, Any]:
    """Check and store the events of ``path`` (see the module docstring); returns the summary.
    Raises BadRows (nothing stored) when a row is bad and ``skip_bad`` is false."""
    now = time.time() if now is None else now
    purged = store.purged_before(app.id)
    if not skip_bad:
        tally = Tally()
        with progress(f"checking {path.name}") as bar:
            for number, event, day in scan(path, fmt, app, now, purged, bar.update):
                tally.read += 1
                if isinstance(event, str):
                    tally.refuse(number, event)
                else:
                    tally.good(day)
        if tally.bad:
            summary = _summary(app, path, fmt, tally, 0, 0, None)
            shown = "; ".join(f"line {b['line']}: {b['reason']}" for b in tally.bad_rows[:3])
            more = f"; and {tally.bad - 3} more" if tally.bad > 3 else ""
            raise BadRows(f"{path.name}: {tally.bad} of {tally.read} rows are bad, nothing stored "
                          f"(--skip-bad stores the good ones): {shown}{more}", summary)
    return _store_pass(store, app, path, fmt, skip_bad, now, purged, progress)


def _store_pass(store, app: App, path: Path, fmt: str, skip_bad: bool, now: float, purged: str | None,
                progress: Progress) -> dict[str, Any]:
    tally = Tally()
    stored = duplicates = 0
    rebuild_from: str | None = None  # the earliest day that got events
    filed: list[str] = []  # rebuild requests this import filed, each for an earlier day than the last
    docs: list[dict[str, Any]] = []

    def flush() -> None:
        nonlocal stored, duplicates, rebuild_from
        if not docs:
            return
        # The request goes in before the events: an insert that fails after MongoDB applied it, or a
        # killed import, leaves events a rerun will call duplicates, and their days must still be rebuilt.
        low = min(doc["day"] for doc in docs)
        if not filed or low < requested[0]:
            filed.append(store.mark_rebuild(app.id, low))
            requested[0] = low
        dups = store.insert_events(docs)
        for i, doc in enumerate(docs):
            if i not in dups:
                rebuild_from = doc["day"] if rebuild_from is None else min(rebuild_from, doc["day"])
        stored += len(docs) - len(dups)
        duplicates += len(dups)
        docs.clear()

    requested = [""]
    with progress(f"importing {path.name}") as bar:
        for number, event, day in scan(path, fmt, app, now, purged, bar.update):
            tally.read += 1
            if isinstance(event, str):
                if not skip_bad:  # it passed the check a moment ago
                    raise InvalidInput(f"{path.name} changed while it was imported: line {number}: {event}")
                tally.refuse(number, event)
                continue
            tally.good(day)
            docs.append(event.doc(app))
            if len(docs) >= CHUNK:
                flush()
        flush()
    # Through without an error: one request for exactly the days that got events (none for a rerun
    # that stored nothing). After an error the requests filed stay: broader than needed, never less.
    if filed and (rebuild_from is None or len(filed) > 1 or requested[0] != rebuild_from):
        if rebuild_from is not None:
            store.mark_rebuild(app.id, rebuild_from)
        store.clear_rebuilds(filed)
    return _summary(app, path, fmt, tally, stored, duplicates, rebuild_from)


def _summary(app: App, path: Path, fmt: str, tally: Tally, stored: int, duplicates: int,
             rebuild_from: str | None) -> dict[str, Any]:
    return {"app": app.name, "file": str(path), "format": fmt, "read": tally.read, "stored": stored,
            "duplicates": duplicates, "bad": tally.bad, "bad_rows": tally.bad_rows, "first": tally.first,
            "last": tally.last, "rebuild_from": rebuild_from}


def render(s: dict[str, Any]) -> str:
    days = f", days {s['first']} to {s['last']}" if s["first"] else ""
    rebuild = f"; the rollup rebuilds from {s['rebuild_from']}" if s["rebuild_from"] else ""
    bad = f", {s['bad']} bad (skipped)" if s["bad"] else ""
    return (f"imported {Path(s['file']).name} into {s['app']}: {s['read']} read, {s['stored']} stored, "
            f"{s['duplicates']} already there{bad}{days}{rebuild}")


# --- the command

def register_import(analytics: typer.Typer) -> None:
    """Add `analytics import` to the `analytics` group."""
    @analytics.command("import")
    @configured("mongo")
    def import_cmd(
        file: Annotated[Path, typer.Argument(help="events: NDJSON (batch shape), CSV with a header, or a GoAnalytics export; .gz is read through gzip")],
        app_ref: AppRef,
        fmt: Annotated[Optional[str], typer.Option("--format", help="ndjson, csv or goanalytics [default: from the extension]")] = None,
        skip_bad: Annotated[bool, typer.Option("--skip-bad", help="store the good rows of a file with bad ones (else nothing is stored)")] = False,
        as_json: Json = False, cfg: Config = None,
    ) -> None:
        """Import an app's past events; rerunning a file stores nothing twice."""
        fmt = file_format(file, fmt)
        size = file_size(file)
        bar: Progress = _no_progress
        if sys.stderr.isatty():
            bar = lambda label: typer.progressbar(length=size, label=label, file=sys.stderr)  # noqa: E731
        with _store(cfg["mongo.uri"]) as store:
            target = store.app(app_ref)
            try:
                summary = import_file(store, target, file, fmt, skip_bad, progress=bar)
            except BadRows as exc:
                if as_json:
                    typer.echo(json.dumps(exc.summary, indent=2))
                raise
        if summary["bad"] and not as_json:
            for b in summary["bad_rows"]:
                typer.echo(f"skipped line {b['line']}: {b['reason']}", err=True)
            if summary["bad"] > len(summary["bad_rows"]):
                typer.echo(f"skipped {summary['bad'] - len(summary['bad_rows'])} more bad rows", err=True)
        _out(summary, as_json, render(summary))
