"""When a job fires: schedule expressions, time zones and the DST rule.

A firing is identified by its instant, so every node must compute the same instants from the same
``(expr, tz)`` without looking at its own clock or its own time zone. Everything here is pure.

Forms (DESIGN.md section 2):

* 5-field cron ``min hour dom month dow`` and 6-field cron ``sec min hour dom month dow``
  (seconds FIRST, as Quartz, Spring and robfig/cron; croniter wants them last, so we reorder),
  evaluated on the wall clock of the zone;
* ``@hourly``, ``@daily``/``@midnight``, ``@weekly``, ``@monthly``, ``@yearly``/``@annually``;
* ``@every DURATION``: the multiples of DURATION since the Unix epoch, whatever the zone.

DST rule, Debian cron's (cron(8): "jobs that run at a specific time" against "jobs that run more
frequently"), for 5- and 6-field expressions and the keywords by their 5-field expansion:

* **Interval** schedules, whose minute or hour field starts with ``*`` (``*``, ``*/20``; also
  ``@hourly``), follow real time: they fire at every instant whose local wall time matches, so a
  wall time repeated by fall-back fires twice (two instants, two firings) and a wall time skipped
  by spring-forward does not fire. ``0 * * * *`` stays hourly in real time through both changes.
* **Pinned** schedules, whose minute and hour fields are both fixed (``30 1 * * *``, ``0 9,17 * *
  1-5``, ``@daily``), fire once per matching wall time: a time skipped by spring-forward fires
  once, at the first instant after the gap (several skipped times collapse into that one firing);
  a time repeated by fall-back fires once, at its first occurrence.

Day-of-month and day-of-week follow crontab(5): when both are restricted (neither starts with
``*``) a day matching either fires; otherwise both must match (``0 0 */2 * 1``: odd-day Mondays).

A firing is its UTC instant, so the two passes of a repeated wall time are two distinct firings.
"""

from __future__ import annotations

import bisect
import datetime
import functools
import re
import threading
import zoneinfo
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

from croniter import CroniterBadDateError, CroniterError, croniter

from etcdcron.errors import InvalidSchedule, InvalidZone

__all__ = ["UTC", "Schedule", "parse_duration", "parse_schedule", "parse_zone"]

UTC = datetime.timezone.utc

_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=UTC)
_ONE_SECOND = datetime.timedelta(seconds=1)

_KEYWORDS = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

# (name, range) in the user's order; 6-field expressions prepend the seconds field.
_SECOND = ("second", "0-59")
_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day-of-month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day-of-week", "0-7 or SUN-SAT"),
)

# H (hashed) and R (random) would make different nodes compute different instants.
_HASH_OR_RANDOM = re.compile(r"(?<![a-z])[hr](?![a-z])", re.IGNORECASE)

_DURATION = re.compile(
    r"(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m(?!s))?"
    r"(?:(?P<s>\d+(?:\.\d+)?)s)?(?:(?P<ms>\d+(?:\.\d+)?)ms)?"
)
_UNIT_SECONDS = {"h": Fraction(3600), "m": Fraction(60), "s": Fraction(1), "ms": Fraction(1, 1000)}

# IANA names are ASCII words joined by "/"; no dots, so no "..", no "zone.tab", no absolute paths.
_ZONE_NAME = re.compile(r"[A-Za-z0-9_+-]+(?:/[A-Za-z0-9_+-]+)*")
# Names that exist on disk but mean "whatever this host uses": nodes would disagree.
_HOST_ZONES = frozenset({"localtime", "posixrules"})

# croniter reads a range from a value to itself ("1-1", "JAN-JAN", "5-5/2") as the WHOLE cycle,
# where other crons read the single value; refuse the spelling rather than pick a meaning.
_RANGE = re.compile(r"([a-z0-9]+)-([a-z0-9]+)(?:/\d+)?", re.IGNORECASE)
_NAMES = {
    name: number
    for names, first in (("jan feb mar apr may jun jul aug sep oct nov dec", 1),
                         ("sun mon tue wed thu fri sat", 0))
    for number, name in enumerate(names.split(), first)
}

# A fixed start keeps the "never fires" check deterministic; cron fields repeat well within
# croniter's 50-year search horizon.
_VALIDATION_START = datetime.datetime(2000, 1, 1)


def _q(text: str) -> str:
    """Quote user text for a one-line message (control characters escaped)."""
    return "'" + "".join(c if c.isprintable() else repr(c)[1:-1] for c in text) + "'"


