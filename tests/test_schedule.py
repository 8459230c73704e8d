"""Schedules: the forms, the refusals, the DST rule, and properties checked by brute force."""

from __future__ import annotations

import copy
import functools
import pickle
import threading
import zoneinfo
from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from croniter import CroniterError
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from etcdcron.errors import InvalidInput, InvalidSchedule, InvalidZone
from etcdcron.schedule import UTC, Schedule, parse_duration, parse_schedule, parse_zone

ZONES = [
    "UTC",
    "Europe/Berlin",
    "Europe/London",
    "Europe/Dublin",  # negative DST in tzdata
    "America/New_York",
    "America/Santiago",  # transitions at midnight, fall-back repeats the previous day's 23:00
    "America/Havana",  # spring-forward skips midnight
    "Australia/Lord_Howe",  # 30-minute DST
    "Australia/Sydney",
    "Pacific/Chatham",  # +12:45 / +13:45
    "Asia/Kathmandu",  # +5:45, no DST
    "Asia/Tokyo",
]

PROPERTY_SETTINGS = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def take(schedule: Schedule, after: datetime, count: int) -> list[datetime]:
    result = []
    for _ in range(count):
        after = schedule.next_after(after)
        result.append(after)
    return result


# --- the forms -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        ("0 * * * *", utc(2026, 1, 1, 10, 0), [utc(2026, 1, 1, 11), utc(2026, 1, 1, 12)]),
        ("*/15 9-17 * * MON-FRI", utc(2026, 1, 2, 17, 45),  # Friday 17:45 is the last
         [utc(2026, 1, 5, 9, 0), utc(2026, 1, 5, 9, 15)]),
        ("0 0 1 JAN,JUL *", utc(2026, 3, 1), [utc(2026, 7, 1), utc(2027, 1, 1)]),
        ("0 0 29 2 *", utc(2026, 1, 1), [utc(2028, 2, 29), utc(2032, 2, 29)]),
        ("0 12 L * *", utc(2026, 2, 1), [utc(2026, 2, 28, 12), utc(2026, 3, 31, 12)]),
        ("*/5 * * * * *", utc(2026, 1, 1, 0, 0, 3),
         [utc(2026, 1, 1, 0, 0, 5), utc(2026, 1, 1, 0, 0, 10), utc(2026, 1, 1, 0, 0, 15)]),
        ("30 0 9 * * *", utc(2026, 1, 1, 9, 0, 30),  # seconds first: 09:00:30 daily
         [utc(2026, 1, 2, 9, 0, 30), utc(2026, 1, 3, 9, 0, 30)]),
        ("@hourly", utc(2026, 1, 1, 10, 59, 59), [utc(2026, 1, 1, 11), utc(2026, 1, 1, 12)]),
        ("@daily", utc(2026, 1, 1, 10), [utc(2026, 1, 2), utc(2026, 1, 3)]),
        ("@midnight", utc(2026, 1, 1, 10), [utc(2026, 1, 2), utc(2026, 1, 3)]),
        ("@weekly", utc(2026, 1, 1), [utc(2026, 1, 4), utc(2026, 1, 11)]),  # Sundays
        ("@monthly", utc(2026, 1, 15), [utc(2026, 2, 1), utc(2026, 3, 1)]),
        ("@yearly", utc(2026, 6, 1), [utc(2027, 1, 1), utc(2028, 1, 1)]),
        ("@annually", utc(2026, 6, 1), [utc(2027, 1, 1), utc(2028, 1, 1)]),
        ("@every 1h30m", utc(2026, 1, 1, 0, 10), [utc(2026, 1, 1, 1, 30), utc(2026, 1, 1, 3)]),
        ("@every 30s", utc(2026, 1, 1, 0, 0, 29, 999999),
         [utc(2026, 1, 1, 0, 0, 30), utc(2026, 1, 1, 0, 1)]),
        ("@every 7s", utc(1970, 1, 1), [utc(1970, 1, 1, 0, 0, 7), utc(1970, 1, 1, 0, 0, 14)]),
    ],
)
def test_forms_fire_at_expected_instants(expr, after, expected):
    """Each supported form parses and yields the expected next firings in UTC."""
    assert take(parse_schedule(expr), after, len(expected)) == expected


