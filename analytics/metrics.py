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
  its cohort C it newly counts for every N with prev < C+N ≤ D;
* active-user retention AR_N(C) on day D = C+N: active on D and on C, read from the 31-day activity
  window ``win`` each device_day row carries (bit 30−N = active on D−N).

A day's raw events are read once (:func:`summarize`); the breakdowns, registered users and custom
sums come from that summary, so they cost what the day's volume costs.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
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


    def window(self, day: str) -> int:
        """Activity over the 31 days ending ``day``: bit 30−k set = active on ``day − k``."""
        offset = dd.between(self.first, day)
        bits = self.bits & ((1 << (offset + 1)) - 1) if offset >= 0 else 0
        return (bits >> (offset - WINDOW) if offset >= WINDOW else bits << (WINDOW - offset)) & ((1 << (WINDOW + 1)) - 1)


WINDOW = 30  # days of activity before a day that its device_day rows carry (the longest retention N)
DIMS = (("channel", "ch"), ("platform", "pf"), ("version", "ver"))


@dataclass
class DaySummary:
    """One local day's raw events, reduced: what every per-day metric needs, nothing per event."""

    totals: dict[str, tuple[int, int]] = field(default_factory=dict)  # dev -> (opens, usage ms)
    first_event: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # dev -> (ch, pf, ver) of its first event
    dims: dict[str, dict[str, tuple[int, set[str]]]] = field(default_factory=dict)  # dim -> value -> (launches, devices)
    uids: set[str] = field(default_factory=set)
    custom: dict[str, dict[str, Any]] = field(default_factory=dict)  # counter name -> sums


def summarize(events: Iterable[dict[str, Any]], counters: dict[str, str]) -> DaySummary:
    """Reduce a day's events (stored documents). ``counters``: declared counter name -> type; custom
    events of a counter no longer declared still count as activity but are not summed."""
    out = DaySummary(dims={name: {} for name, _ in DIMS})
    opens: Counter[str] = Counter()
    ms: Counter[str] = Counter()
    first: dict[str, tuple[float, str, dict[str, Any]]] = {}
    launches: dict[str, Counter[str]] = {name: Counter() for name, _ in DIMS}
    devs: dict[str, dict[str, set[str]]] = {name: defaultdict(set) for name, _ in DIMS}
    for e in events:
        dev, kind = e["dev"], e["type"]
        ms[dev] += round(e.get("sec", 0.0) * 1000)
        if kind == "open":
            opens[dev] += 1
        key = (e["ts"], e["_id"])
        if dev not in first or key < first[dev][:2]:
            first[dev] = (*key, e)
        for name, f in DIMS:
            value = e.get(f, "")
            devs[name][value].add(dev)
            if kind == "open":
                launches[name][value] += 1
        if e.get("uid"):
            out.uids.add(e["uid"])
        if kind == "custom" and e.get("name") in counters:
            _add_custom(out.custom, counters[e["name"]], e)
    out.totals = {dev: (opens[dev], ms[dev]) for dev in ms}
    out.first_event = {dev: tuple(f[2].get(k, "") for _, k in DIMS) for dev, f in first.items()}
    out.dims = {name: {v: (launches[name][v], ds) for v, ds in devs[name].items()} for name, _ in DIMS}
    return out


def _add_custom(sums: dict[str, dict[str, Any]], kind: str, e: dict[str, Any]) -> None:
    c = sums.setdefault(e["name"], {"type": kind, "total": 0})
    amount = int(e.get("amt", 0))
    c["total"] += amount
    if kind == "slot":
        slots = c.setdefault("slots", {})
        slots[e.get("slot", "")] = slots.get(e.get("slot", ""), 0) + amount
    elif kind == "cpv":
        by = c.setdefault("by", {name: {} for name, _ in DIMS})
        for name, f in DIMS:
            by[name][e.get(f, "")] = by[name].get(e.get(f, ""), 0) + amount


def top_values(counts: dict[str, dict[str, int]], n: int, order: str = "dau") -> tuple[list[dict[str, Any]], dict[str, int] | None]:
    """The ``n`` values with the most ``order`` (ties by value), as rows, and the rest summed as
    "other" (None when nothing is left over). Rows are lists, not maps: values may contain dots."""
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1][order], kv[0]))
    kept = [{"value": v, **c} for v, c in ranked[:n]]
    rest = ranked[n:]
    if not rest:
        return kept, None
    other = {k: sum(c[k] for _, c in rest) for k in rest[0][1]}
    return kept, {**other, "values": len(rest)}


def breakdowns(summary: DaySummary, new: set[str], n: int) -> dict[str, dict[str, Any]]:
    """Per dimension: launches, DAU and new devices of each value (top ``n``, the rest as other, whose
    DAU counts distinct devices). A device counts under every value it used that day; a new device
    only under its first event's."""
    out = {}
    for i, (name, _) in enumerate(DIMS):
        new_by: Counter[str] = Counter(summary.first_event[dev][i] for dev in new)
        counts = {v: {"launches": launches, "dau": len(ds), "new": new_by.get(v, 0)}
                  for v, (launches, ds) in summary.dims[name].items()}
        rows, other = top_values(counts, n)
        if other:  # distinct devices: one that used several of the merged values counts once
            kept = {r["value"] for r in rows}
            other["dau"] = len(set().union(*(ds for v, (_, ds) in summary.dims[name].items() if v not in kept)))
        out[name] = {"values": rows, "other": other}
    return out


def custom_rows(custom: dict[str, dict[str, Any]], n: int) -> dict[str, dict[str, Any]]:
    """Custom sums as stored: cpv values as bounded rows like the breakdowns."""
    out = {}
    for name, c in custom.items():
        row = {"type": c["type"], "total": c["total"]}
        if "slots" in c:
            row["slots"] = dict(sorted(c["slots"].items()))
        if "by" in c:
            row["by"] = {}
            for dim, values in c["by"].items():
                rows, other = top_values({v: {"amount": a} for v, a in values.items()}, n, "amount")
                row["by"][dim] = {"values": rows, "other": other}
        out[name] = row
    return out


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
                                                "first": now.first, "prev": prev, "win": now.window(day)}))
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


def active_retention_day(wins: Iterable[int]) -> dict[int, int]:
    """What day D adds to active-user retention: for each N, the devices active on D and on D−N."""
    counts = Counter()
    for win in wins:
        for n in RETENTION_DAYS:
            if win >> (WINDOW - n) & 1:
                counts[n] += 1
    return {n: counts.get(n, 0) for n in RETENTION_DAYS}
