"""The metrics of an app as data (``--json``) and as text tables: one read per collection and range."""

from __future__ import annotations

import time
from typing import Any

from . import days as dd
from .events import App
from .metrics import BUCKETS, RETENTION_DAYS
from .store import AnalyticsStore


def _share(count: int | None, size: int) -> float | None:
    return None if count is None or not size else count / size


def collect(store: AnalyticsStore, app: App, n_days: int = 14, now: float | None = None) -> dict[str, Any]:
    """The last ``n_days`` closed days of ``app`` and the cohorts of those days."""
    now = time.time() if now is None else now
    last = dd.last_closed(now, app.tz)
    first = dd.shift(last, 1 - n_days)
    rows = {c: {d["day"]: d for d in store.range(c, app.id, "day", first, last)} for c in ("daily_metrics", "active_users", "usage")}
    days = []
    for day in dd.span(first, last):
        m, a, u = (rows[c].get(day, {}) for c in ("daily_metrics", "active_users", "usage"))
        days.append({
            "day": day, "final": m.get("final"), "launches": m.get("launches"), "dau": m.get("dau"), "new": m.get("new"),
            "returning": m.get("returning"), "wau": a.get("wau"), "mau": a.get("mau"), "stickiness": a.get("stickiness"),
            "usage_s": m["usage_ms"] / 1000 if "usage_ms" in m else None,
            "usage_per_device_s": u["per_device_ms"] / 1000 if u else None,
            "launches_per_device": u.get("launches_per_device"),
            "p50_s": u["p50_ms"] / 1000 if u else None, "p90_s": u["p90_ms"] / 1000 if u else None,
            "distribution": u.get("dist"),
        })
    cohorts = []
    for doc in store.range("retention", app.id, "cohort", first, last):
        size = doc["size"]
        cohorts.append({
            "cohort": doc["cohort"], "size": size,
            "classic": {str(n): _share(doc.get("classic", {}).get(str(n)), size) for n in RETENTION_DAYS},
            "unbounded": {str(n): _share(doc.get("unbounded", {}).get(str(n)), size) for n in RETENTION_DAYS},
        })
    watermarks = {kind: store.state(kind, app.id).get("final" if kind == "rollup" else "done")
                  for kind in ("rollup", "active_users", "retention", "usage")}
    return {"app": {"id": app.id, "name": app.name, "tz": app.tz}, "first": first, "last": last,
            "done_through": watermarks, "days": days, "retention": cohorts}


def _cell(value: Any, width: int, fmt: str = "{}") -> str:
    return ("-" if value is None else fmt.format(value)).rjust(width)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def render(data: dict[str, Any]) -> str:
    app = data["app"]
    marks = ", ".join(f"{k} {v or '-'}" for k, v in data["done_through"].items())
    out = [f"app {app['name']} ({app['id']}), days in {app['tz']}, {data['first']} to {data['last']}",
           f"final through: {marks}", "",
           f"{'DAY':<11}{'LAUNCHES':>9}{'DAU':>7}{'NEW':>6}{'RETURN':>7}{'WAU':>7}{'MAU':>7}{'STICKY':>7}"
           f"{'USAGE h':>9}{'MIN/DEV':>8}{'L/DEV':>6}"]
    for d in data["days"]:
        mark = "" if d["final"] else "*" if d["final"] is False else ""
        out.append(f"{d['day'] + mark:<11}{_cell(d['launches'], 9)}{_cell(d['dau'], 7)}{_cell(d['new'], 6)}"
                   f"{_cell(d['returning'], 7)}{_cell(d['wau'], 7)}{_cell(d['mau'], 7)}{_pct(d['stickiness']).rjust(7)}"
                   f"{_cell(None if d['usage_s'] is None else d['usage_s'] / 3600, 9, '{:.1f}')}"
                   f"{_cell(None if d['usage_per_device_s'] is None else d['usage_per_device_s'] / 60, 8, '{:.1f}')}"
                   f"{_cell(d['launches_per_device'], 6, '{:.2f}')}")
    if any(not d["final"] and d["final"] is not None for d in data["days"]):
        out.append("* not final yet: events may still arrive within the grace window")
    labels = [b[0] for b in BUCKETS]
    out += ["", "devices by daily usage time", f"{'DAY':<11}" + "".join(f"{b:>8}" for b in labels) + f"{'P50 s':>8}{'P90 s':>8}"]
    for d in data["days"]:
        dist = d["distribution"] or {}
        out.append(f"{d['day']:<11}" + "".join(_cell(dist.get(b), 8) for b in labels)
                   + _cell(d["p50_s"], 8, "{:.0f}") + _cell(d["p90_s"], 8, "{:.0f}"))
    for kind in ("classic", "unbounded"):
        title = "active exactly on day N" if kind == "classic" else "active on day N or later"
        out += ["", f"{kind} retention ({title})",
                f"{'COHORT':<11}{'SIZE':>6}" + "".join(f"{'D' + str(n):>6}" for n in RETENTION_DAYS)]
        for c in data["retention"]:
            out.append(f"{c['cohort']:<11}{c['size']:>6}" + "".join(_pct(c[kind][str(n)]).rjust(6) for n in RETENTION_DAYS))
        if not data["retention"]:
            out.append("(no cohorts yet)")
    return "\n".join(out)