def test_every_is_aligned_to_epoch_and_ignores_zone():
    """@every fires at multiples of the duration since the epoch, the same in every zone."""
    after = utc(2026, 5, 17, 13, 7, 42, 123456)
    results = {parse_schedule("@every 1h30m", tz).next_after(after) for tz in ZONES}
    (first,) = results
    assert (first - utc(1970, 1, 1)).total_seconds() % 5400 == 0
    assert after < first <= after + timedelta(seconds=5400)


def test_next_after_is_strict_and_returns_whole_utc_seconds():
    """A firing instant itself is not returned again; results are UTC with microsecond 0."""
    schedule = parse_schedule("*/5 * * * * *")
    assert schedule.next_after(utc(2026, 1, 1, 0, 0, 5)) == utc(2026, 1, 1, 0, 0, 10)
    result = schedule.next_after(utc(2026, 1, 1, 0, 0, 5, 1))
    assert result == utc(2026, 1, 1, 0, 0, 10) and result.tzinfo is UTC
    assert result.microsecond == 0


def test_next_after_accepts_any_zone_for_after():
    """The same instant given in different zones yields the same next firing."""
    schedule = parse_schedule("0 9 * * *", "Asia/Kathmandu")
    instant = utc(2026, 7, 1, 12, 34, 56)
    berlin = instant.astimezone(zoneinfo.ZoneInfo("Europe/Berlin"))
    assert schedule.next_after(instant) == schedule.next_after(berlin) == utc(2026, 7, 2, 3, 15)


def test_next_after_refuses_naive_datetimes():
    """A naive datetime is a programming error: ValueError, not a silent guess of its zone."""
    with pytest.raises(ValueError, match="aware"):
        parse_schedule("@daily").next_after(datetime(2026, 1, 1))


def test_firings_lists_instants_in_half_open_range_with_limit():
    """firings(a, b) gives a < t <= b ascending, capped by limit."""
    schedule = parse_schedule("0 * * * *")
    assert schedule.firings(utc(2026, 1, 1, 0), utc(2026, 1, 1, 3)) == [
        utc(2026, 1, 1, 1), utc(2026, 1, 1, 2), utc(2026, 1, 1, 3)
    ]
    assert schedule.firings(utc(2026, 1, 1, 0), utc(2026, 1, 2), limit=2) == [
        utc(2026, 1, 1, 1), utc(2026, 1, 1, 2)
    ]
    assert schedule.firings(utc(2026, 1, 1, 0), utc(2026, 1, 1, 0, 59)) == []


def test_schedule_keeps_stripped_input_and_compares_by_value():
    """expr and tz are kept as given (stripped); equal inputs are equal, hashable and picklable."""
    schedule = parse_schedule("  */5 * * * * *  ", " Europe/Berlin ")
    assert (schedule.expr, schedule.tz) == ("*/5 * * * * *", "Europe/Berlin")
    assert schedule == parse_schedule("*/5 * * * * *", "Europe/Berlin")
    assert len({schedule, parse_schedule("*/5 * * * * *", "Europe/Berlin")}) == 1
    for clone in (pickle.loads(pickle.dumps(schedule)), copy.deepcopy(schedule)):
        assert clone == schedule
        assert clone.next_after(utc(2026, 1, 1)) == schedule.next_after(utc(2026, 1, 1))
    assert parse_schedule("@daily").tz == "UTC"


