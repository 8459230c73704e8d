"""etcd faults: the etcd leader killed repeatedly; the whole etcd cluster restarted."""

from __future__ import annotations

import time

from etcdcron.nodes import wait_for
from etcdcron.testing import Scenario

from .harness import due, scale


def test_etcd_leader_killed_repeatedly(etcd3, make_cluster):
    """SIGKILL the etcd leader and restart it on its data dir, again and again while jobs run: every
    firing still runs exactly once (no node was disturbed), never early, all recorded."""
    c = make_cluster(etcd3.endpoints)
    c.start_nodes(3)
    jobs = [f"job{i}" for i in range(6)]
    for j in jobs:
        c.add_ledger_job(j, "* * * * * *", 0.3)
    first = int(time.time()) + 2
    c.wait_until_slot(first + 1, jobs)
    terms = set()
    for _ in range(int(scale(3, 12))):
        leader = etcd3.leader()
        terms.add(leader.status()["raft_term"])
        leader.kill()
        new = etcd3.leader()
        assert new is not leader
        c.wait_until_slot(int(time.time()) + 2, jobs)  # jobs keep firing on two members
        leader.start_async()
        assert wait_for(etcd3.healthy, 20, step=0.2), "the killed member did not rejoin"
        c.wait_until_slot(int(time.time()) + 1, jobs)
    last = int(time.time()) + 2
    c.wait_until_slot(last, jobs)
    window = due(jobs, first, last)
    c.wait_settled(window)
    c.verify(Scenario(due=window, must_run=window, disturbed=set()))
    assert len({m.status()["raft_term"] for m in etcd3.members}) == 1


def test_whole_etcd_cluster_restarted(etcd3, make_cluster):
    """Kill every etcd member, keep etcd down past the jobs' starting deadline, restart it: nodes stop
    claiming while it is down, rejoin, firings of the outage are caught up or recorded `missed`
    (none silently dropped, none doubled), and firing resumes."""
    c = make_cluster(etcd3.endpoints)
    c.start_nodes(3)
    jobs = [f"job{i}" for i in range(4)]
    for j in jobs:
        c.add_ledger_job(j, "* * * * * *", 0.2, "--starting-deadline", "3")
    first = int(time.time()) + 2
    c.wait_until_slot(first + 2, jobs)
    down_at = time.time()
    etcd3.kill_all()
    time.sleep(scale(6, 40))  # the outage: its length is what is under test
    etcd3.start()
    up_at = time.time()
    assert wait_for(lambda: c.live() == {"n1", "n2", "n3"}, 20), "nodes did not re-register"
    last = int(time.time()) + 4
    c.wait_until_slot(last, jobs, timeout=30)
    window = due(jobs, first, last)
    c.wait_settled(window)
    # Some node was up, and etcd too, outside [down_at - 1, up_at + TTL + 1]: those firings must run.
    must = {(j, s) for (j, s) in window if s < down_at - 1 or s > up_at + 3 + 1}
    c.verify(Scenario(due=window, must_run=must, disturbed=set()), horizon=55)  # 3 s deadline: collected after 63 s
    for n in ("n1", "n2", "n3"):
        events = [e["event"] for e in c.log(n)]
        assert "node.keepalive_failed" in events, f"{n} did not notice etcd was gone"
    during = [ln for ln in c.lines() if ln.what == "start" and down_at + 0.5 < ln.at < up_at]
    assert not during, f"runs started while etcd was down: {during[:5]}"
