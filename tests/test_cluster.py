"""Cluster behaviour with real etcd and `etcdcron serve` nodes as separate processes."""

from __future__ import annotations

import json
import signal
import time

from etcdcron.nodes import wait_for
from etcdcron.testing import assert_exactly_once


def _window(seconds: float) -> tuple[int, int]:
    first = int(time.time()) + 2
    return first, first + int(seconds) - 1


def test_three_nodes_twenty_jobs_exactly_once(cluster):
    """3 nodes, 20 shell jobs firing every second for 20 s: each firing runs exactly once, never early."""
    cluster.start_nodes(3)
    jobs = [f"job{i:02d}" for i in range(20)]
    for job in jobs:
        cluster.add_ledger_job(job)
    first, last = _window(20)
    cluster.wait_until_slot(last, jobs, timeout=60)
    starts = assert_exactly_once(cluster, jobs, first, last)
    assert all(len(starts[(j, s)]) == 1 for j in jobs for s in range(first, last + 1)), "a firing ran twice"
    nodes_used = {ln.node for runs in starts.values() for ln in runs}
    assert nodes_used == {"n1", "n2", "n3"}, f"work not spread over the nodes: {nodes_used}"
    states = {c.state for (j, s), c in cluster.settled_claims(first, last).items() if first <= s <= last}
    assert states == {"succeeded"}, states


def test_sigkill_node_lost_runs_are_rerun(cluster):
    """SIGKILL a node mid-run: no firing is missed; its lost runs rerun with ATTEMPT 2 and a higher FENCE."""
    cluster.start_nodes(3)
    jobs = [f"slow{i}" for i in range(6)]
    for job in jobs:
        cluster.add_ledger_job(job, sleep=1.5)
    first, _ = _window(0)
    cluster.wait_until_slot(first + 4, jobs, timeout=30)
    assert wait_for(lambda: cluster.mid_run("n1"), 10, step=0.02)
    killed_at = time.time()
    cluster.signal("n1", signal.SIGKILL)
    cluster.procs["n1"].wait(timeout=10)
    last = int(killed_at) + 10
    cluster.wait_until_slot(last, jobs, timeout=60)
    starts = assert_exactly_once(cluster, jobs, first, last)
    reruns = [runs for runs in starts.values() if len(runs) > 1]
    assert reruns, "no run was in flight on the killed node: nothing was recovered"
    for runs in reruns:
        first_run, second = runs[0], runs[1]
        assert first_run.node == "n1" and second.node != "n1"
        assert second.attempt == 2 and second.fence > first_run.fence
    claims = cluster.settled_claims(first, last)
    for key, runs in starts.items():
        if runs[0].node != "n1" and runs[0].attempt == 1:
            assert len(runs) == 1, f"a run of a live node was repeated: {runs}"
        if runs[0].attempt > 1:  # claimed ahead by n1, lost before its instant
            assert claims[key].data.get("prev_node") == "n1" and runs[0].node != "n1", (runs, claims[key])
    for job in jobs:
        for slot in range(first, last + 1):
            assert claims[(job, slot)].state == "succeeded", (job, slot, claims[(job, slot)])


def test_sigterm_node_hands_over(cluster):
    """SIGTERM a node: it finishes its runs and hands over; no firing missed, none doubled."""
    cluster.start_nodes(3)
    jobs = [f"job{i}" for i in range(8)]
    for job in jobs:
        cluster.add_ledger_job(job, sleep=0.3)
    first, _ = _window(0)
    cluster.wait_until_slot(first + 3, jobs, timeout=30)
    stopped_at = time.time()
    cluster.signal("n2", signal.SIGTERM)
    assert cluster.procs["n2"].wait(timeout=20) == 0
    assert wait_for(lambda: "n2" not in cluster.live(), 5)
    last = int(stopped_at) + 6
    cluster.wait_until_slot(last, jobs, timeout=30)
    starts = assert_exactly_once(cluster, jobs, first, last)
    doubled = {k: v for k, v in starts.items() if len(v) > 1 and first <= k[1] <= last}
    assert not doubled, f"doubled firings on handover: {doubled}"
    assert any(ln.node == "n2" for runs in starts.values() for ln in runs), "n2 never ran anything"
    assert not [ln for runs in starts.values() for ln in runs if ln.node == "n2" and ln.at > stopped_at + 0.5], \
        "n2 started runs after SIGTERM"
    events = [e["event"] for e in cluster.log("n2")]
    assert "node.lease_revoked" in events


