"""The builtin jobs as the executor calls them: reruns and stale fences change nothing, purge keeps
what is not final, bad arguments are refused."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from etcdcron.analytics import jobs
from etcdcron.analytics.errors import InvalidApp
from etcdcron.executor import RunContext

from .simulate import COUNTERS, JOBS, World, events, midnight

TZ = "America/St_Johns"  # UTC-03:30 / -02:30
START = date(2025, 3, 1)
DAYS = 12


@pytest.fixture
def world(astore, mongo_uri) -> World:
    """An app with 12 days of events, every job run once at 03:00 after the last day (all final)."""
    w = World.make(astore, mongo_uri, TZ, events(7, TZ, START, DAYS, 40, rich=True), seed=7, counters=COUNTERS)
    w.deliver(float("inf"))
    w.now = midnight(START + timedelta(days=DAYS), TZ) + 3 * 3600
    w.run_all(w.now)
    return w


def _reset_watermarks(world: World) -> None:
    """As if every run had died before recording its progress."""
    world.store.db.job_state.update_many({"app": world.app.id}, {"$unset": {"final": "", "done": ""}})


@pytest.mark.parametrize("name", list(JOBS) + ["purge"])
def test_a_rerun_changes_nothing(world, name):
    """Rerunning a job, also from scratch after its watermark was lost, leaves every metric as it was."""
    before = world.snapshot(keep_fence=False)
    args = {"days": "3"} if name == "purge" else {}
    world.run(name, world.now, **args)
    if name == "purge":
        before = world.snapshot(keep_fence=False)
        world.run(name, world.now, **args)
    else:
        _reset_watermarks(world)
        world.run(name, world.now, **args)
        world.run(name, world.now, **args)
    after = world.snapshot(keep_fence=False)
    for coll in after:
        if coll != "job_state":
            assert after[coll] == before[coll], coll


def test_rollup_rerun_after_purge_changes_nothing(world):
    """Once raw events are purged, rerunning every job changes no metric (final days are never rebuilt)."""
    before = world.snapshot(keep_fence=False)
    assert world.run("purge", world.now, days="2")["apps"]["sim"]["deleted"] > 0
    world.run_all(world.now)
    after = world.snapshot(keep_fence=False)
    assert all(after[c] == before[c] for c in after if c != "job_state")


@pytest.mark.parametrize("name", list(JOBS) + ["purge"])
def test_a_stale_fence_changes_nothing(world, name):
    """A run under a lower fence than an earlier run writes nothing, even with new events waiting."""
    if name == "purge":
        world.run("purge", world.now, days="365")  # a newer purge ran (and found nothing to drop)
    world.pending = [(world.now, {"id": "late", "dev": "newcomer", "type": "open", "ts": world.now - 3600, "sec": 0.0})]
    world.deliver(world.now)
    before = world.snapshot()
    events_before = world.store.count_events(world.app.id)
    result = world.run(name, world.now + 86_400, fence=50, **({"days": "1"} if name == "purge" else {}))
    assert result["apps"]["sim"] == {"fenced_out": True}
    assert world.snapshot() == before
    assert world.store.count_events(world.app.id) == events_before


def test_a_stale_run_already_under_way_cannot_overwrite(world):
    """A run that claimed before a newer one is refused at its first write and stops."""
    app, store = world.app, world.store
    store.db.job_state.update_one({"_id": f"rollup|{app.id}"}, {"$unset": {"final": ""}})
    before = world.snapshot()
    with pytest.raises(jobs.FencedOut):
        jobs.rollup_app(store, app, world.now, 50)
    assert world.snapshot() == before


def test_late_events_reopen_their_day_until_it_is_final(astore, mongo_uri):
    """A day rolled up at 00:30 is rolled up again with events that arrive within the grace window."""
    day0 = midnight(START + timedelta(days=1), TZ)
    w = World.make(astore, mongo_uri, TZ, [], name="late")
    w.pending = [(day0 - 10, {"id": "a", "dev": "x", "type": "open", "ts": day0 - 100, "sec": 0.0}),
                 (day0 + 3600, {"id": "b", "dev": "y", "type": "open", "ts": day0 - 50, "sec": 0.0})]
    w.deliver(day0 + 1800)
    w.run("rollup", day0 + 1800)
    key = f"{w.app.id}|{START.isoformat()}"
    assert (astore.one("daily_metrics", key)["dau"], astore.one("daily_metrics", key)["final"]) == (1, False)
    w.deliver(day0 + 3600)
    w.run("rollup", day0 + 3 * 3600)
    assert (astore.one("daily_metrics", key)["dau"], astore.one("daily_metrics", key)["final"]) == (2, True)
    assert astore.state("rollup", w.app.id)["final"] == START.isoformat()


def test_purge_keeps_days_that_are_not_final(astore, mongo_uri):
    """purge drops events older than N days, but never those of a day the rollup has not finalised."""
    w = World.make(astore, mongo_uri, TZ, events(3, TZ, START, 6, 10), name="p")
    w.deliver(float("inf"))
    end = midnight(START + timedelta(days=6), TZ)
    assert w.run("purge", end + 40 * 86_400, days="1")["apps"]["p"] == {"deleted": 0, "before": None}
    w.run("rollup", midnight(START + timedelta(days=3), TZ) + 3 * 3600)  # days 0..2 final
    assert w.run("purge", end + 40 * 86_400, days="1")["apps"]["p"]["before"] == (START + timedelta(days=3)).isoformat()
    left = {d["day"] for d in astore.db.events.find({"app": w.app.id})}
    assert min(left) == (START + timedelta(days=3)).isoformat()


@pytest.mark.parametrize("args,needle", [({"days": "0"}, "days"), ({"days": "x"}, "days"), ({}, "days")])
def test_purge_needs_a_number_of_days(mongo_uri, args, needle):
    """purge without a whole number of days >= 1 is refused before touching anything."""
    with pytest.raises(InvalidApp, match=needle):
        jobs.purge(RunContext("purge", 0, "n", 1, 1, args, mongo_uri))


def test_jobs_need_mongo_and_a_known_app(mongo_uri):
    """Without a MongoDB URI, or with an unknown app, a job fails with a one-line reason."""
    with pytest.raises(InvalidApp, match="--mongo"):
        jobs.rollup(RunContext("rollup", 0, "n", 1, 1, {}, None))
    with pytest.raises(InvalidApp, match="unknown app 'ghost'"):
        jobs.retention(RunContext("retention", 0, "n", 1, 1, {"app": "ghost"}, mongo_uri))
    assert jobs.usage(RunContext("usage", 0, "n", 1, 1, {"mongo": mongo_uri}, None))["apps"] == {}


def test_incremental_windows_equal_direct_counts(world):
    """The WAU/MAU chain (yesterday's count, plus entering, minus leaving) equals the direct window count."""
    for k in range(DAYS):
        day = (START + timedelta(days=k)).isoformat()
        doc = world.store.one("active_users", f"{world.app.id}|{day}")
        assert doc["wau"] == jobs.window_direct(world.store, world.app, day, 7)
        assert doc["mau"] == jobs.window_direct(world.store, world.app, day, 30)


def test_a_longer_grace_reopens_days_until_they_are_final_again(world):
    """After `apps set --grace` makes the grace longer, the collector takes events for days that were
    final: the rollup rolls those days up again until they are final again, and the jobs after it
    wait for them and redo them (before: the rollup never looked at them again and the events were lost)."""
    from etcdcron.analytics.events import Event, admit

    app = world.app = world.store.update_app(world.app.id, {"grace": 3 * 86_400.0})
    day = (START + timedelta(days=DAYS - 1)).isoformat()
    before = world.store.one("daily_metrics", f"{app.id}|{day}")
    assert before["final"] and world.store.state("active_users", app.id)["done"] == day
    docs, _ = admit(app, [Event(id="late-1", type="open", dev="late-dev", ts=midnight(START + timedelta(days=DAYS - 1), TZ) + 60)],
                    world.now)  # the collector takes it under the longer grace
    world.store.insert_events(docs)
    world.run_all(world.now)
    now = world.store.one("daily_metrics", f"{app.id}|{day}")
    assert now["final"] is False and now["new"] == before["new"] + 1 and now["launches"] == before["launches"] + 1
    assert world.store.state("active_users", app.id)["done"] < day
    world.run_all(world.now + 3 * 86_400)
    assert world.store.state("rollup", app.id)["final"] >= day and world.store.state("active_users", app.id)["done"] >= day
    assert world.store.one("active_users", f"{app.id}|{day}")["dau"] == before["dau"] + 1
    assert world.store.one("daily_metrics", f"{app.id}|{day}")["final"] is True


def test_a_rebuild_never_rolls_up_purged_days(world):
    """A rebuild asked from the app's first day (`analytics rebuild` without --from, or an import
    racing the purge) after purge deleted raw events: the purged days are not rolled up again (they
    would come out empty, and the days after them wrong: found in review), so every metric stays."""
    assert world.run("purge", world.now, days="4")["apps"]["sim"]["deleted"] > 0
    before = world.snapshot(keep_fence=False)
    world.store.mark_rebuild(world.app.id, START.isoformat())
    world.run_all(world.now)
    after = world.snapshot(keep_fence=False)

    def same(docs):  # retention starts over from empty cohorts: an empty map where none was written
        return [{k: v for k, v in d.items() if v != {}} for d in docs]

    for coll in after:
        if coll != "job_state":
            assert same(after[coll]) == same(before[coll]), coll
    assert world.store.state("rollup", world.app.id)["rebuilt"][-1][1] == world.store.purged_before(world.app.id)


def test_an_older_firing_sees_no_day_reopened(world):
    """A rollup firing older than the last run's (a backfill, a recovered firing) finds the last final
    day not final at its instant: that is no reopened day (the grace did not grow), so it starts no
    rebuild and the jobs after it redo nothing (found in review: retention replayed every day)."""
    state = world.store.state("rollup", world.app.id)
    older = midnight(START + timedelta(days=DAYS), TZ) + 2 * 3600  # the last day's final instant is 2 h 05 min
    world.run_all(older)
    assert world.store.state("rollup", world.app.id).get("gen") == state.get("gen")
    assert world.store.state("retention", world.app.id)["done"] == (START + timedelta(days=DAYS - 1)).isoformat()
