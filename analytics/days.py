"""Local days of an app's time zone: which day an instant falls on, when a day ends, when it is final.

A day is an ISO date string (``"2026-11-27"``): it sorts as it should in MongoDB and reads as it is.
A day is *closed* once its last instant has passed, and *final* once the grace window after its end
has passed too: the collector refuses events for final days, so a final day never changes again.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from etcdcron.errors import InvalidZone

# Added to the grace window before the rollup calls a day final: covers a collector's batch still in
# flight and a collector clock a little behind the firing's instant.
FINAL_MARGIN = 300.0


@lru_cache(maxsize=256)
def zone(name: str) -> ZoneInfo:
    """The IANA zone ``name``; raises InvalidZone naming it."""
    if not isinstance(name, str) or not name or name.startswith(("/", ".")) or ".." in name:
        raise InvalidZone(f"bad time zone {name!r}: not an IANA zone name")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidZone(f"bad time zone {name!r}: not an IANA zone name") from None


def day_of(ts: float, tz: str) -> str:
    """The local day (ISO date) on which the instant ``ts`` (Unix seconds) falls in zone ``tz``."""
    return datetime.fromtimestamp(ts, zone(tz)).date().isoformat()


def to_date(day: str) -> date:
    return date.fromisoformat(day)


def shift(day: str, n: int) -> str:
    """The day ``n`` days after ``day`` (before, for negative ``n``)."""
    return (date.fromisoformat(day) + timedelta(days=n)).isoformat()


def between(a: str, b: str) -> int:
    """Days from ``a`` to ``b`` (positive when ``b`` is later)."""
    return date.fromisoformat(b).toordinal() - date.fromisoformat(a).toordinal()


def span(first: str, last: str) -> list[str]:
    """Every day from ``first`` to ``last``, both included (empty when ``last`` is earlier)."""
    return [shift(first, i) for i in range(between(first, last) + 1)]


def start_of(day: str, tz: str) -> float:
    """The first instant of ``day`` in ``tz``.

    Local midnight may not exist (a spring-forward gap at 00:00: the day starts when the gap ends)
    or exist twice (a fall-back at 00:00: the day starts at the later one, after which the clock
    no longer shows the previous date). Both readings of the wall time are taken and the later
    instant wins, which is right in both cases.
    """
    midnight = datetime.combine(date.fromisoformat(day), time(0), tzinfo=zone(tz))
    return max(midnight.replace(fold=0).timestamp(), midnight.replace(fold=1).timestamp())


def end_of(day: str, tz: str) -> float:
    """The instant ``day`` ends in ``tz`` (the start of the next day)."""
    return start_of(shift(day, 1), tz)


def last_closed(now: float, tz: str) -> str:
    """The latest day in ``tz`` that has ended at ``now``."""
    day = shift(day_of(now, tz), -1)
    while end_of(day, tz) > now:
        day = shift(day, -1)
    return day


def is_final(day: str, tz: str, grace: float, now: float) -> bool:
    """True when no event for ``day`` can still arrive: the collector has been refusing them for
    at least :data:`FINAL_MARGIN` seconds."""
    return now >= end_of(day, tz) + grace + FINAL_MARGIN


def accepts(day: str, tz: str, grace: float, now: float) -> bool:
    """True while the collector still takes events for ``day`` (until ``grace`` after its end)."""
    return now < end_of(day, tz) + grace


def utc_iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
