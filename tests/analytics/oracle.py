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
