"""Leader chores against a real etcd, on an injected clock: missed firings recorded, old claims collected."""

from __future__ import annotations

import json

from etcdcron.claims import Claims
from etcdcron.clock import FakeClock
from etcdcron.daemon import Node, NodeConfig
from etcdcron.jobs import make_spec

T0 = 1_800_000_000.0  # a whole multiple of 10 s


def _node(store, keys) -> Node:
    node = Node(store, keys, NodeConfig("leader-test"), clock=FakeClock(T0))
    return node


def _load(node) -> None:
    kvs, rev = node.store.get_prefix(node.keys.root)
    node.view.load(kvs, rev)


def _states(store, keys, job) -> dict[int, str]:
    from etcdcron.admin import Admin
    return {c.slot: c.state for c in Admin(store, keys).history(job, 10_000)}


def test_missed_firings_are_recorded_once_and_claimed_ones_left_alone(store, keys):
    """Firings past their deadline with no claim become `missed`; claimed ones are untouched; a rerun adds nothing."""
    spec = make_spec("tick", "@every 10s", shell="true", starting_deadline=30, active_since=T0 - 100)
    rev = store.put(keys.job("tick"), spec.to_json())
    lease = store.grant(30)
    Claims(store, keys, "other").claim("tick", int(T0 - 60), rev, lease, T0)
    node = _node(store, keys)
    _load(node)
    recorded = node.leader.record_missed(T0)
    states = _states(store, keys, "tick")
    # due and past the deadline (30 s + 2 s slack): T0-90 … T0-40; T0-100 is not after active_since
    assert {s for s, st in states.items() if st == "missed"} == {int(T0 - d) for d in (90, 80, 70, 50, 40)}
    assert states[int(T0 - 60)] == "running"
    assert recorded == 5
    assert int(T0 - 30) not in states, "a firing still inside its deadline was recorded missed"
    _load(node)
    assert node.leader.record_missed(T0) == 0
    node.leader._cursor.clear()
    assert node.leader.record_missed(T0) == 0, "a missed firing was recorded twice"


def test_paused_job_records_nothing(store, keys):
    """A paused job's skipped firings are not `missed`."""
    spec = make_spec("tick", "@every 10s", shell="true", starting_deadline=30, active_since=T0 - 100)
    store.put(keys.job("tick"), spec.replace(paused=True).to_json())
    node = _node(store, keys)
    _load(node)
    assert node.leader.record_missed(T0) == 0
    assert _states(store, keys, "tick") == {}


def test_old_claims_are_collected_keeping_the_newest(store, keys):
    """Finished claims older than the deadline window go, except the newest 20 per job; running ones stay.
    Their slots join the job's collected ranges (a removed job's mark goes with it)."""
    spec = make_spec("tick", "@every 1s", shell="true", starting_deadline=10, active_since=T0 - 501)
    rev = store.put(keys.job("tick"), spec.to_json())
    c = Claims(store, keys, "n")
    for slot in range(int(T0 - 500), int(T0 - 400)):
        c.record("tick", slot, "missed")
    c.claim("tick", int(T0 - 450) + 1000, rev, store.grant(30), T0)  # a running claim, in the future: kept
    c.record("gone", int(T0 - 500), "missed")  # a removed job's claim
    node = _node(store, keys)
    _load(node)
    assert node.leader.collect(T0) == 1, "claims were collected before the missed scan judged them"
    _load(node)
    assert node.leader.record_missed(T0 - 389) == 0  # judges T0-500 … T0-401
    assert node.leader.collect(T0) == 100 - 20
    states = _states(store, keys, None)
    kept = sorted(s for s in states if s < T0)
    assert kept == list(range(int(T0 - 420), int(T0 - 400)))
    assert states[int(T0 - 450) + 1000] == "running"
    assert json.loads(store.get(keys.collected("tick")).value) == [[int(T0 - 500), int(T0 - 421)]]
    assert store.get(keys.collected("gone")) is None


# --- issue 8: jitter, leadership changes, long outages, collected claims ---------------------------

def _ran(store, keys, job, slots) -> None:
    """Records of firings that ran (succeeded), written directly, 100 per transaction."""
    import json

    from etcdcron import store as st
    slots = list(slots)
    for i in range(0, len(slots), 100):
        store.txn([], [st.put(keys.claim(job, s), json.dumps({"state": "succeeded", "attempt": 1, "node": "runner",
                                                              "fence": 1, "reason": "schedule"}))
                       for s in slots[i:i + 100]])


