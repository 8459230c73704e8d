"""Operations on a running cluster (issue 3): overlap policies, retries, timeouts, jitter, kill, pause,
trigger, backfill and max-runs. One 3-node cluster serves the whole module; every test uses its own jobs."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from etcdcron.nodes import wait_for
from etcdcron.testing import Cluster


@pytest.fixture(scope="module")
def ops(etcd, tmp_path_factory):
    c = Cluster(etcd, f"/ops-{uuid.uuid4().hex[:8]}", tmp_path_factory.mktemp("ops"))
    c.start_nodes(3)
    yield c
    c.close()


def _runs(c: Cluster, job: str) -> list[tuple[float, float | None, int]]:
    """(start, end or None, slot) per run of ``job`` from the ledger, in start order."""
    lines = [ln for ln in c.lines() if ln.job == job]
    ends = {(ln.slot, ln.fence): ln.at for ln in lines if ln.what == "end"}
    return sorted((ln.at, ends.get((ln.slot, ln.fence)), ln.slot) for ln in lines if ln.what == "start")


def _records(c: Cluster, job: str):
    return sorted((cl for (j, _), cl in c.claims().items() if j == job), key=lambda cl: cl.slot)


def test_forbid_never_overlaps_across_nodes(ops):
    """forbid: a job longer than its period never has two runs at once, whichever nodes claim; the rest are `skipped`."""
    ops.add_ledger_job("forbid", "* * * * * *", 2.2, concurrency="forbid")
    assert wait_for(lambda: len([r for r in _runs(ops, "forbid") if r[1]]) >= 4
                    and len({ln.node for ln in ops.lines() if ln.job == "forbid"}) >= 2, 45)
    ops.cli("pause", "forbid")
    runs = [r for r in _runs(ops, "forbid") if r[1]]
    for (s1, e1, _), (s2, _, _) in zip(runs, runs[1:]):
        assert s2 >= e1, f"two runs at once: {runs}"
    states = [cl.state for cl in _records(ops, "forbid")]
    assert states.count("skipped") >= 4, states


def test_allow_overlaps(ops):
    """allow: runs of a job longer than its period overlap."""
    ops.add_ledger_job("allow", "* * * * * *", 2.5, concurrency="allow")
    assert wait_for(lambda: len([r for r in _runs(ops, "allow") if r[1]]) >= 3, 30)
    ops.cli("pause", "allow")
    runs = [r for r in _runs(ops, "allow") if r[1]]
    assert any(s2 < e1 for (s1, e1, _), (s2, _, _) in zip(runs, runs[1:]))


def test_replace_leaves_one_run_alive(ops):
    """replace: each new firing stops the running run (its process group) before it starts: one alive at a time."""
    ops.add_ledger_job("replace", "*/2 * * * * *", 30, concurrency="replace")
    assert wait_for(lambda: len(_runs(ops, "replace")) >= 4, 30)
    ops.cli("pause", "replace")
    ops.cli("kill", "replace")
    assert wait_for(lambda: all(cl.state != "running" for cl in _records(ops, "replace")), 20)
    recs = [cl for cl in _records(ops, "replace") if cl.state not in ("skipped", "missed")]
    starts = {ln.slot: ln.at for ln in ops.lines() if ln.job == "replace" and ln.what == "start"}
    assert all(cl.state == "killed" for cl in recs), [cl.state for cl in recs]
    for old, new in zip(recs, recs[1:]):
        assert starts[new.slot] >= old.data["ended"], "the new run started before the old one was stopped"
    assert not [r for r in _runs(ops, "replace") if r[1]], "a replaced run reached its end"


def test_retries_back_off_under_rising_fences(ops):
    """--retries 2: a failing job runs 3 times, ATTEMPT 1..3 with strictly rising fences, recorded failed with its tries."""
    ledger = ops.tmp / "retry.txt"
    ops.cli("add", "@every 1h", "--name", "retry", "--retries", "2", "--retry-delay", "0.2", "--shell",
            f'echo "$ETCDCRON_ATTEMPT $ETCDCRON_FENCE $(date +%s.%N)" >> {ledger}; exit 3')
    ops.cli("trigger", "retry")
    assert wait_for(lambda: any(cl.state == "failed" for cl in _records(ops, "retry")), 30)
    rec = [cl for cl in _records(ops, "retry") if cl.state == "failed"][0]
    lines = [ln.split() for ln in ledger.read_text().splitlines()]
    assert [int(a) for a, _, _ in lines] == [1, 2, 3]
    fences = [int(f) for _, f, _ in lines]
    assert fences == sorted(set(fences)) and rec.fence == fences[-1]
    gaps = [float(b[2]) - float(a[2]) for a, b in zip(lines, lines[1:])]
    assert gaps[0] >= 0.1 and gaps[1] >= 0.2, gaps  # 0.2 s then 0.4 s, each jittered down to half at most
    assert rec.attempt == 3 and rec.data["exit_code"] == 3 and len(rec.data["tries"]) == 3


def test_timeout_stops_the_process_group(ops):
    """--timeout: the run is stopped (SIGTERM, then SIGKILL) and recorded `timeout`."""
    ops.cli("add", "@every 1h", "--name", "slowpoke", "--timeout", "1", "--shell", "sleep 30")
    ops.cli("trigger", "slowpoke")
    assert wait_for(lambda: any(cl.state == "timeout" for cl in _records(ops, "slowpoke")), 20)
    rec = [cl for cl in _records(ops, "slowpoke") if cl.state == "timeout"][0]
    assert rec.data["ended"] - rec.data["started"] < 8


def test_jitter_delays_within_bounds_and_keeps_the_slot(ops):
    """--jitter 1.5: each run starts within [slot, slot + 1.5 s + lag), delays differ, ETCDCRON_SLOT stays the instant."""
    ops.add_ledger_job("jitter", "*/2 * * * * *", 0, "--jitter", "1.5")
    assert wait_for(lambda: len(_runs(ops, "jitter")) >= 6, 30)
    ops.cli("pause", "jitter")
    delays = [start - slot for start, _, slot in _runs(ops, "jitter")]
    assert all(0 <= d < 1.5 + 0.5 for d in delays), delays
    assert all(slot % 2 == 0 for _, _, slot in _runs(ops, "jitter"))
    assert max(delays) - min(delays) > 0.2, f"jitter did not spread the runs: {delays}"


def test_kill_stops_a_running_job(ops):
    """`kill NAME` stops the current run now, records it `killed`, and the job keeps its schedule."""
    ops.add_ledger_job("victim", "@every 1h", 60)
    ops.cli("trigger", "victim")
    assert wait_for(lambda: any(cl.state == "running" for cl in _records(ops, "victim")), 15)
    r = ops.cli("kill", "victim")
    assert r.returncode == 0 and "1 running" in r.stdout
    assert wait_for(lambda: any(cl.state == "killed" for cl in _records(ops, "victim")), 15)
    assert not [r for r in _runs(ops, "victim") if r[1]]


def test_pause_lets_the_current_run_finish(ops):
    """pause: the running run finishes (succeeded), and no new run starts."""
    ops.add_ledger_job("pausing", "*/3 * * * * *", 2)
    assert wait_for(lambda: any(cl.state == "running" for cl in _records(ops, "pausing")), 15)
    ops.cli("pause", "pausing")
    paused_at = time.time()
    assert wait_for(lambda: all(cl.state != "running" for cl in _records(ops, "pausing")), 15)
    time_after = paused_at + 4
    assert wait_for(lambda: time.time() > time_after, 10)  # a firing would have been due by now
    recs = _records(ops, "pausing")
    assert recs[-1].state == "succeeded"
    assert not [cl for cl in recs if cl.slot > paused_at + 0.5]


def test_trigger_runs_once_now(ops):
    """`trigger NAME` runs the job once, now, recorded with reason trigger."""
    ops.add_ledger_job("manual", "@yearly", 0)
    before = time.time()
    ops.cli("trigger", "manual")
    assert wait_for(lambda: len(_runs(ops, "manual")) == 1, 15)
    rec = _records(ops, "manual")
    assert len(rec) == 1 and rec[0].data["reason"] == "trigger" and rec[0].slot >= int(before)
    assert ops.store.get(ops.keys.trigger("manual")) is None, "the trigger was not consumed"


def test_backfill_runs_each_past_firing_once_and_twice_does_nothing_twice(ops):
    """backfill runs every firing of a past range once; a second backfill of the range runs nothing."""
    ops.add_ledger_job("past", "@every 10s", 0)
    now = int(time.time()) // 10 * 10
    lo, hi = now - 120, now - 70
    r = ops.cli("backfill", "past", "--from", str(lo), "--to", str(hi), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["firings"] == 6
    want = set(range(lo, hi + 1, 10))
    assert wait_for(lambda: {s for _, e, s in _runs(ops, "past") if e} >= want, 30)
    r2 = json.loads(ops.cli("backfill", "past", "--from", str(lo), "--to", str(hi), "--json").stdout)
    assert r2["firings"] == 0 and r2["already"] == 6
    r3 = json.loads(ops.cli("backfill", "past", "--from", str(lo - 20), "--to", str(hi), "--json").stdout)
    assert r3["firings"] == 2
    assert wait_for(lambda: {s for _, e, s in _runs(ops, "past") if e} >= want | {lo - 20, lo - 10}, 30)
    assert wait_for(lambda: not [k for k in ops.admin.store.get_prefix(ops.keys.prefix + "/control/backfill/")[0]], 20)
    slots = [s for _, _, s in _runs(ops, "past") if s <= hi]
    assert sorted(slots) == sorted(set(slots)), "a backfilled firing ran twice"


def test_max_runs_and_end_at(ops):
    """--max-runs 3 stops after three runs; --end-at stops at its instant and nothing after is `missed`."""
    ops.add_ledger_job("thrice", "* * * * * *", 0, "--max-runs", "3")
    end = int(time.time()) + 3
    ops.add_ledger_job("ending", "* * * * * *", 0, "--end-at", str(end))
    assert wait_for(lambda: time.time() > end + 4, 15)
    assert len(_runs(ops, "thrice")) == 3
    assert max(s for _, _, s in _runs(ops, "ending")) == end
    assert not [cl for cl in _records(ops, "ending") if cl.slot > end]