def _duration_fraction(text: str) -> Fraction:
    match = _DURATION.fullmatch(text)
    if not text or match is None or not any(match.groupdict().values()):
        raise InvalidSchedule(
            f"bad duration {_q(text)}: expected e.g. '30s', '5m', '1h30m', '250ms'"
        )
    total = sum(
        (Fraction(n) * _UNIT_SECONDS[unit] for unit, n in match.groupdict().items() if n),
        Fraction(0),
    )
    if total <= 0:
        raise InvalidSchedule(f"bad duration {_q(text)}: must be greater than zero")
    return total


def parse_duration(text: str) -> float:
    """'30s', '5m', '1h30m', '1h', '250ms', '2h45m10s' -> seconds (float, > 0).

    Units h, m, s, ms, each at most once and in that order; numbers may have a decimal part.
    Raises InvalidSchedule otherwise.
    """
    return float(_duration_fraction(text.strip()))


def parse_zone(name: str) -> zoneinfo.ZoneInfo:
    """The IANA zone ``name`` ("UTC" works).

    Raises InvalidZone for empty, path-like, host-dependent ("localtime") or unknown names.
    """
    name = name.strip()
    if not name:
        raise InvalidZone("empty time zone: give an IANA name such as 'Europe/Berlin' or 'UTC'")
    if len(name) > 255 or not _ZONE_NAME.fullmatch(name) or name in _HOST_ZONES:
        raise InvalidZone(f"bad time zone {_q(name)}: not an IANA name such as 'Europe/Berlin'")
    try:
        return zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise InvalidZone(f"unknown time zone {_q(name)}") from exc


def _bad(expr: str, reason: str) -> InvalidSchedule:
    return InvalidSchedule(f"bad schedule {_q(expr)}: {reason}")


def _to_croniter_order(fields: list[str]) -> str:
    # croniter's 6-field form has seconds LAST; ours has them first.
    return " ".join(fields[1:] + fields[:1] if len(fields) == 6 else fields)


def _check_fields(expr: str, fields: list[str], probe: bool = True) -> None:
    """Raise naming the first bad field, by parsing each field alone (others '*'). Without ``probe``
    (the whole expression compiled, so each field alone would too) only the checks croniter does
    not make: a node parses every distinct schedule it holds, and the probes were 2/3 of that."""
    names = (_SECOND, *_FIELDS) if len(fields) == 6 else _FIELDS
    for index, (value, (name, bounds)) in enumerate(zip(fields, names)):
        if _HASH_OR_RANDOM.search(value):
            reason = "hashed (H) and random (R) values are not supported"
            raise _bad(expr, f"{name} field {_q(value)}: {reason}")
        for token in value.split(","):
            bounds_match = _RANGE.fullmatch(token)
            if bounds_match and _same_value(*bounds_match.groups()):
                reason = f"ambiguous range {_q(token)} (croniter reads it as the whole cycle)"
                raise _bad(expr, f"{name} field {_q(value)}: {reason}")
        if not probe:
            continue
        alone = ["*"] * len(fields)
        alone[index] = value
        try:
            croniter(_to_croniter_order(alone), _VALIDATION_START)
        except CroniterError as exc:
            message = str(exc)
            if any(word in message for word in ("out of range", "out of bands", "negative")):
                raise _bad(expr, f"{name} field {_q(value)} out of range {bounds}") from exc
            raise _bad(expr, f"{name} field {_q(value)} is not valid") from exc


def _same_value(low: str, high: str) -> bool:
    def number(text: str) -> int | None:
        return int(text) if text.isdigit() else _NAMES.get(text.lower())

    return number(low) is not None and number(low) == number(high)


def _follows_real_time(fields: list[str]) -> bool:
    """Debian cron's wildcard test: the minute or the hour field starts with '*'."""
    minute, hour = fields[-5], fields[-4]
    return minute.startswith("*") or hour.startswith("*")


def _either_day(fields: list[str]) -> bool:
    """crontab(5): a day matching either day field fires only when both are restricted."""
    return not (fields[-3].startswith("*") or fields[-1].startswith("*"))


