"""The timer's decisions, pure: no etcd, no clock, no sleeping — a view loaded from key-values."""

from __future__ import annotations

import json

from etcdcron.claims import Claim, rank
from etcdcron.decide import ClaimNow, Entry, Me, Schedule, Submit, Task, claim_time, decide, start_time
from etcdcron.jobs import make_spec
from etcdcron.keys import Keys
from etcdcron.store import KV
from etcdcron.view import View

K = Keys("/d")
T = 1_800_000_000


def _view(*specs, nodes=("n1", "n2", "n3"), claims=(), running=()) -> View:
    kvs, rev = [], 10
    for spec in specs:
        kvs.append(KV(K.job(spec.name), spec.to_json(), rev, rev, 1, 0))
        rev += 1
    for n in nodes:
        kvs.append(KV(K.node(n), json.dumps({"id": n, "levels": [1, 2, 3]}).encode(), rev, rev, 1, 7))
        rev += 1
    for job, slot, state in claims:
        kvs.append(KV(K.claim(job, slot), json.dumps({"state": state, "attempt": 1, "node": "n9"}).encode(), rev, rev, 1, 0))
        rev += 1
    for job, slot in running:
        kvs.append(KV(K.running(job, slot), b"n9", rev, rev, 1, 9))
        rev += 1
    v = View(K)
    v.load(kvs, rev)
    return v


def _fire(v: View, job: str, slot: int, gen: int = 1) -> Entry:
    return Entry(0.0, 0, Task.FIRE, job, slot, v.job(job)[1], gen=gen)


def _owner(job: str, slot: int, nodes=("n1", "n2", "n3")) -> list[str]:
    return rank(f"{job}|{slot}", nodes)


def test_owner_claims_now_and_chains_the_next_firing():
    """The first node in the rendezvous order claims; every node chains the next FIRE at its claim time."""
    spec = make_spec("j", "* * * * * *", builtin="noop")
    v = _view(spec)
    order = _owner("j", T)
    for r, node in enumerate(order):
        acts = decide(_fire(v, "j", T), v, Me(node, True), gen=1)
        assert Schedule(claim_time(spec, T + 1, 0.2), Task.FIRE, "j", T + 1, v.job("j")[1], gen=1) in acts
        if r == 0:
            assert ClaimNow(spec, v.job("j")[1], T) in acts
        else:
            assert Schedule(start_time(spec, T) + r * 0.4, Task.CHECK, "j", T, v.job("j")[1]) in acts
            assert not any(isinstance(a, ClaimNow) for a in acts)


def test_ineligible_node_neither_claims_nor_checks():
    """A draining, stopping or skewed node takes no part in the order, though its registration still shows."""
    spec = make_spec("j", "* * * * * *", builtin="noop")
    v = _view(spec)
    owner = _owner("j", T)[0]
    acts = decide(_fire(v, "j", T), v, Me(owner, False), gen=1)
    assert [a.kind for a in acts if isinstance(a, Schedule)] == [Task.FIRE]
    assert not any(isinstance(a, ClaimNow) for a in acts)


def test_superseded_chain_paused_or_changed_job_does_nothing():
    """A FIRE of an older generation or of an older spec, or of a paused job, decides nothing."""
    spec = make_spec("j", "* * * * * *", builtin="noop")
    v = _view(spec)
    owner = _owner("j", T)[0]
    assert decide(_fire(v, "j", T, gen=1), v, Me(owner, True), gen=2) == []
    stale = Entry(0.0, 0, Task.FIRE, "j", T, v.job("j")[1] - 1, gen=1)
    assert decide(stale, v, Me(owner, True), gen=1) == []
    paused = _view(spec.replace(paused=True))
    assert decide(_fire(paused, "j", T), paused, Me(owner, True), gen=1) == []


def test_check_claims_a_firing_of_the_job_as_it_is_now():
    """A takeover CHECK asks for a claim under the current spec (even if it changed), and only of a
    firing the current spec still has; whether it is claimed already is read with the batch (the
    view holds no claims), so the ClaimNow says it is a takeover."""
    spec = make_spec("j", "*/2 * * * * *", builtin="noop")
    v = _view(spec)
    check = Entry(0.0, 0, Task.CHECK, "j", T, 1)  # made for an older revision
    assert decide(check, v, Me("n1", True)) == [ClaimNow(spec, v.job("j")[1], T, owner=False)]
    assert decide(Entry(0.0, 0, Task.CHECK, "j", T + 1, 1), v, Me("n1", True)) == [], "not a firing of the job"


def test_recover_submits_the_lost_record_and_a_relist_finds_lost_runs():
    """A relist finds the runs lost while the watch was away (unfinished record, no running key);
    RECOVER submits the recovery of the record as it was read (its compare-and-swap decides)."""
    spec = make_spec("j", "* * * * * *", builtin="noop")
    v = View(K)
    kvs = [KV(K.job("j"), spec.to_json(), 10, 10, 1, 0),
           KV(K.claim("j", T), b'{"state":"running","node":"n9"}', 11, 11, 1, 0),
           KV(K.claim("j", T + 1), b'{"state":"running","node":"n9"}', 12, 12, 1, 0),
           KV(K.running("j", T + 1), b"n9", 12, 12, 1, 9),
           KV(K.claim("j", T + 2), b'{"state":"succeeded","node":"n9"}', 13, 13, 1, 0),
           KV(K.claim("j", T + 3), b'{"state":"interrupted","node":"n9"}', 14, 14, 1, 0)]
    lost = v.load(kvs, 14).lost
    assert sorted((c.slot, c.mod_revision) for c in lost) == [(T, 11), (T + 3, 14)]
    e = Entry(0.0, 0, Task.RECOVER, "j", T, v.job("j")[1], claim=lost[0])
    assert decide(e, v, Me("n1", True)) == [Submit(Task.RECOVER, (spec, v.job("j")[1], lost[0]))]

