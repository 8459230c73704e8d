"""The pure parts: local days and their boundaries, activity bits, usage and retention arithmetic."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etcdcron.analytics import days as dd
from etcdcron.analytics.metrics import Activity, bucket, percentile, retention_day, roll_day, usage_summary
from etcdcron.errors import InvalidZone

ZONES = ["UTC", "Asia/Kolkata", "America/Santiago", "America/New_York", "Pacific/Chatham", "Australia/Lord_Howe"]


@settings(max_examples=300, deadline=None)
@given(ts=st.integers(1_600_000_000, 1_800_000_000), tz=st.sampled_from(ZONES))
def test_an_instant_lies_within_its_day(ts, tz):
    """For any instant and zone, the start of its local day <= instant < the end of that day."""
    day = dd.day_of(ts, tz)
    assert dd.start_of(day, tz) <= ts < dd.end_of(day, tz)
    assert dd.day_of(dd.start_of(day, tz), tz) == day
    assert dd.day_of(dd.end_of(day, tz) - 0.001, tz) == day


def test_a_day_starting_after_a_midnight_gap():
    """Santiago skipped 2024-09-08 00:00-01:00: that day starts at 01:00 local and is 23 hours long."""
    start = dd.start_of("2024-09-08", "America/Santiago")
    assert datetime.fromtimestamp(start, ZoneInfo("America/Santiago")).hour == 1
    assert dd.end_of("2024-09-08", "America/Santiago") - start == 23 * 3600
    assert dd.end_of("2024-11-03", "America/New_York") - dd.start_of("2024-11-03", "America/New_York") == 25 * 3600


def test_closed_and_final_days():
    """A day closes at its local end; the collector takes it until grace after; it is final a margin later."""
    tz, day = "Asia/Kolkata", "2026-01-10"
    end = dd.end_of(day, tz)
    assert dd.last_closed(end - 1, tz) == "2026-01-09" and dd.last_closed(end, tz) == day
    assert dd.accepts(day, tz, 7200, end + 7199) and not dd.accepts(day, tz, 7200, end + 7200)
    assert not dd.is_final(day, tz, 7200, end + 7200) and dd.is_final(day, tz, 7200, end + 7200 + dd.FINAL_MARGIN)


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "../etc/passwd", "/etc/localtime"])
def test_bad_zones_are_refused(name):
    """A zone that is not an IANA name is InvalidZone, naming it."""
    with pytest.raises(InvalidZone, match="bad time zone"):
        dd.zone(name)


@settings(max_examples=200, deadline=None)
@given(st.sets(st.integers(0, 120), min_size=1, max_size=30), st.integers(0, 125))
def test_activity_bits_hold_any_set_of_days(offsets, probe):
    """Marking days in any order keeps first, last, and the last active day before any day."""
    base = "2025-01-01"
    act = None
    for off in sorted(offsets, key=lambda o: (o * 7919) % 131):
        act = act.mark(dd.shift(base, off)) if act else Activity(dd.shift(base, off), 1)
    assert act.first == dd.shift(base, min(offsets)) and act.last == dd.shift(base, max(offsets))
    below = [o for o in offsets if o < probe]
    assert act.before(dd.shift(base, probe)) == (dd.shift(base, max(below)) if below else None)
    assert Activity.from_doc(act.fields()) == act


def test_roll_day_marks_new_and_returning_devices():
    """A day's rollup: new devices are those first seen that day; returning ones keep their first day."""
    known = {"a|old": {"first": "2026-01-01", "bits": "1"}}
    day_rows, dev_rows, daily = roll_day("a", "2026-01-05", {"old": (2, 1500), "fresh": (1, 0)}, known)
    assert daily == {"app": "a", "day": "2026-01-05", "launches": 3, "dau": 2, "new": 1, "returning": 1, "usage_ms": 1500}
    rows = dict(day_rows)
    assert rows["a|2026-01-05|old"]["prev"] == "2026-01-01" and rows["a|2026-01-05|fresh"]["prev"] is None
    assert dict(dev_rows)["a|old"]["bits"] == "11" and dict(dev_rows)["a|old"]["last"] == "2026-01-05"


def test_usage_summary_buckets_and_percentiles():
    """Per-device totals fall in their buckets; percentiles are nearest-rank; an empty day is all zeros."""
    s = usage_summary([(1, 0), (2, 59_999), (1, 60_000), (3, 3_600_000)])
    assert s["dist"] == {"0s": 1, "<1m": 1, "1-3m": 1, "3-10m": 0, "10-30m": 0, "30-60m": 0, ">=1h": 1}
    assert (s["p50_ms"], s["p90_ms"], s["launches_per_device"]) == (59_999, 3_600_000, 1.75)
    assert usage_summary([])["per_device_ms"] == 0.0
    assert percentile([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 90) == 9 and bucket(1) == "<1m"


def test_retention_day_counts_classic_and_unbounded():
    """On day D, a device from cohort C active again after a gap counts for unbounded N in (gap, age]."""
    size, classic, delta = retention_day("2026-01-10", [("2026-01-10", None), ("2026-01-03", "2026-01-04"), ("2026-01-09", "2026-01-09")])
    assert size == 1
    assert classic["2026-01-03"] == {7: 1} and classic["2026-01-09"] == {1: 1} and classic["2026-01-08"] == {2: 0}
    assert delta == {"2026-01-03": {2: 1, 3: 1, 4: 1, 5: 1, 6: 1, 7: 1}, "2026-01-09": {1: 1}}