def _compile_cron(expr: str, text: str) -> croniter:
    fields = text.split()
    if len(fields) == 7:
        raise _bad(expr, "7 fields (with a year) are not supported; use 5 or 6 (seconds first)")
    if len(fields) not in (5, 6):
        raise _bad(
            expr,
            f"expected 5 fields (min hour dom month dow) or 6 (sec min hour dom month dow), "
            f"got {len(fields)}",
        )
    try:
        cron: croniter | None = croniter(_to_croniter_order(fields), _VALIDATION_START, day_or=_either_day(fields))
    except CroniterError:
        cron = None  # a bad field: the probes of _check_fields name it (else the error is raised below)
    _check_fields(expr, fields, probe=cron is None)
    if "#" in fields[-1] and not (fields[-3].startswith("*") or fields[-3] == "?"):
        # croniter ignores the day-of-month when day-of-week has N#K, where crontab(5) reads "either"
        raise _bad(expr, f"day-of-week field {_q(fields[-1])} with a day-of-month other than '*' is "
                         "not supported; write two jobs")
    try:
        if cron is None:
            cron = croniter(_to_croniter_order(fields), _VALIDATION_START, day_or=_either_day(fields))
        cron.get_next(datetime.datetime)
    except CroniterBadDateError as exc:
        raise _bad(expr, "never fires (no date matches all fields)") from exc
    except CroniterError as exc:
        raise _bad(expr, " ".join(str(exc).split())) from exc
    return cron


def _compile_every(expr: str, words: list[str]) -> int:
    if len(words) != 2:
        raise _bad(expr, "@every takes one duration such as '30s' or '1h30m'")
    try:
        seconds = _duration_fraction(words[1])
    except InvalidSchedule as exc:
        reason = f"@every duration {_q(words[1])} is not like '30s', '5m', '1h30m'"
        raise _bad(expr, reason) from exc
    if seconds.denominator != 1 or seconds < 1:
        raise _bad(expr, f"@every needs a whole number of seconds >= 1, got {float(seconds):g}s")
    return int(seconds)


