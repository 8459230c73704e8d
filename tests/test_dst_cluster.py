"""A wall time repeated by a DST fall-back, across real nodes (issue 13): an interval schedule runs
the repeated times twice, and the two passes are two firings, told apart by their UTC instants, each
run exactly once by the 3 `etcdcron serve` processes.

* a backfill over a past fall-back (Australia/Sydney, Sunday 2026-04-05, 03:00 AEDT -> 02:00 AEST);
* live, through a future fall-back (Europe/Berlin, 2027-10-31, 03:00 CEST -> 02:00 CET) that the
  nodes reach through an injected clock offset (``serve --clock-skew``), with ``--max-skew`` above
  that offset so that the clock check, which compares the node's clock with etcd's, accepts it.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from etcdcron.nodes import wait_for
from etcdcron.schedule import parse_schedule
from etcdcron.testing import FINAL, Cluster, Line, Scenario, check

SYDNEY = ZoneInfo("Australia/Sydney")
BERLIN = ZoneInfo("Europe/Berlin")


def _utc(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


def _local(slot: int, zone: ZoneInfo) -> str:
    return datetime.fromtimestamp(slot, zone).isoformat()


def _runs_of(c: Cluster, job: str) -> tuple[dict[int, list[Line]], dict[int, list[Line]]]:
    """The job's ledger start and end lines, by slot."""
    starts: dict[int, list[Line]] = defaultdict(list)
    ends: dict[int, list[Line]] = defaultdict(list)
    for ln in c.lines():
        if ln.job == job:
            (starts if ln.what == "start" else ends)[ln.slot].append(ln)
    return starts, ends


def _await_runs(c: Cluster, job: str, want: set[int], timeout: float) -> None:
    """Wait until every firing of ``want`` has ended in the ledger and has a final record in etcd."""
    def done() -> bool:
        _, ends = _runs_of(c, job)
        claims = c.claims()
        return all(ends.get(s) for s in want) and all(
            (job, s) in claims and claims[(job, s)].state in FINAL for s in want)
    if not wait_for(done, timeout, step=0.2):
        starts, ends = _runs_of(c, job)
        raise AssertionError(f"not every firing ran in {timeout} s: started {sorted(starts)}, ended {sorted(ends)}, "
                             f"wanted {sorted(want)}; logs in {c.tmp}")


def _assert_each_ran_once(c: Cluster, job: str, want: set[int], tolerance: float = 0.0) -> dict[int, Line]:
    """Each firing of ``want`` started exactly once on some node and ended once, its record says
    `succeeded` by that node under that fence, the checker of DESIGN §4 finds nothing wrong, and no
    other firing of the job ran. Returns the start line of each firing."""
    starts, ends = _runs_of(c, job)
    assert set(starts) == want, f"ran {sorted(starts)}, wanted {sorted(want)}"
    twice = {s: [(ln.node, ln.fence) for ln in runs] for s, runs in starts.items() if len(runs) != 1}
    assert not twice, f"firings run more than once: {twice}"
    assert all(len(ends[s]) == 1 for s in want), {s: ends.get(s) for s in want}
    claims = c.claims()
    for s in want:
        rec, run = claims[(job, s)], starts[s][0]
        assert (rec.state, rec.node, rec.fence) == ("succeeded", run.node, run.fence), (s, rec.data, run)
    due = {(job, s) for s in want}
    runs = [ln for ln in c.lines() if ln.job == job]
    violations = check(runs, [r for r in c.records() if r.job == job], Scenario(due=due, must_run=due, tolerance=tolerance))
    assert not violations, "\n".join(violations)
    return {s: runs[0] for s, runs in starts.items()}


