"""The analytics builtin jobs (entry-point group ``etcdcron.jobs``): rollup, active_users, retention,
usage, purge. Each is ``fn(ctx: RunContext) -> dict``.

The firing's scheduled instant (``ctx.slot_epoch``) is "now": a rerun of a firing sees the same days.
Every run first raises the (job, app) fence in ``job_state``; when a newer run holds it, the stale run
touches nothing of that app. Every document it then writes is a fenced ``$set``
(:meth:`AnalyticsStore.fenced_set`), so a stale run that was already under way cannot overwrite a newer
run's results either: the first refused write stops it.

``rollup`` rebuilds every closed day that is not yet final, from its watermark on, and moves the
watermark over the days that turn final; the other jobs read rollup's output for final days only,
each from its own watermark, so each computes a day once from data that no longer changes. With
``--arg app=ID|NAME`` a job serves one app; without, every app. ``--arg mongo=URI`` overrides the
node's ``--mongo``.
"""

from __future__ import annotations

from typing import Any, Callable

import structlog

from . import days as dd
from .errors import InvalidApp
from .events import App
from .metrics import (RETENTION_DAYS, active_retention_day, active_step, breakdowns, custom_rows, entering, retention_day,
                      roll_day, summarize, usage_summary)
from .store import AnalyticsStore

log = structlog.get_logger("analytics.jobs")


class FencedOut(Exception):
    """A newer run of the same job holds this app; the stale run stops writing (internal)."""


def _mongo_uri(ctx) -> str:
    uri = ctx.args.get("mongo") or ctx.mongo
    if not uri:
        raise InvalidApp(f"job {ctx.job!r} needs MongoDB: start the node with --mongo URI or add the job with --arg mongo=URI")
    return uri


def _run(kind: str, ctx, per_app: Callable[[AnalyticsStore, App, float, int], dict[str, Any]]) -> dict[str, Any]:
    with AnalyticsStore(_mongo_uri(ctx)) as store:
        apps = [store.app(ctx.args["app"])] if ctx.args.get("app") else store.apps()
        out: dict[str, Any] = {}
        for app in apps:
            try:
                if not store.claim(kind, app.id, ctx.fence):
                    raise FencedOut
                out[app.name] = per_app(store, app, float(ctx.slot_epoch), ctx.fence)
            except FencedOut:
                log.warning("analytics.fenced_out", job=ctx.job, kind=kind, app=app.name, fence=ctx.fence)
                out[app.name] = {"fenced_out": True}
        return {"job": kind, "fence": ctx.fence, "apps": out}


def _write(store: AnalyticsStore, coll: str, rows: list[tuple[str, dict[str, Any]]], fence: int,
           insert_first: bool = False) -> None:
    if rows and store.fenced_set(coll, rows, fence, insert_first)[1]:
        raise FencedOut


def _advance(store: AnalyticsStore, kind: str, app: App, fence: int, **fields: Any) -> None:
    if not store.set_state(kind, app.id, fence, **fields):
        raise FencedOut


# --- rollup

def rollup(ctx) -> dict[str, Any]:
    """Build device_day, devices and daily_metrics for every closed day that is not yet final."""
    return _run("rollup", ctx, rollup_app)


REBUILD_LOG = 50  # rebuilds a rollup state remembers for the jobs after it


