"""The metrics of an app as data (``--json``) and as text tables: one read per collection and range."""

from __future__ import annotations

import time
from typing import Any

from . import days as dd
from .events import App
from .metrics import BUCKETS, DIMS, RETENTION_DAYS
from .store import AnalyticsStore

BY = tuple(name for name, _ in DIMS)


def _share(count: int | None, size: int) -> float | None:
    return None if count is None or not size else count / size


def collect(store: AnalyticsStore, app: App, n_days: int = 14, now: float | None = None,
            by: str | None = None) -> dict[str, Any]:
    """The last ``n_days`` closed days of ``app``; the cohorts whose D1…D30 fall in those days (from
    30 days before the first); custom counters; the trend; with ``by``, the breakdown by that dimension."""
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
            "users": {k: m.get(f"users_{k}") for k in ("active", "new", "total")},
        })
    since = dd.shift(first, -max(RETENTION_DAYS))
    cohorts = []
    for doc in store.range("retention", app.id, "cohort", since, last):
        size = doc["size"]
        if not size:
            continue
        cohorts.append({
            "cohort": doc["cohort"], "size": size,
            "classic": {str(n): _share(doc.get("classic", {}).get(str(n)), size) for n in RETENTION_DAYS},
            "unbounded": {str(n): _share(doc.get("unbounded", {}).get(str(n)), size) for n in RETENTION_DAYS},
        })
    active = [{"cohort": doc["cohort"], "size": doc["size"],
               "share": {str(n): _share(doc.get("counts", {}).get(str(n)), doc["size"]) for n in RETENTION_DAYS}}
              for doc in store.range("active_retention", app.id, "cohort", since, last) if doc.get("size")]
    watermarks = {kind: store.state(kind, app.id).get("final" if kind == "rollup" else "done")
                  for kind in ("rollup", "active_users", "retention", "usage")}
    custom: dict[str, dict[str, Any]] = {}
    for doc in store.range("custom", app.id, "day", first, last):
        custom.setdefault(doc["name"], {})[doc["day"]] = {k: doc[k] for k in ("type", "total", "slots", "by") if k in doc}
    out = {"app": {"id": app.id, "name": app.name, "tz": app.tz}, "first": first, "last": last,
           "done_through": watermarks, "days": days, "retention": cohorts, "active_retention": active,
           "custom": custom, "trend": trend(store, app, watermarks)}
    if by is not None:
        out["by"] = by
        out["breakdown"] = {doc["day"]: {"values": doc["values"], "other": doc.get("other")}
                            for doc in store.range("breakdowns", app.id, "day", first, last) if doc["dim"] == by}
    return out


def trend(store: AnalyticsStore, app: App, marks: dict[str, str | None]) -> dict[str, Any] | None:
    """The last 7 final days against the 7 before: new devices, active devices (sum of DAU) and the
    D1 retention of the window's cohorts whose day 1 is final (pooled: retained / cohort sizes)."""
    last = marks["rollup"]
    if not last:
        return None
    d1_known = min(last, marks["retention"] or "")
    daily = {d["day"]: d for d in store.range("daily_metrics", app.id, "day", dd.shift(last, -13), last)}
    cohorts = {d["cohort"]: d for d in store.range("retention", app.id, "cohort", dd.shift(last, -13), last)}
    out = {}
    for name, end in (("current", last), ("previous", dd.shift(last, -7))):
        window = dd.span(dd.shift(end, -6), end)
        kept = [cohorts[c] for c in window if c in cohorts and cohorts[c].get("size") and dd.shift(c, 1) <= d1_known]
        size = sum(c["size"] for c in kept)
        out[name] = {"first": window[0], "last": end,
                     "new": sum(daily.get(d, {}).get("new", 0) for d in window),
                     "active": sum(daily.get(d, {}).get("dau", 0) for d in window),
                     "d1": sum(c.get("classic", {}).get("1", 0) for c in kept) / size if size else None}
    out["change"] = {k: _change(out["current"][k], out["previous"][k]) for k in ("new", "active", "d1")}
    return out


def _change(now: float | None, before: float | None) -> float | None:
    """Relative change (0.25 = +25 %); None when there is nothing to compare with."""
    return None if now is None or not before else now / before - 1


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
    out += ["", "registered users", f"{'DAY':<11}{'ACTIVE':>8}{'NEW':>8}{'TOTAL':>8}"]
    for d in data["days"]:
        u = d["users"]
        out.append(f"{d['day']:<11}{_cell(u['active'], 8)}{_cell(u['new'], 8)}{_cell(u['total'], 8)}")
    for kind in ("classic", "unbounded"):
        title = "active exactly on day N" if kind == "classic" else "active on day N or later"
        out += ["", f"{kind} retention ({title})",
                f"{'COHORT':<11}{'SIZE':>6}" + "".join(f"{'D' + str(n):>6}" for n in RETENTION_DAYS)]
        for c in data["retention"]:
            out.append(f"{c['cohort']:<11}{c['size']:>6}" + "".join(_pct(c[kind][str(n)]).rjust(6) for n in RETENTION_DAYS))
        if not data["retention"]:
            out.append("(no cohorts yet)")
    out += ["", "active-user retention (of the devices active on a day, active again exactly on day N)",
            f"{'DAY':<11}{'ACTIVE':>6}" + "".join(f"{'D' + str(n):>6}" for n in RETENTION_DAYS)]
    for c in data["active_retention"]:
        out.append(f"{c['cohort']:<11}{c['size']:>6}" + "".join(_pct(c["share"][str(n)]).rjust(6) for n in RETENTION_DAYS))
    if not data["active_retention"]:
        out.append("(no days yet)")
    for name, per_day in sorted(data["custom"].items()):
        out += ["", f"custom counter {name}"]
        for day, c in sorted(per_day.items()):
            parts = [f"total {c['total']}"]
            if "slots" in c:
                parts.append(" ".join(f"{k}={v}" for k, v in c["slots"].items()))
            if "by" in c:
                for dim, b in c["by"].items():
                    parts.append(f"{dim}: " + " ".join(f"{r['value'] or '(none)'}={r['amount']}" for r in b["values"])
                                 + (f" other={b['other']['amount']}" if b["other"] else ""))
            out.append(f"{day:<11}" + "; ".join(parts))
    t = data["trend"]
    if t:
        cur, prev = t["current"], t["previous"]
        out += ["", f"trend: {cur['first']}..{cur['last']} against {prev['first']}..{prev['last']}"]
        for key, label in (("new", "new devices"), ("active", "active devices (sum of DAU)"), ("d1", "D1 retention")):
            fmt = _pct if key == "d1" else (lambda v: "-" if v is None else str(v))
            change = t["change"][key]
            out.append(f"  {label:<28}{fmt(cur[key]):>8}{fmt(prev[key]):>8}  "
                       + ("-" if change is None else f"{100 * change:+.0f}%"))
    if "breakdown" in data:
        out += ["", f"by {data['by']} (top values by DAU; a device counts under each value it used that day)",
                f"{'DAY':<11}{'VALUE':<24}{'LAUNCHES':>9}{'DAU':>7}{'NEW':>6}"]
        for day, b in sorted(data["breakdown"].items()):
            for r in b["values"]:
                out.append(f"{day:<11}{(r['value'] or '(none)')[:23]:<24}{r['launches']:>9}{r['dau']:>7}{r['new']:>6}")
            if b["other"]:
                o = b["other"]
                out.append(f"{day:<11}{'other (' + str(o['values']) + ' values)':<24}{o['launches']:>9}{o['dau']:>7}{o['new']:>6}")
    return "\n".join(out)
