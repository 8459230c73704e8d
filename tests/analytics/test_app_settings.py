"""`apps show|set|rotate-key` and `apps counter add|ls|rm` as a user runs them (`python cli.py …` in a
subprocess, real MongoDB): settings change as asked, keys are printed once and never logged, and every
refusal is one line, exit 2, with the app documents byte for byte as they were."""

from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
import structlog
import uvicorn
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument

from etcdcron.analytics import appcmds, jobs
from etcdcron.analytics import days as dd
from etcdcron.analytics.collector import create_app
from etcdcron.analytics.errors import Refused
from etcdcron.analytics.events import MAX_COUNTERS, App, Event, Counter, admit, batch_sign, parse_event
from etcdcron.embedded import free_port
from etcdcron.executor import RunContext
from etcdcron.nodes import wait_for

from .test_cli import cli


def raw(astore) -> dict:
    """Every app document as stored (BSON bytes), and the rebuild requests: what a refusal must not touch."""
    coll = astore.db.apps.with_options(codec_options=CodecOptions(document_class=RawBSONDocument))
    return {"apps": [d.raw for d in coll.find().sort("_id", 1)], "rebuilds": list(astore.db.rebuilds.find())}


@pytest.fixture
def shop(astore) -> App:
    """An app with one declared counter and a key rotated an hour ago (its old key good for a day more)."""
    app = astore.create_app(App.new("shop", "Asia/Kolkata"))
    return astore.update_app(app.id, {"counters.plays": Counter.new("plays", "sum").doc(), "old_key": "0" * 32,
                                      "old_key_until": time.time() + 86_400})