def test_jitter_delays_the_missed_judgement_past_the_start_time(store, keys):
    """`@every 20s --jitter 19 --starting-deadline 1`: a firing is judged missed only once its start
    time (slot + its jitter) plus the deadline and the slack has passed, not counted from the slot."""
    from etcdcron.claims import unit_hash
    from etcdcron.leader import MISSED_SLACK
    spec = make_spec("jit", "@every 20s", shell="true", starting_deadline=1, jitter=19, active_since=T0 - 200)
    store.put(keys.job("jit"), spec.to_json())
    node = _node(store, keys)
    _load(node)

    def start(slot: int) -> float:
        return slot + spec.jitter * unit_hash(f"jit|{slot}|jitter")

    for now in (T0 + 3, T0 + 11, T0 + 30):
        node.leader.record_missed(now)
        missed = {s for s, state in _states(store, keys, "jit").items() if state == "missed"}
        early = sorted(s for s in missed if start(s) + spec.starting_deadline + MISSED_SLACK > now)
        assert not early, f"at now={now - T0:+.0f}: firing(s) {[int(s - T0) for s in early]} recorded missed before " \
                          f"their deadline (start times {[round(start(s) - T0, 2) for s in early]})"
        # never late by more than the jitter bound: every firing whose worst-case deadline passed is judged
        assert missed >= {s for s in spec.firings(T0 - 200, now) if s + 19 + 1 + MISSED_SLACK <= now}


def test_a_new_leader_does_not_record_collected_runs_as_missed(store, keys):
    """Firings that ran and whose claims were collected stay unrecorded after a leadership change:
    the new leader does not rescan its whole lookback over them."""
    spec = make_spec("tick", "@every 10s", shell="true", starting_deadline=30, active_since=T0 - 1000)
    store.put(keys.job("tick"), spec.to_json())
    _ran(store, keys, "tick", range(int(T0 - 990), int(T0) + 1, 10))
    node = _node(store, keys)
    _load(node)
    assert node.leader.record_missed(T0) == 0
    assert node.leader.collect(T0) == 80  # T0-990 … T0-200: older than 90 s, not among the newest 20
    successor = _node(store, keys)  # a new leader, with a fresh LeaderChores
    _load(successor)
    recorded = successor.leader.record_missed(T0 + 5)
    assert recorded == 0, f"a new leader recorded {recorded} collected runs as missed"
    assert not [s for s, state in _states(store, keys, "tick").items() if state == "missed"]


def test_collect_keeps_claims_the_missed_scan_has_not_judged(store, keys):
    """A scan capped at SCAN_CAP firings leaves later firings unjudged: their claims must not be
    collected, or the next pass records them missed."""
    from etcdcron.leader import SCAN_CAP
    spec = make_spec("sec", "@every 1s", shell="true", starting_deadline=10, active_since=T0 - 3000)
    store.put(keys.job("sec"), spec.to_json())
    _ran(store, keys, "sec", range(int(T0 - 2999), int(T0) + 1))
    node = _node(store, keys)
    _load(node)
    assert node.leader.record_missed(T0) == 0  # judges T0-2999 … T0-2000 (capped)
    node.leader.collect(T0)
    _load(node)  # the view follows etcd (the watch, in a running node)
    for _ in range(3):
        recorded = node.leader.record_missed(T0)
        assert recorded == 0, f"{recorded} collected runs recorded missed (scan cap {SCAN_CAP})"


def test_an_outage_longer_than_the_lookback_is_recorded_in_full(store, keys):
    """After a whole-cluster outage of 2 h (longer than LOOKBACK), every firing of the outage gets a
    `missed` record, over a few passes of the new leader."""
    from etcdcron.leader import LOOKBACK
    spec = make_spec("sec", "@every 1s", shell="true", starting_deadline=10, active_since=T0 - 10)
    store.put(keys.job("sec"), spec.to_json())
    node = _node(store, keys)
    _load(node)
    node.leader.record_missed(T0)  # the leader before the outage
    later = T0 + 2 * 3600
    assert later - T0 > LOOKBACK
    successor = _node(store, keys)
    _load(successor)
    passes = [successor.leader.record_missed(later) for _ in range(12)]
    assert passes[-1] == 0, passes
    missed = {s for s, state in _states(store, keys, "sec").items() if state == "missed"}
    want = set(range(int(T0 - 9), int(later - 12) + 1))
    lacking = sorted(want - missed)
    assert not lacking, f"{len(lacking)} firings of the outage never recorded, from {lacking[0] - T0:+.0f} s to {lacking[-1] - T0:+.0f} s"
    assert missed <= want


