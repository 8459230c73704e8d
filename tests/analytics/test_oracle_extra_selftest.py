"""The issue-12 oracle checked against answers worked out by hand, on small event lists in
Asia/Kolkata (UTC+05:30, so a local day is not a UTC day); and the rich simulation checked for the
variety it promises and delivered through the collector's insert path with every field intact."""

from __future__ import annotations

from collections import defaultdict
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from .oracle import compute_extra, local_day, top_n, trend
from .simulate import COUNTERS, SLOTS, World, events

TZ = "Asia/Kolkata"
D0 = date(2024, 3, 1)
D1, D2, D3 = (D0 + timedelta(days=k) for k in (1, 2, 3))


def at(day: date, hh: int, mm: int = 0, ss: float = 0.0) -> float:
    """Unix seconds of a local wall time in TZ."""
    return datetime(day.year, day.month, day.day, hh, mm, tzinfo=ZoneInfo(TZ)).timestamp() + ss


def ev(id: str, dev: str, ts: float, type: str = "open", ch: str = "store", pf: str = "android", ver: str = "1",
       uid: str | None = None, **custom) -> dict:
    return {"id": id, "dev": dev, "type": type, "ts": ts, "sec": 0.0, "ch": ch, "pf": pf, "ver": ver, "uid": uid, **custom}


def test_local_midnight_in_kolkata_is_18_30_utc():
    """The helper and the oracle agree on the zone: local midnight is 18:30 UTC the day before."""
    assert datetime.fromtimestamp(at(D1, 0), ZoneInfo("UTC")).isoformat() == "2024-03-01T18:30:00+00:00"
    assert local_day(at(D1, 0), TZ) == D1 and local_day(at(D1, 0) - 0.001, TZ) == D0


# --- breakdowns

BREAKDOWN_EVENTS = [
    # b: first seen on D0, back on D1 under another channel and platform value ""
    ev("b1", "b", at(D0, 12), ch="ads", pf="ios", ver="2"),
    # a: new on D1, first under version 1, upgraded to 2 the same day
    ev("a1", "a", at(D1, 8), ver="1"),
    ev("a2", "a", at(D1, 9), ver="2"),
    ev("a3", "a", at(D1, 9, 1), type="usage", ver="2"),
    ev("b2", "b", at(D1, 10), ch="", pf="", ver="2"),
    # c: new on D1 with a custom event only (no launch), exactly at local midnight
    ev("c1", "c", at(D1, 0), type="custom", ch="web", pf="web", ver="2", name="coins", amt=3, slot=""),
    # d: two first events at the same instant; the smaller id ("d1", version 3) is the first
    ev("d2", "d", at(D1, 15), ver="1"),
    ev("d1", "d", at(D1, 15), ver="3"),
    ev("d1", "d", at(D1, 16), ver="9"),  # the same id resent: one event, the first copy
]


def test_breakdowns_by_hand():
    """Launches count opens; DAU counts a device once under each value it used that day; new counts a
    device only under its first event's value (smallest (ts, id)); "" is a value; days without events are absent."""
    got = compute_extra(BREAKDOWN_EVENTS, TZ, D2, {"coins": "sum"})["breakdowns"]
    assert set(got) == {"2024-03-01", "2024-03-02"}
    assert got["2024-03-01"] == {
        "channel": {"ads": {"launches": 1, "dau": 1, "new": 1}},
        "platform": {"ios": {"launches": 1, "dau": 1, "new": 1}},
        "version": {"2": {"launches": 1, "dau": 1, "new": 1}},
    }
    assert got["2024-03-02"] == {
        "channel": {"store": {"launches": 4, "dau": 2, "new": 2},  # a (a1, a2), d (d1, d2)
                    "": {"launches": 1, "dau": 1, "new": 0},  # b, not new
                    "web": {"launches": 0, "dau": 1, "new": 1}},  # c, custom only
        "platform": {"android": {"launches": 4, "dau": 2, "new": 2},
                     "": {"launches": 1, "dau": 1, "new": 0},
                     "web": {"launches": 0, "dau": 1, "new": 1}},
        "version": {"1": {"launches": 2, "dau": 2, "new": 1},  # a1 (a new here), d2 (d not new here)
                    "2": {"launches": 2, "dau": 3, "new": 1},  # a2 + b2 launches; a, b, c active; c new
                    "3": {"launches": 1, "dau": 1, "new": 1}},  # d1: d's first event
    }


