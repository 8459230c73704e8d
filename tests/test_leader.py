"""Leader chores against a real etcd, on an injected clock: missed firings recorded, old claims collected."""

from __future__ import annotations

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
    """Finished claims older than the deadline window go, except the newest 20 per job; running ones stay."""
    spec = make_spec("tick", "@every 1s", shell="true", starting_deadline=10, active_since=T0 - 1000)
    rev = store.put(keys.job("tick"), spec.to_json())
    c = Claims(store, keys, "n")
    for slot in range(int(T0 - 500), int(T0 - 400)):
        c.record("tick", slot, "missed")
    c.claim("tick", int(T0 - 450) + 1000, rev, store.grant(30), T0)  # a running claim, in the future: kept
    c.record("gone", int(T0 - 500), "missed")  # a removed job's claim
    node = _node(store, keys)
    _load(node)
    assert node.leader.collect(T0) == 100 - 20 + 1
    states = _states(store, keys, None)
    kept = sorted(s for s in states if s < T0)
    assert kept == list(range(int(T0 - 420), int(T0 - 400)))
    assert states[int(T0 - 450) + 1000] == "running"