def test_backfill_skips_firings_whose_claims_were_collected(store, keys):
    """A backfill over firings that ran and were collected does not run them again; a firing above
    the collected mark without a record still runs."""
    import json
    spec = make_spec("tick", "@every 10s", shell="true", starting_deadline=30, active_since=T0 - 1000)
    rev = store.put(keys.job("tick"), spec.to_json())
    _ran(store, keys, "tick", range(int(T0 - 990), int(T0) + 1, 10))
    node = Node(store, keys, NodeConfig("backfiller", max_skew=1e12), clock=FakeClock(T0))
    _load(node)
    node.leader.record_missed(T0)
    assert node.leader.collect(T0) == 80  # T0-990 … T0-200
    store.delete(keys.claim("tick", int(T0 - 150)))  # a firing above the mark with no record
    ident = "b1"
    req = {"from": int(T0 - 990), "to": int(T0 - 100), "skip": [], "at": T0}
    req_rev = store.put(keys.backfill("tick", ident), json.dumps(req))
    _load(node)
    node.session.start()
    try:
        node.firing.backfill(spec, rev, ident, req_rev, req)
        assert node.claims.flush(10)
    finally:
        node.session.close()
    rerun = sorted(int(c.slot - T0) for c in _history(store, keys, "tick") if c.data.get("reason") == "backfill")
    assert rerun == [-150], f"backfill ran {len(rerun)} firings: {rerun[:10]}…"


def _history(store, keys, job):
    from etcdcron.admin import Admin
    return Admin(store, keys).history(job, 10_000)


def test_backfill_still_runs_firings_before_the_job_existed_and_while_it_was_paused(store, keys):
    """Collected ranges never span a firing that had no claim: a backfill of the time before the job
    existed, or of a paused period, still runs those firings once the job's claims are collected."""
    spec = make_spec("tick", "@every 10s", shell="true", starting_deadline=30, active_since=T0 - 495)  # resumed
    rev = store.put(keys.job("tick"), spec.to_json())
    _ran(store, keys, "tick", [*range(int(T0 - 990), int(T0 - 600), 10), *range(int(T0 - 490), int(T0) + 1, 10)])
    node = Node(store, keys, NodeConfig("backfiller", max_skew=1e12), clock=FakeClock(T0))
    _load(node)
    assert node.leader.record_missed(T0) == 0
    node.leader.collect(T0)
    ranges = json.loads(store.get(keys.collected("tick")).value)
    assert [[lo - T0, hi - T0] for lo, hi in ranges] == [[-990, -610], [-490, -200]]
    req = {"from": int(T0 - 1100), "to": int(T0 - 100), "skip": [], "at": T0}
    req_rev = store.put(keys.backfill("tick", "b2"), json.dumps(req))
    _load(node)
    node.session.start()
    try:
        node.firing.backfill(spec, rev, "b2", req_rev, req)
        assert node.claims.flush(10)
    finally:
        node.session.close()
    rerun = sorted(int(c.slot - T0) for c in _history(store, keys, "tick") if c.data.get("reason") == "backfill")
    assert rerun == [*range(-1100, -990, 10), *range(-600, -490, 10)]


def test_removing_a_job_forgets_its_collected_ranges(store, keys):
    """`rm` deletes the job's collected ranges, so a job re-added under the name backfills its whole past."""
    from etcdcron.admin import Admin

    spec = make_spec("tick", "@every 10s", shell="true", active_since=T0 - 100)
    store.put(keys.job("tick"), spec.to_json())
    store.put(keys.collected("tick"), b"[[1799999000, 1799999900]]")
    Admin(store, keys).remove("tick")
    assert store.get(keys.collected("tick")) is None


