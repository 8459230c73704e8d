"""A small simulated app for the job tests: random devices and events in a zone, delivered by
arrival time (some late, within the grace window), with the jobs run at chosen instants.

``events(..., rich=True)`` adds what issue 12 measures: channels, platforms and versions (upgrades
mid-day, channel changes), userIds (never, late or shared logins) and custom events of declared
counters; ``World.make(..., counters=...)`` declares those counters on the app."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo

from etcdcron.analytics import jobs
from etcdcron.analytics.events import App, Event, admit
from etcdcron.analytics.store import AnalyticsStore
from etcdcron.executor import RunContext

JOBS = {"rollup": jobs.rollup, "active_users": jobs.active_users, "retention": jobs.retention, "usage": jobs.usage}
COUNTERS = {"coins": "sum", "taps": "slot", "buys": "cpv"}  # the rich simulation's counters by default
SLOTS = ("a", "b", "c")  # the slots of every slot counter here
CHANNELS = ("store", "store", "ads", "web", "")  # "" = a client that sends no channel
PLATFORMS = ("android", "android", "ios", "ios", "web", "")
VERSIONS = ("1.0", "1.1", "2.0", "2.1")
DERIVED = ("device_day", "devices", "daily_metrics", "active_users", "usage", "retention", "job_state",
           "breakdowns", "users", "custom", "active_retention")


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


def events(seed: int, tz: str, start: date, n_days: int, n_devices: int, rich: bool = False,
           counters: dict[str, str] | None = None) -> list[dict]:
    """Raw events: arrivals over the period, decaying activity, opens with usage sessions, events
    exactly at local midnight and just before it, a few resent (same id).

    With ``rich``, the same events (same ids, times and order) also carry ch/pf/ver/uid, and custom
    events of ``counters`` ({name: sum|slot|cpv}, default :data:`COUNTERS`) follow them."""
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
    if rich:
        out += _enrich(out, seed, tz, COUNTERS if counters is None else counters)
    return out


def _enrich(out: list[dict], seed: int, tz: str, counters: dict[str, str]) -> list[dict]:
    """Give ``out``'s events (in place) a channel, platform, version and userId per device and moment,
    and return the custom events to add. A separate generator, so the plain events stay as they were.

    Per device: a platform for life; a channel, rarely changed from some event on; a version that is
    upgraded after some event of a day (so that day has two); a userId from a login event on (never
    for some devices; some logins days after the first event; some users on two devices). Custom
    events take the device's state at their instant; some lie exactly at local midnight."""
    rnd = random.Random(seed * 1_000_003 + 12)
    z = ZoneInfo(tz)
    by_dev: dict[str, list[dict]] = defaultdict(list)
    for e in out:
        by_dev[e["dev"]].append(e)
    users: list[str] = []
    extra: list[dict] = []
    names = sorted(counters)
    for dev, evs in by_dev.items():
        days: dict[date, list[dict]] = defaultdict(list)
        for e in evs:
            days[datetime.fromtimestamp(e["ts"], z).date()].append(e)
        # custom events first, so they take part in the device's timeline below
        for day in sorted(days) if names else ():
            t0, t1 = midnight(day, tz), midnight(day + timedelta(days=1), tz)
            for _ in range(rnd.choice((0, 0, 1, 2))):
                name = rnd.choice(names)
                roll = rnd.random()
                ts = float(t0) if roll < 0.15 else t1 - 0.001 if roll < 0.2 else round(rnd.uniform(t0, t1 - 1), 3)
                c = {"id": f"{dev}-c{len(extra)}", "dev": dev, "type": "custom", "ts": ts, "sec": 0.0, "name": name,
                     "amt": rnd.choice((0, 1, 1, 5, rnd.randrange(1000))),
                     "slot": rnd.choice(SLOTS) if counters[name] == "slot" else ""}
                days[day].append(c)
                extra.append(c)
        pf = rnd.choice(PLATFORMS)
        ch = rnd.choice(CHANNELS)
        ver = rnd.randrange(2)
        roll = rnd.random()
        if roll < 0.3:
            uid, login_day = None, None  # never logs in
        else:
            if roll < 0.4 and users:
                uid = rnd.choice(users)  # a second device of a known user
            else:
                uid = f"user-{seed}-{len(users)}"
                users.append(uid)
            login_day = rnd.randrange(len(days)) if rnd.random() < 0.4 else 0  # k-th active day
        logged = False
        for k, day in enumerate(sorted(days)):
            today = sorted(days[day], key=lambda e: (e["ts"], e["id"]))
            upgrade_at = rnd.randrange(1, len(today)) if len(today) > 1 and ver + 1 < len(VERSIONS) and rnd.random() < 0.15 else None
            switch_at = rnd.randrange(len(today)) if rnd.random() < 0.03 else None
            login_at = rnd.randrange(len(today)) if login_day == k else None
            for i, e in enumerate(today):
                if i == upgrade_at:
                    ver += 1
                if i == switch_at:
                    ch = rnd.choice([c for c in CHANNELS if c != ch])
                if i == login_at:
                    logged = True
                e.update(ch=ch, pf=pf, ver=VERSIONS[ver], uid=uid if logged else None)
    return extra


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
    def make(cls, store: AnalyticsStore, uri: str, tz: str, raw: list[dict], seed: int = 0, name: str = "sim",
             counters: dict[str, str] | None = None) -> "World":
        """``counters`` ({name: sum|slot|cpv}) are declared on the app; slot counters get :data:`SLOTS`."""
        app = store.create_app(App.new(name, tz))
        if counters:
            app = store.update_app(app.id, {"counters": {n: {"type": t, "slots": list(SLOTS) if t == "slot" else []}
                                                         for n, t in counters.items()}})
        rnd = random.Random(seed + 1)
        pending = sorted(((arrival(rnd, e, app.grace), e) for e in raw), key=lambda p: p[0])
        return cls(store, uri, app, pending)

    def deliver(self, until: float) -> None:
        """Store every event that has arrived by ``until``, through the collector's insert path
        (each checked at its own arrival time, then stored together)."""
        docs = []
        while self.pending and self.pending[0][0] <= until:
            at, e = self.pending.pop(0)
            ev = Event(id=e["id"], type=e["type"], dev=e["dev"], ts=e["ts"], sec=e["sec"], ch=e.get("ch", "c"),
                       pf=e.get("pf", "android"), ver=e.get("ver", "1.0"), uid=e.get("uid") or None,
                       name=e.get("name", ""), amt=e.get("amt", 0), slot=e.get("slot", ""))
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
