"""Cluster-wide behaviour that needs its own nodes (issue 3): whole-cluster outage and catch-up,
degradation with --kill, a crashed node never blocking a job, draining a node."""

from __future__ import annotations

import os
import signal
import time

from etcdcron.nodes import wait_for


def _records(c, job):
    return sorted((cl for (j, _), cl in c.claims().items() if j == job), key=lambda cl: cl.slot)


def _stop_all(cluster) -> None:
    for nid, p in cluster.procs.items():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in cluster.procs.values():
        p.wait(timeout=30)


def test_whole_cluster_outage_catch_up_policies(cluster):
    """All nodes down 10 s, then back: `latest` runs one catch-up, `all` each missed firing once, `none` none;
    every other firing of the outage is `missed`; nothing runs twice."""
    cluster.start_nodes(3)
    for policy in ("latest", "all", "none"):
        cluster.add_ledger_job(policy, "*/2 * * * * *", 0, "--catchup", policy, concurrency="forbid")
    jobs = ["latest", "all", "none"]
    cluster.wait_until_slot(int(time.time()) + 2, jobs)
    _stop_all(cluster)
    down_from = time.time()
    assert wait_for(lambda: not cluster.live(), 10)
    assert wait_for(lambda: time.time() > down_from + 10, 12)  # the outage itself: 10 s of no node at all
    up_at = time.time()
    for nid in ("n1", "n2", "n3"):
        cluster.start(nid)
    assert wait_for(lambda: cluster.live() == {"n1", "n2", "n3"}, 20)
    cluster.wait_until_slot(int(up_at) + 4, jobs)
    starts = cluster.starts()
    assert all(len(v) == 1 for v in starts.values()), "a firing ran twice"
    for job in jobs:
        recs = {cl.slot: cl for cl in _records(cluster, job)}
        # the outage, for this job: from the stop to the first firing run on schedule after the restart
        back = min(s for s, cl in recs.items() if s > down_from and cl.data.get("reason") == "schedule")
        outage = [s for s in range(int(down_from) + 1, back) if s % 2 == 0]
        assert len(outage) >= 4, outage
        ran = [s for s in outage if (job, s) in starts]
        missed = [s for s in outage if recs.get(s) and recs[s].state == "missed"]
        assert sorted(ran + missed) == outage, (job, ran, missed, outage)
        if job == "latest":
            assert ran == [outage[-1]], ran
        elif job == "all":
            assert ran == outage
        else:
            assert ran == []
        assert all(recs[s].data.get("reason") == "catchup" for s in ran)


def test_degrade_kill_stops_level_3_tree_and_restore_resumes(cluster):
    """`degrade 3 --kill` kills a level-3 job's process tree within the grace, level 1 and 2 keep firing,
    new level-3 firings are `degraded`; `restore 3` resumes level 3."""
    cluster.start_nodes(3)
    pids = cluster.tmp / "pids"
    r = cluster.cli("add", "*/2 * * * * *", "--name", "besteffort", "--level", "3", "--concurrency", "forbid", "--shell",
                    f"sleep 60 & echo $! >> {pids}; (sleep 60; echo no) & echo $! >> {pids}; wait")
    assert r.returncode == 0
    cluster.add_ledger_job("critical", "* * * * * *", 0, "--level", "1")
    cluster.add_ledger_job("normal", "* * * * * *", 0, "--level", "2")
    assert wait_for(lambda: pids.exists() and len(pids.read_text().split()) >= 2, 15)
    tree = [int(p) for p in pids.read_text().split()]
    degraded_at = time.time()
    assert cluster.cli("degrade", "3", "--kill").returncode == 0
    assert wait_for(lambda: not any(_alive(p) for p in tree), 8), "the level-3 process tree outlived the grace"
    cluster.wait_until_slot(int(degraded_at) + 4, ["critical", "normal"])
    assert wait_for(lambda: any(cl.state == "degraded" for cl in _records(cluster, "besteffort")), 10)
    recs = _records(cluster, "besteffort")
    assert any(cl.state == "killed" and cl.data.get("killed_by") == "degrade" for cl in recs)
    assert not [cl for cl in recs if cl.slot > degraded_at + 1 and cl.state not in ("degraded",)]
    assert cluster.cli("restore", "3").returncode == 0
    restored_at = time.time()
    assert wait_for(lambda: any(cl.slot > restored_at and cl.state in ("running", "succeeded")
                                for cl in _records(cluster, "besteffort")), 15), "level 3 did not resume"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_crashed_node_never_blocks_a_forbid_job(cluster):
    """SIGKILL the node running a forbid job: within the TTL and a little, the job runs again elsewhere."""
    cluster.start_nodes(3)
    cluster.add_ledger_job("longrun", "* * * * * *", 30, concurrency="forbid")
    assert wait_for(lambda: any(ln.job == "longrun" for ln in cluster.lines()), 15)
    victim = [ln for ln in cluster.lines() if ln.job == "longrun"][0]
    killed_at = time.time()
    os.kill(cluster.procs[victim.node].pid, signal.SIGKILL)
    assert wait_for(lambda: any(ln.job == "longrun" and ln.node != victim.node for ln in cluster.lines()), 15), \
        "the job stayed blocked by the dead node's run"
    again = [ln for ln in cluster.lines() if ln.job == "longrun" and ln.node != victim.node][0]
    assert again.at - killed_at < 3 + 4


def test_drained_node_finishes_its_runs_and_leaves(cluster):
    """`nodes drain ID`: the node stops claiming at once, its running run finishes, and the process exits."""
    cluster.start_nodes(2)
    cluster.add_ledger_job("work", "* * * * * *", 1.5)
    assert wait_for(lambda: any(ln.job == "work" and ln.node == "n1" and ln.what == "start" for ln in cluster.lines()), 20)
    assert cluster.cli("nodes", "drain", "n1").returncode == 0
    drained_at = time.time()
    assert cluster.procs["n1"].wait(timeout=20) == 0
    assert "n1" not in cluster.live()
    late = [ln for ln in cluster.lines() if ln.node == "n1" and ln.what == "start" and ln.at > drained_at + 0.5]
    assert not late, late
    n1_starts = {(ln.slot, ln.fence) for ln in cluster.lines() if ln.node == "n1" and ln.what == "start"}
    n1_ends = {(ln.slot, ln.fence) for ln in cluster.lines() if ln.node == "n1" and ln.what == "end"}
    assert n1_starts == n1_ends, "a run of the drained node did not finish"
    assert cluster.cli("nodes", "drain", "nobody").returncode == 2