def test_missed_scan_visits_only_jobs_with_a_firing_to_judge(store, keys):
    """After its first pass, the scan visits a job only when one of its firings can be judged or the
    job changed: with 1,000,000 registered jobs, a pass over every job took seconds of CPU every 5 s."""
    for i in range(300):
        store.put(keys.job(f"daily{i}"), make_spec(f"daily{i}", f"{i % 60} 3 * * *", shell="true",
                                                   active_since=T0 - 7200).to_json())
    tick = make_spec("tick", "@every 10s", shell="true", starting_deadline=5, active_since=T0 - 100)
    store.put(keys.job("tick"), tick.to_json())
    node = _node(store, keys)
    _load(node)
    node.leader.record_missed(T0)
    visited: list[str] = []
    exhausted = node.view.exhausted
    node.view.exhausted = lambda spec: visited.append(spec.name) or exhausted(spec)
    assert node.leader.record_missed(T0 + 30) == 3  # tick's T0 … T0+20, unclaimed
    assert visited and set(visited) == {"tick"}, f"visited {len(set(visited))} jobs"
    # a job changed to fire soon is visited (and judged) after its change
    store.put(keys.job("daily7"), make_spec("daily7", "@every 10s", shell="true", starting_deadline=5,
                                             active_since=T0 + 20).to_json())
    kvs, rev = store.get_prefix(keys.root)
    from etcdcron.store import Event
    node.view.apply([Event("put", kv) for kv in kvs if kv.key == keys.job("daily7")], rev)
    assert node.leader.record_missed(T0 + 60) == 3 + 3  # tick and daily7 at T0+30, T0+40, T0+50 (reach 7 s)


def _three_jobs_judged(store, keys):
    """A leader with three jobs every 10 s (deadline 5 s), judged up to T0: nothing missed yet."""
    for name in ("a", "b", "c"):
        store.put(keys.job(name), make_spec(name, "@every 10s", shell="true", starting_deadline=5,
                                            active_since=T0 - 5).to_json())
    node = _node(store, keys)
    _load(node)
    assert node.leader.record_missed(T0) == 0
    return node


def test_a_failed_pass_loses_no_firing(store, keys):
    """A pass whose record round trip fails half-way (etcd unavailable) leaves nothing unjudged: the
    next pass visits every job again, and the watermark never passes a firing it did not judge."""
    import pytest

    from etcdcron.errors import StoreUnavailable
    node = _three_jobs_judged(store, keys)
    batch = node.store.txn_batch
    calls = []

    def failing(txns):
        calls.append(len(txns))
        if len(calls) == 1:
            raise StoreUnavailable("injected: etcd unavailable")
        return batch(txns)
    node.store.txn_batch = failing
    with pytest.raises(StoreUnavailable):
        node.leader.record_missed(T0 + 30)
    assert node.leader.record_missed(T0 + 35) == 3 * 3  # T0, T0+10, T0+20 of each job (reach 7 s)
    assert {job: sorted(s for s, st in _states(store, keys, job).items() if st == "missed")
            for job in ("a", "b", "c")} == {job: [int(T0), int(T0 + 10), int(T0 + 20)] for job in ("a", "b", "c")}


# --- issue 11: no view mirrors claims/; the leader reads them from etcd -----------------------------

def _reads(store):
    """Count the store's read-only round trips (Txns with no compare and only Ranges)."""
    calls: list[int] = []
    txn = store.txn

    def counting(compare, success=(), failure=()):
        success = list(success)
        if not list(compare) and all(op.WhichOneof("request") == "request_range" for op in success):
            calls.append(len(success))
        return txn(compare, success, failure)
    store.txn = counting
    return calls


def test_missed_scan_reads_claims_from_etcd_in_few_round_trips(store, keys):
    """Firings claimed in etcd after the view was loaded (no view holds claims) are not recorded
    missed; the others are; the claims of 300 jobs are read in 3 round trips, not one per job."""
    for i in range(300):
        store.put(keys.job(f"j{i:03d}"), make_spec(f"j{i:03d}", "@every 10s", shell="true", starting_deadline=5,
                                                   active_since=T0 - 5).to_json())
    node = _node(store, keys)
    _load(node)
    assert node.leader.record_missed(T0) == 0
    c = Claims(store, keys, "runner")
    claimed = {(f"j{i:03d}", int(T0 + d)) for i in range(0, 300, 7) for d in (0, 20)}
    for job, slot in claimed:
        c.record(job, slot, "succeeded")
    reads = _reads(node.store)
    assert node.leader.record_missed(T0 + 30) == 300 * 3 - len(claimed)  # T0, T0+10, T0+20 (reach 7 s)
    assert len(reads) == 3 and sum(reads) == 300, reads
    for i in range(0, 300, 7):
        states = _states(store, keys, f"j{i:03d}")
        assert states == {int(T0): "succeeded", int(T0 + 10): "missed", int(T0 + 20): "succeeded"}, (i, states)


