"""The analytics jobs as builtins under `etcdcron serve` (a real node process, real etcd, real MongoDB)."""

from __future__ import annotations

import json
import time

from etcdcron.analytics import days as dd
from etcdcron.analytics.events import App, Event, admit
from etcdcron.nodes import wait_for


def test_jobs_run_under_serve_and_write_their_results(cluster, astore, mongo_uri):
    """All five analytics jobs added with `etcdcron add` fire on a `serve --mongo` node and write their results."""
    app = astore.create_app(App.new("served", "Asia/Tokyo"))
    today = dd.day_of(time.time(), app.tz)
    days = [dd.shift(today, -3), dd.shift(today, -2)]
    docs = []
    for i, day in enumerate(days):
        start = dd.start_of(day, app.tz)
        for dev in range(3 + i):
            for ts, kind, sec in ((start + 60 * dev, "open", 0.0), (start + 60 * dev + 30, "usage", 30.0)):
                ev = Event(id=f"{day}-{dev}-{kind}", type=kind, dev=f"d{dev}", ts=ts, sec=sec)
                docs += admit(app, [ev], ts + 5)[0]
    astore.insert_events(docs)

    cluster.start("n1", "--mongo", mongo_uri)
    assert wait_for(lambda: "n1" in cluster.live(), 20), "node did not register"
    for job in ("rollup", "active_users", "retention", "usage"):
        r = cluster.cli("add", "* * * * * *", job, "--arg", f"app={app.id}")
        assert r.returncode == 0, r.stderr
    r = cluster.cli("add", "* * * * * *", "purge", "--arg", "days=1")
    assert r.returncode == 0, r.stderr

    first, second = (f"{app.id}|{d}" for d in days)

    def done() -> bool:
        return (astore.state("rollup", app.id).get("final", "") >= days[1]
                and all(astore.one(c, second) for c in ("active_users", "usage"))
                and astore.one("retention", first) is not None
                and astore.state("retention", app.id).get("done", "") >= days[1]
                and astore.db.events.count_documents({"app": app.id, "day": {"$in": days}}) == 0)

    assert wait_for(done, 40, step=0.2), f"results missing; node log: {(cluster.tmp / 'n1.log').read_text()[-2000:]}"
    assert astore.one("daily_metrics", first)["dau"] == 3 and astore.one("daily_metrics", second)["dau"] == 4
    assert astore.one("daily_metrics", second)["new"] == 1 and astore.one("usage", second)["total_ms"] == 120_000
    assert astore.one("active_users", second)["wau"] == 4
    assert astore.one("retention", first)["classic"]["1"] == 3
    history = json.loads(cluster.cli("history", "rollup", "--json").stdout)
    assert any(h["state"] == "succeeded" for h in history)
