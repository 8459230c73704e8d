"""A small simulated app for the job tests: random devices and events in a zone, delivered by
arrival time (some late, within the grace window), with the jobs run at chosen instants."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from etcdcron.analytics import jobs
from etcdcron.analytics.events import App, Event, admit
from etcdcron.analytics.store import AnalyticsStore
from etcdcron.executor import RunContext

JOBS = {"rollup": jobs.rollup, "active_users": jobs.active_users, "retention": jobs.retention, "usage": jobs.usage}
DERIVED = ("device_day", "devices", "daily_metrics", "active_users", "usage", "retention", "job_state")


def midnight(day: date, tz: str) -> int:
    """The first second whose local date is ``day`` (found by bisection, independent of analytics.days)."""
    z = ZoneInfo(tz)
    lo = int(datetime.combine(day, time(0), tzinfo=timezone.utc).timestamp()) - 86_400
    hi = lo + 2 * 86_400
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, z).date() >= day:
            hi = mid
        else:
            lo = mid
    return hi


def events(seed: int, tz: str, start: date, n_days: int, n_devices: int) -> list[dict]:
    """Raw events: arrivals over the period, decaying activity, opens with usage sessions, events
    exactly at local midnight and just before it, a few resent (same id)."""
    rnd = random.Random(seed)
    out: list[dict] = []
    for i in range(n_devices):
        dev = f"dev-{seed}-{i}"
        born = rnd.randrange(3) if rnd.random() < 0.3 else rnd.randrange(n_days)
        loyal = rnd.random()
        for k in range(n_days - born):
            if k and rnd.random() > loyal * 0.7 / (1 + k) ** 0.35:
                continue
            day = start + timedelta(days=born + k)
            t0, t1 = midnight(day, tz), midnight(day + timedelta(days=1), tz)
            for _ in range(rnd.choice((1, 1, 2, 3))):
                roll = rnd.random()
                ts = t0 if roll < 0.08 else t1 - 1 if roll < 0.14 else t1 - 0.001 if roll < 0.16 else rnd.uniform(t0, t1 - 1)
                out.append({"id": f"{dev}-{len(out)}", "dev": dev, "type": "open", "ts": ts, "sec": 0.0})
                if rnd.random() < 0.85:
                    sec = 0.0 if rnd.random() < 0.05 else round(min(rnd.lognormvariate(4.5, 1.2), 20_000.0), 3)
                    out.append({"id": f"{dev}-{len(out)}", "dev": dev, "type": "usage", "ts": min(ts + 1, t1 - 0.001), "sec": sec})
    return out


def arrival(rnd: random.Random, ev: dict, grace: float) -> float:
    roll = rnd.random()
    late = rnd.uniform(0, 60) if roll < 0.8 else rnd.uniform(0, 3600) if roll < 0.95 else rnd.uniform(0, grace - 120)
    return ev["ts"] + late


@dataclass
class World:
    """An app in a store, the events still to arrive, and a fence counter."""

    store: AnalyticsStore
    uri: str
    app: App
    pending: list[tuple[float, dict]]
    fence: int = 100
    delivered: list[dict] = field(default_factory=list)

    @classmethod
    def make(cls, store: AnalyticsStore, uri: str, tz: str, raw: list[dict], seed: int = 0, name: str = "sim") -> "World":
        app = store.create_app(App.new(name, tz))
        rnd = random.Random(seed + 1)
        pending = sorted(((arrival(rnd, e, app.grace), e) for e in raw), key=lambda p: p[0])
        return cls(store, uri, app, pending)

    def deliver(self, until: float) -> None:
        """Store every event that has arrived by ``until``, through the collector's insert path
        (each checked at its own arrival time, then stored together)."""
        docs = []
        while self.pending and self.pending[0][0] <= until:
            at, e = self.pending.pop(0)
            ev = Event(id=e["id"], type=e["type"], dev=e["dev"], ts=e["ts"], sec=e["sec"], ch="c", pf="android", ver="1.0")
            docs += admit(self.app, [ev], at)[0]
            self.delivered.append(e)
        self.store.insert_events(docs)

    def run(self, name: str, now: float, fence: int | None = None, **args: str) -> dict:
        if fence is None:
            self.fence += 1
            fence = self.fence
        ctx = RunContext(name, int(now), "test", fence, 1, {"app": self.app.id, **args}, self.uri)
        return (JOBS.get(name) or getattr(jobs, name))(ctx)

    def run_all(self, now: float) -> None:
        for name in JOBS:
            self.run(name, now)

    def snapshot(self, keep_fence: bool = True) -> dict[str, list[dict]]:
        """Every derived document, sorted by id (without ``fence`` if not ``keep_fence``)."""
        out = {}
        for coll in DERIVED:
            docs = list(self.store.db[coll].find({"app": self.app.id}).sort("_id", 1))
            out[coll] = [{k: v for k, v in d.items() if keep_fence or k != "fence"} for d in docs]
        return out