@pytest.mark.parametrize(
    ("expr", "seconds"),
    [("*/5 * * * * *", 1), ("0 * * * *", 60), ("@hourly", 60), ("@every 1h30m", 5400)],
)
def test_min_interval_is_the_resolution(expr, seconds):
    """min_interval is 1 s for 6-field, 60 s for 5-field and keywords, the duration for @every."""
    assert parse_schedule(expr).min_interval == seconds


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h", 3600), ("1h30m", 5400), ("250ms", 0.25),
     ("2h45m10s", 9910), ("1.5m", 90), ("1m500ms", 60.5)],
)
def test_parse_duration_accepts_go_like_durations(text, seconds):
    """Durations combine h, m, s, ms in that order and give seconds as a float."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "30", "s", "1x", "-5s", "0s", "1s1h", "1h 30m", "1d"])
def test_parse_duration_refuses_garbage(text):
    """A duration without units, out of order, zero or negative is refused naming the text."""
    with pytest.raises(InvalidSchedule, match=f"bad duration '{text}'"):
        parse_duration(text)


def test_parse_zone_returns_zoneinfo():
    """parse_zone gives the ZoneInfo for IANA names, including UTC."""
    assert parse_zone("UTC") == zoneinfo.ZoneInfo("UTC")
    assert parse_zone("Asia/Kathmandu").key == "Asia/Kathmandu"


def test_concurrent_callers_get_the_same_answers():
    """A Schedule shared by threads answers each caller as if it were alone."""
    schedule = parse_schedule("*/7 * * * * *", "Europe/Berlin")
    starts = [utc(2026, 1, 1) + timedelta(seconds=97 * i) for i in range(400)]
    expected = [schedule.next_after(start) for start in starts]
    results: dict[int, list[datetime]] = {}

    def work(n: int) -> None:
        results[n] = [schedule.next_after(start) for start in starts]

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(got == expected for got in results.values())


# --- refusals --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "tz", "error", "fragment"),
    [
        ("", "UTC", InvalidSchedule, "empty schedule"),
        ("61 * * * *", "UTC", InvalidSchedule,
         "bad schedule '61 * * * *': minute field '61' out of range 0-59"),
        ("* 24 * * *", "UTC", InvalidSchedule, "hour field '24' out of range 0-23"),
        ("* * 0 * *", "UTC", InvalidSchedule, "day-of-month field '0' out of range 1-31"),
        ("* * * 13 *", "UTC", InvalidSchedule, "month field '13' out of range"),
        ("* * * * 8", "UTC", InvalidSchedule, "day-of-week field '8' out of range"),
        ("60 * * * * *", "UTC", InvalidSchedule, "second field '60' out of range 0-59"),
        ("0 0 * * FUNDAY", "UTC", InvalidSchedule, "day-of-week field 'FUNDAY'"),
        ("*/0 * * * *", "UTC", InvalidSchedule, "minute field '*/0'"),
        ("a b c d e", "UTC", InvalidSchedule, "minute field 'a'"),
        ("* * * *", "UTC", InvalidSchedule, "got 4"),
        ("0 0 0 1 1 * 2030", "UTC", InvalidSchedule, "7 fields"),
        ("@reboot", "UTC", InvalidSchedule, "unknown '@reboot'"),
        ("@daily 5", "UTC", InvalidSchedule, "'@daily 5'"),
        ("0 0 30 2 *", "UTC", InvalidSchedule, "'0 0 30 2 *': never fires"),
        ("0 0 31 4,6,9,11 *", "UTC", InvalidSchedule, "never fires"),
        # croniter would ignore the day-of-month where crontab(5) reads "either": refused instead
        ("0 0 1,15 * 1#2", "UTC", InvalidSchedule, "day-of-week field '1#2' with a day-of-month other than '*'"),
        ("0 0 L * 5#1", "UTC", InvalidSchedule, "day-of-week field '5#1' with a day-of-month other than '*'"),
        ("@every 500ms", "UTC", InvalidSchedule, "whole number of seconds >= 1, got 0.5s"),
        ("@every 1.5s", "UTC", InvalidSchedule, "'@every 1.5s'"),
        ("@every soon", "UTC", InvalidSchedule, "@every duration 'soon'"),
        ("@every", "UTC", InvalidSchedule, "'@every'"),
        ("H * * * *", "UTC", InvalidSchedule, "minute field 'H'"),
        ("0 R * * *", "UTC", InvalidSchedule, "hour field 'R'"),
        ("0 9 * 1-1 *", "UTC", InvalidSchedule, "month field '1-1': ambiguous range"),
        ("5-5/2 * * * *", "UTC", InvalidSchedule, "minute field '5-5/2': ambiguous range"),
        ("0 *\n* * *", "UTC", InvalidSchedule, r"'0 *\n* * *': contains a control character"),
        ("@daily", "Mars/Base", InvalidZone, "unknown time zone 'Mars/Base'"),
        ("@daily", "", InvalidZone, "empty time zone"),
        ("@daily", "../etc/passwd", InvalidZone, "'../etc/passwd'"),
        ("@daily", "/etc/localtime", InvalidZone, "'/etc/localtime'"),
        ("@daily", "Europe", InvalidZone, "unknown time zone 'Europe'"),
        ("@daily", "zone.tab", InvalidZone, "'zone.tab'"),
        ("@daily", "localtime", InvalidZone, "'localtime'"),
    ],
)
def test_bad_input_is_refused_with_one_line_naming_the_bad_part(expr, tz, error, fragment):
    """Bad schedules and zones raise InvalidSchedule/InvalidZone, one line, naming the bad part."""
    with pytest.raises(error) as caught:
        parse_schedule(expr, tz)
    message = str(caught.value)
    assert isinstance(caught.value, InvalidInput)
    assert fragment in message
    assert "\n" not in message and "\r" not in message


def test_croniter_and_zoneinfo_errors_are_chained_not_leaked():
    """Third-party errors surface only as __cause__ of our own errors."""
    with pytest.raises(InvalidSchedule) as bad_cron:
        parse_schedule("61 * * * *")
    assert isinstance(bad_cron.value.__cause__, CroniterError)
    with pytest.raises(InvalidZone) as bad_zone:
        parse_zone("Mars/Base")
    assert isinstance(bad_zone.value.__cause__, zoneinfo.ZoneInfoNotFoundError)


@pytest.mark.parametrize("expr", ["@every 30s", "0 0 * * *", "* * * * * *"])
def test_end_of_calendar_is_our_error_not_overflow(expr):
    """Past year 9999 there is no firing: InvalidSchedule, not a raw OverflowError."""
    with pytest.raises(InvalidSchedule, match="no firing after"):
        parse_schedule(expr, "Pacific/Kiritimati").next_after(utc(9999, 12, 31, 23, 59, 59))


@pytest.mark.parametrize("expr", ["0 0 29 2 *", "*/30 * 29 2 *"])
def test_end_of_calendar_from_a_leap_day_is_our_error(expr):
    """croniter's ValueError past 9999 (the next 29 February is in year 10000) is ours too."""
    with pytest.raises(InvalidSchedule, match="no firing after"):
        parse_schedule(expr).next_after(utc(9997, 3, 1))