def test_events_after_last_are_left_out():
    """Days after ``last`` are neither reported nor counted."""
    got = compute_extra(BREAKDOWN_EVENTS, TZ, D0, {"coins": "sum"})
    assert set(got["breakdowns"]) == {"2024-03-01"} and set(got["users"]) == {"2024-03-01"}
    assert got["custom"] == {} and got["active_retention"] == {"2024-03-01": {"size": 1, "counts": {}}}


# --- registered users

def test_users_by_hand():
    """A user seen on two devices is one user, new on the day of its first event on either; a device
    used before its login counts no user then; "" is no user; every day to ``last`` is listed."""
    evs = [
        ev("x1", "x", at(D0, 10), uid="u1"),
        ev("y1", "y", at(D0, 11)),  # y not logged in yet
        ev("z1", "z", at(D0, 12), uid=""),  # "" = absent
        ev("x2", "x", at(D2, 9), uid="u1"),
        ev("w1", "w", at(D2, 9, 30), uid="u1"),  # u1's second device
        ev("y2", "y", at(D2, 10), type="usage", uid="u2"),  # y logs in two days after first use
        ev("y3", "y", at(D3, 0), type="custom", uid="u3", name="coins", amt=1, slot=""),  # at local midnight
    ]
    got = compute_extra(evs, TZ, D3, {"coins": "sum"})["users"]
    assert got == {
        "2024-03-01": {"active": 1, "new": 1, "total": 1},
        "2024-03-02": {"active": 0, "new": 0, "total": 1},
        "2024-03-03": {"active": 2, "new": 1, "total": 2},
        "2024-03-04": {"active": 1, "new": 1, "total": 3},
    }


# --- active retention

def test_active_retention_by_hand():
    """A device active on C and C+2 only counts for N=2, not N=1; N beyond ``last`` is left out; days
    without activity have no entry."""
    evs = [ev("p1", "p", at(D0, 10)), ev("p2", "p", at(D2, 10), type="usage"),
           ev("q1", "q", at(D0, 23, 59, 59.999)), ev("q2", "q", at(D1, 0))]
    got = compute_extra(evs, TZ, D3)["active_retention"]
    assert got == {
        "2024-03-01": {"size": 2, "counts": {"1": 1, "2": 1, "3": 0}},  # q on C+1, p on C+2
        "2024-03-02": {"size": 1, "counts": {"1": 0, "2": 0}},
        "2024-03-03": {"size": 1, "counts": {"1": 0}},
    }


def test_active_retention_at_14_and_30_days():
    """N runs over 1..7, 14 and 30; a returning device is in the counts, not only new ones."""
    c = D0 + timedelta(days=5)
    evs = [ev("r0", "r", at(D0, 10)), ev("r1", "r", at(c, 10)), ev("r2", "r", at(c + timedelta(days=14), 10)),
           ev("r3", "r", at(c + timedelta(days=30), 10)), ev("s1", "s", at(c + timedelta(days=3), 10))]
    got = compute_extra(evs, TZ, c + timedelta(days=30))["active_retention"]
    assert got[c.isoformat()] == {"size": 1, "counts": {"1": 0, "2": 0, "3": 0, "4": 0, "5": 0, "6": 0, "7": 0,
                                                        "14": 1, "30": 1}}
    assert got[D0.isoformat()]["counts"]["5"] == 1 and set(got[D0.isoformat()]["counts"]) == {"1", "2", "3", "4", "5", "6", "7", "14", "30"}


# --- custom events

def test_custom_sums_by_hand():
    """Sums per day and counter: per slot for slot counters, per channel/platform/version for cpv;
    an event at local midnight belongs to the new day; only (day, counter) pairs with events appear."""
    counters = {"coins": "sum", "taps": "slot", "buys": "cpv"}

    def c(id, ts, name, amt, slot="", **kw):
        return ev(id, "k", ts, type="custom", name=name, amt=amt, slot=slot, **kw)

    evs = [
        ev("o1", "k", at(D0, 9)),
        c("t1", at(D0, 9), "taps", 2, "a"), c("t2", at(D0, 10), "taps", 3, "a"), c("t3", at(D0, 11), "taps", 0, "b"),
        c("t4", at(D1, 0) - 0.001, "taps", 4, "c"),  # last millisecond of D0
        c("t5", at(D1, 0), "taps", 7, "a"),  # local midnight: D1
        c("m1", at(D0, 12), "coins", 10), c("m2", at(D0, 13), "coins", 5),
        c("u1", at(D1, 8), "buys", 4, ch="ads", pf="ios", ver="2"),
        c("u2", at(D1, 9), "buys", 6, ch="ads", pf="android", ver="2"),
        c("u3", at(D1, 10), "buys", 1, ch="", pf="ios", ver="3"),
    ]
    got = compute_extra(evs, TZ, D2, counters)["custom"]
    assert got == {
        "2024-03-01": {"taps": {"total": 9, "slots": {"a": 5, "b": 0, "c": 4}}, "coins": {"total": 15}},
        "2024-03-02": {"taps": {"total": 7, "slots": {"a": 7}},
                       "buys": {"total": 11, "by": {"channel": {"ads": 10, "": 1}, "platform": {"ios": 5, "android": 6},
                                                    "version": {"2": 10, "3": 1}}}},
    }