@dataclass(frozen=True)
class Schedule:
    """A validated schedule; equal schedules fire at the same instants on every node.

    Build it with :func:`parse_schedule`. It is thread-safe and cheap to query repeatedly.
    """

    expr: str
    tz: str = "UTC"
    _zone: zoneinfo.ZoneInfo = field(init=False, repr=False, compare=False)
    _every: int = field(init=False, repr=False, compare=False)  # seconds; 0 for cron
    _cron: croniter | None = field(init=False, repr=False, compare=False)
    _resolution: int = field(init=False, repr=False, compare=False)
    _real_time: bool = field(init=False, repr=False, compare=False)  # interval, not pinned
    _lock: threading.Lock = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        expr, tz = self.expr.strip(), self.tz.strip()
        set_ = object.__setattr__
        set_(self, "expr", expr)
        set_(self, "tz", tz)
        set_(self, "_zone", parse_zone(tz))
        set_(self, "_lock", threading.Lock())
        if not expr:
            raise InvalidSchedule("empty schedule: give a cron expression, @daily or @every 30s")
        if any(not (c.isprintable() or c == "\t") for c in expr):
            raise _bad(expr, "contains a control character")
        words = expr.split()
        keyword = words[0].lower()
        every, cron, resolution, real_time = 0, None, 60, False
        if keyword == "@every":
            every = resolution = _compile_every(expr, words)
        elif keyword in _KEYWORDS and len(words) == 1:
            # Not 3600 for @hourly: a 30-minute DST gap (Lord Howe) brings firings 30 min apart.
            cron = _compile_cron(expr, _KEYWORDS[keyword])
            real_time = _follows_real_time(_KEYWORDS[keyword].split())
        elif keyword.startswith("@"):
            raise _bad(
                expr,
                f"unknown {_q(words[0])}; "
                "use @hourly, @daily, @weekly, @monthly, @yearly or @every",
            )
        else:
            cron = _compile_cron(expr, expr)
            resolution = 1 if len(words) == 6 else 60
            real_time = _follows_real_time(words)
        set_(self, "_every", every)
        set_(self, "_real_time", real_time)
        set_(self, "_cron", cron)
        set_(self, "_resolution", resolution)

    def __reduce__(self):  # the lock and croniter are rebuilt, not copied
        return (type(self), (self.expr, self.tz))

    @property
    def follows_real_time(self) -> bool:
        """True for an interval schedule (minute or hour field starts with '*'): through a DST
        change it keeps its cadence in real time. False for a pinned one and for @every."""
        return self._real_time

    @property
    def min_interval(self) -> float:
        """A lower bound in seconds on the gap between two firings (the schedule's resolution)."""
        return float(self._resolution)

    def next_after(self, after: datetime.datetime) -> datetime.datetime:
        """First firing instant strictly after ``after`` (aware, any zone).

        Returns an aware UTC datetime with microsecond=0. Raises ValueError for a naive ``after``.
        """
        if after.tzinfo is None or after.utcoffset() is None:
            raise ValueError(f"next_after needs an aware datetime, got naive {after.isoformat()}")
        after = after.astimezone(UTC)
        if not self._every:
            return self._next_cron(after)
        elapsed = int((after - _EPOCH) // _ONE_SECOND)  # floor, also before 1970
        try:
            return _EPOCH + datetime.timedelta(seconds=(elapsed // self._every + 1) * self._every)
        except OverflowError as exc:
            raise _bad(self.expr, f"no firing after {after.isoformat()}") from exc

    def firings(
        self, start: datetime.datetime, end: datetime.datetime, limit: int = 10_000
    ) -> list[datetime.datetime]:
        """All firing instants t with start < t <= end, ascending, aware UTC, at most ``limit``."""
        if end.tzinfo is None or end.utcoffset() is None:
            raise ValueError(f"firings needs an aware end, got naive {end.isoformat()}")
        result: list[datetime.datetime] = []
        end = end.astimezone(UTC)
        current = start
        while len(result) < limit:
            current = self.next_after(current)
            if current > end:
                break
            result.append(current)
        return result

    def dst_note(self, instant: datetime.datetime) -> str | None:
        """What a DST change does to the firing at ``instant`` (one of ours), or None.

        For ``etcdcron next``: 'first pass of a repeated hour', 'second pass of a repeated
        hour', or, for a pinned time skipped by spring-forward, 'run at the end of the
        spring-forward gap (HH:MM-HH:MM skipped)'."""
        if self._every:  # epoch multiples: DST changes nothing
            return None
        zone = self._zone
        instant = instant.astimezone(UTC)
        local = instant.astimezone(zone)
        wall = local.replace(tzinfo=None)
        other = wall.replace(tzinfo=zone, fold=1 - local.fold).astimezone(UTC)
        if other != instant and other.astimezone(zone).replace(tzinfo=None) == wall:
            if local.fold:
                return "second pass of a repeated hour"
            if self._real_time:
                return "first pass of a repeated hour"
            return "first pass of a repeated hour (a pinned time runs once)"
        before = (instant - _ONE_SECOND).astimezone(zone)
        jump = local.utcoffset() - before.utcoffset()  # type: ignore[operator]
        if jump > datetime.timedelta(0) and not self._real_time:
            start = (before + _ONE_SECOND).replace(tzinfo=None)  # the first skipped wall time
            with self._lock:
                assert self._cron is not None
                self._cron.set_current(start - _ONE_SECOND, force=True)
                skipped = self._cron.get_next(datetime.datetime) < wall
            if skipped:
                return (f"run at the end of the spring-forward gap "
                        f"({start:%H:%M}-{wall - _ONE_SECOND:%H:%M} skipped)")
        return None

    def _next_cron(self, after: datetime.datetime) -> datetime.datetime:
        try:
            if self._real_time:
                return self._next_real_time(after)
            return self._next_pinned(after)
        except (CroniterError, OverflowError, ValueError) as exc:  # ValueError: croniter past 9999
            raise _bad(self.expr, f"no firing after {after.isoformat()}") from exc

    def _next_real_time(self, after: datetime.datetime) -> datetime.datetime:
        """The first instant after ``after`` whose wall time (at the offset then in force) matches.

        Between two offset changes wall time is real time plus a constant, so croniter's next
        wall time there is the answer; past the next change, ask again from it."""
        zone = self._zone
        start = after.replace(microsecond=0) + _ONE_SECOND
        while True:
            offset = start.astimezone(zone).utcoffset()
            assert offset is not None
            wall = (start + offset).replace(tzinfo=None)
            with self._lock:
                assert self._cron is not None
                self._cron.set_current(wall - _ONE_SECOND, force=True)
                found = self._cron.get_next(datetime.datetime)
            candidate = (found - offset).replace(tzinfo=UTC)
            change = _first_change(zone, start, candidate)
            if change is None:
                return candidate
            start = change

    def _next_pinned(self, after: datetime.datetime) -> datetime.datetime:
        """The first wall time after ``after`` that matches, each wall time once (see the module)."""
        zone = self._zone
        local = after.astimezone(zone)
        if local.fold:
            # In the second pass of a repeated hour its wall times have already fired,
            # so resume at the end of the repeat instead of walking through it.
            local = self._repeat_end(after).astimezone(zone) - _ONE_SECOND
        wall = local.replace(tzinfo=None, microsecond=0)
        with self._lock:
            assert self._cron is not None
            self._cron.set_current(wall, force=True)
            while True:
                instant = self._wall_to_utc(self._cron.get_next(datetime.datetime))
                # Skipped wall times collapse onto the gap's end, which may not be > after.
                if instant > after:
                    return instant

    def _wall_to_utc(self, wall: datetime.datetime) -> datetime.datetime:
        """The instant a wall time fires: fold=0 when repeated, the gap's end when skipped."""
        zone = self._zone
        instant = wall.replace(tzinfo=zone).astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == wall:
            return instant
        # Skipped: fold=0 reads it with the pre-gap offset (an instant after the gap), fold=1
        # with the post-gap offset (an instant before it); the gap's end lies in between.
        before = wall.replace(tzinfo=zone, fold=1).astimezone(UTC)
        lo, hi = sorted((before, instant))
        after_gap = hi.astimezone(zone).utcoffset()
        return _first_instant(lo, hi, lambda t: t.astimezone(zone).utcoffset() == after_gap)

    def _repeat_end(self, inside: datetime.datetime) -> datetime.datetime:
        """First instant after the repeated (fold=1) stretch that ``inside`` lies in."""
        zone = self._zone
        local = inside.astimezone(zone)
        first = local.replace(fold=0).utcoffset()
        second = local.utcoffset()
        assert first is not None and second is not None
        hi = inside.replace(microsecond=0) + (first - second) + _ONE_SECOND
        return _first_instant(inside, hi, lambda t: t.astimezone(zone).fold == 0)


_SCAN_STEP = datetime.timedelta(hours=6)  # zones change offset at most once in 6 hours


@functools.lru_cache(maxsize=4096)
def _changes_in_year(zone: zoneinfo.ZoneInfo, year: int) -> tuple[int, ...]:
    """Epoch seconds t in (1 Jan ``year``, 1 Jan ``year``+1] UTC whose offset differs from t-1's."""
    # a day inside the calendar's ends, where local time in any zone still exists
    begin = datetime.datetime(year, 1, 1, tzinfo=UTC) if year > 1 else datetime.datetime(1, 1, 2, tzinfo=UTC)
    end = (datetime.datetime(year + 1, 1, 1, tzinfo=UTC) if year < 9999
           else datetime.datetime(9999, 12, 30, tzinfo=UTC))
    found = []
    previous, before = begin, begin.astimezone(zone).utcoffset()
    while previous < end:
        current = min(previous + _SCAN_STEP, end)
        now = current.astimezone(zone).utcoffset()
        if now != before:  # the offset is `before` at previous and differs at current
            was = before
            change = _first_instant(previous, current, lambda t: t.astimezone(zone).utcoffset() != was)
            found.append(int((change - _EPOCH) // _ONE_SECOND))
        previous, before = current, now
    return tuple(found)


def _first_change(
    zone: zoneinfo.ZoneInfo, start: datetime.datetime, end: datetime.datetime
) -> datetime.datetime | None:
    """The first instant in (start, end] where the zone's offset changes, or None."""
    lo = int((start - _EPOCH) // _ONE_SECOND)
    hi = int((end - _EPOCH) // _ONE_SECOND)
    first_year = (start - _ONE_SECOND).year  # a year's list holds (1 Jan, next 1 Jan]
    for year in range(first_year, end.year + 1):
        changes = _changes_in_year(zone, year)
        index = bisect.bisect_right(changes, lo)
        if index < len(changes):
            return _EPOCH + datetime.timedelta(seconds=changes[index]) if changes[index] <= hi else None
    return None


def _first_instant(
    lo: datetime.datetime,
    hi: datetime.datetime,
    reached: Callable[[datetime.datetime], bool],
) -> datetime.datetime:
    """Smallest whole-second t in (lo, hi] with reached(t); reached is monotone and true at hi."""
    lo_s = int((lo - _EPOCH) // _ONE_SECOND)
    hi_s = int((hi - _EPOCH) // _ONE_SECOND)
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if reached(_EPOCH + datetime.timedelta(seconds=mid)):
            hi_s = mid
        else:
            lo_s = mid
    return _EPOCH + datetime.timedelta(seconds=hi_s)


def parse_schedule(expr: str, tz: str = "UTC") -> Schedule:
    """Validate ``expr`` in zone ``tz`` fully (bad input fails here, not later) and return it.

    Raises InvalidSchedule or InvalidZone with a one-line message naming the bad part.
    """
    return Schedule(expr, tz)
