"""Claims against a real etcd: one winner, fencing, recovery of lost runs, records of non-runs."""

from __future__ import annotations

from collections import Counter

from etcdcron.claims import Claim, ClaimRequest, Claims, rank
from etcdcron.keys import Keys


def _setup(store, keys: Keys, job="j"):
    rev = store.put(keys.job(job), b'{"name":"j"}')
    lease = store.grant(30)
    return rev, lease


def _claim(store, keys, job, slot) -> Claim:
    kv = store.get(keys.claim(job, slot))
    return Claim.parse(job, slot, kv.value, kv.mod_revision)


def test_one_claim_per_firing(store, keys):
    """Of several nodes claiming one firing, exactly one gets a fence."""
    rev, lease = _setup(store, keys)
    outcomes = [Claims(store, keys, f"n{i}").claim("j", 60, rev, lease, 60.0) for i in range(5)]
    assert sum(bool(o) for o in outcomes) == 1
    assert [o.why for o in outcomes if not o] == ["taken"] * 4


def test_claim_refused_when_job_changed(store, keys):
    """A claim made against an older version of the job (paused, removed, replaced) is refused."""
    rev, lease = _setup(store, keys)
    store.put(keys.job("j"), b'{"name":"j","paused":true}')
    out = Claims(store, keys, "n1").claim("j", 60, rev, lease, 60.0)
    assert not out and out.why == "changed"


def test_completion_fenced_by_revision(store, keys):
    """Completion succeeds once under its own fence, and never under a stale one."""
    rev, lease = _setup(store, keys)
    c = Claims(store, keys, "n1")
    fence = c.claim("j", 60, rev, lease, 60.0).fence
    assert not c.complete("j", 60, fence - 1, {"state": "succeeded"})
    assert c.complete("j", 60, fence, {"state": "succeeded"})
    assert not c.complete("j", 60, fence, {"state": "succeeded"})
    rec = _claim(store, keys, "j", 60)
    assert rec.state == "succeeded" and rec.fence == fence
    assert store.get(keys.running("j", 60)) is None


def test_lost_run_recovered_with_higher_fence_and_old_completion_refused(store, keys):
    """When the runner's lease dies, another node reruns with attempt 2 and a higher fence; the old runner is fenced out."""
    rev, lease1 = _setup(store, keys)
    lease2 = store.grant(30)
    a, b = Claims(store, keys, "a"), Claims(store, keys, "b")
    fence1 = a.claim("j", 60, rev, lease1, 60.0).fence
    lost = _claim(store, keys, "j", 60)
    assert not b.recover(lost, rev, lease2, 61.0, skip=False), "recovered while the run was alive"
    store.revoke(lease1)
    fence2 = b.recover(lost, rev, lease2, 61.0, skip=False).fence
    assert fence2 is not None and fence2 > fence1
    assert not Claims(store, keys, "c").recover(lost, rev, store.grant(30), 61.0, skip=False), "recovered twice"
    again = b.recover(lost, rev, lease2, 61.0, skip=False)  # the same recovery, re-sent: no second claim
    assert again.why == "resolved" and again.fence == fence2
    rec = _claim(store, keys, "j", 60)
    assert rec.attempt == 2 and rec.node == "b" and rec.data["prev_fence"] == fence1
    assert not a.complete("j", 60, fence1, {"state": "succeeded"})
    assert b.complete("j", 60, fence2, {"state": "succeeded", "attempt": 2})


def test_lost_run_with_skip_is_recorded_lost(store, keys):
    """--on-node-loss skip: a lost run is recorded `lost`, not rerun."""
    rev, lease = _setup(store, keys)
    Claims(store, keys, "a").claim("j", 60, rev, lease, 60.0)
    store.revoke(lease)
    lost = _claim(store, keys, "j", 60)
    assert Claims(store, keys, "b").recover(lost, rev, store.grant(30), 61.0, skip=True).fence == 0
    assert _claim(store, keys, "j", 60).state == "lost"
    assert store.get(keys.running("j", 60)) is None


def test_missed_recorded_only_when_nothing_ran(store, keys):
    """`missed` is written only for a firing with no record; a claimed firing is never overwritten."""
    rev, lease = _setup(store, keys)
    c = Claims(store, keys, "n1")
    assert c.record("j", 0, "missed")
    assert c.claim("j", 60, rev, lease, 60.0)
    assert not c.record("j", 60, "missed")
    assert _claim(store, keys, "j", 0).state == "missed"
    assert _claim(store, keys, "j", 60).state == "running"


def test_rendezvous_is_stable_and_spreads():
    """Every node computes the same order; removing a node moves only its own share."""
    nodes = ["n1", "n2", "n3"]
    owners = {k: rank(f"job|{k}", nodes)[0] for k in range(3000)}
    share = Counter(owners.values())
    assert all(800 < v < 1200 for v in share.values()), share
    after = {k: rank(f"job|{k}", ["n1", "n2"])[0] for k in range(3000)}
    moved = [k for k in owners if owners[k] != after[k]]
    assert all(owners[k] == "n3" for k in moved)
    assert rank("x|1", nodes) == rank("x|1", list(reversed(nodes)))


def test_forbid_blocks_while_another_run_of_the_job_lives(store, keys):
    """Under forbid a claim is refused as `blocked` while any run of the job is alive, and allowed after."""
    rev, lease = _setup(store, keys)
    c = Claims(store, keys, "n1")
    first = c.claim("j", 60, rev, lease, 60.0, concurrency="forbid")
    second = c.claim("j", 120, rev, lease, 120.0, concurrency="forbid")
    assert first and not second and second.why == "blocked"
    assert c.claim("j", 120, rev, lease, 120.0, concurrency="allow"), "allow overlaps"
    c.complete("j", 60, first.fence, {"state": "succeeded"})
    c.complete("j", 120, _claim(store, keys, "j", 120).fence, {"state": "succeeded"})
    assert c.claim("j", 180, rev, lease, 180.0, concurrency="forbid")


