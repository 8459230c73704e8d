"""The firing path of one in-process node against a real etcd, with faults injected in its store:
stops at grace expiry and on lease loss, claims whose answers were lost, failed recoveries, refused
triggers, a job changed at its instant."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from etcdcron.admin import Admin
from etcdcron.clock import FakeClock
from etcdcron.daemon import CLAIMERS, Node, NodeConfig
from etcdcron.executor import KILL_GRACE
from etcdcron.jobs import make_spec
from etcdcron import store as st
from etcdcron.nodes import wait_for

from .faulty import FaultyStore, claims_running


@pytest.fixture
def fstore(etcd):
    s = FaultyStore(etcd)
    yield s
    s.close()


@pytest.fixture
def nodes(fstore, keys):
    """``nodes(id, **config)`` -> a started Node on the faulty store; all stopped at the end."""
    made: list[Node] = []

    def make(node_id: str = "n1", before_start=None, **cfg) -> Node:
        node = Node(fstore, keys, NodeConfig(node_id, **{"grace": 5.0, **cfg}))
        if before_start:
            before_start(node)
        node.start()
        made.append(node)
        return node
    yield make
    for node in made:
        if not node.stopping.is_set():
            node.stop(grace=1.0)


def _record(store, keys, job: str, slot: int) -> dict | None:
    kv = store.get(keys.claim(job, slot))
    return json.loads(kv.value) if kv else None


def _records(store, keys, job: str) -> dict[int, dict]:
    return {c.slot: c.data for c in Admin(store, keys).history(job, 10_000)}


def _put(store, keys, spec) -> int:
    return store.put(keys.job(spec.name), spec.to_json())


def _pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


def _ledger(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_grace_expiry_stops_records_then_reruns_elsewhere(fstore, keys, nodes, tmp_path):
    """SIGTERM past the grace: the run's process is stopped and recorded `interrupted` before stop()
    returns (lease revoked), within grace + kill grace; another node runs it again as attempt 2."""
    pidf = tmp_path / "pid"
    cmd = f'if [ "$ETCDCRON_ATTEMPT" = 1 ]; then echo $$ > {pidf}; exec sleep 60; fi; true'
    _put(fstore, keys, make_spec("long", "@yearly", shell=cmd, active_since=time.time()))
    n1 = nodes("n1")
    Admin(fstore, keys).trigger("long")
    assert wait_for(lambda: _pid(pidf) is not None, 15), "the triggered run never started"
    pid = _pid(pidf)
    t0 = time.monotonic()
    n1.stop(grace=0.5)
    took = time.monotonic() - t0
    assert not _alive(pid), "the run's process outlived its node's lease"
    assert took < 0.5 + KILL_GRACE + 3, f"stop took {took:.1f} s"
    (slot, rec), = _records(fstore, keys, "long").items()
    assert rec["state"] == "interrupted" and rec["killed_by"] == "shutdown", rec
    nodes("n2")
    assert wait_for(lambda: (_record(fstore, keys, "long", slot) or {}).get("state") == "succeeded", 15)
    rec = _record(fstore, keys, "long", slot)
    assert rec["attempt"] == 2 and rec["node"] == "n2", rec


def test_claim_committed_while_stopping_still_runs(fstore, keys, nodes, tmp_path):
    """A claim whose round trip is still in flight when stop() begins commits: its firing runs within
    the grace instead of being left to be recorded lost."""
    led = tmp_path / "ledger"
    _put(fstore, keys, make_spec("tick", "* * * * * *", builtin="ledger", args={"path": str(led)}, active_since=time.time()))
    n1 = nodes("n1")
    slow = fstore.arm(claims_running, when="never", action=lambda keys: time.sleep(1.5))
    assert slow.fired.wait(0) or wait_for(lambda: bool(slow.hits), 10)
    n1.stop(grace=5.0)
    slots = {int(k.rsplit("/", 1)[1]) for k in slow.hits[0] if "/running/" in k}
    for slot in slots:
        rec = _record(fstore, keys, "tick", slot)
        assert rec is not None and rec["state"] == "succeeded", (slot, rec)
    assert slots <= {line["slot"] for line in _ledger(led)}


def test_claim_whose_answer_was_lost_runs_once_on_its_own_path(fstore, keys, nodes, tmp_path):
    """The claim commits but its answer is lost: sent again, it is recognised as ours and runs once,
    on the claim path (not late, by the orphan sweep)."""
    led = tmp_path / "ledger"
    _put(fstore, keys, make_spec("tick", "* * * * * *", builtin="ledger", args={"path": str(led)}, active_since=time.time()))
    lost = fstore.arm(claims_running, when="after")
    nodes("n1")
    assert lost.fired.wait(10)
    slot = min(int(k.rsplit("/", 1)[1]) for k in lost.hits[0] if "/running/" in k)
    assert wait_for(lambda: (_record(fstore, keys, "tick", slot) or {}).get("state") == "succeeded", 10)
    assert _record(fstore, keys, "tick", slot)["reason"] == "schedule"
    assert [ln["slot"] for ln in _ledger(led)].count(slot) == 1


def test_claim_failing_while_etcd_is_unavailable_is_sent_again(fstore, keys, nodes, tmp_path):
    """Claims that fail with unavailability (an election) are sent again until they succeed: the firing runs."""
    led = tmp_path / "ledger"
    _put(fstore, keys, make_spec("tick", "* * * * * *", builtin="ledger", args={"path": str(led)}, active_since=time.time()))
    down = fstore.arm(claims_running, when="before", times=3)
    nodes("n1")
    assert wait_for(lambda: down.times == 0, 15)
    slot = min(int(k.rsplit("/", 1)[1]) for k in down.hits[0] if "/running/" in k)
    assert wait_for(lambda: (_record(fstore, keys, "tick", slot) or {}).get("state") == "succeeded", 10), \
        _record(fstore, keys, "tick", slot)
    assert [ln["slot"] for ln in _ledger(led)].count(slot) == 1


def test_failed_recovery_is_retried(fstore, keys, nodes, tmp_path):
    """A lost run whose recovery meets a store error is recovered on a later try, not left `running`."""
    led = tmp_path / "ledger"
    slot = int(time.time()) // 3600 * 3600
    spec = make_spec("hourly", "@hourly", builtin="ledger", args={"path": str(led)}, starting_deadline=7200,
                     active_since=slot - 1)
    _put(fstore, keys, spec)
    fstore.put(keys.claim("hourly", slot), json.dumps({"state": "running", "attempt": 1, "node": "gone", "started": slot}))
    failing = fstore.arm(claims_running, when="before")
    nodes("n1")
    assert failing.fired.wait(10)
    assert wait_for(lambda: (_record(fstore, keys, "hourly", slot) or {}).get("state") == "succeeded", 10), \
        _record(fstore, keys, "hourly", slot)
    assert _record(fstore, keys, "hourly", slot)["attempt"] == 2


def test_lease_lost_stops_runs_at_once(fstore, keys, nodes, tmp_path):
    """When a node learns its lease is gone, its runs stop before anyone can take them over."""
    pidf = tmp_path / "pid"
    _put(fstore, keys, make_spec("long", "@yearly", shell=f"echo $$ > {pidf}; exec sleep 60", active_since=time.time()))
    n1 = nodes("n1")
    Admin(fstore, keys).trigger("long")
    assert wait_for(lambda: _pid(pidf) is not None, 15)
    fstore.revoke(n1.session.lease)  # as when etcd expired it while we were paused
    assert wait_for(lambda: not _alive(_pid(pidf)), 5), "the run outlived its claim's lease"


def test_run_stopped_for_an_assumed_lease_loss_runs_again(fstore, keys, nodes, tmp_path):
    """A node that must assume its lease is gone (keep-alives unanswered past its deadline) stops its
    runs at once (§4.7); if etcd still held the lease, the stopped run's record must not be final:
    it is recorded interrupted and handed over, and runs again (§4.4). Before, it was recorded
    killed, and the firing never ran again."""
    attempts = tmp_path / "attempts"
    _put(fstore, keys, make_spec("long", "@yearly", shell=f"echo $ETCDCRON_ATTEMPT >> {attempts}; exec sleep 60",
                                 active_since=time.time()))
    n1 = nodes("n1")
    Admin(fstore, keys).trigger("long")
    assert wait_for(lambda: attempts.exists() and attempts.read_text().split() == ["1"], 15)
    n1._lease_lost(n1.session.lease)  # as the lease watchdog does at its local deadline; etcd still holds it
    assert wait_for(lambda: attempts.read_text().split() == ["1", "2"], 15), attempts.read_text()
    states = [c.state for c in Admin(fstore, keys).history("long", 10)]
    assert "killed" not in states, states


def test_refused_trigger_is_consumed(fstore, keys, nodes):
    """A trigger that cannot run (its level is degraded) is answered and removed, never left to fire later."""
    _put(fstore, keys, make_spec("job", "@yearly", builtin="noop", level=2, active_since=time.time()))
    nodes("n1")
    admin = Admin(fstore, keys)
    admin.degrade(2, False)
    admin.trigger("job")
    assert wait_for(lambda: any(r["state"] == "degraded" for r in _records(fstore, keys, "job").values()), 10)
    assert wait_for(lambda: fstore.get(keys.trigger("job")) is None, 5), "the refused trigger stayed in etcd"


def test_job_changed_at_its_instant_still_fires(fstore, keys, nodes, tmp_path):
    """A job replaced just before one of its instants, while the node's watch lags (the claim meets the
    new version first), still runs that firing."""
    led = tmp_path / "ledger"
    spec = make_spec("tick", "*/2 * * * * *", builtin="ledger", args={"path": str(led)}, starting_deadline=3,
                     active_since=time.time())
    _put(fstore, keys, spec)
    lagging = []

    def lag_watch(node) -> None:
        apply = node.view.apply

        def slow_apply(events, revision):
            if lagging and any("/jobs/" in ev.kv.key for ev in events):
                time.sleep(1.5)  # the watch delivers the change after the instant
            return apply(events, revision)
        node.view.apply = slow_apply

    def change(_keys) -> None:
        lagging.append(True)
        _put(fstore, keys, spec.replace(args={"path": str(led), "v": "2"}))
    changed = fstore.arm(claims_running, when="never", action=change)
    nodes("n1", before_start=lag_watch)
    assert changed.fired.wait(10)
    slot = min(int(k.rsplit("/", 1)[1]) for k in changed.hits[0] if "/running/" in k)
    assert wait_for(lambda: _record(fstore, keys, "tick", slot) is not None and
                    _record(fstore, keys, "tick", slot)["state"] != "running", 10)
    assert _record(fstore, keys, "tick", slot)["state"] == "succeeded", _record(fstore, keys, "tick", slot)


def test_catch_up_counts_the_deadline_from_the_jittered_start(store, keys):
    """A firing whose jittered start lies inside the starting deadline is overdue, though its slot is older."""
    spec = make_spec("j", "@every 20s", builtin="noop", jitter=19, starting_deadline=1)
    node = Node(store, keys, NodeConfig("n1"), clock=FakeClock())
    base = 1_800_000_000
    slot = next(s for s in range(base, base + 2000, 20) if node.start_time(spec, s) - s > 5)
    now = node.start_time(spec, slot) + 0.5
    assert node.overdue(spec, now) == [slot]
    assert node._overdue(spec, now)


def test_orphan_claim_on_our_lease_is_adopted_and_run(fstore, keys, nodes, tmp_path):
    """A claim naming us on our live lease that no path of ours holds (its answer was lost and the
    claim given up) is found by the sweep, confirmed in etcd and run once."""
    led = tmp_path / "ledger"
    _put(fstore, keys, make_spec("job", "@yearly", builtin="ledger", args={"path": str(led)}, active_since=time.time()))
    n1 = nodes("n1")
    slot = int(time.time()) - 1
    rec = json.dumps({"state": "running", "attempt": 1, "node": "n1", "started": time.time(), "reason": "schedule"})
    fstore.txn([], [st.put(keys.claim("job", slot), rec), st.put(keys.running("job", slot), "n1", lease=n1.session.lease)])
    n1.firing._gave_up = n1.clock.monotonic()  # what giving a claim up unresolved notes: sweeps read running/ now
    assert wait_for(lambda: (_record(fstore, keys, "job", slot) or {}).get("state") == "succeeded", 10), \
        _record(fstore, keys, "job", slot)
    assert _record(fstore, keys, "job", slot)["adopted"] is True
    assert [ln["slot"] for ln in _ledger(led)].count(slot) == 1


def test_spread_firings_share_round_trips(fstore, keys, nodes, tmp_path):
    """Firings spread across the second (jitter) are claimed in windows and their completions
    group-committed: far fewer claim and completion round trips than firings (one each before)."""
    led = tmp_path / "ledger"
    for i in range(60):
        _put(fstore, keys, make_spec(f"s{i:02d}", "* * * * * *", builtin="ledger", args={"path": str(led)},
                                     jitter=1, concurrency="allow", active_since=time.time()))
    trips = fstore.arm(lambda put: any("/claims/" in k for k in put), when="never", times=10**9)
    node = nodes("n1")
    assert wait_for(lambda: node.stats["ran"] >= 30, 20)  # warmed up
    trips0, ran0 = len(trips.hits), node.stats["ran"]
    assert wait_for(lambda: node.stats["ran"] >= ran0 + 240, 30)
    per_firing = (len(trips.hits) - trips0) / (node.stats["ran"] - ran0)
    assert per_firing < 0.5, f"{per_firing:.2f} claim/completion round trips per firing"


def test_late_queued_firing_is_shed_not_run_late(fstore, keys, nodes, tmp_path):
    """Overload: a forbid job's firing that reaches a worker after the job's next firing was due is
    recorded skipped (shed), not run seconds late; the job is back on time at once (issue 11)."""
    led = tmp_path / "ledger"
    now = time.time()
    _put(fstore, keys, make_spec("tick", "* * * * * *", builtin="ledger", args={"path": str(led)}, active_since=now))
    node = nodes("n1", workers=1)
    assert wait_for(lambda: len(_ledger(led)) >= 2, 10)
    # the one worker is held for 3.5 s: tick's claimed firings queue behind it
    node.submit(time.sleep, 3.5)
    blocked_from = time.time()
    assert wait_for(lambda: any(r["start"] > blocked_from + 3.5 for r in _ledger(led)), 15)
    shed = [c for c in _records(fstore, keys, "tick").values()
            if c["state"] == "skipped" and c.get("reason", "").startswith("late")]
    assert shed, "no firing was shed"
    late = [r for r in _ledger(led) if r["start"] - r["slot"] > 1.0]
    assert not late, f"firings ran late instead of being shed: {late}"


def test_takeover_after_the_next_firing_is_still_run(fstore, keys, nodes, tmp_path):
    """A firing taken over late (its owners dead, their leases not yet expired), after the job's next
    instant, still runs: lateness that does not come from this node's queue never sheds a firing."""
    led = tmp_path / "ledger"
    for ghost in ("ghost1", "ghost2", "ghost3"):  # registered and silent: nodes just SIGKILLed
        fstore.put(keys.node(ghost), json.dumps({"levels": [1, 2, 3]}))
    _put(fstore, keys, make_spec("j", "* * * * * *", builtin="ledger", args={"path": str(led)},
                                 active_since=time.time()))
    nodes("n1")

    def final() -> dict[int, dict]:
        return {s: r for s, r in _records(fstore, keys, "j").items() if r["state"] != "running"}
    assert wait_for(lambda: len(final()) >= 10, 30)
    late = {s: r.get("reason") for s, r in final().items() if r["state"] != "succeeded"}
    assert not late, f"takeover firings not run: {late}"