def rollup_app(store: AnalyticsStore, app: App, now: float, fence: int) -> dict[str, Any]:
    state = store.state("rollup", app.id)
    final = state.get("final")
    requests = store.rebuilds(app.id)
    first = state.get("first")
    reopened = _reopened(final, app, now, state.get("grace", app.grace))
    if reopened is not None:
        requests = requests + [("", reopened)]  # not a stored request: nothing to clear
    if requests:
        # An import stored events for days that may be final already: roll them up again from the
        # earliest, and every later day. Imports only add events, so the devices' activity bits stay
        # right and re-rolling the days in order rewrites every row that depends on them. The jobs
        # after this one see the rebuild in ``rebuilt`` and redo their days from there. Days whose
        # raw events the purge deleted are never rolled up again: they would come out empty.
        again = min(day for _, day in requests)
        purged = store.purged_before(app.id)
        if purged and again < purged:
            log.warning("analytics.rebuild_after_purge", app=app.name, asked=again, start=purged, fence=fence)
            again = purged
        if final and again <= final:
            gen = state.get("gen", 0) + 1
            log_ = (state.get("rebuilt") or [])[-(REBUILD_LOG - 1):] + [[gen, again]]
            first = min(first or again, again)
            final = dd.shift(again, -1)
            _advance(store, "rollup", app, fence, first=first, final=final, gen=gen, rebuilt=log_, grace=app.grace)
            log.info("analytics.rebuild", app=app.name, day=again, gen=gen, fence=fence)
    start = dd.shift(final, 1) if final else store.first_event_day(app.id)
    if start is None:
        store.clear_rebuilds([i for i, _ in requests if i])
        return {"days": [], "final": None}
    first = min(first or start, start)
    done = []
    counters = _counter_types(store, app)
    users_total = (store.one("daily_metrics", f"{app.id}|{dd.shift(start, -1)}") or {}).get("users_total", 0)
    for day in dd.span(start, dd.last_closed(now, app.tz)):
        summary = summarize(store.day_events(app.id, day), counters)
        known = store.by_ids("devices", [f"{app.id}|{dev}" for dev in summary.totals], {"first": 1, "bits": 1})
        day_rows, dev_rows, daily = roll_day(app.id, day, summary.totals, known)
        new = {r[1]["dev"] for r in day_rows if r[1]["first"] == day}
        users = _users_day(store, app, day, summary.uids, users_total, fence)
        users_total = users["users_total"]
        is_final = dd.is_final(day, app.tz, app.grace, now)
        # Rows that are new go in by bulk insert (a day's first build; devices seen first).
        first_build = store.one("daily_metrics", f"{app.id}|{day}") is None
        _write(store, "device_day", day_rows, fence, insert_first=first_build)
        _write(store, "devices", [r for r in dev_rows if r[0] not in known], fence, insert_first=True)
        _write(store, "devices", [r for r in dev_rows if r[0] in known], fence)
        _write(store, "breakdowns", [(f"{app.id}|{day}|{dim}", {"app": app.id, "day": day, "dim": dim, **b})
                                     for dim, b in breakdowns(summary, new, app.top).items()], fence)
        _write(store, "custom", [(f"{app.id}|{day}|{name}", {"app": app.id, "day": day, "name": name, **c})
                                 for name, c in custom_rows(summary.custom, app.top).items()], fence)
        _write(store, "daily_metrics", [(f"{app.id}|{day}", {**daily, **users, "final": is_final})], fence)
        done.append(day)
        if is_final:
            final = day
            _advance(store, "rollup", app, fence, first=first, final=final, grace=app.grace)
        log.info("analytics.rolled_up", app=app.name, day=day, final=is_final, devices=daily["dau"], fence=fence)
    store.clear_rebuilds([i for i, _ in requests if i])
    return {"days": done, "final": final}


def _reopened(final: str | None, app: App, now: float, grace: float) -> str | None:
    """After the app's grace grew beyond ``grace`` (the one its last final day was made final under),
    the first day up to ``final`` that is not final under the new grace: a longer grace reopens days
    for late events, and they are rolled up again until final again. None when none is (and always
    when the grace did not grow: a firing older than the last run's sees no day reopened)."""
    if not final or app.grace <= grace or dd.is_final(final, app.tz, app.grace, now):
        return None
    day = final
    while dd.is_final(dd.shift(day, -1), app.tz, app.grace, now) is False and day > dd.shift(final, -10):
        day = dd.shift(day, -1)
    return day


def _counter_types(store: AnalyticsStore, app: App) -> dict[str, str]:
    """Counter name -> type: the declared counters and the removed ones (`apps counter rm`), whose
    events stored before the removal still add up on days not final yet."""
    retired = (store.one("apps", app.id) or {}).get("retired_counters") or {}
    return {**{name: c["type"] for name, c in retired.items()}, **{c.name: c.type for c in app.counters}}


def _users_day(store: AnalyticsStore, app: App, day: str, uids: set[str], total_before: int, fence: int) -> dict[str, int]:
    """Registered users of ``day``: active, new (first seen on ``day``) and the total so far. A user's
    first day is the earliest rolled up; days are rolled in order, so the total is ``total_before``
    (yesterday's) plus today's new."""
    known = store.by_ids("users", [f"{app.id}|{u}" for u in uids], {"first": 1})
    seen, moved, new = [], [], 0
    for uid in sorted(uids):
        doc = known.get(f"{app.id}|{uid}")
        first = min(doc["first"], day) if doc else day
        new += first == day
        row = (f"{app.id}|{uid}", {"app": app.id, "uid": uid, "first": first})
        if doc is None:
            seen.append(row)
        elif doc["first"] != first:
            moved.append(row)
    _write(store, "users", seen, fence, insert_first=True)
    _write(store, "users", moved, fence)
    return {"users_active": len(uids), "users_new": new, "users_total": total_before + new}


# --- the jobs that read rollup's final days