@pytest.mark.parametrize(
    ("tz", "after", "expected"),
    [("America/New_York", utc(1, 6, 5), utc(1, 6, 5, 0, 56, 2)),  # LMT -4:56:02 in year 1
     ("Pacific/Kiritimati", utc(9999, 1, 5), utc(9999, 1, 5, 1))],
)
def test_interval_schedules_work_at_the_ends_of_the_calendar(tz, after, expected):
    """The offset-change scan stays inside the calendar, where local time exists in every zone."""
    assert parse_schedule("0 * * * *", tz).next_after(after) == expected


# --- DST -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("expr", "tz", "after", "expected"),
    [
        # Berlin springs forward 2026-03-29 02:00 CET -> 03:00 CEST (01:00 UTC).
        ("30 2 * * *", "Europe/Berlin", utc(2026, 3, 28, 2),
         [utc(2026, 3, 29, 1, 0), utc(2026, 3, 30, 0, 30)]),
        # Skipped 02:00/02:30 and the real 03:00 are the same instant: one firing.
        ("0,30 2,3 * * *", "Europe/Berlin", utc(2026, 3, 29, 0, 30),
         [utc(2026, 3, 29, 1, 0), utc(2026, 3, 29, 1, 30), utc(2026, 3, 30, 0, 0)]),
        # Berlin falls back 2026-10-25 03:00 CEST -> 02:00 CET (01:00 UTC); 02:30 fires once.
        ("30 2 * * *", "Europe/Berlin", utc(2026, 10, 24, 1),
         [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]),
        ("0 30 2 * * *", "Europe/Berlin", utc(2026, 10, 24, 1),  # 6 fields: the same rule
         [utc(2026, 10, 25, 0, 30), utc(2026, 10, 26, 1, 30)]),
        ("@daily", "America/Havana", utc(2026, 10, 31, 12),  # Havana repeats midnight: once
         [utc(2026, 11, 1, 4), utc(2026, 11, 2, 5)]),
        # New York: 2026-03-08 02:00 EST -> 03:00 EDT (07:00 UTC).
        ("30 2 * * *", "America/New_York", utc(2026, 3, 7, 12),
         [utc(2026, 3, 8, 7, 0), utc(2026, 3, 9, 6, 30)]),
        # New York: 2026-11-01 02:00 EDT -> 01:00 EST (06:00 UTC); 01:30 fires once, as EDT.
        ("30 1 * * *", "America/New_York", utc(2026, 10, 31, 12),
         [utc(2026, 11, 1, 5, 30), utc(2026, 11, 2, 6, 30)]),
        # Lord Howe: 2026-10-04 02:00 +10:30 -> 02:30 +11 (15:30 UTC); a 30-minute gap.
        ("15 2 * * *", "Australia/Lord_Howe", utc(2026, 10, 2, 16),
         [utc(2026, 10, 3, 15, 30), utc(2026, 10, 4, 15, 15)]),
        # Lord Howe: 2026-04-05 02:00 +11 -> 01:30 +10:30 (15:00 UTC); 01:45 fires once.
        ("45 1 * * *", "Australia/Lord_Howe", utc(2026, 4, 4, 0),
         [utc(2026, 4, 4, 14, 45), utc(2026, 4, 5, 15, 15)]),
        # Kathmandu (+5:45) has no DST.
        ("0 9 * * *", "Asia/Kathmandu", utc(2026, 3, 29), [utc(2026, 3, 29, 3, 15)]),
    ],
)
def test_dst_rule_for_pinned_times(expr, tz, after, expected):
    """Minute and hour fixed: a skipped time fires once after the gap, a repeated one once."""
    schedule = parse_schedule(expr, tz)
    assert not schedule.follows_real_time
    assert take(schedule, after, len(expected)) == expected


