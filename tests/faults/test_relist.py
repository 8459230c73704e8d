"""A relist larger than one page: the prefix holds more finished claims than one gRPC answer (64 MiB)
can carry; a node still starts, and its watch still re-lists after a compaction."""

from __future__ import annotations

import json
import time

from etcdcron import store as st
from etcdcron.nodes import wait_for

JOBS, PER_JOB, OUTPUT = 850, 20, 4000  # ~70 MB of claim records


def fill_finished_claims(c) -> int:
    """Finished claims with output for JOBS jobs that are not in jobs/ (nothing schedules them), in
    transactions of 100 puts (each under etcd's 1.5 MiB request limit). Their slots lie in the future
    so that the leader's collector leaves them in place for the whole test. Returns the bytes written."""
    first, written, ops = int(time.time()) + 86_400, 0, []
    for j in range(JOBS):
        for i in range(PER_JOB):
            slot = first + i
            rec = json.dumps({"state": "succeeded", "attempt": 1, "node": "nX", "fence": 1, "started": slot,
                              "ended": slot + 1, "exit_code": 0, "output": "x" * OUTPUT, "reason": "schedule"},
                             separators=(",", ":"), sort_keys=True)
            key = c.keys.claim(f"old{j:04d}", slot)
            ops.append(st.put(key, rec))
            written += len(key) + len(rec)
            if len(ops) == 100:
                c.store.txn([], ops)
                ops = []
    if ops:
        c.store.txn([], ops)
    return written


def test_relist_larger_than_one_page(etcd3_shared, make_cluster, proxies):
    """With > 64 MiB of finished claims under the prefix, a node starts and runs a job; after a
    compaction that its watch missed, the watch re-lists (once, not `watch.relist_failed` forever)
    and the node keeps firing, including a job added while it was cut off."""
    c = make_cluster(etcd3_shared.endpoints)
    try:
        assert fill_finished_claims(c) > 64 * 1024 * 1024
        c.add_ledger_job("tick", "* * * * * *", 0)
        proxy = proxies(etcd3_shared.members[0].client_port)
        # a long TTL keeps its lease alive through the cut: the watch, not the session, is under test
        c.start("n1", "--etcd", proxy.url, ttl=15)
        assert wait_for(lambda: "n1" in c.live(), 30), "the node did not register"
        c.wait_until_slot(int(time.time()) + 1, ["tick"], timeout=60)
        proxy.blackhole()
        proxy.reset()  # the watch stream breaks now; its reconnection is held by the blackhole
        try:
            c.add_ledger_job("tock", "* * * * * *", 0)
            # one more write, outside the prefix: the compaction then covers the job change itself
            c.store.put(f"/faults-marker/{c.prefix}", "relist")
            c.store.compact(c.store.status()["revision"])
        finally:
            proxy.restore()
        relisted = lambda: any(e["event"] == "watch.relisted" and e.get("reason") == "compacted"  # noqa: E731
                               for e in c.log("n1"))
        assert wait_for(relisted, 60), "the node's watch did not re-list after the compaction"
        c.wait_until_slot(int(time.time()) + 2, ["tick", "tock"], timeout=60)
        failed = [e for e in c.log("n1") if e["event"] == "watch.relist_failed"]
        assert len(failed) <= 1, f"the re-list kept failing: {failed[:3]}"
        assert c.procs["n1"].poll() is None, "the node exited"
    finally:
        c.store.delete(c.keys.claims(), prefix=True)