def test_sigstop_past_ttl_is_fenced_out(cluster):
    """SIGSTOP a node past its TTL, then SIGCONT: its completion is refused, nothing runs twice under valid claims."""
    cluster.start_nodes(3)
    jobs = [f"job{i}" for i in range(6)]
    for job in jobs:
        cluster.add_ledger_job(job, sleep=2.0)
    first, _ = _window(0)
    cluster.wait_until_slot(first + 3, jobs, timeout=30)
    assert wait_for(lambda: cluster.mid_run("n3"), 10, step=0.02)
    cluster.signal("n3", signal.SIGSTOP)
    assert wait_for(lambda: "n3" not in cluster.live(), 10), "n3's lease did not expire"
    cluster.signal("n3", signal.SIGCONT)
    assert wait_for(lambda: any(e["event"] == "firing.fenced_out" for e in cluster.log("n3")), 15), \
        "n3 completed a run whose claim it had lost"
    assert wait_for(lambda: "n3" in cluster.live(), 10), "n3 did not come back with a new lease"
    last = int(time.time()) + 3
    cluster.wait_until_slot(last, jobs, timeout=30)
    starts = assert_exactly_once(cluster, jobs, first, last)
    claims = cluster.settled_claims(first, last)
    for e in cluster.log("n3"):
        if e["event"] == "firing.fenced_out":
            final = claims[(e["job"], e["slot"])]
            assert final.fence > e["fence"] and final.node != "n3", (e, final)
            assert final.state == "succeeded"
            runs = starts[(e["job"], e["slot"])]
            assert [r.fence for r in runs][-1] == final.fence
    for job in jobs:
        for slot in range(first, last + 1):
            assert claims[(job, slot)].state == "succeeded", (job, slot, claims[(job, slot)])


def test_job_changes_reach_every_node(cluster):
    """add, pause, resume and rm while nodes run take effect on every node."""
    cluster.start_nodes(3)
    cluster.add_ledger_job("flip")
    assert wait_for(lambda: {ln.node for ln in cluster.lines() if ln.job == "flip"} == {"n1", "n2", "n3"}, 20), \
        "the new job did not run on every node"
    assert cluster.cli("pause", "flip").returncode == 0
    paused_at = time.time()
    # every node has seen the pause once a firing after it would have been due and none came
    cluster.add_ledger_job("marker")
    cluster.wait_until_slot(int(paused_at) + 4, ["marker"])
    late = [ln for ln in cluster.lines() if ln.job == "flip" and ln.what == "start" and ln.slot > paused_at + 1]
    assert not late, f"paused job fired: {late}"
    assert cluster.cli("resume", "flip").returncode == 0
    resumed_at = time.time()
    assert wait_for(lambda: {ln.node for ln in cluster.lines() if ln.job == "flip" and ln.slot > resumed_at}
                    == {"n1", "n2", "n3"}, 20), "the resumed job did not run on every node"
    r = cluster.cli("add", "*/2 * * * * *", "--name", "flip", "--shell", f"echo changed $ETCDCRON_SLOT_EPOCH >> {cluster.tmp}/changed")
    assert r.returncode == 0 and "replaced" in r.stdout
    changed_at = time.time()
    assert wait_for(lambda: (cluster.tmp / "changed").exists() and len((cluster.tmp / "changed").read_text().split("\n")) > 4, 20)
    slots = [int(x.split()[1]) for x in (cluster.tmp / "changed").read_text().splitlines()]
    assert all(s % 2 == 0 for s in slots), f"the changed schedule was not used: {slots}"
    assert not [ln for ln in cluster.lines() if ln.job == "flip" and ln.what == "start" and ln.slot > changed_at + 1]
    assert cluster.cli("rm", "flip").returncode == 0
    removed_at = time.time()
    cluster.wait_until_slot(int(removed_at) + 4, ["marker"])
    after = [int(x.split()[1]) for x in (cluster.tmp / "changed").read_text().splitlines()]
    assert not [s for s in after if s > removed_at + 1], "a removed job fired"


def test_skewed_node_refuses_to_execute_and_says_so(cluster):
    """A node whose clock is 10 s ahead of etcd's never executes, says so, and the others run everything."""
    cluster.start("n1")
    cluster.start("n2")
    cluster.start("skewed", "--clock-skew", "10")
    assert wait_for(lambda: {"n1", "n2", "skewed"} <= cluster.live(), 20)
    assert wait_for(lambda: any(e["event"] == "node.clock_skew" for e in cluster.log("skewed")), 10)
    jobs = [f"job{i}" for i in range(6)]
    for job in jobs:
        cluster.add_ledger_job(job)
    first, last = _window(6)
    cluster.wait_until_slot(last, jobs, timeout=30)
    starts = assert_exactly_once(cluster, jobs, first, last)
    assert not [ln for runs in starts.values() for ln in runs if ln.node == "skewed"]
    assert all(len(runs) == 1 for runs in starts.values())
    nodes = {n["id"]: n for n in json.loads(cluster.cli("nodes", "--json").stdout)}
    assert nodes["skewed"]["skewed"] and not nodes["skewed"]["leader"]


def test_leader_is_replaced_when_it_dies(cluster):
    """SIGKILL the leader: another live node leads within the TTL plus a second or two."""
    cluster.start_nodes(3)
    leader = cluster.admin.nodes()[1]
    assert leader in ("n1", "n2", "n3")
    cluster.signal(leader, signal.SIGKILL)
    assert wait_for(lambda: cluster.admin.nodes()[1] not in (None, leader), 10), "no new leader"
    nodes, new = cluster.admin.nodes()
    assert new != leader and leader not in {n["id"] for n in nodes}