def test_a_failed_claim_read_makes_the_next_pass_visit_every_job(store, keys):
    """A pass whose read of the claims fails (etcd unavailable) records nothing and raises; the next
    pass visits every job again and records each unclaimed firing once, the claimed ones never."""
    import pytest

    from etcdcron.errors import StoreUnavailable
    node = _three_jobs_judged(store, keys)
    Claims(store, keys, "runner").record("b", int(T0 + 10), "succeeded")
    txn = node.store.txn
    failed = []

    def failing(compare, success=(), failure=()):
        if not failed:
            failed.append(True)
            raise StoreUnavailable("injected: etcd unavailable")
        return txn(compare, success, failure)
    node.store.txn = failing
    with pytest.raises(StoreUnavailable):
        node.leader.record_missed(T0 + 30)
    assert failed and not any(st == "missed" for job in "abc" for st in _states(store, keys, job).values())
    assert node.leader.record_missed(T0 + 35) == 3 * 3 - 1
    assert {job: sorted(s - int(T0) for s, st in _states(store, keys, job).items() if st == "missed")
            for job in "abc"} == {"a": [0, 10, 20], "b": [0, 20], "c": [0, 10, 20]}


def test_collect_reads_claims_from_etcd_job_by_job(store, keys, monkeypatch):
    """With segments, pages and value batches far smaller than the claims (so that every paging path
    runs): each job keeps its newest 20 finished claims and its unfinished ones, a job with fewer
    claims than it keeps loses none, and a removed job (its name between live ones) loses every old
    finished claim, its unfinished ones kept."""
    from etcdcron import leader
    monkeypatch.setattr(leader, "SEGMENT_JOBS", 3)
    monkeypatch.setattr(leader, "SEGMENT_PAGE", 7)
    monkeypatch.setattr(leader, "SEGMENTS", 2)
    monkeypatch.setattr(leader, "VALUE_KEYS", 150)
    live = [f"j{i:02d}" for i in range(0, 20, 2)]
    removed = ["a00", *(f"j{i:02d}" for i in range(1, 20, 4)), "z99"]  # before, between and after live ones
    for job in live:
        since = T0 - 415 if job == "j04" else T0 - 501
        store.put(keys.job(job), make_spec(job, "@every 1s", shell="true", starting_deadline=10,
                                           active_since=since).to_json())
    node = _node(store, keys)
    _load(node)
    for job in live + removed:  # written after the view loaded: only etcd has them
        _ran(store, keys, job, range(int(T0 - 500), int(T0 - 490)) if job != "j04" else [])
        store.put(keys.claim(job, int(T0 + 20)), json.dumps({"state": "running", "node": "n"}))
        store.put(keys.claim(job, int(T0 - 510)), json.dumps({"state": "interrupted", "node": "n"}))
    _ran(store, keys, "j18", range(int(T0 - 700), int(T0 - 600)))  # more than VALUE_KEYS: read alone
    for job in removed:
        _ran(store, keys, job, range(int(T0 - 490), int(T0 - 475)))
    # judges T0-500 … T0-401: 90 missed per job (j04: its 14 firings since T0-415)
    assert node.leader.record_missed(T0 - 389) == 90 * 9 + 14
    assert node.leader.collect(T0) == 80 * 8 + 180 + 25 * len(removed)
    for job in live + removed:
        states = _states(store, keys, job)
        finished = sorted(s - int(T0) for s, state in states.items() if state in ("succeeded", "missed"))
        want = [] if job in removed else list(range(-414, -400)) if job == "j04" else list(range(-420, -400))
        assert finished == want, job
        assert states[int(T0 + 20)] == "running" and states[int(T0 - 510)] == "interrupted", job


def test_collect_stays_within_etcds_operations_per_transaction(store, keys):
    """Eight jobs with 120 claims each to collect: etcd refused them as one round trip (8 nested
    transactions of 121 operations; a nested one may hold only 128 - 8), so none was ever collected."""
    for i in range(8):
        store.put(keys.job(f"j{i}"), make_spec(f"j{i}", "@every 1s", shell="true", starting_deadline=10,
                                               active_since=T0 - 501).to_json())
    node = _node(store, keys)
    _load(node)
    assert node.leader.record_missed(T0 - 349) == 8 * 140  # T0-500 … T0-361
    assert node.leader.collect(T0) == 8 * 120
    assert sorted(_states(store, keys, "j3")) == list(range(int(T0 - 380), int(T0 - 360)))