def _final_days(store: AnalyticsStore, kind: str, app: App,
                per_day: Callable[[AnalyticsStore, App, str, int], None], fence: int,
                reset: Callable[[AnalyticsStore, App, int], None] | None = None) -> dict[str, Any]:
    """Run ``per_day`` on every final day after the job's watermark. After a rollup rebuild the
    watermark first goes back to the day before the rebuilt days; with ``reset``, the job starts
    over from the first day instead (for results that accumulate over days)."""
    roll = store.state("rollup", app.id)
    if not roll.get("final"):
        return {"days": []}
    own = store.state(kind, app.id)
    done = own.get("done")
    again = _rebuilt_from(roll, own) if done else None
    if again is not None:
        if reset is not None:
            reset(store, app, fence)
            done = None
        elif again <= done:
            done = dd.shift(again, -1) if again > roll["first"] else None
        log.info("analytics.rebuild", app=app.name, job=kind, day=again, fence=fence)
    if again is not None or own.get("gen", 0) != roll.get("gen", 0):
        _advance(store, kind, app, fence, done=done, gen=roll.get("gen", 0))
    start = dd.shift(done, 1) if done else roll["first"]
    days = dd.span(start, roll["final"])
    for day in days:
        per_day(store, app, day, fence)
        _advance(store, kind, app, fence, done=day)
    return {"days": days}


def _rebuilt_from(roll: dict[str, Any], own: dict[str, Any]) -> str | None:
    """The earliest day rollup rebuilt since this job last looked (None: nothing rebuilt)."""
    seen, rebuilt = own.get("gen", 0), roll.get("rebuilt") or []
    newer = [day for gen, day in rebuilt if gen > seen]
    if not newer:
        return None
    if rebuilt[0][0] > seen + 1:  # rebuilds this job never saw fell off the log
        return roll["first"]
    return min(newer)


def active_users(ctx) -> dict[str, Any]:
    """WAU, MAU and stickiness (DAU/MAU) of every final day."""
    return _run("active_users", ctx, lambda s, app, now, f: _final_days(s, "active_users", app, active_day, f))


def _dau(store: AnalyticsStore, app: App, day: str) -> int:
    doc = store.one("daily_metrics", f"{app.id}|{day}")
    return doc["dau"] if doc else 0


def _returned(store: AnalyticsStore, app: App, since: str, day: str) -> int:
    """Devices active on ``since`` and again by ``day``: each has one device_day with prev = since."""
    return store.count("device_day", {"app": app.id, "prev": since, "day": {"$lte": day}})


def window_direct(store: AnalyticsStore, app: App, day: str, width: int) -> int:
    """Distinct devices active in the ``width`` days ending on ``day``: for each day d of the window,
    its devices not active again by ``day``. Used where no previous day's count exists."""
    total = 0
    for d in dd.span(dd.shift(day, 1 - width), day):
        total += _dau(store, app, d) - (_returned(store, app, d, day) if d != day else 0)
    return total


def active_day(store: AnalyticsStore, app: App, day: str, fence: int) -> None:
    prevs = [r["prev"] for r in store.day_docs("device_day", app.id, day, {"prev": 1})]
    before = store.one("active_users", f"{app.id}|{dd.shift(day, -1)}")
    counts = {}
    for name, width in (("wau", 7), ("mau", 30)):
        if before is None:
            counts[name] = window_direct(store, app, day, width)
            continue
        gone = dd.shift(day, -width)
        counts[name] = active_step(before[name], entering(day, prevs, width), _dau(store, app, gone),
                                   _returned(store, app, gone, day))
    dau = len(prevs)
    fields = {"app": app.id, "day": day, "dau": dau, **counts, "stickiness": dau / counts["mau"] if counts["mau"] else 0.0}
    _write(store, "active_users", [(f"{app.id}|{day}", fields)], fence)


def usage(ctx) -> dict[str, Any]:
    """Usage time (total, per device, distribution of per-device daily totals), launches per device."""
    return _run("usage", ctx, lambda s, app, now, f: _final_days(s, "usage", app, usage_day, f))


def usage_day(store: AnalyticsStore, app: App, day: str, fence: int) -> None:
    rows = [(r["opens"], r["usage_ms"]) for r in store.day_docs("device_day", app.id, day, {"opens": 1, "usage_ms": 1})]
    _write(store, "usage", [(f"{app.id}|{day}", {"app": app.id, "day": day, **usage_summary(rows)})], fence)


def retention(ctx) -> dict[str, Any]:
    """Classic and unbounded N-day retention, N in 1…7, 14, 30, per cohort (devices new on a day), and
    active-user retention per cohort of devices active on a day."""
    return _run("retention", ctx, lambda s, app, now, f: _final_days(s, "retention", app, retention_day_job, f,
                                                                     reset=retention_reset))


