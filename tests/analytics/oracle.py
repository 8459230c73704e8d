"""The oracle: every metric of DESIGN §6 computed by brute force from a raw event list.

Written from the definitions, sharing no code with the analytics package: sets of devices per local
day, unions over windows, explicit loops over cohorts.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

NS = (1, 2, 3, 4, 5, 6, 7, 14, 30)


def local_day(ts: float, tz: str) -> date:
    return datetime.fromtimestamp(ts, ZoneInfo(tz)).date()


def _bucket(ms: int) -> str:
    if ms == 0:
        return "0s"
    if ms < 60_000:
        return "<1m"
    if ms < 180_000:
        return "1-3m"
    if ms < 600_000:
        return "3-10m"
    if ms < 1_800_000:
        return "10-30m"
    if ms < 3_600_000:
        return "30-60m"
    return ">=1h"


def _rank(values: list[int], p: int) -> int:
    ordered = sorted(values)
    return ordered[math.ceil(p * len(ordered) / 100) - 1]


def compute(events: list[dict], tz: str, last: date) -> dict:
    """Metrics per day (ISO string) from the first event's day to ``last``; retention per cohort.

    ``events``: dicts with dev, type ("open" | "usage"), ts (Unix seconds), sec.
    """
    active: dict[date, set[str]] = defaultdict(set)
    opens: dict[date, int] = defaultdict(int)
    usage_by_dev: dict[date, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    opens_by_dev: dict[date, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    days_of: dict[str, set[date]] = defaultdict(set)
    for e in events:
        d = local_day(e["ts"], tz)
        if d > last:
            continue
        active[d].add(e["dev"])
        days_of[e["dev"]].add(d)
        usage_by_dev[d][e["dev"]] += 0
        if e["type"] == "open":
            opens[d] += 1
            opens_by_dev[d][e["dev"]] += 1
        else:
            usage_by_dev[d][e["dev"]] += round(e["sec"] * 1000)
    first = {dev: min(ds) for dev, ds in days_of.items()}
    latest = {dev: max(ds) for dev, ds in days_of.items()}
    start = min(first.values())
    out = {"daily": {}, "active": {}, "usage": {}, "retention": {}}
    d = start
    while d <= last:
        key = d.isoformat()
        dau = len(active[d])
        new = sum(1 for dev in active[d] if first[dev] == d)
        totals = [usage_by_dev[d][dev] for dev in active[d]]
        out["daily"][key] = {"launches": opens[d], "dau": dau, "new": new, "returning": dau - new,
                             "usage_ms": sum(totals)}
        week = set().union(*(active[d - timedelta(days=k)] for k in range(7)))
        month = set().union(*(active[d - timedelta(days=k)] for k in range(30)))
        out["active"][key] = {"dau": dau, "wau": len(week), "mau": len(month),
                              "stickiness": dau / len(month) if month else 0.0}
        dist = {b: 0 for b in ("0s", "<1m", "1-3m", "3-10m", "10-30m", "30-60m", ">=1h")}
        for ms in totals:
            dist[_bucket(ms)] += 1
        out["usage"][key] = {
            "dau": dau, "launches": opens[d], "total_ms": sum(totals),
            "per_device_ms": sum(totals) / dau if dau else 0.0,
            "launches_per_device": opens[d] / dau if dau else 0.0,
            "p50_ms": _rank(totals, 50) if dau else 0, "p90_ms": _rank(totals, 90) if dau else 0,
            "max_ms": max(totals) if dau else 0, "dist": dist,
        }
        cohort = [dev for dev in first if first[dev] == d]
        if cohort:
            classic, unbounded = {}, {}
            for n in NS:
                if d + timedelta(days=n) > last:
                    continue
                classic[str(n)] = sum(1 for dev in cohort if dev in active[d + timedelta(days=n)])
                unbounded[str(n)] = sum(1 for dev in cohort if latest[dev] >= d + timedelta(days=n))
            out["retention"][key] = {"size": len(cohort), "classic": classic, "unbounded": unbounded}
        d += timedelta(days=1)
    return out


# --- issue 12: breakdowns, registered users, active retention, custom sums, trend

DIMS = (("channel", "ch"), ("platform", "pf"), ("version", "ver"))


def _as_date(day: date | str) -> date:
    return day if isinstance(day, date) else date.fromisoformat(day)


def compute_extra(events: list[dict], tz: str, last: date | str, counters: dict[str, str] | None = None) -> dict:
    """The metrics issue 12 adds, per local day (ISO string) from the first event's day to ``last``.

    ``events``: dicts with id, dev, type ("open" | "usage" | "custom"), ts, ch, pf, ver, uid (None or ""
    when absent), and for custom events name, amt, slot; ``counters``: {name: "sum" | "slot" | "cpv"}.
    An id seen twice is one event (the store keeps one); the first event of a device or user is the
    one with the smallest (ts, id).
    """
    last = _as_date(last)
    counters = counters or {}
    seen: set[str] = set()
    kept: list[tuple[date, dict]] = []
    for e in events:
        if e["id"] in seen:
            continue
        seen.add(e["id"])
        d = local_day(e["ts"], tz)
        if d <= last:
            kept.append((d, e))
    out: dict = {"breakdowns": {}, "users": {}, "active_retention": {}, "custom": {}}
    if not kept:
        return out

    # first event of every device and every user, by (ts, id)
    first_of_dev: dict[str, tuple[float, str, date, dict]] = {}
    first_of_uid: dict[str, tuple[float, str, date]] = {}
    for d, e in kept:
        key = (e["ts"], e["id"])
        f = first_of_dev.get(e["dev"])
        if f is None or key < f[:2]:
            first_of_dev[e["dev"]] = (e["ts"], e["id"], d, e)
        uid = e.get("uid")
        if uid:
            u = first_of_uid.get(uid)
            if u is None or key < u[:2]:
                first_of_uid[uid] = (e["ts"], e["id"], d)

    active: dict[date, set[str]] = defaultdict(set)
    uids: dict[date, set[str]] = defaultdict(set)
    for d, e in kept:
        active[d].add(e["dev"])
        if e.get("uid"):
            uids[d].add(e["uid"])
    start = min(d for d, _ in kept)

    # breakdowns: one explicit pass per day, dimension and value
    for d in sorted(active):
        day_events = [e for dd, e in kept if dd == d]
        day_out = {}
        for dim, field in DIMS:
            values = sorted({e[field] for e in day_events})
            per = {}
            for v in values:
                launches = sum(1 for e in day_events if e[field] == v and e["type"] == "open")
                devs = {e["dev"] for e in day_events if e[field] == v}
                new = sum(1 for dev, f in first_of_dev.items() if f[2] == d and f[3][field] == v)
                per[v] = {"launches": launches, "dau": len(devs), "new": new}
            day_out[dim] = per
        out["breakdowns"][d.isoformat()] = day_out

    # registered users and active retention, every day from start to last
    d = start
    while d <= last:
        new_users = sum(1 for u in first_of_uid.values() if u[2] == d)
        total = sum(1 for u in first_of_uid.values() if u[2] <= d)
        out["users"][d.isoformat()] = {"active": len(uids[d]), "new": new_users, "total": total}
        if active[d]:
            counts = {}
            for n in NS:
                later = d + timedelta(days=n)
                if later <= last:
                    counts[str(n)] = sum(1 for dev in active[d] if dev in active[later])
            out["active_retention"][d.isoformat()] = {"size": len(active[d]), "counts": counts}
        d += timedelta(days=1)

    # custom counters: sums per day and name, by slot or by channel/platform/version
    for d, e in kept:
        if e["type"] != "custom":
            continue
        kind = counters[e["name"]]  # an undeclared name is a bug in the test's events
        entry = out["custom"].setdefault(d.isoformat(), {}).setdefault(e["name"], {"total": 0})
        entry["total"] += e["amt"]
        if kind == "slot":
            slots = entry.setdefault("slots", {})
            slots[e["slot"]] = slots.get(e["slot"], 0) + e["amt"]
        elif kind == "cpv":
            by = entry.setdefault("by", {dim: {} for dim, _ in DIMS})
            for dim, field in DIMS:
                by[dim][e[field]] = by[dim].get(e[field], 0) + e["amt"]
    return out


def trend(daily: dict, retention: dict, last_final: date | str) -> dict:
    """The last 7 days ending ``last_final`` against the 7 before, from ``compute()``'s daily and
    retention parts: new and active (sums of daily new and DAU) and D1 (day-1 returners over cohort
    sizes, for the window's cohorts whose day 1 is final; None when there is none)."""
    last_final = _as_date(last_final)

    def window(end: date) -> dict:
        days = [end - timedelta(days=k) for k in range(6, -1, -1)]
        new = sum(daily[d.isoformat()]["new"] for d in days if d.isoformat() in daily)
        act = sum(daily[d.isoformat()]["dau"] for d in days if d.isoformat() in daily)
        back = size = 0
        for d in days:
            cohort = retention.get(d.isoformat())
            if cohort and d + timedelta(days=1) <= last_final:
                back += cohort["classic"]["1"]
                size += cohort["size"]
        return {"first": days[0].isoformat(), "last": days[-1].isoformat(), "new": new, "active": act,
                "d1": back / size if size else None}

    return {"current": window(last_final), "previous": window(last_final - timedelta(days=7))}


def top_n(values: dict[str, dict], n: int) -> tuple[list[tuple[str, dict]], dict | None]:
    """The ``n`` values with most DAU (ties by value, ascending) and the rest merged as "other"
    (sums of their counts and how many values were merged; None when none was)."""
    ranked = sorted(values.items(), key=lambda item: (-item[1]["dau"], item[0]))
    kept, rest = ranked[:n], ranked[n:]
    if not rest:
        return kept, None
    other = {"launches": 0, "dau": 0, "new": 0, "values": 0}
    for _, counts in rest:
        for k in ("launches", "dau", "new"):
            other[k] += counts[k]
        other["values"] += 1
    return kept, other
