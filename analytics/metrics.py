"""The metric arithmetic (DESIGN §6), pure: no I/O, so it is tested on its own and the jobs only move data.

Per device, ``devices`` keeps ``first`` (first active day) and ``bits``: bit k set means active on
``first + k`` (hex in MongoDB; Python ints have no width limit). Rolling a day up sets that day's
bit and yields, for each active device, ``first`` and ``prev`` (its previous active day, or None),
which ``device_day`` keeps. Every later metric follows from ``device_day`` alone:

* entering the 7-day window on D: active on D with ``prev`` before D−7 (or new);
  leaving it: active on D−7 and not since = DAU(D−7) − #{device_day: prev = D−7, day ≤ D};
  so WAU(D) = WAU(D−1) + entering − leaving, and the same with 30 for MAU;
* classic retention R_N(C) on day D = C+N: active on D with ``first`` = C;
* unbounded retention: a device active on D after ``prev`` now has its last active day at D, so for
  its cohort C it newly counts for every N with prev < C+N ≤ D.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from math import ceil
from typing import Any, Iterable

from . import days as dd

RETENTION_DAYS = (1, 2, 3, 4, 5, 6, 7, 14, 30)
# Per-device daily usage totals are counted in these buckets: (label, upper bound in ms, exclusive).
BUCKETS = (("0s", 1), ("<1m", 60_000), ("1-3m", 180_000), ("3-10m", 600_000), ("10-30m", 1_800_000),
           ("30-60m", 3_600_000), (">=1h", None))


# --- devices

@dataclass(frozen=True)
class Activity:
    """A device's active days: ``first`` and bit k for ``first + k``."""

    first: str
    bits: int

    @classmethod
    def from_doc(cls, doc: dict[str, Any] | None) -> "Activity | None":
        return cls(doc["first"], int(doc["bits"], 16)) if doc else None

    @property
    def last(self) -> str:
        return dd.shift(self.first, self.bits.bit_length() - 1)

    def fields(self) -> dict[str, Any]:
        return {"first": self.first, "last": self.last, "bits": format(self.bits, "x")}

    def mark(self, day: str) -> "Activity":
        """The same activity with ``day`` added."""
        offset = dd.between(self.first, day)
        if offset < 0:
            return Activity(day, (self.bits << -offset) | 1)
        return Activity(self.first, self.bits | (1 << offset))

    def before(self, day: str) -> str | None:
        """The last active day strictly before ``day``, or None."""
        offset = dd.between(self.first, day)
        if offset <= 0:
            return None
        below = self.bits & ((1 << offset) - 1)
        return dd.shift(self.first, below.bit_length() - 1) if below else None


def roll_day(app: str, day: str, totals: dict[str, tuple[int, int]], known: dict[str, dict[str, Any]]):
    """One day's rollup from the day's per-device totals and the devices' stored activity.

    Returns (device_day rows, devices rows, daily_metrics fields); rows are (``_id``, fields).
    """
    day_rows, dev_rows = [], []
    launches = usage = new = 0
    for dev, (opens, ms) in sorted(totals.items()):
        key = f"{app}|{dev}"
        was = Activity.from_doc(known.get(key))
        now = was.mark(day) if was else Activity(day, 1)
        prev = now.before(day)
        new += now.first == day
        launches += opens
        usage += ms
        day_rows.append((f"{app}|{day}|{dev}", {"app": app, "day": day, "dev": dev, "opens": opens, "usage_ms": ms,
                                                "first": now.first, "prev": prev}))
        dev_rows.append((key, {"app": app, "dev": dev, **now.fields()}))
    daily = {"app": app, "day": day, "launches": launches, "dau": len(totals), "new": new,
             "returning": len(totals) - new, "usage_ms": usage}
    return day_rows, dev_rows, daily


# --- active users

def entering(day: str, prevs: Iterable[str | None], window: int) -> int:
    """Devices active on ``day`` that were not active in the ``window`` days before it."""
    return sum(1 for p in prevs if p is None or dd.between(p, day) > window)


def active_step(before: int, enter: int, dau_gone_day: int, returned: int) -> int:
    """Window count on D from the count on D−1: plus those entering, minus the devices of the day
    that slid out (its DAU) that were not active again since (``returned`` came back)."""
    return before + enter - (dau_gone_day - returned)


# --- usage

def percentile(sorted_values: list[int], p: float) -> int:
    """Nearest-rank percentile of a sorted, non-empty list."""
    return sorted_values[max(0, ceil(p / 100 * len(sorted_values)) - 1)]


def bucket(ms: int) -> str:
    for label, bound in BUCKETS:
        if bound is None or ms < bound:
            return label
    raise AssertionError("unreachable")


def usage_summary(rows: list[tuple[int, int]]) -> dict[str, Any]:
    """Usage of one day from its (opens, usage ms) per active device."""
    dau = len(rows)
    launches = sum(o for o, _ in rows)
    total = sum(ms for _, ms in rows)
    totals = sorted(ms for _, ms in rows)
    counts = Counter(bucket(ms) for ms in totals)
    return {
        "dau": dau, "launches": launches, "total_ms": total,
        "per_device_ms": total / dau if dau else 0.0,
        "launches_per_device": launches / dau if dau else 0.0,
        "p50_ms": percentile(totals, 50) if dau else 0, "p90_ms": percentile(totals, 90) if dau else 0,
        "max_ms": totals[-1] if dau else 0,
        "dist": {label: counts.get(label, 0) for label, _ in BUCKETS},
    }


# --- retention

def retention_day(day: str, rows: Iterable[tuple[str, str | None]]):
    """What day D adds to retention, from (first, prev) of its active devices.

    Returns (new on D, classic {cohort: {N: active on D}}, unbounded deltas {cohort: {N: +k}}); the
    classic counts are complete for their (cohort, N) and cover every N, zeros included.
    """
    size = 0
    by_first: Counter[str] = Counter()
    delta: dict[str, Counter[int]] = defaultdict(Counter)
    for first, prev in rows:
        size += first == day
        by_first[first] += 1
        if prev is None:
            continue
        age, gap = dd.between(first, day), dd.between(first, prev)
        for n in RETENTION_DAYS:
            if gap < n <= age:
                delta[first][n] += 1
    classic = {dd.shift(day, -n): {n: by_first.get(dd.shift(day, -n), 0)} for n in RETENTION_DAYS}
    return size, classic, {c: dict(v) for c, v in delta.items()}
