"""Firing by firing against cronsim (Debian/Vixie cron's rules) around every DST change, 2019-2027.

cronsim is a second, independent implementation of what crontab users know: its own field parser,
Debian's day-of-month/day-of-week rule and Debian's DST rule (interval jobs follow real time,
pinned jobs run a skipped time right after the gap and a repeated time once). Each window of 52
hours around each offset change of each zone is compared. Where the two differ, the difference
must be one listed in :data:`DIFFERENCES` (and docs/schedules.md), and our firings must equal a
brute-force simulation of Debian's rule, second by second or minute by minute, built on cronsim's
field parser; every listed difference must still occur, so the list cannot go stale.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from cronsim import CronSim

from etcdcron.errors import InvalidSchedule
from etcdcron.schedule import parse_schedule

UTC = timezone.utc

# Transitions at different local hours: 02:00 (New York, Sydney), 01:00 UTC (London), a 30-minute
# shift (Lord Howe), midnight (Santiago, Havana; Tehran's DST until 2022), 02:45/03:45 (Chatham).
ZONES = [
    "America/New_York", "Europe/London", "Australia/Sydney", "Australia/Lord_Howe",
    "America/Santiago", "Asia/Tehran", "America/Havana", "Pacific/Chatham",
]

EXPRESSIONS = [
    # interval: the minute or the hour field starts with '*'
    "0 * * * *", "*/20 * * * *", "*/20 0-3 * * 0", "*/15 2 * * *", "* 2 * * *", "0 */2 * * *",
    "30 */3 * * 1-5", "*/30 1-2 * * 6,0", "*/10 23 * * *", "0 */1 * * *", "*/5 0 * * *",
    # pinned: both fixed (a range or a list is fixed too, as in Debian: "0-59" is not "*")
    "30 1 * * *", "30 2 * * *", "0 2 * * *", "15,45 1-3 * * *", "0 0 * * *", "59 23 * * *",
    "0 0,12 * * 0", "45 2 * 3,4,9,10,11 *", "0-59 2 * * *", "10 0 * * *", "0 1 * * *",
    "30 0 * * *", "7 1-4/2 * * *", "0 9-17/2 * JAN,MAR,OCT,NOV *", "5 4 * * SUN",
    # day-of-month and day-of-week: L, either-day when both restricted, both when one is '*...'
    "0 0 L * *", "0 12 L 2 *", "0 0 1,15 * 1", "0 0 */2 * 1", "0 0 1-7 * 1", "30 2 * * 0#1",
    # 6 fields, seconds first
    "*/15 * 2 * * *", "30 */20 * * * *", "0 30 2 * * *", "0 0 0 * * *",
]

# Why we knowingly differ from cronsim. Each is checked: the window's firings equal the brute-force
# simulation of the rule in the module docstring, and each reason occurs at least once.
SIX_FIELDS = (
    "6-field pinned time: cronsim (like Debian, which has no seconds field) gives 6-field "
    "expressions no DST treatment, so a pinned time runs twice at fall-back and never in a gap; we "
    "apply the 5-field rule by the minute and hour fields"
)
HALF_HOUR_SHIFT = (
    "Lord Howe's 30-minute change: cronsim steps hours by 3600 s from a :30 wall time, so after the "
    "change it misses wall times (and whole midnights) that real time passes through"
)
CHATHAM_REPEAT = (
    "Chatham repeats 02:45-03:44: cronsim's hour step jumps over the second pass of 02:45-02:59"
)
MIDNIGHT_GAP = (
    "a day that starts in a spring-forward gap (midnight did not exist): cronsim steps hours from "
    "the non-existent midnight and misses the first hour after the gap"
)
DIFFERENCES = {SIX_FIELDS, HALF_HOUR_SHIFT, CHATHAM_REPEAT, MIDNIGHT_GAP}

NOT_COMPARED = {  # cronsim accepts these, we refuse them with a one-line error
    "0 0 * * 6L": "last weekday-of-month in day-of-week",
    "0 0 LW * *": "last weekday of the month",
    "0 0 1,15 * 1#2": "N#K with a restricted day-of-month (croniter would ignore the day-of-month)",
}


def explain(expr: str, zone: str, change: datetime) -> str | None:
    """The listed reason a window may differ, or None (it must not differ)."""
    fields = expr.split()
    if len(fields) == 6 and not (fields[1].startswith("*") or fields[2].startswith("*")):
        return SIX_FIELDS
    if zone == "Australia/Lord_Howe":
        return HALF_HOUR_SHIFT
    if zone == "Pacific/Chatham":
        return CHATHAM_REPEAT
    local = change.astimezone(ZoneInfo(zone))
    if local.hour == 1 and local.minute == 0 and local.utcoffset() > (
        change - timedelta(seconds=1)
    ).astimezone(ZoneInfo(zone)).utcoffset():
        return MIDNIGHT_GAP
    return None


@functools.cache
def changes(zone_name: str) -> tuple[datetime, ...]:
    """The instants in 2019-2027 where the zone's UTC offset changes."""
    zone, found = ZoneInfo(zone_name), []
    moment = datetime(2019, 1, 1, tzinfo=UTC)
    offset = moment.astimezone(zone).utcoffset()
    while moment.year < 2028:
        later = moment + timedelta(hours=6)
        later_offset = later.astimezone(zone).utcoffset()
        if later_offset != offset:
            lo, hi = moment, later
            while hi - lo > timedelta(seconds=1):
                mid = lo + timedelta(seconds=(hi - lo) // timedelta(seconds=2))
                lo, hi = (lo, mid) if mid.astimezone(zone).utcoffset() == later_offset else (mid, hi)
            found.append(hi)
        moment, offset = later, later_offset
    return tuple(found)


def cronsim_firings(expr: str, zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    it, out = CronSim(expr, start.astimezone(zone)), []
    while (instant := next(it).astimezone(UTC)) <= end:
        out.append(instant)
    return out


def debian_rule(expr: str, zone: ZoneInfo, start: datetime, end: datetime) -> list[datetime]:
    """Brute force: look at the wall clock every second (6 fields) or minute, as cron does.

    Interval: fire when the wall time matches. Pinned: fire at the first pass of a matching wall
    time, and once at the end of a gap in which some skipped wall time matched."""
    fields = expr.split()
    fields6 = fields if len(fields) == 6 else ["0", *fields]
    spec = CronSim(" ".join(fields6), datetime(2000, 1, 1))  # cronsim's parser, not ours

    def matches(wall: datetime) -> bool:
        return (wall.second in spec.seconds and wall.minute in spec.minutes
                and wall.hour in spec.hours and wall.month in spec.months
                and spec.match_day(wall.date()))

    interval = fields6[1].startswith("*") or fields6[2].startswith("*")
    step = timedelta(seconds=1 if len(fields) == 6 else 60)
    out, instant = [], start + step
    while instant <= end:
        local = instant.astimezone(zone)
        wall = local.replace(tzinfo=None)
        previous = (instant - step).astimezone(zone)
        gap = local.utcoffset() - previous.utcoffset()
        if interval:
            fire = matches(wall)
        else:
            first_pass = wall.replace(tzinfo=zone, fold=0).astimezone(UTC) == instant
            skipped = previous.replace(tzinfo=None) + step
            fire = first_pass and matches(wall)
            while not fire and gap > timedelta(0) and skipped < wall:
                fire, skipped = matches(skipped), skipped + step
        if fire:
            out.append(instant)
        instant += step
    return out


def test_agrees_with_cronsim_around_every_change_or_differs_as_listed():
    """Every expression, zone and offset change of 2019-2027: the same firings as cronsim, or a
    listed difference where ours are the brute-force rule's."""
    compared, seen = 0, defaultdict(list)
    for zone_name in ZONES:
        zone = ZoneInfo(zone_name)
        assert changes(zone_name), zone_name
        for change in changes(zone_name):
            start, end = change - timedelta(hours=26), change + timedelta(hours=26)
            for expr in EXPRESSIONS:
                ours = parse_schedule(expr, zone_name).firings(start, end, limit=100_000)
                theirs = cronsim_firings(expr, zone, start, end)
                compared += len(theirs)
                if ours == theirs:
                    continue
                where = f"{expr!r} in {zone_name} around {change:%Y-%m-%d %H:%M}Z"
                reason = explain(expr, zone_name, change)
                assert reason is not None, (
                    f"{where}: ours-only {sorted(set(ours) - set(theirs))[:5]}, "
                    f"cronsim-only {sorted(set(theirs) - set(ours))[:5]}"
                )
                if len(expr.split()) == 6:  # per second: the 2 hours around the change suffice
                    start, end = change - timedelta(hours=2), change + timedelta(hours=2)
                    ours = parse_schedule(expr, zone_name).firings(start, end, limit=100_000)
                assert ours == debian_rule(expr, zone, start, end), where
                seen[reason].append(where)
    assert compared > 150_000
    assert set(seen) == DIFFERENCES, f"listed but not seen: {DIFFERENCES - set(seen)}"


@pytest.mark.parametrize(("expr", "zone", "after", "count"), [
    # The issue's case: Debian cron runs 02:00, 02:20 and 02:40 again in the repeated hour.
    ("*/20 0-3 * * 0", "Australia/Sydney", datetime(2027, 4, 3, 12, tzinfo=UTC), 15),
    ("0 * * * *", "America/New_York", datetime(2027, 11, 6, 12, tzinfo=UTC), 30),
    ("*/20 * * * *", "Europe/London", datetime(2027, 10, 30, 12, tzinfo=UTC), 60),
    ("30 1 * * *", "America/New_York", datetime(2027, 11, 5, 12, tzinfo=UTC), 4),
    ("30 2 * * *", "Europe/London", datetime(2027, 3, 27, 12, tzinfo=UTC), 4),
])
def test_the_issues_cases_match_cronsim(expr, zone, after, count):
    """The cases DST users ask about, spelled out: the same instants as cronsim."""
    ours = parse_schedule(expr, zone).firings(after, after + timedelta(days=8), limit=count)
    theirs = cronsim_firings(expr, ZoneInfo(zone), after, after + timedelta(days=8))[:count]
    assert ours == theirs and len(ours) == count


@pytest.mark.parametrize("expr", sorted(NOT_COMPARED))
def test_cronsim_only_syntax_is_refused_in_one_line(expr):
    """What cronsim accepts and we do not is refused, naming the field; not silently misread."""
    CronSim(expr, datetime(2026, 1, 1))
    with pytest.raises(InvalidSchedule, match=r"^bad schedule .*field") as info:
        parse_schedule(expr)
    assert "\n" not in str(info.value)
