"""Compaction while a node's watch is disconnected: the node re-lists and loses no job change."""

from __future__ import annotations

import time

from etcdcron.nodes import wait_for
from etcdcron.testing import Scenario

from .harness import due, scale


def test_compaction_while_watch_disconnected_relists(etcd3_shared, make_cluster, proxies):
    """Cut a lone node's connections and hold them, add/remove/pause jobs, compact etcd to the head,
    restore: its watch re-lists (`watch.relisted`, reason compacted), it runs the added job and never
    the removed or paused ones."""
    c = make_cluster(etcd3_shared.endpoints)
    proxy = proxies(etcd3_shared.members[0].client_port)
    # a long TTL keeps its lease alive through the cut: the watch, not the session, is under test
    c.start("w", "--etcd", proxy.url, ttl=15)
    assert wait_for(lambda: "w" in c.live(), 20)
    for j in ("keep", "doomed", "sleeper"):
        c.add_ledger_job(j, "* * * * * *", 0)
    c.wait_until_slot(int(time.time()) + 1, ["keep", "doomed", "sleeper"])
    for rnd in range(int(scale(1, 5))):
        fresh = f"fresh{rnd}"
        proxy.blackhole()
        proxy.reset()  # the watch stream breaks now; its reconnection is held by the blackhole
        try:
            if rnd == 0:
                assert c.cli("rm", "doomed").returncode == 0
                assert c.cli("pause", "sleeper").returncode == 0
                removed_at = time.time()
            c.add_ledger_job(fresh, "* * * * * *", 0)
            added_at = time.time()  # the job's first firing is the first instant after its add returned
            # one more write, outside the prefix: the compaction then covers the job change itself
            # (compacting at a revision keeps that revision, so a watch resuming from it would not notice)
            c.store.put(f"/faults-marker/{c.prefix}", str(rnd))
            head = c.store.status()["revision"]
            c.store.compact(head)
        finally:
            proxy.restore()
        relisted = lambda: sum(e["event"] == "watch.relisted" and e.get("reason") == "compacted"  # noqa: E731
                               for e in c.log("w")) > rnd
        assert wait_for(relisted, 20), "the node did not re-list after its watch revision was compacted"
        c.wait_until_slot(int(time.time()) + 2, ["keep", fresh], timeout=30)
    last = int(time.time())
    late = [ln for ln in c.lines() if ln.job in ("doomed", "sleeper") and ln.what == "start" and ln.at > removed_at + 5]
    assert not late, f"a removed or paused job fired after the node re-listed: {late[:3]}"
    first = int(added_at) + 1
    window = due(["keep", f"fresh{int(scale(1, 5)) - 1}"], first, last)
    c.wait_settled(window)
    c.verify(Scenario(due=window, must_run=window, disturbed=set()))