def test_start_and_trigger_entries():
    """START always runs (the firing is claimed); a TRIGGER only while its request is the one scheduled."""
    spec = make_spec("j", "@yearly", builtin="noop")
    v = _view(spec)
    start = Entry(0.0, 0, Task.START, "j", T, 0, extra=(spec, 42, "schedule"))
    assert decide(start, v, Me("n1", False)) == [Submit(Task.START, (spec, T, 42, "schedule"))]
    v.triggers["j"] = (77, {"at": T})
    assert decide(Entry(0.0, 0, Task.TRIGGER, "j", T, v.job("j")[1], extra=(77,)), v, Me("n1", True)) == \
        [Submit(Task.TRIGGER, (spec, v.job("j")[1], 77, {"at": T}))]
    assert decide(Entry(0.0, 0, Task.TRIGGER, "j", T, v.job("j")[1], extra=(76,)), v, Me("n1", True)) == []


def test_view_reports_lease_deaths_and_handed_runs_not_claims():
    """The view keeps no claims: it reports a lease's death (its mark's delete, with the revision)
    and a run handed over by a stopping node (control/lost), and ignores claim and running events."""
    from etcdcron.store import Event
    v = _view(make_spec("j", "* * * * * *", builtin="noop"))
    ch = v.apply([Event("put", KV(K.claim("j", T), b'{"state":"running"}', 40, 40, 1, 0)),
                  Event("delete", KV(K.running("j", T), b"", 0, 41, 0, 0)),
                  Event("delete", KV(K.lease_mark(0xabc), b"", 0, 42, 0, 0)),
                  Event("put", KV(K.lost("j", T), b"40", 43, 43, 1, 0))], 43)
    assert ch.dead == [(0xabc, 42)]
    assert ch.handed == [("j", T)]
    assert ch.lost == [] and not ch.jobs
    assert v.lost_marks == {("j", T): 43}
    assert not hasattr(v, "claims")


def test_late_ranks_check_only_once_a_node_before_them_has_left():
    """Ranks past the eager ones check a lease's lifetime after the start, and only if a node
    ranked before them left the view meanwhile (each node reads its share, not every firing)."""
    six = ("n1", "n2", "n3", "n4", "n5", "n6")
    spec = make_spec("j", "* * * * * *", builtin="noop")
    v = _view(spec, nodes=six)
    order = _owner("j", T, six)
    for r, node in enumerate(order):
        acts = [a for a in decide(_fire(v, "j", T), v, Me(node, True, lease_wait=4.0), gen=1)
                if not (isinstance(a, Schedule) and a.kind is Task.FIRE)]
        if r == 0:
            assert acts == [ClaimNow(spec, v.job("j")[1], T)]
        elif r < 3:
            assert acts == [Schedule(T + r * 0.4, Task.CHECK, "j", T, v.job("j")[1])]
        else:
            assert acts == [Schedule(T + 4.0 + (r - 3) * 0.4, Task.CHECK, "j", T, v.job("j")[1], extra=(r,))]
    late = order[4]
    check = Entry(0.0, 0, Task.CHECK, "j", T, v.job("j")[1], extra=(4,))
    assert decide(check, v, Me(late, True)) == [], "every node ranked before it is still there"
    gone = _view(spec, nodes=[n for n in six if n != order[1]])
    assert decide(check, gone, Me(late, True)) == [ClaimNow(spec, gone.job("j")[1], T, owner=False)]


def test_view_follows_a_node_that_leaves_without_a_lease_mark():
    """A node gone from nodes/ whose lease has no mark (a version from before the marks, in a rolling
    upgrade) is reported for its runs to be followed; a marked node's death is reported once, by its
    mark's delete."""
    from etcdcron.store import Event
    v = _view(make_spec("j", "* * * * * *", builtin="noop"), nodes=())
    v.apply([Event("put", KV(K.node("old"), b'{"id": "old", "levels": [1], "lease": 17}', 20, 20, 1, 17)),
             Event("put", KV(K.node("new"), b'{"id": "new", "levels": [1], "lease": 18}', 21, 21, 1, 18)),
             Event("put", KV(K.lease_mark(18), b"new", 21, 21, 1, 18))], 21)
    ch = v.apply([Event("delete", KV(K.lease_mark(18), b"", 0, 30, 0, 0)),
                  Event("delete", KV(K.node("new"), b"", 0, 30, 0, 0)),
                  Event("delete", KV(K.node("old"), b"", 0, 31, 0, 0))], 31)
    assert ch.dead == [(18, 30)]
    assert ch.unmarked == [(17, 31)]