def test_collect_drops_stale_hand_over_marks(store, keys):
    """A hand-over mark (control/lost/<job>/<slot>) goes once its firing's claim is no longer running
    or interrupted, or is gone, and the leader has seen it for 60 s; one whose firing still waits for
    its rerun stays, and so does one rewritten meanwhile (seen anew)."""
    spec = make_spec("tick", "@every 10s", shell="true", starting_deadline=30, active_since=T0 - 100)
    store.put(keys.job("tick"), spec.to_json())
    c = Claims(store, keys, "n")
    slots = {"done": int(T0 - 90), "gone": int(T0 - 80), "waiting": int(T0 - 70), "rerun": int(T0 - 60),
             "rewritten": int(T0 - 50)}
    c.record("tick", slots["done"], "succeeded")
    c.record("tick", slots["rewritten"], "succeeded")
    store.put(keys.claim("tick", slots["waiting"]), json.dumps({"state": "interrupted", "node": "n"}))
    store.put(keys.claim("tick", slots["rerun"]), json.dumps({"state": "running", "node": "m", "attempt": 2}))
    for slot in slots.values():
        store.put(keys.lost("tick", slot), "{}")
    node = _node(store, keys)
    _load(node)
    assert set(node.view.lost_marks) == {("tick", s) for s in slots.values()}
    node.leader.collect(T0)
    assert all(store.get(keys.lost("tick", s)) is not None for s in slots.values()), "a mark went before 60 s"
    store.put(keys.lost("tick", slots["rewritten"]), "{}")
    _load(node)
    node.leader.collect(T0 + 30)
    assert all(store.get(keys.lost("tick", s)) is not None for s in slots.values()), "a mark went before 60 s"
    node.leader.collect(T0 + 61)
    left = {name for name, s in slots.items() if store.get(keys.lost("tick", s)) is not None}
    assert left == {"waiting", "rerun", "rewritten"}
    node.leader.collect(T0 + 95)
    left = {name for name, s in slots.items() if store.get(keys.lost("tick", s)) is not None}
    assert left == {"waiting", "rerun"}


def test_collect_drops_hand_over_marks_of_removed_jobs(store, keys):
    """Nobody recovers a removed job's interrupted run: its hand-over mark goes after 60 s all the
    same (it stayed for ever before), while a live job's waiting mark stays."""
    for name in ("kept", "removed"):
        store.put(keys.job(name), make_spec(name, "@every 10s", shell="true", active_since=T0 - 100).to_json())
        store.put(keys.claim(name, int(T0 - 50)), json.dumps({"state": "interrupted", "node": "n"}))
        store.put(keys.lost(name, int(T0 - 50)), "{}")
    store.delete(keys.job("removed"))
    node = _node(store, keys)
    _load(node)
    node.leader.collect(T0)
    node.leader.collect(T0 + 61)
    assert store.get(keys.lost("kept", int(T0 - 50))) is not None
    assert store.get(keys.lost("removed", int(T0 - 50))) is None


def test_collect_after_the_first_reads_only_jobs_judged_since(store, keys):
    """A leadership's first collection reads every job's claims; the next ones read only the jobs
    whose firings the missed scan judged since (and the removed ones): an idle job's claims are left
    to the full collection every FULL_COLLECT_EVERY. With 1,000,000 registered jobs the full listing
    cost ~1,000 read round trips at every collection."""
    from etcdcron import leader
    for job in ("busy", "idle"):
        store.put(keys.job(job), make_spec(job, "@every 1s" if job == "busy" else "@yearly", shell="true",
                                           starting_deadline=10, active_since=T0 - 501).to_json())
    node = _node(store, keys)
    _load(node)
    assert node.leader.collect(T0) == 0  # the first: every job's claims (none yet)
    _ran(store, keys, "busy", range(int(T0 - 500), int(T0 - 400)))
    _ran(store, keys, "idle", range(int(T0 - 500), int(T0 - 400)))  # triggers, say: no firing of its schedule
    node.leader.record_missed(T0 - 389)  # judges busy's firings up to T0 - 400 (all ran)
    assert node.leader.collect(T0) == 80, "only the judged job's claims were read"
    assert len(_states(store, keys, "idle")) == 100
    node.leader._last_full -= leader.FULL_COLLECT_EVERY
    assert node.leader.collect(T0) == 80, "the full collection reads the idle job too"
    assert len(_states(store, keys, "idle")) == 20
