"""Every metric of every day, as the jobs leave them in MongoDB, equals a brute-force computation
over the same raw events: several random seeds, zones off UTC (with DST changes, one at midnight),
events at local midnight, events arriving late within the grace window."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from etcdcron.analytics import report
from etcdcron.analytics.importer import import_file

from .oracle import compute, compute_extra, top_n, trend as oracle_trend
from .simulate import COUNTERS, World, events, midnight

CASES = [
    (1, "Asia/Kolkata", date(2024, 3, 1)),
    (2, "America/Santiago", date(2024, 8, 20)),  # 2024-09-08: local midnight does not exist
    (3, "America/New_York", date(2024, 10, 15)),  # 2024-11-03: fall back
    (4, "Pacific/Chatham", date(2024, 3, 20)),  # UTC+13:45, fall back on 2024-04-07
]
DAYS = 33


def stored(world: World) -> dict:
    """The jobs' results, in the oracle's shape."""
    app = world.app.id
    db = world.store.db
    drop = {"_id", "app", "day", "fence", "final", "cohort", "ub_asof", "users_active", "users_new", "users_total"}
    out = {"daily": {}, "active": {}, "usage": {}, "retention": {}}
    for coll, key in (("daily_metrics", "daily"), ("active_users", "active"), ("usage", "usage")):
        for d in db[coll].find({"app": app}):
            out[key][d["day"]] = {k: v for k, v in d.items() if k not in drop}
    for d in db.retention.find({"app": app, "size": {"$gt": 0}}):
        out["retention"][d["cohort"]] = {"size": d["size"], "classic": d.get("classic", {}), "unbounded": d.get("unbounded", {})}
    return out


@pytest.mark.parametrize("seed,tz,start", CASES, ids=[c[1] for c in CASES])
def test_jobs_equal_the_oracle(astore, mongo_uri, seed, tz, start):
    """Run at 00:30 and 03:00 local each day with events trickling in, the jobs' final metrics equal the oracle's."""
    raw = events(seed, tz, start, DAYS, 70)
    world = World.make(astore, mongo_uri, tz, raw, seed)
    for k in range(1, DAYS + 1):
        day0 = midnight(start + timedelta(days=k), tz)
        for at in (day0 + 1800, day0 + 3 * 3600):
            world.deliver(at)
            world.run("rollup", at)
            if k % 4 == 0 or k == DAYS:
                world.run_all(at)
    last = start + timedelta(days=DAYS - 1)
    world.deliver(float("inf"))
    world.run_all(midnight(last + timedelta(days=1), tz) + 3 * 3600)
    assert len(world.delivered) == len(raw) and astore.count_events(world.app.id) == len(raw)
    want, got = compute(raw, tz, last), stored(world)
    for part in ("daily", "active", "usage", "retention"):
        assert set(got[part]) == set(want[part]), part
        for day in want[part]:
            assert got[part][day] == want[part][day], f"{part} {day}"
    assert all(d["final"] for d in astore.db.daily_metrics.find({"app": world.app.id}))
    assert any(v["classic"].get("30") for v in want["retention"].values()), "no 30-day retention exercised"


# --- issue 12: breakdowns, registered users, active-user retention, custom counters, trend, rebuilds

EXTRA = [
    (5, "America/New_York", date(2024, 10, 15)),  # fall back on 2024-11-03
    (6, "Asia/Kolkata", date(2024, 3, 1)),
]


def _rows(block: dict) -> tuple[list, dict | None]:
    """A stored breakdown ({values: [{value, …}], other}) in top_n's shape."""
    kept = [(r["value"], {k: v for k, v in r.items() if k != "value"}) for r in block["values"]]
    return kept, block["other"]


def stored_extra(world: World) -> dict:
    db, app = world.store.db, world.app.id
    out: dict = {"breakdowns": {}, "users": {}, "active_retention": {}, "custom": {}}
    for d in db.breakdowns.find({"app": app}):
        if d["values"]:
            out["breakdowns"].setdefault(d["day"], {})[d["dim"]] = _rows(d)
    for d in db.daily_metrics.find({"app": app}):
        out["users"][d["day"]] = {"active": d["users_active"], "new": d["users_new"], "total": d["users_total"]}
    for d in db.active_retention.find({"app": app, "size": {"$gt": 0}}):
        out["active_retention"][d["cohort"]] = {"size": d["size"], "counts": d.get("counts", {})}
    for d in db.custom.find({"app": app}):
        row = {"total": d["total"]}
        if "slots" in d:
            row["slots"] = d["slots"]
        if "by" in d:
            row["by"] = {dim: _rows(b) for dim, b in d["by"].items()}
        out["custom"].setdefault(d["day"], {})[d["name"]] = row
    return out


def _expected_custom(want: dict, top: int) -> dict:
    """The oracle's custom sums with cpv values bounded like the store's (top N by amount, then value)."""
    out = {}
    for day, per in want.items():
        out[day] = {}
        for name, c in per.items():
            row = dict(c)
            if "by" in c:
                row["by"] = {}
                for dim, values in c["by"].items():
                    ranked = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))
                    rest = ranked[top:]
                    row["by"][dim] = ([(v, {"amount": a}) for v, a in ranked[:top]],
                                      {"amount": sum(a for _, a in rest), "values": len(rest)} if rest else None)
            out[day][name] = row
    return out


