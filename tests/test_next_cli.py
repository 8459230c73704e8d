"""`etcdcron next`: look at a DST change before it happens, for a saved job or a schedule not saved
(its refusals are in the table of tests/test_cli.py)."""

from __future__ import annotations

import json

from tests.test_cli import run

NOWHERE = "http://127.0.0.1:1"  # no etcd answers here


def lines(r) -> list[str]:
    assert r.returncode == 0, r.stderr
    return r.stdout.strip().splitlines()


def test_schedule_over_a_fall_back_shows_both_passes_without_etcd(prefix):
    """The issue's case, before saving anything and with no etcd: 02:00, 02:20 and 02:40 twice."""
    r = run(NOWHERE, prefix, "next", "--schedule", "*/20 0-3 * * 0", "--tz", "Australia/Sydney",
            "--from", "2027-04-04T01:30:00+11:00", "-n", "8")
    assert lines(r) == [
        "2027-04-04T01:40:00+11:00  2027-04-03T14:40:00Z",
        "2027-04-04T02:00:00+11:00  2027-04-03T15:00:00Z  first pass of a repeated hour",
        "2027-04-04T02:20:00+11:00  2027-04-03T15:20:00Z  first pass of a repeated hour",
        "2027-04-04T02:40:00+11:00  2027-04-03T15:40:00Z  first pass of a repeated hour",
        "2027-04-04T02:00:00+10:00  2027-04-03T16:00:00Z  second pass of a repeated hour",
        "2027-04-04T02:20:00+10:00  2027-04-03T16:20:00Z  second pass of a repeated hour",
        "2027-04-04T02:40:00+10:00  2027-04-03T16:40:00Z  second pass of a repeated hour",
        "2027-04-04T03:00:00+10:00  2027-04-03T17:00:00Z",
    ]


def test_schedule_over_a_spring_forward_and_a_pinned_fall_back(prefix):
    """A pinned time in a gap runs once at its end; a pinned time repeated runs once (JSON too)."""
    r = run(NOWHERE, prefix, "next", "--schedule", "30 2 * * *", "--tz", "Europe/Berlin",
            "--from", "2027-03-27T00:00:00+01:00", "-n", "3")
    assert lines(r) == [
        "2027-03-27T02:30:00+01:00  2027-03-27T01:30:00Z",
        "2027-03-28T03:00:00+02:00  2027-03-28T01:00:00Z  run at the end of the spring-forward gap (02:00-02:59 skipped)",
        "2027-03-29T02:30:00+02:00  2027-03-29T00:30:00Z",
    ]
    r = run(NOWHERE, prefix, "next", "--schedule", "30 1 * * *", "--tz", "America/New_York",
            "--from", "2027-11-06T12:00:00Z", "-n", "2", "--json")
    assert json.loads(r.stdout) == [
        {"local": "2027-11-07T01:30:00-04:00", "utc": "2027-11-07T05:30:00Z",
         "note": "first pass of a repeated hour (a pinned time runs once)"},
        {"local": "2027-11-08T01:30:00-05:00", "utc": "2027-11-08T06:30:00Z", "note": None},
    ]


def test_schedule_defaults_to_utc_and_now(prefix):
    """Without --tz the zone is UTC; without --from the firings are the coming ones."""
    r = run(NOWHERE, prefix, "next", "--schedule", "@every 1h", "-n", "2", "--json")
    got = json.loads(r.stdout)
    assert [f["local"][-6:] for f in got] == ["+00:00", "+00:00"]
    assert got[1]["utc"] > got[0]["utc"] and all(f["note"] is None for f in got)
    r = run(NOWHERE, prefix, "next", "--schedule", "0 0 1 1 *", "--from", "2030-06-01T00:00:00", "-n", "1")
    assert lines(r) == ["2031-01-01T00:00:00+00:00  2031-01-01T00:00:00Z"]  # no offset: UTC


def test_the_end_of_the_calendar_ends_the_list(prefix):
    """Firings up to year 9999 and no further: fewer than -n, not an error; years print with 4 digits."""
    r = run(NOWHERE, prefix, "next", "--schedule", "0 0 29 2 *", "--from", "9990-01-01T00:00:00Z", "-n", "5")
    assert lines(r) == ["9992-02-29T00:00:00+00:00  9992-02-29T00:00:00Z",
                        "9996-02-29T00:00:00+00:00  9996-02-29T00:00:00Z"]
    r = run(NOWHERE, prefix, "next", "--schedule", "0 0 29 2 *", "--from", "0001-01-01T00:00:00Z", "-n", "1")
    assert lines(r) == ["0004-02-29T00:00:00+00:00  0004-02-29T00:00:00Z"]


def test_saved_job_from_a_time_inside_its_window(etcd, prefix):
    """`next NAME --from` lists the job's firings after TIME, in its zone, and stops at --end-at."""
    r = run(etcd, prefix, "add", "0 * * * *", "--name", "hourly", "--shell", "true", "--tz", "America/New_York",
            "--end-at", "2027-11-07T08:00:00Z")
    assert r.returncode == 0, r.stderr
    r = run(etcd, prefix, "next", "hourly", "--from", "2027-11-07T04:30:00Z", "-n", "10")
    assert lines(r) == [
        "2027-11-07T01:00:00-04:00  2027-11-07T05:00:00Z  first pass of a repeated hour",
        "2027-11-07T01:00:00-05:00  2027-11-07T06:00:00Z  second pass of a repeated hour",
        "2027-11-07T02:00:00-05:00  2027-11-07T07:00:00Z",
        "2027-11-07T03:00:00-05:00  2027-11-07T08:00:00Z",
    ]
