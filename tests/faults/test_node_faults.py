"""Node faults: SIGKILL mid-run, SIGSTOP past the TTL then SIGCONT."""

from __future__ import annotations

import signal
import time

from etcdcron.nodes import wait_for
from etcdcron.testing import Scenario

from .harness import due, scale


REFUSED = ("firing.fenced_out", "firing.complete_failed")


def _ledger_jobs(c, n: int, sleep: float) -> list[str]:
    jobs = [f"slow{i}" for i in range(n)]
    for j in jobs:
        c.add_ledger_job(j, "* * * * * *", sleep)
    return jobs


def test_sigkill_mid_run_is_rerun_with_higher_fence(etcd3_shared, make_cluster):
    """SIGKILL a node mid-run (repeatedly in long mode): every firing runs, lost runs rerun with attempt>1 and a higher fence."""
    c = make_cluster(etcd3_shared.endpoints)
    c.start_nodes(3)
    jobs = _ledger_jobs(c, 5, 1.5)
    first = int(time.time()) + 2
    c.wait_until_slot(first + 1, jobs)
    killed: set[str] = set()
    for i in range(int(scale(1, 6))):
        victim = f"n{i % 3 + 1}"
        assert wait_for(lambda: c.mid_run(victim), 15, step=0.02), f"{victim} never mid-run"
        c.signal(victim, signal.SIGKILL)
        c.procs[victim].wait(timeout=10)
        killed.add(victim)
        assert wait_for(lambda: victim not in c.live(), 3 + 2), "the killed node's lease outlived TTL + 2 s"
        c.start(victim)  # back for the next round, same id: a new session and lease
        assert wait_for(lambda: victim in c.live(), 20)
        c.wait_until_slot(int(time.time()) + int(scale(2, 10)), jobs)
    last = int(time.time()) + 2
    window = due(jobs, first, last)
    c.wait_settled(window)
    c.verify(Scenario(due=window, must_run=window, disturbed=killed))
    reruns = [ln for ln in c.lines() if ln.what == "start" and ln.attempt > 1]
    assert reruns, "no run was in flight on a killed node: the fault hit nothing"


def test_sigstop_past_ttl_then_sigcont_is_fenced_out(etcd3_shared, make_cluster):
    """SIGSTOP a node mid-run past its TTL, then SIGCONT: others rerun its firings under higher fences,
    its own completions are refused, and it rejoins."""
    c = make_cluster(etcd3_shared.endpoints)
    c.start_nodes(3)
    jobs = _ledger_jobs(c, 5, 2.0)
    first = int(time.time()) + 2
    c.wait_until_slot(first + 1, jobs)
    for _ in range(int(scale(1, 4))):
        victim = "n3"
        assert wait_for(lambda: c.mid_run(victim), 15, step=0.02)
        refused_before = sum(e["event"] in REFUSED for e in c.log(victim))
        c.signal(victim, signal.SIGSTOP)
        try:
            assert wait_for(lambda: victim not in c.live(), 10), "the stopped node's lease did not expire"
            time.sleep(1.0)  # stay stopped a little past the expiry: the time itself is under test
        finally:
            c.signal(victim, signal.SIGCONT)
        woke_at = time.time()
        # its completions are refused: fenced out, or failed outright when its stale connection errs first
        fenced = lambda: sum(e["event"] in REFUSED for e in c.log(victim)) > refused_before  # noqa: E731
        assert wait_for(fenced, 15), "the woken node completed a run whose claim it had lost"
        assert wait_for(lambda: victim in c.live(), 15), "the woken node did not rejoin with a new lease"
        assert wait_for(lambda: any(ln.node == victim and ln.what == "start" and ln.at > woke_at + 1 for ln in c.lines()),
                        15), "the woken node never ran a firing again"
    last = int(time.time()) + 3
    c.wait_until_slot(last, jobs)
    window = due(jobs, first, last)
    c.wait_settled(window)
    c.verify(Scenario(due=window, must_run=window, disturbed={"n3"}))
    claims = c.claims()
    for e in c.log("n3"):
        if e["event"] in REFUSED:
            final = claims[(e["job"], e["slot"])]
            assert final.fence > e["fence"] and final.node != "n3" and final.state == "succeeded", (e, final)
