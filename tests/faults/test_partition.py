"""A node cut from etcd by a blackholing TCP proxy: it stops claiming before its lease can have
expired, the others take over with higher fences, and it rejoins once the route is back."""

from __future__ import annotations

import time

from etcdcron.nodes import wait_for
from etcdcron.testing import Scenario

from .harness import due, scale

TTL = 3


def test_node_cut_from_etcd_stops_claiming_and_others_take_over(etcd3_shared, make_cluster, proxies):
    """Blackhole one node's only route to etcd: it claims nothing after its local deadline, the others
    run every firing (higher fences), and after restore it rejoins and runs firings again."""
    c = make_cluster(etcd3_shared.endpoints)
    proxy = proxies(etcd3_shared.members[0].client_port)
    c.start("n1", ttl=TTL)
    c.start("n2", ttl=TTL)
    c.start("cut", "--etcd", proxy.url, ttl=TTL)
    assert wait_for(lambda: {"n1", "n2", "cut"} <= c.live(), 20)
    jobs = [f"job{i}" for i in range(6)]
    for j in jobs:
        c.add_ledger_job(j, "* * * * * *", 0.3)
    first = int(time.time()) + 2
    assert wait_for(lambda: any(ln.node == "cut" and ln.what == "end" for ln in c.lines()), 20), "cut never ran"
    for _ in range(int(scale(1, 4))):
        cut_at = time.time()
        proxy.blackhole()
        try:
            assert wait_for(lambda: "cut" not in c.live(), TTL + 3), "the cut node's lease did not expire"
            expired_at = time.time()
            # stay cut a while: the others carry the whole load meanwhile (the time is what is tested)
            time.sleep(scale(4, 45))
            late = [ln for ln in c.lines() if ln.node == "cut" and ln.what == "start" and ln.at > cut_at + TTL]
            assert not late, f"the cut node started runs after its lease could have expired: {late[:3]}"
        finally:
            proxy.restore()
        restored_at = time.time()
        events = [e["event"] for e in c.log("cut")]
        assert "node.keepalive_failed" in events, "the cut node never noticed it was cut"
        assert wait_for(lambda: "cut" in c.live(), 20), "the cut node did not rejoin"
        assert wait_for(lambda: any(ln.node == "cut" and ln.at > restored_at for ln in c.lines()), 20), \
            "the rejoined node never ran a firing again"
        # takeover: firings during the cut ran elsewhere, with fences above anything the cut node held then
        cut_fences = [ln.fence for ln in c.lines() if ln.node == "cut" and ln.at <= cut_at + TTL]
        during = [ln for ln in c.lines() if ln.what == "start" and expired_at < ln.at < restored_at]
        assert during and all(ln.node != "cut" and ln.fence > max(cut_fences) for ln in during), during[:5]
    last = int(time.time()) + 2
    c.wait_until_slot(last, jobs)
    window = due(jobs, first, last)
    c.wait_settled(window)
    c.verify(Scenario(due=window, must_run=window, disturbed={"cut"}))


def test_claim_whose_answer_is_lost_still_runs(etcd3_shared, make_cluster, proxies):
    """One-way cut: the node's claims reach etcd and commit, but the answers are held past the call
    timeout (lease kept alive by a 15 s TTL): each such firing must still run somewhere, none may be
    left claimed `running` and never executed."""
    c = make_cluster(etcd3_shared.endpoints)
    proxy = proxies(etcd3_shared.members[0].client_port)
    c.start("n1", ttl=15)
    c.start("cut", "--etcd", proxy.url, ttl=15)
    assert wait_for(lambda: {"n1", "cut"} <= c.live(), 20)
    jobs = [f"job{i}" for i in range(6)]
    for j in jobs:
        c.add_ledger_job(j, "* * * * * *", 0)
    first = int(time.time()) + 2
    assert wait_for(lambda: any(ln.node == "cut" and ln.what == "end" for ln in c.lines()), 20), "cut never ran"
    for _ in range(int(scale(1, 5))):
        proxy.hold_responses()
        try:
            time.sleep(4.5)  # longer than the adapter's 3 s call timeout: the time itself is under test
        finally:
            proxy.restore()
        assert wait_for(lambda: "cut" in c.live(), 10)
        c.wait_until_slot(int(time.time()) + 3, jobs)
    last = int(time.time()) + 2
    c.wait_until_slot(last, jobs)
    window = due(jobs, first, last)
    c.wait_settled(window, timeout=15)
    c.verify(Scenario(due=window, must_run=window, disturbed={"cut"}))