def test_replace_writes_the_kill_revision_of_older_runs(store, keys):
    """A replace claim writes control/kill/<job> in its own transaction: older fences are below it."""
    rev, lease = _setup(store, keys)
    c = Claims(store, keys, "n1")
    old = c.claim("j", 60, rev, lease, 60.0, concurrency="replace").fence
    new = c.claim("j", 120, rev, lease, 120.0, concurrency="replace").fence
    kill = store.get(keys.kill("j"))
    assert kill.mod_revision == new > old


def test_max_runs_counts_claims(store, keys):
    """--max-runs 2: the third claim is refused as exhausted."""
    rev, lease = _setup(store, keys)
    c = Claims(store, keys, "n1")
    assert c.claim("j", 60, rev, lease, 60.0, max_runs=2) and c.claim("j", 120, rev, lease, 60.0, max_runs=2)
    out = c.claim("j", 180, rev, lease, 60.0, max_runs=2)
    assert not out and out.why == "exhausted"


def test_retry_raises_the_fence_and_keeps_the_run(store, keys):
    """A retry re-claims our own firing under a higher fence; the old fence can no longer complete."""
    rev, lease = _setup(store, keys)
    c = Claims(store, keys, "n1")
    f1 = c.claim("j", 60, rev, lease, 60.0).fence
    f2 = c.retry("j", 60, f1, f1, 2, 61.0, [])
    assert f2 and f2 > f1
    assert not c.complete("j", 60, f1, {"state": "succeeded"}, run_fence=f1)
    assert c.complete("j", 60, f2, {"state": "succeeded"}, run_fence=f1)


def test_backfill_claim_may_replace_a_missed_record_once(store, keys):
    """A backfill claims over a `missed` record, once; a run record is never replaced."""
    rev, lease = _setup(store, keys)
    c = Claims(store, keys, "n1")
    c.record("j", 60, "missed")
    missed = _claim(store, keys, "j", 60)
    first = c.claim("j", 60, rev, lease, 99.0, over=missed, reason="backfill")
    assert first
    assert not Claims(store, keys, "n2").claim("j", 60, rev, store.grant(30), 99.0, over=missed, reason="backfill")
    again = c.claim("j", 60, rev, lease, 99.0, over=missed, reason="backfill")  # re-sent: the same claim
    assert again.why == "resolved" and again.fence == first.fence


def test_claim_sent_again_after_a_lost_answer_is_recognised_as_ours(store, keys):
    """A claim re-sent after its answer was lost comes back RESOLVED with the first one's fence; from
    another lease (a new session) it is just taken."""
    rev, lease = _setup(store, keys)
    claims = Claims(store, keys, "n1")
    first = claims.claim("j", 60, rev, lease, 60.0)
    again = claims.claim("j", 60, rev, lease, 60.0)
    assert again and again.why == "resolved" and again.fence == first.fence
    assert claims.claim_many([ClaimRequest("j", 60, rev)], lease, 60.0)[0].fence == first.fence
    other = store.grant(30)
    out = claims.claim("j", 60, rev, other, 60.0)
    assert not out and out.why == "taken"


def test_retry_is_refused_after_a_kill(store, keys):
    """A retry's re-claim never escapes a kill newer than its run; a replace's own run may still retry."""
    rev, lease = _setup(store, keys)
    claims = Claims(store, keys, "n1")
    fence = claims.claim("j", 60, rev, lease, 60.0).fence
    store.put(keys.kill("j"), b'{"reason":"kill"}')
    assert claims.retry("j", 60, fence, fence, 2, 61.0, []) is None
    fence = claims.claim("j", 120, rev, lease, 120.0, concurrency="replace").fence
    assert claims.retry("j", 120, fence, fence, 2, 121.0, []) is not None


def test_completions_of_one_firing_never_share_a_batch(store, keys):
    """Two completions of one firing queued together are sent in separate round trips (etcd refuses a
    transaction naming a key twice), and neither fails."""
    import threading

    from etcdcron.store import EtcdStore

    gate = threading.Event()

    class Gated(EtcdStore):
        def txn_batch(self, txns):
            gate.wait(10)
            return super().txn_batch(txns)

    gated = Gated(store.endpoints)
    try:
        rev, lease = _setup(store, keys)
        claims = Claims(gated, keys, "n1")
        f1 = claims.claim("j", 60, rev, lease, 60.0).fence
        f2 = claims.claim("j", 120, rev, lease, 120.0).fence
        first = claims.complete_async("j", 60, f1, {"state": "succeeded"})  # holds the round trip
        twice = [claims.complete_async("j", 120, f2, {"state": "succeeded"}) for _ in range(2)]
        gate.set()
        assert first.result(10) is True
        assert sorted(f.result(10) for f in twice) == [False, True]
    finally:
        gated.close()


def test_claim_record_round_trips_and_keeps_unknown_fields():
    """ClaimRecord: JSON round trip; None fields are not stored; unknown fields survive; a bad value parses as state '?'."""
    from etcdcron.claims import ClaimRecord
    from etcdcron.states import State

    rec = ClaimRecord.of("interrupted", attempt=2, node="n1", fence=9, killed_by="shutdown", level=3)
    assert rec.state is State.INTERRUPTED and rec.extra == {"level": 3}
    raw = rec.to_json()
    assert b"exit_code" not in raw and ClaimRecord.from_json(raw) == rec
    assert Claim.parse("j", 1, b"not json", 5).state == "?"
