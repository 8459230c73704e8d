"""Synthetic events for an app, through the collector's insert path (:func:`analytics.events.admit`).

A realistic shape at any size: devices arrive over the period (a launch burst first), each with its
own engagement and a power-law decay of the chance to come back; an active day has one to a few
sessions at evening-heavy local hours of the app's zone, each an openApp and, when it ends, a
usageTime with a log-normal duration; 40 % of devices sign in (a userId on their events from then on)
and every declared custom counter gets an event in about a third of the sessions. Devices keep a platform and a matching store channel and move
to newer versions as they are released. Events reach the insert path in order of arrival, each
arriving shortly after it happened, a few up to an hour later (an offline phone), never after the
grace window.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from . import days as dd
from .errors import InvalidApp
from .events import App, Event, admit
from .store import AnalyticsStore

PLATFORMS = (("ios", 0.45, (("appstore", 0.9), ("testflight", 0.1))),
             ("android", 0.55, (("googleplay", 0.7), ("huawei", 0.12), ("xiaomi", 0.1), ("apk-web", 0.08))))
VERSIONS = ("2.3.0", "2.4.0", "2.4.1", "2.5.0")
# Relative weight of each local hour for a session start (quiet nights, evening peak).
HOURS = (2, 1, 1, 1, 1, 2, 4, 6, 7, 6, 6, 6, 7, 6, 5, 5, 6, 7, 9, 11, 12, 11, 8, 4)
CHUNK_SPAN = 300.0  # seconds of simulated arrivals handed to the insert path at once (< MAX_FUTURE)


@dataclass
class Device:
    id: str
    born: int  # index of its first day
    engagement: float
    platform: str
    channel: str
    upgrade: float  # how eagerly it takes new versions


def _pick(rnd: random.Random, options) -> str:
    return rnd.choices([o[0] for o in options], weights=[o[1] for o in options])[0]


def devices(rnd: random.Random, n: int, n_days: int, tag: str) -> list[Device]:
    out = []
    for i in range(n):
        born = rnd.randrange(max(1, n_days // 5)) if rnd.random() < 0.3 else rnd.randrange(n_days)
        pf, _, channels = PLATFORMS[0] if rnd.random() < PLATFORMS[0][1] else PLATFORMS[1]
        out.append(Device(f"{tag}-{i:06d}", born, rnd.betavariate(1.2, 3), pf, _pick(rnd, channels), rnd.random()))
    return out


def _version(dev: Device, k: int, n_days: int) -> str:
    released = 1 + (k * (len(VERSIONS) - 1)) // max(1, n_days - 1)  # versions out by day k
    lag = int(dev.upgrade * 3)
    return VERSIONS[max(0, min(released, len(VERSIONS)) - 1 - lag)]


def day_events(rnd: random.Random, app: App, devs: list[Device], k: int, day: str, n_days: int, seq: Iterator[int]):
    """(arrival, Event) for every session of day index ``k``."""
    start, end = dd.start_of(day, app.tz), dd.end_of(day, app.tz)
    out = []
    for dev in devs:
        age = k - dev.born
        # About 25 % back on day 1, 10 % on day 7, 5 % on day 30, the engaged ones far more often.
        if age < 0 or (age > 0 and rnd.random() > (0.1 + 0.9 * dev.engagement) * (1 + age) ** -0.6):
            continue
        ver = _version(dev, k, n_days)
        # Accounts and custom events draw from the device's own generator, so the sessions of a
        # seed stay what they were: 40 % of devices log in, some days after their first launch.
        extra = random.Random(f"{dev.id}|{k}")
        signs_in = random.Random(dev.id)
        uid = f"u-{dev.id}" if signs_in.random() < 0.4 and age >= signs_in.randrange(6) else None
        for _ in range(1 + int(rnd.expovariate(1.3))):
            hour = rnd.choices(range(24), weights=HOURS)[0]
            opened = min(end - 1, start + hour * 3600 + rnd.uniform(0, 3600))
            seconds = round(min(rnd.lognormvariate(4.6, 1.1), 4 * 3600), 3)
            ended = opened + seconds
            delay = rnd.uniform(0.5, 30) if rnd.random() < 0.97 else rnd.uniform(60, min(3600, app.grace / 2))
            common = {"dev": dev.id, "ch": dev.channel, "pf": dev.platform, "ver": ver, "uid": uid}
            out.append((opened + rnd.uniform(0.05, 2), Event(id=f"s{next(seq)}", type="open", ts=int(opened), **common)))
            for counter in app.counters:
                if extra.random() < 0.3:
                    slot = extra.choice(counter.slots) if counter.type == "slot" else ""
                    at = min(end - 1, opened + extra.uniform(1, 120))
                    out.append((at + 1, Event(id=f"s{next(seq)}", type="custom", ts=int(at), name=counter.name,
                                              amt=extra.randint(1, 5), slot=slot, **common)))
            if ended < end:  # a session running past midnight reports its time with the next day's launch
                out.append((ended + delay, Event(id=f"s{next(seq)}", type="usage", ts=int(ended), sec=seconds, **common)))
    # What would arrive after the grace window is lost, as it would be from a real client.
    return [p for p in out if p[0] < end + app.grace]


def seed(store: AnalyticsStore, app: App, n_devices: int, n_days: int, seed_value: int = 1, now: float | None = None,
         progress: Callable[[int], None] | None = None) -> dict:
    """Write ``n_days`` days (ending yesterday in the app's zone) of events for ``n_devices`` devices."""
    if n_devices < 1 or n_days < 1 or n_days > 400:
        raise InvalidApp("bad seed size: --devices must be >= 1 and --days 1 to 400")
    now = time.time() if now is None else now
    last = dd.shift(dd.day_of(now, app.tz), -1)
    first = dd.shift(last, 1 - n_days)
    final = store.state("rollup", app.id).get("final")
    if final and final >= first:
        raise InvalidApp(f"app {app.name!r} is rolled up through {final}; seed a new app (its days would be ignored)")
    rnd = random.Random(seed_value)
    devs = devices(rnd, n_devices, n_days, f"{app.name}-{seed_value}")
    seq = iter(range(10**12))
    stored = duplicates = 0
    carry: list = []
    for k, day in enumerate(dd.span(first, last)):
        # Arrivals of this day and those still in flight from the day before, in arrival order.
        todays = sorted(carry + day_events(rnd, app, devs, k, day, n_days, seq), key=lambda p: p[0])
        horizon = dd.end_of(day, app.tz)
        ready, carry = [p for p in todays if p[0] < horizon], [p for p in todays if p[0] >= horizon]
        if k == n_days - 1:
            ready, carry = todays, []
        for batch in _by_span(ready):
            at = min(now, batch[0][0])  # no event of the batch lies ahead of it by more than CHUNK_SPAN
            docs, repeats = admit(app, [e for _, e in batch], at)
            dups = store.insert_events(docs)
            stored += len(docs) - len(dups)
            duplicates += len(dups) + repeats
        if progress:
            progress(1)
    return {"app": app.id, "name": app.name, "first": first, "last": last, "devices": n_devices, "events": stored,
            "duplicates": duplicates}


def _by_span(pairs: list) -> Iterator[list]:
    batch: list = []
    for pair in pairs:
        if batch and (pair[0] - batch[0][0] > CHUNK_SPAN or len(batch) >= 2000):
            yield batch
            batch = []
        batch.append(pair)
    if batch:
        yield batch