@pytest.mark.parametrize(
    ("expr", "tz", "after", "expected"),
    [
        # Berlin springs forward 2026-03-29: 02:00-02:59 does not exist, so hour 2 does not fire.
        ("*/20 2 * * *", "Europe/Berlin", utc(2026, 3, 28, 1, 40),
         [utc(2026, 3, 30, 0, 0), utc(2026, 3, 30, 0, 20)]),
        ("0 * * * *", "Europe/Berlin", utc(2026, 3, 28, 23, 30),  # still hourly in real time
         [utc(2026, 3, 29, 0), utc(2026, 3, 29, 1), utc(2026, 3, 29, 2)]),
        # Berlin falls back 2026-10-25 03:00 CEST -> 02:00 CET: 02:00 runs at both passes.
        ("0 * * * *", "Europe/Berlin", utc(2026, 10, 24, 23, 30),
         [utc(2026, 10, 25, 0), utc(2026, 10, 25, 1), utc(2026, 10, 25, 2)]),
        ("@hourly", "America/New_York", utc(2026, 11, 1, 4, 30),  # 01:00 EDT, 01:00 EST, 02:00 EST
         [utc(2026, 11, 1, 5), utc(2026, 11, 1, 6), utc(2026, 11, 1, 7)]),
        # Starting inside the repeated hour (02:10 CET) goes on through it.
        ("*/5 * * * * *", "Europe/Berlin", utc(2026, 10, 25, 1, 10),
         [utc(2026, 10, 25, 1, 10, 5), utc(2026, 10, 25, 1, 10, 10)]),
        # The case: Sydney 2027-04-04 03:00 AEDT -> 02:00 AEST (16:00 UTC).
        ("*/20 0-3 * * 0", "Australia/Sydney", utc(2027, 4, 3, 15, 30),
         [utc(2027, 4, 3, 15, 40), utc(2027, 4, 3, 16, 0), utc(2027, 4, 3, 16, 20),
          utc(2027, 4, 3, 16, 40), utc(2027, 4, 3, 17, 0)]),
        # Lord Howe: 2026-10-04 02:00 +10:30 -> 02:30 +11; 02:00 never shows on the clock.
        ("0 * * * *", "Australia/Lord_Howe", utc(2026, 10, 3, 14, 30),
         [utc(2026, 10, 3, 16, 0), utc(2026, 10, 3, 17, 0)]),
    ],
)
def test_dst_rule_for_intervals(expr, tz, after, expected):
    """Minute or hour starting with '*': every instant whose wall time matches, in real time."""
    schedule = parse_schedule(expr, tz)
    assert schedule.follows_real_time
    assert take(schedule, after, len(expected)) == expected