def test_show_prints_the_settings_without_the_keys(mongo_uri, astore, shop):
    """`apps show NAME --json` is App.public(); neither form prints the key or the old key."""
    r = cli(mongo_uri, "apps", "show", "shop", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == json.loads(json.dumps(shop.public()))
    text = cli(mongo_uri, "apps", "show", shop.id)  # by id as well as by name
    assert text.returncode == 0 and "tz:       Asia/Kolkata" in text.stdout and "plays (sum)" in text.stdout
    assert dd.utc_iso(shop.old_key_until) in text.stdout
    for out in (r.stdout + r.stderr, text.stdout + text.stderr):
        assert shop.key not in out and shop.old_key not in out
    astore.update_app(shop.id, {"old_key_until": 1_000_000_000.0})
    assert "old key:  expired at 2001-09-09T01:46:40Z" in cli(mongo_uri, "apps", "show", "shop").stdout


def test_set_changes_grace_and_top_and_prints_them(mongo_uri, astore, shop):
    """`apps set --grace --top` stores both and prints the new settings; the rest of the app is kept."""
    r = cli(mongo_uri, "apps", "set", "shop", "--grace", "600", "--top", "5", "--json")
    assert r.returncode == 0, r.stderr
    printed = json.loads(r.stdout)
    assert (printed["grace"], printed["top"], printed["rebuild_from"]) == (600.0, 5, None)  # lowered: nothing reopens
    now = astore.app("shop")
    assert (now.grace, now.top) == (600.0, 5) and now.key == shop.key and now.counters == shop.counters
    assert now.old_key == shop.old_key and now.tz == shop.tz and astore.rebuilds(shop.id) == []
    again = cli(mongo_uri, "apps", "set", "shop", "--top", "7", "--tz", "Asia/Kolkata")  # its own zone: no change
    assert again.returncode == 0 and "top:      7" in again.stdout and shop.key not in again.stdout
    assert (astore.app("shop").grace, astore.app("shop").top) == (600.0, 7)


def test_raising_grace_rolls_the_reopened_days_up_again(mongo_uri, astore):
    """A day the rollup made final under grace 0 takes late events again under a raised grace, and the
    next rollup counts them (the rollup also notices a longer grace by itself: test_jobs.py)."""
    app = astore.create_app(App.new("late", "UTC", grace=0))
    now = float(int(time.time()))
    day = dd.shift(dd.last_closed(now, "UTC"), -1)
    ts = dd.start_of(day, "UTC") + 3600
    astore.insert_events([Event(id="a", type="open", dev="d1", ts=ts).doc(app)])
    jobs.rollup(RunContext("rollup", int(now), "test", 1, 1, {"app": "late"}, mongo_uri))
    assert astore.one("daily_metrics", f"{app.id}|{day}")["dau"] == 1 and astore.state("rollup", app.id)["final"] >= day
    with pytest.raises(Refused):
        admit(app, [Event(id="b", type="open", dev="d2", ts=ts)], now)  # the day is closed to events

    r = cli(mongo_uri, "apps", "set", "late", "--grace", str(3 * 86_400), "--json")
    assert r.returncode == 0, r.stderr
    first = json.loads(r.stdout)["rebuild_from"]
    assert first is not None and first <= day and [d for _, d in astore.rebuilds(app.id)] == [first]
    docs, _ = admit(astore.app("late"), [Event(id="b", type="open", dev="d2", ts=ts)], now + 1)
    astore.insert_events(docs)
    jobs.rollup(RunContext("rollup", int(now) + 1, "test", 2, 1, {"app": "late"}, mongo_uri))
    assert astore.one("daily_metrics", f"{app.id}|{day}")["dau"] == 2 and astore.rebuilds(app.id) == []


def test_rotate_key_prints_the_new_key_once_and_keeps_the_old_one_for_the_overlap(mongo_uri, astore, shop):
    """`rotate-key --overlap 2h`: a new key, printed once; the current key becomes the old key until
    now + 2 h; the key before it (whose overlap was running) stops now, and the output says so."""
    before = time.time()
    r = cli(mongo_uri, "apps", "rotate-key", "shop", "--overlap", "2h")
    after = time.time()
    assert r.returncode == 0, r.stderr
    now = astore.db.apps.find_one({"_id": shop.id})
    assert now["key"] != shop.key and len(now["key"]) == 32 and r.stdout.count(now["key"]) == 1
    assert now["old_key"] == shop.key and before + 7200 <= now["old_key_until"] <= after + 7200
    assert "the key before it" in r.stdout and shop.key not in r.stdout + r.stderr and "0" * 32 not in r.stdout + r.stderr
    app = App.from_doc(now)
    assert app.keys(after) == (now["key"], shop.key) and app.keys(now["old_key_until"]) == (now["key"],)
    assert "0" * 32 not in app.keys(after)


def test_rotate_key_with_no_overlap_drops_the_old_key(mongo_uri, astore, shop):
    """`--overlap 0`: the previous key stops at once and is not kept in the app document."""
    r = cli(mongo_uri, "apps", "rotate-key", "shop", "--overlap", "0", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    now = astore.db.apps.find_one({"_id": shop.id})
    assert out["key"] == now["key"] != shop.key and out["old_key_until"] is None
    assert "old_key" not in now and "old_key_until" not in now and App.from_doc(now).keys(time.time()) == (now["key"],)


@pytest.mark.parametrize("text,seconds", [("24h", 86_400), ("90m", 5400), ("1d12h", 129_600), ("30d", 2_592_000),
                                          ("45s", 45), ("1.5h", 5400), ("0", 0), ("0s", 0)])
def test_overlap_durations(text, seconds):
    """--overlap reads d/h/m/s (in that order, each once), 0 alone, up to 30 days."""
    assert appcmds.parse_overlap(text) == seconds


def test_keys_are_never_logged(mongo_uri, astore, shop, monkeypatch, capsys, request):
    """With every log level on, rotate-key, set and show log their events, and no key appears in them."""
    from etcdcron import cli as main_cli, log as logsetup

    configure, saved = logsetup.configure, structlog.get_config()
    monkeypatch.setattr(logsetup, "configure", lambda *a, **k: configure("debug", json=True))
    request.addfinalizer(lambda: structlog.configure(**saved))  # the stderr of this test is closed after it
    monkeypatch.setenv("ETCDCRON_MONGO", mongo_uri)
    runs = [["apps", "rotate-key", "shop"], ["apps", "rotate-key", "shop", "--overlap", "0"],
            ["apps", "set", "shop", "--grace", "60"], ["apps", "show", "shop"], ["apps", "counter", "add", "shop", "x", "--type", "cpv"]]
    logs, printed = [], []
    for argv in runs:
        assert main_cli.main(argv) == 0
        out = capsys.readouterr()
        logs += [json.loads(line) for line in out.err.splitlines()]
        printed.append(out.out)
    assert [e["event"] for e in logs] == ["app.key_rotated", "app.key_rotated", "app.settings_changed", "app.counter_added"]
    keys = {shop.key, shop.old_key, astore.app("shop").key}
    keys |= {line.split(": ")[1] for out in printed for line in out.splitlines() if line.startswith("new key of")}
    assert len(keys) == 4  # the fixture's two keys and the two new ones
    dumped = json.dumps(logs)
    assert not any(k in dumped for k in keys)


@contextmanager
def collector(uri: str):
    """The collector served by uvicorn in a thread of this process; started after a change, so its app
    cache (30 s) holds the app as changed."""
    from etcdcron.analytics.store import AnalyticsStore

    with AnalyticsStore(uri) as store:
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_app(store), host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            assert wait_for(lambda: server.started or not thread.is_alive(), 10, step=0.01) and server.started
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                yield client
        finally:
            server.should_exit = True
            thread.join(10)


@pytest.mark.parametrize("overlap,signer,status", [("1h", "new", 200), ("1h", "old", 200), ("0", "new", 200), ("0", "old", 401)])
def test_the_collector_takes_the_keys_of_a_rotation(mongo_uri, astore, shop, overlap, signer, status):
    """After `rotate-key`, a batch signed with the new key is stored; one signed with the previous key
    is stored during the overlap and refused (401, nothing stored) with --overlap 0."""
    r = cli(mongo_uri, "apps", "rotate-key", "shop", "--overlap", overlap, "--json")
    key = json.loads(r.stdout)["key"] if signer == "new" else shop.key
    body = json.dumps({"events": [{"id": "e1", "type": "open", "deviceId": "p", "ts": int(time.time())}]}).encode()
    with collector(mongo_uri) as c:
        answer = c.post(f"/v1/events?appId={shop.id}&sign={batch_sign(body, key)}", content=body)
    assert answer.status_code == status, answer.text
    assert astore.count_events(shop.id) == (1 if status == 200 else 0)


def test_counter_add_ls_rm(mongo_uri, astore, shop):
    """A declared counter is listed and its events parse; once removed its events are refused, its
    name comes back only with the same type, and the app keeps everything else."""
    r = cli(mongo_uri, "apps", "counter", "add", "shop", "level", "--type", "slot", "--slots", "easy, hard")
    assert r.returncode == 0, r.stderr
    assert astore.app("shop").counter("level") == Counter("level", "slot", ("easy", "hard"))
    listed = json.loads(cli(mongo_uri, "apps", "counter", "ls", "shop", "--json").stdout)
    assert listed == [{"name": "level", "type": "slot", "slots": ["easy", "hard"]}, {"name": "plays", "type": "sum", "slots": []}]
    event = {"id": "c1", "type": "custom", "name": "level", "slot": "hard", "amount": 3, "deviceId": "p", "ts": 1}
    assert parse_event(event, astore.app("shop")).amt == 3

    r = cli(mongo_uri, "apps", "counter", "rm", "shop", "level")
    assert r.returncode == 0 and "stored events" in r.stdout
    with pytest.raises(Refused, match="undeclared custom event 'level'"):
        parse_event(event, astore.app("shop"))
    before = raw(astore)
    back = cli(mongo_uri, "apps", "counter", "add", "shop", "level", "--type", "sum")
    assert back.returncode == 2 and "removed with type slot and slots easy,hard" in back.stderr and raw(astore) == before
    assert cli(mongo_uri, "apps", "counter", "add", "shop", "level", "--type", "slot", "--slots", "easy,hard").returncode == 0
    doc = astore.db.apps.find_one({"_id": shop.id})
    assert doc["counters"]["level"] == {"type": "slot", "slots": ["easy", "hard"]} and doc["retired_counters"] == {}
    assert doc["key"] == shop.key and doc["grace"] == shop.grace and doc["counters"]["plays"] == {"type": "sum", "slots": []}


def test_counters_are_limited(mongo_uri, astore, shop):
    """An app with MAX_COUNTERS counters declares no more: one line, exit 2, nothing changed."""
    astore.update_app(shop.id, {f"counters.c{i}": Counter.new(f"c{i}", "sum").doc() for i in range(MAX_COUNTERS - 1)})
    before = raw(astore)
    r = cli(mongo_uri, "apps", "counter", "add", "shop", "one_more", "--type", "sum")
    assert r.returncode == 2 and f"limit {MAX_COUNTERS}" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert raw(astore) == before


@pytest.mark.parametrize("args,needle", [
    (["apps", "set", "shop"], "nothing to change"),
    (["apps", "set", "shop", "--grace", "-1"], "bad --grace -1.0"),
    (["apps", "set", "shop", "--grace", "nan"], "bad --grace nan"),
    (["apps", "set", "shop", "--grace", "604801"], "must be 0 to 604800"),
    (["apps", "set", "shop", "--grace", "soon"], "'--grace'"),
    (["apps", "set", "shop", "--top", "0"], "bad --top 0"),
    (["apps", "set", "shop", "--top", "1001"], "bad --top 1001"),
    (["apps", "set", "shop", "--top", "5.5"], "'--top'"),
    (["apps", "set", "shop", "--tz", "Europe/Paris"], "cannot change --tz (Asia/Kolkata to Europe/Paris)"),
    (["apps", "set", "shop", "--grace", "60", "--tz", "UTC"], "split or merged"),
    (["apps", "set", "shop", "--tz", "Mars/Olympus"], "bad time zone 'Mars/Olympus'"),
    (["apps", "set", "ghost", "--grace", "60"], "unknown app 'ghost'"),
    (["apps", "show", "ghost"], "unknown app 'ghost'"),
    (["apps", "rotate-key", "ghost"], "unknown app 'ghost'"),
    (["apps", "rotate-key", "shop", "--overlap", "24"], "bad --overlap '24'"),
    (["apps", "rotate-key", "shop", "--overlap", "31d"], "at most 30d"),
    (["apps", "rotate-key", "shop", "--overlap", "30d1s"], "at most 30d"),
    (["apps", "rotate-key", "shop", "--overlap", "-1h"], "bad --overlap '-1h'"),
    (["apps", "rotate-key", "shop", "--overlap", "1h1d"], "bad --overlap '1h1d'"),
    (["apps", "rotate-key", "shop", "--overlap", ""], "bad --overlap ''"),
    (["apps", "counter", "add", "shop", "plays", "--type", "cpv"], "'plays' of app shop is declared already (type sum)"),
    (["apps", "counter", "add", "shop", "Plays", "--type", "sum"], "bad counter name 'Plays'"),
    (["apps", "counter", "add", "shop", "level", "--type", "avg"], "bad counter type 'avg'"),
    (["apps", "counter", "add", "shop", "level", "--type", "slot"], "needs --slots"),
    (["apps", "counter", "add", "shop", "level", "--type", "slot", "--slots", "a,a"], "a slot is named twice"),
    (["apps", "counter", "add", "shop", "level", "--type", "slot", "--slots", "a,,b"], "bad slot ''"),
    (["apps", "counter", "add", "shop", "level", "--type", "slot", "--slots", "a,B"], "bad slot 'B'"),
    (["apps", "counter", "add", "shop", "level", "--type", "sum", "--slots", "a"], "takes no --slots"),
    (["apps", "counter", "add", "shop", "level"], "'--type'"),
    (["apps", "counter", "add", "ghost", "level", "--type", "sum"], "unknown app 'ghost'"),
    (["apps", "counter", "ls", "ghost"], "unknown app 'ghost'"),
    (["apps", "counter", "rm", "shop", "level"], "app shop has no counter 'level'"),
    (["apps", "counter", "rm", "ghost", "plays"], "unknown app 'ghost'"),
])
def test_bad_input_is_one_line_exit_2_and_changes_nothing(mongo_uri, astore, shop, args, needle, capsys):
    """Each bad option, name or app: one line naming it, exit 2, every app document byte for byte as
    before (the command line in this process: etcdcron.cli.main, the binary's error mapping; a few
    cases also run as a subprocess in test_cli.py)."""
    from etcdcron.cli import main

    astore.create_app(App.new("other", "UTC"))
    before = raw(astore)
    code = main([*args, "--mongo", mongo_uri])
    out = capsys.readouterr()
    assert code == 2, (out.out, out.err)
    assert needle in out.err and len(out.err.strip().splitlines()) == 1 and out.out == ""
    assert raw(astore) == before


@pytest.mark.parametrize("args", [["apps", "show", "shop"], ["apps", "rotate-key", "shop"]])
def test_unreachable_mongo_is_one_line_and_exit_1(args):
    """With no MongoDB at the URI, a command that reads and one that writes say so in one line and exit
    1 (every apps command opens MongoDB through the same `_store`; each case waits out its 3 s timeout)."""
    r = cli("mongodb://127.0.0.1:1/x", *args)
    assert r.returncode == 1 and "MongoDB unavailable" in r.stderr and len(r.stderr.strip().splitlines()) == 1