def _history(c: Cluster, job: str, since: int, until: int) -> list[dict]:
    r = c.cli("history", job, "--since", str(since), "--until", str(until), "--limit", "100", "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_backfill_over_a_past_fall_back_runs_both_passes_once_each(cluster):
    """`*/20 0-3 * * 0` in Australia/Sydney, backfilled over Sunday 2026-04-05 00:00-04:00 local
    (03:00 AEDT -> 02:00 AEST): 15 firings, 02:00, 02:20 and 02:40 twice (+11:00, then +10:00), each
    run once across 3 nodes."""
    cluster.start_nodes(3)
    cluster.add_ledger_job("sydney", "*/20 0-3 * * 0", 0, "--tz", "Australia/Sydney")
    lo, hi = "2026-04-05T00:00:00+11:00", "2026-04-05T04:00:00+10:00"
    r = cluster.cli("backfill", "sydney", "--from", lo, "--to", hi, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["firings"] == 15, r.stdout

    # written out by hand: what Debian cron runs that night (an interval schedule follows real time)
    expected = [f"2026-04-05T{t}" for t in (
        "00:00:00+11:00", "00:20:00+11:00", "00:40:00+11:00", "01:00:00+11:00", "01:20:00+11:00",
        "01:40:00+11:00", "02:00:00+11:00", "02:20:00+11:00", "02:40:00+11:00",
        "02:00:00+10:00", "02:20:00+10:00", "02:40:00+10:00",
        "03:00:00+10:00", "03:20:00+10:00", "03:40:00+10:00")]
    want = {_utc(t) for t in expected}
    assert len(want) == 15
    spec = cluster.admin.get_job("sydney")
    assert set(spec.firings(_utc(lo) - 1, _utc(hi))) == want
    sched = parse_schedule("*/20 0-3 * * 0", "Australia/Sydney")
    assert {int(t.timestamp()) for t in sched.firings(datetime.fromtimestamp(_utc(lo) - 1, timezone.utc),
                                                      datetime.fromtimestamp(_utc(hi), timezone.utc))} == want

    _await_runs(cluster, "sydney", want, timeout=45)
    starts = _assert_each_ran_once(cluster, "sydney", want)
    assert sorted(_local(s, SYDNEY) for s in starts) == sorted(expected)
    by_wall: dict[str, list[int]] = defaultdict(list)
    for s in starts:
        by_wall[datetime.fromtimestamp(s, SYDNEY).strftime("%H:%M")].append(s)
    for wall in ("02:00", "02:20", "02:40"):
        first, second = sorted(by_wall[wall])
        assert second - first == 3600, (wall, first, second)
        assert [_local(first, SYDNEY)[-6:], _local(second, SYDNEY)[-6:]] == ["+11:00", "+10:00"], wall
    assert all(len(v) == 1 for w, v in by_wall.items() if w not in ("02:00", "02:20", "02:40")), by_wall
    assert {c.data.get("reason") for (j, _), c in cluster.claims().items() if j == "sydney"} == {"backfill"}

    rows = _history(cluster, "sydney", _utc(lo), _utc(hi))
    assert sorted(row["slot"] for row in rows) == sorted(
        datetime.fromtimestamp(s, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") for s in want)
    assert {row["state"] for row in rows} == {"succeeded"}, rows
    assert len({row["slot"] for row in rows}) == 15

    # every node has finished with the request (it is deleted once a node has been through the range):
    # a second backfill of the range hands out nothing and nothing ran again
    assert wait_for(lambda: not cluster.store.get_prefix(cluster.keys.prefix + "/control/backfill/")[0], 20)
    again = json.loads(cluster.cli("backfill", "sydney", "--from", lo, "--to", hi, "--json").stdout)
    assert (again["firings"], again["already"]) == (0, 15), again
    _assert_each_ran_once(cluster, "sydney", want)


FALL_BACK = _utc("2027-10-31T01:00:00+00:00")  # Europe/Berlin: 03:00 CEST -> 02:00 CET


def test_live_fall_back_runs_the_second_pass_once_each(cluster):
    """Nodes whose clocks read 40 s before Berlin's 2027 fall-back run `*/5 * 2 * * *` (every 5 s
    while the local hour is 2) at 02:59:40..02:59:55 CEST and then again at 02:00:00..02:00:10 CET:
    each of these 7 firings exactly once across 3 nodes, live (not a catch-up), never early."""
    skew = FALL_BACK - 40 - time.time()  # 20 s for the nodes to start, even on a busy machine
    cluster.start_nodes(3, ("--clock-skew", repr(skew), "--max-skew", str(int(skew) + 3600)))
    first, last = FALL_BACK - 20, FALL_BACK + 10
    # `add` sets active_since from the real clock: without --start-at the leader, 11 months ahead,
    # would record `missed` for every 5 s of every 02:xx in between; --end-at makes the set exact
    cluster.add_ledger_job("berlin", "*/5 * 2 * * *", 0, "--tz", "Europe/Berlin",
                           "--start-at", str(first), "--end-at", str(last))
    want = set(range(first, last + 1, 5))
    assert [_local(s, BERLIN) for s in sorted(want)] == [
        "2027-10-31T02:59:40+02:00", "2027-10-31T02:59:45+02:00", "2027-10-31T02:59:50+02:00",
        "2027-10-31T02:59:55+02:00", "2027-10-31T02:00:00+01:00", "2027-10-31T02:00:05+01:00",
        "2027-10-31T02:00:10+01:00"]
    assert set(cluster.admin.get_job("berlin").firings(first - 1, last)) == want
    assert time.time() + skew < first, "the nodes took too long to start: the first firing is already past"

    _await_runs(cluster, "berlin", want, timeout=last - skew - time.time() + 20)
    # the ledger's times are the real clock's; the nodes' clocks are `skew` ahead of it
    starts = _assert_each_ran_once(cluster, "berlin", want, tolerance=skew)
    for s, ln in starts.items():
        assert ln.at + skew >= s, f"{_local(s, BERLIN)} started {s - ln.at - skew:.2f} s early"
    reasons = {c.data.get("reason") for (j, _), c in cluster.claims().items() if j == "berlin"}
    assert reasons == {"schedule"}, reasons  # run at their instants, not caught up afterwards
    nodes = {n["id"]: n for n in json.loads(cluster.cli("nodes", "--json").stdout)}
    assert not any(n["skewed"] for n in nodes.values()), nodes
    rows = _history(cluster, "berlin", first - 60, last + 60)
    assert len(rows) == 7 and {row["state"] for row in rows} == {"succeeded"}, rows