@pytest.mark.parametrize(
    ("expr", "interval"),
    [("* * * * *", True), ("*/20 0-3 * * 0", True), ("30 * * * *", True), ("0 */2 * * *", True),
     ("*/5 0 2 * * *", False), ("5 * 2 * * *", True), ("@hourly", True), ("@daily", False),
     ("@weekly", False), ("30 1 * * *", False), ("0-59 0-23 * * *", False), ("@every 1h", False)],
)
def test_interval_or_pinned_is_decided_by_the_minute_and_hour_fields(expr, interval):
    """Debian cron's test: the minute or hour field starting with '*' (6 fields: the same two)."""
    assert parse_schedule(expr, "Europe/Berlin").follows_real_time is interval


def test_fall_back_hour_runs_twice_for_an_interval_once_for_pinned_times():
    """Across fall-back, '* * * * *' fires every real minute (240 over 4 hours); its pinned twin
    '0-59 0-23 * * *' fires once per wall time (180)."""
    zone = schedule_zone("Europe/Berlin")
    start, end = utc(2026, 10, 24, 23), utc(2026, 10, 25, 3)
    every = parse_schedule("* * * * *", "Europe/Berlin").firings(start, end)
    assert every == [start + timedelta(minutes=m) for m in range(1, 241)]
    pinned = parse_schedule("0-59 0-23 * * *", "Europe/Berlin").firings(start, end)
    walls = [t.astimezone(zone).replace(tzinfo=None) for t in pinned]
    assert len(walls) == len(set(walls)) == 180
    assert utc(2026, 10, 25, 1, 30) not in pinned  # 02:30 CET, the second pass


@pytest.mark.parametrize(
    ("expr", "tz", "instant", "note"),
    [("*/20 0-3 * * 0", "Australia/Sydney", utc(2027, 4, 3, 15, 20), "first pass of a repeated hour"),
     ("*/20 0-3 * * 0", "Australia/Sydney", utc(2027, 4, 3, 16, 20), "second pass of a repeated hour"),
     ("30 2 * * *", "Europe/Berlin", utc(2026, 10, 25, 0, 30),
      "first pass of a repeated hour (a pinned time runs once)"),
     ("30 2 * * *", "Europe/Berlin", utc(2026, 3, 29, 1),
      "run at the end of the spring-forward gap (02:00-02:59 skipped)"),
     ("0 3 * * *", "Europe/Berlin", utc(2026, 3, 29, 1), None),  # 03:00 is real; nothing skipped
     ("@every 20m", "Europe/Berlin", utc(2026, 10, 25, 1, 0), None),  # DST does not touch @every
     ("30 2 * * *", "Europe/Berlin", utc(2026, 3, 30, 0, 30), None)],
)
def test_dst_note_says_what_a_change_does_to_a_firing(expr, tz, instant, note):
    """`etcdcron next` explains the firings a DST change touches, and only those."""
    schedule = parse_schedule(expr, tz)
    assert instant in schedule.firings(instant - timedelta(seconds=1), instant)
    assert schedule.dst_note(instant) == note


@pytest.mark.parametrize(
    ("expr", "after", "expected"),
    [
        # crontab(5): both day fields restricted -> either; one starting with '*' -> both.
        ("0 0 1,15 * 1", utc(2026, 1, 1), [utc(2026, 1, 5), utc(2026, 1, 12), utc(2026, 1, 15)]),
        ("0 0 */2 * 1", utc(2026, 1, 1), [utc(2026, 1, 5), utc(2026, 1, 19), utc(2026, 2, 9)]),
        ("0 0 1 * */3", utc(2026, 1, 1), [utc(2026, 2, 1), utc(2026, 3, 1), utc(2026, 4, 1)]),  # Sun/Wed/Sat
    ],
)
def test_day_fields_follow_crontab5(expr, after, expected):
    """Day-of-month and day-of-week: OR only when neither starts with '*', as crontab(5) says."""
    assert take(parse_schedule(expr), after, len(expected)) == expected


# --- properties ------------------------------------------------------------------------------


@functools.cache
def schedule_zone(name: str) -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(name)