def test_custom_event_of_undeclared_counter_is_an_error():
    """The oracle refuses to guess the type of a counter it was not told about."""
    with pytest.raises(KeyError):
        compute_extra([ev("x", "k", at(D0, 9), type="custom", name="nope", amt=1, slot="")], TZ, D0, {})


# --- trend

def _daily(new_dau: list[tuple[int, int]], first: date) -> dict:
    return {(first + timedelta(days=k)).isoformat(): {"new": n, "dau": a} for k, (n, a) in enumerate(new_dau)}


def test_trend_by_hand():
    """New and active are sums over each 7-day window; D1 pools returners over cohort sizes, leaving
    out cohorts whose day 1 is not final and days without a cohort."""
    last = date(2024, 3, 14)
    daily = _daily([(k, 10 * k) for k in range(1, 15)], date(2024, 3, 1))  # day k: new k, dau 10k
    retention = {
        "2024-03-02": {"size": 4, "classic": {"1": 1}},  # previous window
        "2024-03-07": {"size": 6, "classic": {"1": 3}},  # previous window
        "2024-03-08": {"size": 2, "classic": {"1": 2}},  # current window
        "2024-03-10": {"size": 8, "classic": {"1": 1}},  # current window
        "2024-03-14": {"size": 5, "classic": {}},  # day 1 not final: left out
        "2024-02-29": {"size": 9, "classic": {"1": 9}},  # before both windows
    }
    assert trend(daily, retention, last) == {
        "current": {"first": "2024-03-08", "last": "2024-03-14", "new": 8 + 9 + 10 + 11 + 12 + 13 + 14,
                    "active": 10 * (8 + 9 + 10 + 11 + 12 + 13 + 14), "d1": 3 / 10},
        "previous": {"first": "2024-03-01", "last": "2024-03-07", "new": 1 + 2 + 3 + 4 + 5 + 6 + 7,
                     "active": 10 * (1 + 2 + 3 + 4 + 5 + 6 + 7), "d1": 4 / 10},
    }
    assert trend(daily, retention, "2024-03-14") == trend(daily, retention, last)


def test_trend_without_cohorts_or_days():
    """Days before the history count nothing, and a window without a cohort whose day 1 is final has D1 None."""
    daily = _daily([(3, 5), (1, 4)], date(2024, 3, 13))
    retention = {"2024-03-13": {"size": 3, "classic": {"1": 2}}, "2024-03-14": {"size": 1, "classic": {}}}
    got = trend(daily, retention, date(2024, 3, 14))
    assert got["current"] == {"first": "2024-03-08", "last": "2024-03-14", "new": 4, "active": 9, "d1": 2 / 3}
    assert got["previous"] == {"first": "2024-03-01", "last": "2024-03-07", "new": 0, "active": 0, "d1": None}
    assert trend(daily, retention, date(2024, 3, 13))["current"]["d1"] is None


# --- top N

VALUES = {
    "b": {"launches": 9, "dau": 5, "new": 1},
    "c": {"launches": 4, "dau": 3, "new": 2},
    "a": {"launches": 6, "dau": 3, "new": 0},
    "": {"launches": 1, "dau": 1, "new": 1},
}


def test_top_n_breaks_ties_by_value_and_merges_the_rest():
    """Kept values are ranked by DAU, ties by value ascending; the rest are summed as other, with their number."""
    kept, other = top_n(VALUES, 2)
    assert kept == [("b", VALUES["b"]), ("a", VALUES["a"])]
    assert other == {"launches": 5, "dau": 4, "new": 3, "values": 2}
    kept, other = top_n(VALUES, 3)
    assert [v for v, _ in kept] == ["b", "a", "c"] and other == {"launches": 1, "dau": 1, "new": 1, "values": 1}


def test_top_n_with_nothing_to_merge():
    """When every value fits, other is None."""
    for n in (4, 20):
        kept, other = top_n(VALUES, n)
        assert [v for v, _ in kept] == ["b", "a", "c", ""] and other is None
    assert top_n({}, 3) == ([], None)


