"""Every metric of every day, as the jobs leave them in MongoDB, equals a brute-force computation
over the same raw events: several random seeds, zones off UTC (with DST changes, one at midnight),
events at local midnight, events arriving late within the grace window."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from .oracle import compute
from .simulate import World, events, midnight

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
