"""1,000 firings due at the same instant."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from etcdcron.jobs import make_spec
from etcdcron.nodes import wait_for
from etcdcron.testing import LEDGER_CMD, Scenario

from .harness import LONG, scale


def test_thousand_firings_at_one_instant(etcd3_shared, make_cluster):
    """1,000 jobs share one instant (once a minute; three instants in long mode): each firing runs
    exactly once, none early, all recorded, spread over the nodes."""
    c = make_cluster(etcd3_shared.endpoints)
    c.start_nodes(3)
    n = 1000
    t = int(time.time()) + 15  # room to write 1,000 jobs and for every node to see them
    second = t % 60
    cmd = LEDGER_CMD.format(ledger=c.ledger, body="")
    jobs = [f"herd{i:04d}" for i in range(n)]
    added = time.time()
    for j in jobs:
        c.admin.put_job(make_spec(j, f"{second} * * * * *", shell=cmd, concurrency="allow", active_since=added))
    assert time.time() < t - 3, "writing the jobs took too long to test one instant"
    instants = [t + 60 * k for k in range(int(scale(1, 3)))]
    window = {(j, s) for j in jobs for s in instants}
    started = lambda: len({(ln.job, ln.slot) for ln in c.lines() if ln.what == "end"}) >= len(window)  # noqa: E731
    assert wait_for(started, instants[-1] - time.time() + 60, step=0.5), \
        f"only {len({(ln.job, ln.slot) for ln in c.lines() if ln.what == 'end'})} of {len(window)} firings ran"
    assert c.wait_settled(window, timeout=30)
    c.verify(Scenario(due=window, must_run=window, disturbed=set()))
    lags = sorted(ln.at - ln.slot for ln in c.lines() if ln.what == "start")
    nodes = {ln.node for ln in c.lines()}
    assert nodes == {"n1", "n2", "n3"}, nodes
    p99 = lags[int(len(lags) * 0.99) - 1]
    print(f"{len(window)} firings at {[datetime.fromtimestamp(s, timezone.utc).isoformat() for s in instants]}: "
          f"lag p50 {lags[len(lags) // 2]:.2f} s, p99 {p99:.2f} s, max {lags[-1]:.2f} s (long={LONG})")
    assert lags[-1] < 30, f"the last of the herd started {lags[-1]:.1f} s late"