# --- the rich simulation

START = date(2024, 10, 15)  # New York, over the fall-back of 2024-11-03


def test_rich_events_keep_the_plain_ones():
    """rich=True adds fields and custom events but leaves the plain events' ids, times and order as they were."""
    plain = events(3, "America/New_York", START, 20, 40)
    rich = events(3, "America/New_York", START, 20, 40, rich=True)
    assert all(set(e) == {"id", "dev", "type", "ts", "sec"} for e in plain)
    assert [(e["id"], e["dev"], e["type"], e["ts"], e["sec"]) for e in rich[:len(plain)]] == \
           [(e["id"], e["dev"], e["type"], e["ts"], e["sec"]) for e in plain]
    assert all(e["type"] == "custom" for e in rich[len(plain):])
    assert len({e["id"] for e in rich}) == len(rich)


def test_rich_events_have_the_variety_the_metrics_need():
    """Two versions on one device-day (also a first day), channel changes, devices without login, late
    logins, users on two devices, every counter and slot, custom events at local midnight."""
    tz = "America/New_York"
    raw = events(3, tz, START, 33, 70, rich=True)
    versions, channels, platforms = defaultdict(set), defaultdict(set), defaultdict(set)
    devs_of, first_day, login_day = defaultdict(set), {}, {}
    for e in sorted(raw, key=lambda e: (e["ts"], e["id"])):
        d = local_day(e["ts"], tz)
        versions[(e["dev"], d)].add(e["ver"])
        channels[e["dev"]].add(e["ch"])
        platforms[e["dev"]].add(e["pf"])
        first_day.setdefault(e["dev"], d)
        if e["uid"]:
            devs_of[e["uid"]].add(e["dev"])
            login_day.setdefault(e["dev"], d)
    assert sum(len(v) > 1 for v in versions.values()) >= 5
    assert any(len(v) > 1 for (dev, d), v in versions.items() if first_day[dev] == d)
    assert 1 <= sum(len(v) > 1 for v in channels.values()) <= 15
    assert all(len(v) == 1 for v in platforms.values())
    assert len(first_day) - len(login_day) >= 5
    assert any(login_day[dev] > first_day[dev] for dev in login_day)
    assert any(len(v) > 1 for v in devs_of.values())
    custom = [e for e in raw if e["type"] == "custom"]
    assert {e["name"] for e in custom} == set(COUNTERS)
    assert {e["slot"] for e in custom if COUNTERS[e["name"]] == "slot"} == set(SLOTS)
    assert all(e["slot"] == "" for e in custom if COUNTERS[e["name"]] != "slot")
    assert all(isinstance(e["amt"], int) for e in custom)
    assert any(local_day(e["ts"] - 0.001, tz) < local_day(e["ts"], tz) for e in custom), "no custom event at local midnight"
    assert "" in {e["ch"] for e in raw} and "" in {e["pf"] for e in raw}


def test_world_delivers_every_field_and_declares_counters(astore, mongo_uri):
    """World.make declares the counters on the app; World.deliver stores ch/pf/ver/uid and the custom
    fields as generated, and plain events still as ch "c", android, 1.0 without uid."""
    tz = "America/New_York"
    raw = events(5, tz, START, 6, 15, rich=True)
    world = World.make(astore, mongo_uri, tz, raw, 5, counters=COUNTERS)
    app = astore.app(world.app.id)
    assert {(c.name, c.type, c.slots) for c in app.counters} == {("coins", "sum", ()), ("taps", "slot", SLOTS), ("buys", "cpv", ())}
    world.deliver(float("inf"))
    stored = {d["_id"].split(":", 1)[1]: d for d in astore.db.events.find({"app": app.id})}
    assert len(stored) == len(raw)
    for e in raw:
        d = stored[e["id"]]
        assert (d["ch"], d["pf"], d["ver"], d.get("uid")) == (e["ch"], e["pf"], e["ver"], e["uid"]), e["id"]
        if e["type"] == "custom":
            assert (d["name"], d["amt"], d["slot"]) == (e["name"], e["amt"], e["slot"]), e["id"]
    plain = events(5, tz, START, 3, 4)
    world2 = World.make(astore, mongo_uri, tz, plain, 5, name="plain")
    assert world2.app.counters == ()
    world2.deliver(float("inf"))
    docs = list(astore.db.events.find({"app": world2.app.id}))
    assert len(docs) == len(plain)
    assert all((d["ch"], d["pf"], d["ver"], "uid" in d) == ("c", "android", "1.0", False) for d in docs)