def test_claim_that_waited_for_a_claimer_is_shed_not_run_late(fstore, keys, nodes, tmp_path):
    """Overload before the workers: a claim batch that waited for a claimer until its forbid job's
    next firing was due records that firing skipped instead of claiming and running it late."""
    led = tmp_path / "ledger"
    _put(fstore, keys, make_spec("tick", "* * * * * *", builtin="ledger", args={"path": str(led)},
                                 active_since=time.time()))
    node = nodes("n1")
    assert wait_for(lambda: len(_ledger(led)) >= 2, 10)
    for _ in range(CLAIMERS):  # every claimer held for 2.5 s: claim batches queue behind them
        node.claimer.submit(time.sleep, 2.5)
    blocked_from = time.time()
    assert wait_for(lambda: any(r["start"] > blocked_from + 3.0 for r in _ledger(led)), 15)
    shed = [s for s, c in _records(fstore, keys, "tick").items()
            if c["state"] == "skipped" and (c.get("reason") or "").startswith("late")]
    assert shed, "no firing was shed"
    late = [r for r in _ledger(led) if r["start"] - r["slot"] > 1.0]
    assert not late, f"firings claimed and run late instead of being shed: {late}"


def test_a_slow_takeover_read_never_sheds_the_owners_firings(fstore, keys, nodes, monkeypatch):
    """A claim batch reads whether its takeovers are claimed before claiming; a read that etcd holds
    up (an election) must not make the owner's firings of the batch look late: lateness from etcd
    never sheds (DESIGN §4.8). Before, the batch's time was taken after the read, and the owner's
    firing, whose next firing came due meanwhile, was recorded skipped instead of claimed."""
    node = nodes("n1", levels=(1,))  # the jobs are level 2: its timer leaves them to this test
    t = int(time.time()) + 2
    spec = make_spec("own", "* * * * * *", builtin="noop", concurrency="forbid", level=2, active_since=t - 5)
    rev = _put(fstore, keys, spec)
    other = make_spec("other", "* * * * * *", builtin="noop", level=2, active_since=t - 5)
    orev = _put(fstore, keys, other)
    while time.time() < t + 0.9:  # the owner's firing t: its next one (t + 1) is due in 0.1 s
        time.sleep(0.01)
    real = fstore.exists_many

    def slow(keys_):
        time.sleep(0.4)  # etcd holding the read: the next firing's start passes meanwhile
        return real(keys_)
    monkeypatch.setattr(node.store, "exists_many", slow)
    node.firing.fire_batch([(spec, rev, t, True), (other, orev, t, False)], node.clock.monotonic() - 0.2)
    rec = _record(fstore, keys, "own", t)
    assert rec is not None and rec["state"] != "skipped", rec
