"""A node whose clock is skewed beyond the threshold (an injected clock) refuses to execute and says so."""

from __future__ import annotations

import json
import time

from etcdcron.nodes import wait_for
from etcdcron.testing import Scenario

from .harness import due, scale


def test_skewed_nodes_refuse_to_execute_and_say_so(etcd3_shared, make_cluster):
    """Nodes 10 s ahead and 10 s behind etcd's clock never execute (neither early nor late), log
    `node.clock_skew`, show as skewed, never lead; the healthy nodes run every firing exactly once."""
    c = make_cluster(etcd3_shared.endpoints)
    c.start("n1")
    c.start("n2")
    c.start("ahead", "--clock-skew", "10")
    c.start("behind", "--clock-skew", "-10")
    assert wait_for(lambda: {"n1", "n2", "ahead", "behind"} <= c.live(), 20)
    for n in ("ahead", "behind"):
        assert wait_for(lambda: any(e["event"] == "node.clock_skew" and e.get("action") for e in c.log(n)), 15), \
            f"{n} did not say it is skewed"
    jobs = [f"job{i}" for i in range(8)]
    for j in jobs:
        c.add_ledger_job(j)
    first = int(time.time()) + 2
    last = first + int(scale(8, 120))
    c.wait_until_slot(last, jobs, timeout=last - time.time() + 30)
    window = due(jobs, first, last)
    c.wait_settled(window)
    c.verify(Scenario(due=window, must_run=window, disturbed=set()))
    ran_on = {ln.node for ln in c.lines()}
    assert ran_on <= {"n1", "n2"}, f"a skewed node executed: {ran_on}"
    nodes = {n["id"]: n for n in json.loads(c.cli("nodes", "--json").stdout)}
    for n in ("ahead", "behind"):
        assert nodes[n]["skewed"] and not nodes[n]["leader"], nodes[n]
    assert not [r for r in c.records() if r.node in ("ahead", "behind")], "a skewed node recorded a run"
