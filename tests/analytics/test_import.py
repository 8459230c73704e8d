"""`etcdcron analytics import` against the real SecantusDB server: what is stored, what is refused
(with its line number, and then nothing at all), --skip-bad, reruns, the rebuild request, GoAnalytics."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from bson import Int64, ObjectId, json_util

from etcdcron.analytics import importer
from etcdcron.analytics.events import App
from etcdcron.cli import main

ROOT = Path(__file__).resolve().parents[2]
TZ = "Asia/Kolkata"
# Local midnight 40 days ago in Kolkata (no DST), so every test event is history, well past any grace.
DAY0 = date.fromtimestamp(time.time()) - timedelta(days=40)
BASE = datetime.combine(DAY0, dtime(0), tzinfo=ZoneInfo(TZ)).timestamp()
COLUMNS = ["id", "type", "deviceId", "ts", "seconds", "channel", "platform", "version", "userId", "name", "amount", "slot"]


def day(n: int) -> str:
    return (DAY0 + timedelta(days=n)).isoformat()


def local_day(ts: float) -> str:
    return datetime.fromtimestamp(ts, ZoneInfo(TZ)).date().isoformat()


@pytest.fixture
def app(astore) -> App:
    """Kolkata, with a declared slot counter `buy` (slots gold, silver)."""
    created = astore.create_app(App.new("shop", TZ))
    return astore.update_app(created.id, {"counters": {"buy": {"type": "slot", "slots": ["gold", "silver"]}}})


def events() -> list[dict]:
    """Five events over days 1, 3 and 2 (in that order), one of each kind, with and without userId."""
    return [
        {"id": "e1", "type": "open", "deviceId": "d1", "ts": BASE + 86400 + 3600, "channel": "appstore",
         "platform": "ios", "version": "1.0", "userId": "u1"},
        {"id": "e2", "type": "usage", "deviceId": "d1", "ts": BASE + 86400 + 7200, "seconds": 61.5,
         "channel": "appstore", "platform": "ios", "version": "1.0"},
        {"id": "e3", "type": "open", "deviceId": "d2", "ts": BASE + 3 * 86400 + 60, "channel": "googleplay",
         "platform": "android", "version": "1.1"},
        {"id": "e4", "type": "custom", "deviceId": "d2", "ts": BASE + 2 * 86400, "name": "buy", "amount": 3,
         "slot": "gold", "channel": "googleplay", "platform": "android", "version": "1.1"},
        {"id": "e5", "type": "open", "deviceId": "d3", "ts": BASE + 2 * 86400 - 1},
    ]


def expected(app: App, items: list[dict]) -> dict[str, dict]:
    """The stored documents DESIGN §6 describes, written out by hand from the batch shape."""
    out = {}
    for e in items:
        doc = {"_id": f"{app.id}:{e['id']}", "app": app.id, "dev": e["deviceId"], "type": e["type"], "ts": e["ts"],
               "day": local_day(e["ts"]), "sec": e.get("seconds", 0.0), "ch": e.get("channel", ""),
               "pf": e.get("platform", ""), "ver": e.get("version", "")}
        if e.get("userId"):
            doc["uid"] = e["userId"]
        if e["type"] == "custom":
            doc.update(name=e["name"], amt=e.get("amount", 1), slot=e.get("slot", ""))
        out[doc["_id"]] = doc
    return out


def stored(astore, app: App) -> dict[str, dict]:
    return {d["_id"]: d for d in astore.db.events.find({"app": app.id})}


def write_ndjson(path: Path, items: list) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in items))
    return path


def write_csv(path: Path, items: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        for e in items:
            w.writerow(["" if e.get(c) is None else repr(e[c]) if isinstance(e[c], float) else e[c] for c in COLUMNS])
    return path


def run(mongo_uri, capsys, *args: str) -> tuple[int, str, str]:
    """The command line in this process (etcdcron.cli.main: the same error mapping as the binary)."""
    code = main(["analytics", "import", *args, "--mongo", mongo_uri])
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_nothing_stored(astore, app: App) -> None:
    assert astore.count_events(app.id) == 0
    assert astore.rebuilds(app.id) == [] and astore.first_event_day(app.id) is None


def test_ndjson_import_stores_each_event_as_the_collector_would(mongo_uri, astore, app, tmp_path):
    """An NDJSON file (a user's run: `python cli.py` in a subprocess) stores every event's document,
    the summary counts them, and one rebuild request names the earliest day."""
    path = write_ndjson(tmp_path / "history.ndjson", events())
    env = {k: v for k, v in os.environ.items() if k != "ETCDCRON_MONGO"} | {"ETCDCRON_MONGO": mongo_uri}
    r = subprocess.run([sys.executable, str(ROOT / "cli.py"), "analytics", "import", str(path), "--app", "shop", "--json"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert stored(astore, app) == expected(app, events())
    assert json.loads(r.stdout) == {"app": "shop", "file": str(path), "format": "ndjson", "read": 5, "stored": 5,
                                    "duplicates": 0, "bad": 0, "bad_rows": [], "first": day(1), "last": day(3),
                                    "rebuild_from": day(1)}
    assert [d for _, d in astore.rebuilds(app.id)] == [day(1)]
    assert astore.first_event_day(app.id) == day(1)


def test_csv_import_stores_the_same_documents(mongo_uri, astore, app, tmp_path, capsys):
    """The CSV header form gives the same documents: empty cells are absent fields, numbers are numbers."""
    path = write_csv(tmp_path / "history.csv", events())
    code, out, err = run(mongo_uri, capsys, str(path), "--app", app.id)
    assert code == 0, err
    docs = stored(astore, app)
    assert docs == expected(app, events())
    assert isinstance(docs[f"{app.id}:e4"]["amt"], int) and docs[f"{app.id}:e2"]["sec"] == 61.5
    assert out.strip() == (f"imported history.csv into shop: 5 read, 5 stored, 0 already there, days {day(1)} to {day(3)}; "
                           f"the rollup rebuilds from {day(1)}")


def test_csv_with_a_subset_of_columns_in_another_order(astore, app, tmp_path, capsys, mongo_uri):
    """Columns may come in any order and optional ones may be left out; a quoted cell may span lines."""
    path = tmp_path / "h.csv"
    path.write_text(f'ts,deviceId,type,id\n{int(BASE)},d1,open,a\n{int(BASE) + 5},"d2",open,b\n')
    code, _, err = run(mongo_uri, capsys, str(path), "--app", "shop")
    assert code == 0, err
    assert stored(astore, app) == expected(app, [{"id": "a", "type": "open", "deviceId": "d1", "ts": int(BASE)},
                                                 {"id": "b", "type": "open", "deviceId": "d2", "ts": int(BASE) + 5}])


FUTURE = "future"  # stand-in, replaced by a timestamp an hour ahead when the test runs

BAD_ROWS = [
    ("bad json", '{"id": "x1", "type": "open",', "line 3: not JSON"),
    ("bad type", {"id": "x1", "type": "close", "deviceId": "d9", "ts": BASE}, "line 3: bad type 'close'"),
    ("bad ts", {"id": "x1", "type": "open", "deviceId": "d9", "ts": "yesterday"}, "line 3: bad ts 'yesterday'"),
    ("negative ts", {"id": "x1", "type": "open", "deviceId": "d9", "ts": -5}, "line 3: bad ts '-5'"),
    ("unknown custom name", {"id": "x1", "type": "custom", "deviceId": "d9", "ts": BASE, "name": "sell"},
     "line 3: undeclared custom event 'sell'"),
    ("undeclared slot", {"id": "x1", "type": "custom", "deviceId": "d9", "ts": BASE, "name": "buy", "slot": "bronze"},
     "line 3: bad slot 'bronze'"),
    ("future ts", FUTURE, "s in the future (limit 600 s"),
    ("purged day", {"id": "x1", "type": "open", "deviceId": "d9", "ts": BASE}, f"line 3: day {day(0)} (Asia/Kolkata) is before"),
    ("bad id", {"id": "x 1", "type": "open", "deviceId": "d9", "ts": BASE}, "line 3: bad id 'x 1'"),
    ("deep json", "[" * 100_000 + "]" * 100_000, "line 3: line longer than 65536 bytes"),
    ("nested json", "[" * 30_000 + "]" * 30_000, "line 3: not JSON"),
]


@pytest.mark.parametrize("kind,row,needle", BAD_ROWS, ids=[b[0] for b in BAD_ROWS])
def test_a_bad_row_is_reported_by_line_and_nothing_is_stored(mongo_uri, astore, app, tmp_path, capsys, kind, row, needle):
    """Each kind of bad row: exit 2, one line naming its line number and reason, nothing of the file stored."""
    if kind == "purged day":
        astore.set_state("purge", app.id, 1, before=day(2))
    if row == FUTURE:
        row = {"id": "x1", "type": "open", "deviceId": "d9", "ts": time.time() + 3600}
    good = events()
    if kind == "purged day":
        good = [e for e in good if local_day(e["ts"]) >= day(2)]
    path = write_ndjson(tmp_path / "h.ndjson", good[:2] + [row] + good[2:])
    code, out, err = run(mongo_uri, capsys, str(path), "--app", "shop")
    assert code == 2, (out, err)
    assert len(err.strip().splitlines()) == 1 and needle in err, err
    assert f"1 of {len(good) + 1} rows are bad, nothing stored" in err
    assert_nothing_stored(astore, app)


@pytest.mark.parametrize("row,needle", [
    (["x1", "close", "d9", str(int(BASE))], "line 4: bad type 'close'"),
    (["x1", "open", "d9", "1e3x"], "line 4: bad ts '1e3x'"),
    (["x1", "open", "d9", "nan"], "line 4: bad ts 'nan'"),
    (["x1", "open", "d9", str(int(BASE)), "extra"], "line 4: 5 cells, the header has 4"),
])
def test_a_bad_csv_row_is_reported_by_line(mongo_uri, astore, app, tmp_path, capsys, row, needle):
    """CSV rows are numbered by file line (the header is line 1); a bad one stores nothing."""
    path = tmp_path / "h.csv"
    path.write_text("id,type,deviceId,ts\n" + f"a,open,d1,{int(BASE)}\nb,open,d2,{int(BASE)}\n" + ",".join(row) + "\n")
    code, _, err = run(mongo_uri, capsys, str(path), "--app", "shop")
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert_nothing_stored(astore, app)


def test_bad_file_with_json_prints_the_summary_and_the_bad_rows(mongo_uri, astore, app, tmp_path, capsys):
    """--json on a bad file: the summary on stdout lists the first bad rows with line numbers and counts
    all of them; still exit 2 and nothing stored."""
    rows = events() + ["nope"] * (importer.SHOWN + 5)
    path = write_ndjson(tmp_path / "h.ndjson", rows)
    code, out, err = run(mongo_uri, capsys, str(path), "--app", "shop", "--json")
    assert code == 2 and len(err.strip().splitlines()) == 1 and f"and {importer.SHOWN + 2} more" in err
    summary = json.loads(out)
    assert summary["bad"] == importer.SHOWN + 5 and summary["read"] == len(rows) and summary["stored"] == 0
    assert summary["bad_rows"] == [{"line": 6 + i, "reason": "not JSON"} for i in range(importer.SHOWN)]
    assert_nothing_stored(astore, app)


def test_skip_bad_stores_the_good_rows_and_lists_the_bad(mongo_uri, astore, app, tmp_path, capsys):
    """--skip-bad: the good rows are stored, each bad one is listed with its line, exit 0."""
    astore.set_state("purge", app.id, 1, before=day(1))
    rows = events()
    rows.insert(1, {"id": "x1", "type": "close", "deviceId": "d9", "ts": BASE + 86400})
    rows.insert(4, {"id": "x2", "type": "open", "deviceId": "d9", "ts": BASE})  # day 0: purged
    path = write_ndjson(tmp_path / "h.ndjson", rows)
    code, out, err = run(mongo_uri, capsys, str(path), "--app", "shop", "--skip-bad", "--json")
    assert code == 0, err
    assert stored(astore, app) == expected(app, events())
    summary = json.loads(out)
    assert (summary["read"], summary["stored"], summary["bad"]) == (7, 5, 2)
    assert [b["line"] for b in summary["bad_rows"]] == [2, 5] and "purge job" in summary["bad_rows"][1]["reason"]
    code, _, err = run(mongo_uri, capsys, str(path), "--app", "shop", "--skip-bad")
    assert code == 0 and "skipped line 2: bad type 'close'" in err and "skipped line 5: day" in err


def test_rerun_stores_nothing_twice_and_requests_no_rebuild(mongo_uri, astore, app, tmp_path, capsys):
    """A second run of the same file stores nothing, reports every event as already there, and asks
    for no rebuild; an id repeated in the file is stored once."""
    rows = events() + [dict(events()[0], ts=BASE)]  # e1 again, other content: the first one wins
    path = write_ndjson(tmp_path / "h.ndjson", rows)
    code, out, _ = run(mongo_uri, capsys, str(path), "--app", "shop", "--json")
    first = json.loads(out)
    assert code == 0 and (first["stored"], first["duplicates"]) == (5, 1)
    assert stored(astore, app) == expected(app, events())
    code, out, _ = run(mongo_uri, capsys, str(path), "--app", "shop", "--json")
    again = json.loads(out)
    assert code == 0 and (again["read"], again["stored"], again["duplicates"], again["rebuild_from"]) == (6, 0, 6, None)
    assert stored(astore, app) == expected(app, events()) and len(astore.rebuilds(app.id)) == 1


def test_rebuild_starts_at_the_earliest_day_that_got_new_events(astore, app, tmp_path, monkeypatch):
    """The rebuild request names the earliest day of the events stored by this import, wherever it
    lies in the file and across chunks; days whose events were all there already do not count."""
    monkeypatch.setattr(importer, "CHUNK", 2)
    import_ = lambda p: importer.import_file(astore, app, p, "ndjson")  # noqa: E731
    assert import_(write_ndjson(tmp_path / "a.ndjson", events()))["rebuild_from"] == day(1)
    astore.clear_rebuilds([i for i, _ in astore.rebuilds(app.id)])
    later = [{"id": f"n{k}", "type": "open", "deviceId": "d7", "ts": BASE + k * 86400 + 10} for k in (9, 5, 7, 4, 8)]
    summary = import_(write_ndjson(tmp_path / "b.ndjson", events() + later))  # day 1..3 again, then new days
    assert (summary["stored"], summary["duplicates"], summary["rebuild_from"]) == (5, 5, day(4))
    assert [d for _, d in astore.rebuilds(app.id)] == [day(4)]


def test_an_insert_that_fails_after_it_was_applied_keeps_its_rebuild_request(astore, app, tmp_path, monkeypatch):
    """MongoDB applies an insert and the answer is lost (or the import is killed right after): the
    rebuild request is already filed, and a rerun, which finds every event already there, leaves it
    in place (found in review: the request was filed after the insert, so it was lost for good)."""
    from etcdcron.analytics.errors import MongoUnavailable

    real = astore.insert_events

    def applied_then_lost(docs):
        real(docs)
        raise MongoUnavailable("MongoDB unavailable during event insert: connection closed")

    monkeypatch.setattr(astore, "insert_events", applied_then_lost)
    path = write_ndjson(tmp_path / "h.ndjson", events())
    with pytest.raises(MongoUnavailable):
        importer.import_file(astore, app, path, "ndjson")
    monkeypatch.setattr(astore, "insert_events", real)
    assert stored(astore, app) == expected(app, events())
    assert [d for _, d in astore.rebuilds(app.id)] == [day(1)]
    again = importer.import_file(astore, app, path, "ndjson")
    assert (again["stored"], again["rebuild_from"]) == (0, None)
    assert [d for _, d in astore.rebuilds(app.id)] == [day(1)]


def test_streams_in_chunks_with_progress_in_bytes(astore, app, tmp_path, monkeypatch):
    """Inserts go in chunks of CHUNK events; each pass reports progress adding up to the file's size."""
    monkeypatch.setattr(importer, "CHUNK", 3)
    rows = [{"id": f"c{i}", "type": "open", "deviceId": f"d{i % 4}", "ts": BASE + i * 3600} for i in range(10)]
    path = write_ndjson(tmp_path / "h.ndjson", rows)
    sizes: list[int] = []
    insert = astore.insert_events
    monkeypatch.setattr(astore, "insert_events", lambda docs: sizes.append(len(docs)) or insert(docs))
    bars: dict[str, list[int]] = {}

    class Bar:
        def __init__(self, label):
            self.steps = bars.setdefault(label, [])

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            self.steps.append(n)

    summary = importer.import_file(astore, app, path, "ndjson", progress=Bar)
    assert summary["stored"] == 10 and sizes == [3, 3, 3, 1]
    assert set(bars) == {"checking h.ndjson", "importing h.ndjson"}
    assert all(sum(steps) == path.stat().st_size and len(steps) >= 4 for steps in bars.values())


def test_an_interrupted_import_still_requests_its_rebuild_and_a_rerun_finishes_it(astore, app, tmp_path, monkeypatch):
    """Interrupted after its first chunk (Ctrl-C), an import keeps what it stored and asks for that
    rebuild; rerunning the file stores the rest and counts the first part as already there."""
    monkeypatch.setattr(importer, "CHUNK", 2)
    path = write_ndjson(tmp_path / "h.ndjson", events())

    class Interrupt:
        def __init__(self, label):
            self.label = label

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def update(self, n):
            if self.label.startswith("importing") and astore.count_events(app.id):
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        importer.import_file(astore, app, path, "ndjson", progress=Interrupt)
    assert astore.count_events(app.id) == 2 and [d for _, d in astore.rebuilds(app.id)] == [day(1)]
    summary = importer.import_file(astore, app, path, "ndjson")
    assert (summary["stored"], summary["duplicates"], summary["rebuild_from"]) == (3, 2, day(1))  # e5 is 1 s before day 2
    assert stored(astore, app) == expected(app, events())


def test_gzip_file(mongo_uri, astore, app, tmp_path, capsys):
    """A .ndjson.gz file is read through gzip, its format taken from the name under .gz."""
    path = tmp_path / "h.ndjson.gz"
    path.write_bytes(gzip.compress("".join(json.dumps(e) + "\n" for e in events()).encode()))
    code, _, err = run(mongo_uri, capsys, str(path), "--app", "shop")
    assert code == 0, err
    assert stored(astore, app) == expected(app, events())


@pytest.mark.parametrize("args,needle", [
    (["--app", "ghost"], "unknown app 'ghost'"),
    (["--app", "shop", "--format", "xml"], "bad --format 'xml'"),
])
def test_bad_command_is_one_line_and_exit_2(mongo_uri, astore, app, tmp_path, capsys, args, needle):
    """An unknown app or format: one line naming it, exit 2, nothing stored."""
    path = write_ndjson(tmp_path / "h.ndjson", events())
    code, _, err = run(mongo_uri, capsys, str(path), *args)
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert_nothing_stored(astore, app)


@pytest.mark.parametrize("name,content,needle", [
    ("h.txt", "{}", "cannot tell the format of h.txt"),
    ("missing.ndjson", None, "cannot read"),
    ("h.csv", "id,type,deviceId,ts,colour\n", "unknown column 'colour'"),
    ("h.csv", "id,type,ts\n", "no column 'deviceId'"),
    ("h.csv", "id,type,deviceId,ts,id\n", "a column named twice"),
    ("h.csv", "", "no CSV header"),
    ("h.ndjson.gz", "not gzip at all", "cannot read"),
])
def test_unreadable_file_is_one_line_and_exit_2(mongo_uri, astore, app, tmp_path, capsys, name, content, needle):
    """A file that cannot be read, of no known format, or a CSV header that is wrong: one line, exit 2."""
    path = tmp_path / name
    if content is not None:
        path.write_text(content)
    code, _, err = run(mongo_uri, capsys, str(path), "--app", "shop")
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert_nothing_stored(astore, app)


def goa_id(dev: str, ts: int) -> str:
    """The id the collector's GoAnalytics route gives an open (docs/analytics.md): a hash of its content."""
    return "g:" + hashlib.sha1(f"{dev}|open|{ts}|0.0".encode()).hexdigest()[:24]


@pytest.mark.parametrize("mode", ["relaxed", "canonical"])
def test_goanalytics_export_imports_as_the_collector_route_would_store_it(mongo_uri, astore, app, tmp_path, capsys, mode):
    """GoAnalytics' openAppData documents (written to MongoDB as its Go driver does, exported as
    mongoexport does) become opens with the ids of the collector's GoAnalytics route, so an open that
    came both ways is stored once."""
    goa = astore.client["goanalytics_" + app.id]["openAppData"]
    ts = [int(BASE) + 86400 + 100, int(BASE) + 2 * 86400 + 100]
    goa.insert_many([
        {"_id": ObjectId(), "timestamp": Int64(ts[0]), "deviceId": "g1", "channel": "huawei", "platform": "android",
         "version": "2.0.0", "userId": ""},
        {"_id": ObjectId(), "timestamp": Int64(ts[1]), "deviceId": "g2", "channel": "appStore", "platform": "ios",
         "version": "1.2.0", "userId": "u7"},
    ])
    options = json_util.RELAXED_JSON_OPTIONS if mode == "relaxed" else json_util.CANONICAL_JSON_OPTIONS
    path = tmp_path / "openAppData.json"
    path.write_text("".join(json_util.dumps(d, json_options=options) + "\n" for d in goa.find()))
    assert ("$numberLong" in path.read_text()) == (mode == "canonical")
    code, _, err = run(mongo_uri, capsys, str(path), "--app", "shop", "--format", "goanalytics")
    assert code == 0, err
    assert stored(astore, app) == {
        f"{app.id}:{goa_id('g1', ts[0])}": {"_id": f"{app.id}:{goa_id('g1', ts[0])}", "app": app.id, "dev": "g1",
                                           "type": "open", "ts": ts[0], "day": day(1), "sec": 0.0, "ch": "huawei",
                                           "pf": "android", "ver": "2.0.0"},
        f"{app.id}:{goa_id('g2', ts[1])}": {"_id": f"{app.id}:{goa_id('g2', ts[1])}", "app": app.id, "dev": "g2",
                                           "type": "open", "ts": ts[1], "day": day(2), "sec": 0.0, "ch": "appStore",
                                           "pf": "ios", "ver": "1.2.0", "uid": "u7"},
    }


def test_goanalytics_bad_document_is_reported_by_line(mongo_uri, astore, app, tmp_path, capsys):
    """A GoAnalytics line without a usable timestamp or device is refused with its line number."""
    path = write_ndjson(tmp_path / "o.json", [{"timestamp": int(BASE), "deviceId": "g1"},
                                              {"timestamp": "soon", "deviceId": "g1"}, {"timestamp": int(BASE)}])
    code, _, err = run(mongo_uri, capsys, str(path), "--app", "shop", "--format", "goanalytics")
    assert code == 2 and "2 of 3 rows are bad" in err and "line 2: bad timestamp 'soon'" in err
    assert "line 3: bad deviceId ''" in err
    assert_nothing_stored(astore, app)