def _compare_extra(world: World, raw: list[dict], tz: str, last: date, top: int) -> None:
    want = compute_extra(raw, tz, last, COUNTERS)
    got = stored_extra(world)
    assert set(got["breakdowns"]) == set(want["breakdowns"])
    fields = {"channel": "ch", "platform": "pf", "version": "ver"}
    for day, dims in want["breakdowns"].items():
        for dim, values in dims.items():
            kept, other = top_n(values, top)
            if other:  # other's DAU: distinct devices that used any merged value that day (not the sum)
                merged = set(values) - {v for v, _ in kept}
                other = {**other, "dau": len({e["dev"] for e in raw if dd_day(e["ts"], tz) == day
                                              and e.get(fields[dim], "") in merged})}
            assert got["breakdowns"][day][dim] == (kept, other), f"breakdown {dim} {day}"
    assert got["users"] == want["users"]
    assert got["active_retention"] == want["active_retention"]
    assert got["custom"] == _expected_custom(want["custom"], top)
    base = compute(raw, tz, last)
    marks = {kind: world.store.state(kind, world.app.id).get("final" if kind == "rollup" else "done")
             for kind in ("rollup", "active_users", "retention", "usage")}
    assert marks["rollup"] == marks["retention"] == last.isoformat()
    got_trend = report.trend(world.store, world.app, marks)
    want_trend = oracle_trend(base["daily"], base["retention"], last)
    for part in ("current", "previous"):
        assert {k: got_trend[part][k] for k in want_trend[part]} == want_trend[part], part


def dd_day(ts: float, tz: str) -> str:
    return datetime.fromtimestamp(ts, ZoneInfo(tz)).date().isoformat()


def _final_run(world: World, start: date, days: int, tz: str) -> date:
    last = start + timedelta(days=days - 1)
    world.deliver(float("inf"))
    world.run_all(midnight(last + timedelta(days=1), tz) + 3 * 3600)
    return last


@pytest.mark.parametrize("seed,tz,start", EXTRA, ids=[c[1] for c in EXTRA])
@pytest.mark.parametrize("top", [20, 2])
def test_new_metrics_equal_the_oracle(astore, mongo_uri, seed, tz, start, top):
    """Breakdowns (top N and other), registered users, active-user retention, custom counters and the
    trend, built by the jobs run as in production, equal the oracle's; a device with two versions on
    one day counts under each, a new device only under its first event's."""
    raw = events(seed, tz, start, DAYS, 60, rich=True)
    world = World.make(astore, mongo_uri, tz, raw, seed, counters=COUNTERS)
    world.app = astore.update_app(world.app.id, {"top": top})
    for k in range(1, DAYS + 1):
        at = midnight(start + timedelta(days=k), tz) + 3 * 3600
        world.deliver(at)
        world.run("rollup", at)
        if k % 5 == 0:
            world.run_all(at)
    last = _final_run(world, start, DAYS, tz)
    _compare_extra(world, raw, tz, last, top)
    two = compute_extra(raw, tz, last, COUNTERS)["breakdowns"]
    assert any(len(v["version"]) > top for v in two.values()) or top == 20
    assert any(v["new"] != v["dau"] for d in two.values() for v in d["version"].values()), "no returning device"
    before = world.snapshot(keep_fence=False)
    world.run_all(midnight(last + timedelta(days=1), tz) + 3 * 3600)
    assert world.snapshot(keep_fence=False) == {k: v for k, v in before.items()}, "a rerun changed something"


@pytest.mark.parametrize("seed,tz,start", EXTRA, ids=[c[1] for c in EXTRA])
def test_history_imported_into_final_days_is_rebuilt(astore, mongo_uri, tmp_path, seed, tz, start):
    """Events of final days imported afterwards (`analytics import`'s function): every metric — the
    days, WAU/MAU windows, retention cohorts and their later days, usage, and all of issue 12's —
    equals the oracle over all the events again; a rerun changes nothing."""
    raw = events(seed, tz, start, DAYS, 60, rich=True)
    cut_lo, cut_hi = midnight(start + timedelta(days=8), tz), midnight(start + timedelta(days=15), tz)
    late = [e for e in raw if cut_lo <= e["ts"] < cut_hi and int(e["dev"].rsplit("-", 1)[1]) % 2 == 0]
    assert len(late) > 20
    held = {e["id"] for e in late}
    world = World.make(astore, mongo_uri, tz, [e for e in raw if e["id"] not in held], seed, counters=COUNTERS)
    last = _final_run(world, start, DAYS, tz)
    first_seen = {}
    for e in raw:
        first_seen[e["dev"]] = min(first_seen.get(e["dev"], e["ts"]), e["ts"])
    assert any(first_seen[e["dev"]] == e["ts"] for e in late), "no device's first day moves earlier"
    path = tmp_path / "late.ndjson"
    keys = {"id": "id", "type": "type", "dev": "deviceId", "ts": "ts", "ch": "channel", "pf": "platform",
            "ver": "version", "uid": "userId", "name": "name", "amt": "amount", "slot": "slot"}
    with open(path, "w") as f:
        for e in late:
            row = {keys[k]: v for k, v in e.items() if k in keys and v not in ("", None)}
            if e["type"] == "usage":
                row["seconds"] = e["sec"]
            f.write(json.dumps(row) + "\n")
    summary = import_file(astore, world.app, path, "ndjson", now=midnight(last + timedelta(days=1), tz) + 3 * 3600)
    assert summary["stored"] == len(late) and summary["rebuild_from"] == min(dd_day(e["ts"], tz) for e in late)
    world.run_all(midnight(last + timedelta(days=1), tz) + 3 * 3600)
    assert astore.rebuilds(world.app.id) == []
    want, got = compute(raw, tz, last), stored(world)
    for part in ("daily", "active", "usage", "retention"):
        assert set(got[part]) == set(want[part]), part
        for day in want[part]:
            assert got[part][day] == want[part][day], f"{part} {day}"
    _compare_extra(world, raw, tz, last, world.app.top)
    before = world.snapshot(keep_fence=False)
    world.run_all(midnight(last + timedelta(days=1), tz) + 3 * 3600)
    assert world.snapshot(keep_fence=False) == before