@functools.cache
def transitions(name: str) -> tuple[datetime, ...]:
    """Instants in 2020-2035 where the zone's UTC offset changes."""
    zone = schedule_zone(name)
    found = []
    step = timedelta(hours=12)
    moment = utc(2020, 1, 1)
    offset = moment.astimezone(zone).utcoffset()
    while moment < utc(2036, 1, 1):
        later = moment + step
        later_offset = later.astimezone(zone).utcoffset()
        if later_offset != offset:
            lo, hi = moment, later
            while hi - lo > timedelta(seconds=1):
                mid = lo + timedelta(seconds=(hi - lo).total_seconds() // 2)
                if mid.astimezone(zone).utcoffset() == later_offset:
                    hi = mid
                else:
                    lo = mid
            found.append(hi)
        moment, offset = later, later_offset
    return tuple(found)


@dataclass(frozen=True)
class Spec:
    """A generated cron expression and the values each field allows."""

    expr: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    either_day: bool  # day-of-month OR day-of-week, when both are restricted
    interval: bool  # the minute or hour field starts with '*': follows real time through DST

    def matches(self, wall: datetime) -> bool:
        if not (wall.second in self.seconds and wall.minute in self.minutes
                and wall.hour in self.hours and wall.month in self.months):
            return False
        day_ok = wall.day in self.days
        weekday_ok = (wall.weekday() + 1) % 7 in self.weekdays
        return (day_ok or weekday_ok) if self.either_day else (day_ok and weekday_ok)


def field(lo: int, hi: int, star_steps: bool = True) -> st.SearchStrategy[tuple[str, set[int]]]:
    """A cron field from a small grammar, with the set of values it allows."""
    value = st.integers(lo, hi)
    pair = st.lists(value, min_size=2, max_size=2, unique=True).map(sorted)  # no "5-5"
    forms = [
        st.just(("*", set(range(lo, hi + 1)))),
        value.map(lambda n: (str(n), {n})),
        pair.map(lambda ab: (f"{ab[0]}-{ab[1]}", set(range(ab[0], ab[1] + 1)))),
        st.tuples(pair, st.integers(1, hi - lo)).map(
            lambda p: (f"{p[0][0]}-{p[0][1]}/{p[1]}", set(range(p[0][0], p[0][1] + 1, p[1])))
        ),
        st.lists(value, min_size=2, max_size=4, unique=True).map(
            lambda ns: (",".join(map(str, ns)), set(ns))
        ),
    ]
    if star_steps:
        forms.append(st.integers(1, hi - lo).map(
            lambda s: (f"*/{s}", set(range(lo, hi + 1, s)))
        ))
    return st.one_of(forms)


@st.composite
def specs(draw: st.DrawFn, with_seconds: bool | None = None) -> Spec:
    if with_seconds is None:
        with_seconds = draw(st.booleans())
    second = draw(field(0, 59)) if with_seconds else ("", {0})
    minute, hour = draw(field(0, 59)), draw(field(0, 23))
    day, month = draw(field(1, 31)), draw(field(1, 12))
    weekday = draw(field(0, 6))
    days, weekdays = frozenset(day[1]), frozenset(d % 7 for d in weekday[1])
    texts = [minute[0], hour[0], day[0], month[0], weekday[0]]
    if with_seconds:
        texts.insert(0, second[0])
    return Spec(
        expr=" ".join(texts),
        seconds=frozenset(second[1]),
        minutes=frozenset(minute[1]),
        hours=frozenset(hour[1]),
        days=days,
        months=frozenset(month[1]),
        weekdays=weekdays,
        # crontab(5): either day field may match only when neither starts with '*'
        either_day=not (day[0].startswith("*") or weekday[0].startswith("*")),
        interval=minute[0].startswith("*") or hour[0].startswith("*"),
    )


@st.composite
def zone_and_start(draw: st.DrawFn) -> tuple[str, datetime]:
    """A zone and an instant in 2020-2035, often within a day or two of a DST change."""
    name = draw(st.sampled_from(ZONES))
    known = transitions(name)
    if known and draw(st.booleans()):
        offset = draw(st.integers(-2 * 86400, 86400).map(lambda s: timedelta(seconds=s)))
        micro = timedelta(microseconds=draw(st.integers(0, 999_999)))
        return name, draw(st.sampled_from(known)) + offset + micro
    naive = draw(st.datetimes(datetime(2020, 1, 1), datetime(2035, 12, 31)))
    return name, naive.replace(tzinfo=UTC)


def build(spec: Spec, zone: str) -> Schedule:
    try:
        return parse_schedule(spec.expr, zone)
    except InvalidSchedule as exc:
        assume("never fires" not in str(exc))  # e.g. day 31 in February only
        raise


def is_gap_firing(spec: Spec, instant: datetime, zone: zoneinfo.ZoneInfo) -> bool:
    """True when ``instant`` ends a spring-forward gap that skipped a wall time spec matches."""
    gap = instant.astimezone(zone).utcoffset() - (instant - timedelta(seconds=1)).astimezone(
        zone
    ).utcoffset()
    if gap <= timedelta(0):
        return False
    wall = instant.astimezone(zone).replace(tzinfo=None)
    step = timedelta(seconds=1 if len(spec.seconds) > 1 or 0 not in spec.seconds else 60)
    skipped = wall - gap
    while skipped < wall:
        if spec.matches(skipped):
            return True
        skipped += step
    return False


def fires_at(spec: Spec, instant: datetime, zone: zoneinfo.ZoneInfo) -> bool:
    """The DST rule by brute force: an interval fires whenever the wall time matches; a pinned
    time at the first pass of a matching wall time, and at a gap's end that skipped a match."""
    local = instant.astimezone(zone)
    matches = spec.matches(local.replace(tzinfo=None))
    if spec.interval:
        return matches
    return (matches and local.fold == 0) or is_gap_firing(spec, instant, zone)


@PROPERTY_SETTINGS
@given(spec=specs(), zone_start=zone_and_start())
def test_next_after_walks_matching_instants(spec, zone_start):
    """next_after strictly increases and hits only instants the rule fires at; pinned schedules
    never repeat a wall time."""
    name, start = zone_start
    schedule, zone = build(spec, name), schedule_zone(name)
    assert schedule.follows_real_time is spec.interval
    previous, walls = start, set()
    for _ in range(20):
        instant = schedule.next_after(previous)
        assert instant > previous and instant.tzinfo is UTC and instant.microsecond == 0
        assert fires_at(spec, instant, zone)
        wall = instant.astimezone(zone).replace(tzinfo=None)
        assert spec.interval or wall not in walls
        walls.add(wall)
        previous = instant


@PROPERTY_SETTINGS
@given(spec=specs(), zone_start=zone_and_start(), span=st.integers(0, 3 * 86400))
def test_firings_equals_iterating_next_after(spec, zone_start, span):
    """firings(a, b, limit) is exactly what repeated next_after yields in (a, b]."""
    name, start = zone_start
    schedule = build(spec, name)
    end = start + timedelta(seconds=span)
    expected, current = [], start
    while len(expected) < 200:
        current = schedule.next_after(current)
        if current > end:
            break
        expected.append(current)
    assert schedule.firings(start, end, limit=200) == expected


@settings(max_examples=60, deadline=None)
@given(
    spec=specs(),
    name=st.sampled_from([z for z in ZONES if transitions(z)]),
    data=st.data(),
)
def test_firings_agree_with_brute_force_around_dst_changes(spec, name, data):
    """Around a DST change, firings are exactly the instants the brute-force rule fires at."""
    schedule, zone = build(spec, name), schedule_zone(name)
    change = data.draw(st.sampled_from(transitions(name)))
    with_seconds = len(spec.expr.split()) == 6
    step = timedelta(seconds=1 if with_seconds else 60)
    half = timedelta(hours=1 if with_seconds else 25)
    start, end = change - half, change + half
    expected = []
    instant = start + step
    while instant <= end:
        if fires_at(spec, instant, zone):
            expected.append(instant)
        instant += step
    assert schedule.firings(start, end, limit=100_000) == expected


@settings(max_examples=150, deadline=None)
@given(
    seconds=st.integers(1, 200_000),
    naive=st.datetimes(datetime(2020, 1, 1), datetime(2035, 12, 31)),
    name=st.sampled_from(ZONES),
)
def test_every_fires_at_next_epoch_multiple(seconds, naive, name):
    """@every N s fires at the first multiple of N seconds since the epoch after the start."""
    start = naive.replace(tzinfo=UTC)
    instant = parse_schedule(f"@every {seconds}s", name).next_after(start)
    assert (instant - utc(1970, 1, 1)).total_seconds() % seconds == 0
    assert start < instant <= start + timedelta(seconds=seconds)
