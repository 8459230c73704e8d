"""The analytics commands as a user runs them (`python cli.py …` in a subprocess, real MongoDB)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from etcdcron.analytics import jobs
from etcdcron.analytics.events import goa_sign
from etcdcron.embedded import free_port
from etcdcron.executor import RunContext
from etcdcron.nodes import wait_for

ROOT = Path(__file__).resolve().parents[2]


def cli(mongo: str | None, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ETCDCRON_MONGO"}
    if mongo:
        env["ETCDCRON_MONGO"] = mongo
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], env=env, capture_output=True, text=True, timeout=120)


def test_apps_create_prints_id_and_key_and_ls_lists_it(mongo_uri, astore):
    """`apps create NAME --tz ZONE` prints the id and key it stored; `apps ls --json` lists the app."""
    r = cli(mongo_uri, "apps", "create", "shop", "--tz", "America/Sao_Paulo")
    assert r.returncode == 0, r.stderr
    app = astore.app("shop")
    assert f"id:  {app.id}" in r.stdout and f"key: {app.key}" in r.stdout and app.tz == "America/Sao_Paulo"
    listed = json.loads(cli(mongo_uri, "apps", "ls", "--json").stdout)
    assert listed == [{"id": app.id, "name": "shop", "tz": "America/Sao_Paulo", "grace": 7200.0}]


@pytest.mark.parametrize("args,needle", [
    (["apps", "create", "shop", "--tz", "Mars/Olympus"], "Mars/Olympus"),
    (["apps", "create", "Bad Name", "--tz", "UTC"], "Bad Name"),
    (["apps", "create", "shop", "--grace", "-5"], "grace"),
    (["apps", "create", "taken"], "exists already"),
    (["analytics", "report", "--app", "ghost"], "unknown app 'ghost'"),
    (["analytics", "seed", "--app", "ghost", "--devices", "5", "--days", "2"], "unknown app 'ghost'"),
    (["analytics", "seed", "--app", "taken", "--days", "0"], "--days"),
    (["analytics", "report", "--app", "taken", "--by", "country"], "--by"),
    (["analytics", "rebuild", "--app", "taken", "--from", "2024-13-01"], "--from"),
    (["analytics", "rebuild", "--app", "taken"], "no events"),
    (["analytics", "rebuild", "--app", "ghost"], "unknown app 'ghost'"),
    (["apps", "set", "taken", "--tz", "Asia/Tokyo"], "cannot change --tz"),
    (["apps", "rotate-key", "taken", "--overlap", "24"], "bad --overlap '24'"),
])
def test_bad_input_is_one_line_and_exit_2(mongo_uri, astore, args, needle):
    """Bad zone, name, grace, a taken name, an unknown app: one line naming it, exit 2, nothing written."""
    from etcdcron.analytics.events import App

    astore.create_app(App.new("taken", "UTC"))
    r = cli(mongo_uri, *args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert needle in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert [a.name for a in astore.apps()] == ["taken"] and astore.db.events.count_documents({}) == 0


def test_unreachable_mongo_is_one_line_and_exit_1():
    """With no MongoDB at the URI, a command says so in one line and exits 1."""
    r = cli("mongodb://127.0.0.1:1/x", "apps", "ls")
    assert r.returncode == 1 and "MongoDB unavailable" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_seed_then_jobs_then_report(mongo_uri, astore):
    """`analytics seed` writes plausible events for an app; after the jobs, `analytics report` shows them."""
    assert cli(mongo_uri, "apps", "create", "demo", "--tz", "Asia/Kolkata").returncode == 0
    r = cli(mongo_uri, "analytics", "seed", "--app", "demo", "--devices", "80", "--days", "10", "--json")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    app = astore.app("demo")
    assert summary["events"] == astore.count_events(app.id) > 200
    stored = list(astore.db.events.find({"app": app.id}))
    assert {e["type"] for e in stored} == {"open", "usage"} and len({e["ch"] for e in stored}) >= 3
    assert len({e["pf"] for e in stored}) == 2 and len({e["ver"] for e in stored}) >= 2
    assert len({e["day"] for e in stored}) == 10

    now = int(time.time())
    for fence, fn in enumerate((jobs.rollup, jobs.active_users, jobs.retention, jobs.usage), start=1):
        fn(RunContext(fn.__name__, now, "test", fence, 1, {"app": "demo"}, mongo_uri))
    data = json.loads(cli(mongo_uri, "analytics", "report", "--app", "demo", "--days", "10", "--json").stdout)
    days = [d for d in data["days"] if d["dau"]]
    # Yesterday is still in its grace (the app's first 2 h of today): rolled up, but no WAU/MAU yet.
    final = [d for d in days if d["wau"] is not None]
    assert len(days) >= 9 and len(final) >= 8 and all(d["wau"] >= d["dau"] and d["mau"] >= d["wau"] for d in final)
    assert sum(d["launches"] for d in data["days"]) == astore.db.events.count_documents({"app": app.id, "type": "open"})
    assert data["retention"] and data["retention"][0]["classic"]["1"] is not None
    text = cli(mongo_uri, "analytics", "report", "--app", "demo", "--days", "10")
    assert text.returncode == 0 and "LAUNCHES" in text.stdout and "classic retention" in text.stdout
    again = cli(mongo_uri, "analytics", "seed", "--app", "demo", "--devices", "5", "--days", "3")
    assert again.returncode == 2 and "rolled up through" in again.stderr


def test_default_report_shows_day_30_retention_breakdowns_and_trend(mongo_uri, astore):
    """The default 14-day report shows cohorts whose D14 and D30 fall in its days (the cohorts from 30
    days before it), `--by version` the breakdown, and the trend; `analytics rebuild` asks for a rebuild."""
    assert cli(mongo_uri, "apps", "create", "deep", "--tz", "Europe/Lisbon").returncode == 0
    assert cli(mongo_uri, "analytics", "seed", "--app", "deep", "--devices", "150", "--days", "45").returncode == 0
    app = astore.app("deep")
    now = int(time.time())
    for fence, fn in enumerate((jobs.rollup, jobs.active_users, jobs.retention, jobs.usage), start=1):
        fn(RunContext(fn.__name__, now, "test", fence, 1, {"app": "deep"}, mongo_uri))
    data = json.loads(cli(mongo_uri, "analytics", "report", "--app", "deep", "--by", "version", "--json").stdout)
    assert len(data["days"]) == 14
    assert any(c["classic"]["30"] is not None for c in data["retention"]), "no cohort shows D30"
    assert any(c["unbounded"]["14"] is not None and c["cohort"] < data["first"] for c in data["retention"])
    assert any(c["share"]["30"] is not None for c in data["active_retention"])
    versions = {r["value"] for b in data["breakdown"].values() for r in b["values"]}
    assert len(versions) >= 2 and data["by"] == "version"
    day = next(d for d in data["days"] if d["dau"])
    assert sum(r["dau"] for r in data["breakdown"][day["day"]]["values"]) >= day["dau"]
    assert sum(r["launches"] for r in data["breakdown"][day["day"]]["values"]) == day["launches"]
    t = data["trend"]
    assert t["current"]["last"] == data["done_through"]["rollup"]
    window = [d for d in data["days"] if t["current"]["first"] <= d["day"] <= t["current"]["last"]]
    assert len(window) == 7 and t["current"]["new"] == sum(d["new"] for d in window) > 0
    assert t["current"]["active"] > 0 and t["previous"]["active"] > 0
    text = cli(mongo_uri, "analytics", "report", "--app", "deep", "--by", "version")
    assert text.returncode == 0 and "by version" in text.stdout and "trend:" in text.stdout
    assert "active-user retention" in text.stdout and "registered users" in text.stdout
    r = cli(mongo_uri, "analytics", "rebuild", "--app", "deep", "--from", "2020-01-01")
    assert r.returncode == 0 and astore.rebuilds(app.id)[0][1] == "2020-01-01"


def test_collect_serves_the_client_api(mongo_uri, astore, tmp_path):
    """`etcdcron collect --mongo URI --port P` takes a signed openApp, stores it, applies its rate-limit
    flags, and stops on SIGTERM."""
    from etcdcron.analytics.events import App

    app = astore.create_app(App.new("live", "Europe/Berlin"))
    port = free_port()
    log = open(tmp_path / "collect.log", "wb")
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "collect", "--mongo", mongo_uri, "--port", str(port),
                             "--client-rate", "0.01", "--client-burst", "1"], stdout=log, stderr=subprocess.STDOUT)
    try:
        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5).status_code == 200
            except httpx.HTTPError:
                return False

        assert wait_for(up, 20, step=0.1), (tmp_path / "collect.log").read_text()
        params = {"appId": app.id, "deviceId": "phone", "channel": "appstore", "platform": "ios", "version": "1",
                  "timestamp": str(int(time.time()))}
        params["sign"] = goa_sign(params, app.key)
        r = httpx.post(f"http://127.0.0.1:{port}/i/user/open_app?{urlencode(params)}")
        assert r.status_code == 200 and r.json()["stored"] == 1
        assert astore.db.events.find_one({"app": app.id})["dev"] == "phone"
        # The rate-limit flags reach the collector: a burst of 1 at 0.01/s leaves no room for a second request.
        params["deviceId"] = "tablet"
        params["sign"] = goa_sign({k: v for k, v in params.items() if k != "sign"}, app.key)
        r = httpx.post(f"http://127.0.0.1:{port}/i/user/open_app?{urlencode(params)}")
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 60
        assert astore.db.events.count_documents({"app": app.id}) == 1
    finally:
        proc.terminate()
        assert proc.wait(15) == 0
        log.close()