def retention_reset(store: AnalyticsStore, app: App, fence: int) -> None:
    """Empty every cohort before a rebuild: unbounded counts accumulate day by day and cohorts may
    lose devices (an imported earlier first day), so the job redoes every day from the first."""
    ids = store.ids("retention", {"app": app.id})
    _write(store, "retention", [(i, {"size": 0, "classic": {}, "unbounded": {}, "ub_asof": ""}) for i in ids], fence)


def retention_day_job(store: AnalyticsStore, app: App, day: str, fence: int) -> None:
    """Write what final day ``day`` adds to each cohort.

    Classic counts are absolute. Unbounded counts grow with each day, so a cohort keeps
    ``ub_asof``, the last day already added: a day is added to a cohort once, also when the job
    is rerun after a crash half-way through the day. Active-user retention counts are absolute.
    """
    rows = store.day_docs("device_day", app.id, day, {"first": 1, "prev": 1, "win": 1})
    size, classic, delta = retention_day(day, [(r["first"], r["prev"]) for r in rows])
    cohorts = sorted(set(classic) | set(delta))
    stored = store.by_ids("retention", [f"{app.id}|{c}" for c in cohorts] + [f"{app.id}|{day}"])
    out = []
    if size or stored.get(f"{app.id}|{day}"):
        out.append((f"{app.id}|{day}", {"app": app.id, "cohort": day, "size": size, "ub_asof": day}))
    for cohort in cohorts:
        doc = stored.get(f"{app.id}|{cohort}")
        if doc is None or not doc.get("size"):  # nobody was new that day
            continue
        fields: dict[str, Any] = {f"classic.{n}": k for n, k in classic.get(cohort, {}).items()}
        if doc.get("ub_asof", "") < day:
            ub = {int(n): k for n, k in doc.get("unbounded", {}).items()}
            age = dd.between(cohort, day)
            reached = {n: ub.get(n, 0) for n in RETENTION_DAYS if n <= age}
            for n, k in delta.get(cohort, {}).items():
                reached[n] += k
            fields.update({f"unbounded.{n}": k for n, k in reached.items()})
            fields["ub_asof"] = day
        out.append((f"{app.id}|{cohort}", fields))
    _write(store, "retention", out, fence)
    if all("win" in r for r in rows):  # rows rolled up before the window existed: not known, not 0 %
        _active_retention_day(store, app, day, [r["win"] for r in rows], fence)


def _active_retention_day(store: AnalyticsStore, app: App, day: str, wins: list[int], fence: int) -> None:
    """Devices active on ``day`` (the cohort of ``day``, its size) and, for each N, how many of those
    active on ``day − N`` are active again on ``day`` (absolute counts, so a rerun rewrites them)."""
    first = store.state("rollup", app.id).get("first") or day
    counts = active_retention_day(wins)
    out = [(f"{app.id}|{day}", {"app": app.id, "cohort": day, "size": len(wins)})]
    for n, k in counts.items():
        cohort = dd.shift(day, -n)
        if cohort >= first:
            out.append((f"{app.id}|{cohort}", {"app": app.id, "cohort": cohort, f"counts.{n}": k}))
    _write(store, "active_retention", out, fence)


# --- purge

def purge(ctx) -> dict[str, Any]:
    """Drop raw events of days more than ``--arg days=N`` before today, never of a day not yet final."""
    raw = ctx.args.get("days", "")
    if not raw.isdigit() or int(raw) < 1:
        raise InvalidApp(f"bad --arg days={raw!r}: purge needs days=N, a whole number of days >= 1")
    keep = int(raw)

    def per_app(store: AnalyticsStore, app: App, now: float, fence: int) -> dict[str, Any]:
        final = store.state("rollup", app.id).get("final")
        if not final:
            return {"deleted": 0, "before": None}
        before = min(dd.shift(dd.day_of(now, app.tz), -keep), dd.shift(final, 1),
                     *(day for _, day in store.rebuilds(app.id)))  # a pending rebuild still needs its days
        # Recorded before deleting: a run that dies between the two must not leave days the rollup
        # would rebuild (an import, a longer grace) without their events.
        _advance(store, "purge", app, fence, before=max(before, store.purged_before(app.id) or before))
        deleted = store.purge_events(app.id, before)
        log.info("analytics.purged", app=app.name, before=before, deleted=deleted, fence=fence)
        return {"deleted": deleted, "before": before}

    return _run("purge", ctx, per_app)
