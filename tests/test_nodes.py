"""The node session against a real etcd: keep-alives independent of clock checks (issue 8, case 12f),
clock steps caught locally before a run starts (case 12e), and a lost lease reported before the
session moves on to a new one (case 7)."""

from __future__ import annotations

import threading
import time

import pytest

from etcdcron import nodes
from etcdcron.errors import StoreUnavailable
from etcdcron.nodes import Session, wait_for
from etcdcron.store import EtcdStore


class SteppableClock:
    """The real clock plus offsets a test sets: ``offset`` steps the wall clock (as a bad NTP step
    or an operator would), ``mono_offset`` moves the monotonic one (as a process pause appears)."""

    def __init__(self) -> None:
        self.offset = 0.0
        self.mono_offset = 0.0

    def time(self) -> float:
        return time.time() + self.offset

    def monotonic(self) -> float:
        return time.monotonic() + self.mono_offset


class SlowTimeStore(EtcdStore):
    """etcd whose ``/version`` hangs after the first answer (until ``release`` or 20 s)."""

    def __init__(self, endpoints) -> None:
        super().__init__(endpoints)
        self.release = threading.Event()
        self.time_calls = 0

    def server_time(self):
        self.time_calls += 1
        if self.time_calls > 1 and not self.release.wait(20):
            raise StoreUnavailable("etcd time: test hang")
        return super().server_time()


class FlakyLeaseStore(EtcdStore):
    """etcd whose keep-alives a test can make fail, hang or report the lease gone."""

    def __init__(self, endpoints) -> None:
        super().__init__(endpoints)
        self.mode = "ok"  # "ok" | "fail" | "hang" | "zero_once"
        self.unhang = threading.Event()
        self.grants = 0
        self.refreshed = time.monotonic()  # when the last grant or successful keep-alive answered
        self.refreshed_ttl = 0

    def grant(self, ttl: int) -> int:
        lease = super().grant(ttl)
        self.grants += 1
        self.refreshed, self.refreshed_ttl = time.monotonic(), ttl
        return lease

    def keepalive(self, lease: int) -> int:
        if self.mode == "fail":
            raise StoreUnavailable("etcd unavailable: test")
        if self.mode == "hang":
            self.unhang.wait(20)
            raise StoreUnavailable("etcd unavailable: test hang")
        if self.mode == "zero_once":
            self.mode = "ok"
            return 0
        ttl = super().keepalive(lease)
        if ttl > 0:
            self.refreshed, self.refreshed_ttl = time.monotonic(), ttl
        return ttl


def _session(store, keys, clock, ttl=3, **kw) -> Session:
    return Session(store, keys, "n1", (0,), ttl, clock, **kw)


# --- case 12f: a hanging clock check never delays a keep-alive

def test_hanging_clock_check_does_not_delay_keepalives(etcd, keys, monkeypatch):
    """``/version`` hangs (longer than the TTL) from the second clock check on: the lease is still
    refreshed on time and the session stays valid throughout."""
    monkeypatch.setattr(nodes, "SKEW_EVERY", 0.5)
    store = SlowTimeStore(etcd)
    session = _session(store, keys, SteppableClock(), ttl=3)
    session.start()
    try:
        end = time.monotonic() + 6.0  # twice the TTL
        invalid_at = None
        while time.monotonic() < end:
            if not session.valid():
                invalid_at = round(6.0 - (end - time.monotonic()), 2)
                break
            time.sleep(0.05)
        assert store.time_calls >= 2, "the clock check never ran during the test"
        assert invalid_at is None, f"the session lapsed {invalid_at} s in while /version hung"
    finally:
        store.release.set()
        session.close()
        store.close()


# --- case 12e: a clock step is noticed before the next run, and etcd's time decides

def test_clock_step_is_caught_at_once_and_verified_against_etcd(store, keys):
    clock = SteppableClock()
    session = _session(store, keys, clock, max_skew=2.0)
    session.start()
    try:
        assert session.clock_trusted() and not session.skewed
        clock.offset = 6.0  # the wall clock jumps 6 s ahead of etcd's
        assert not session.clock_trusted(), "a 6 s forward step went unnoticed"
        assert session.verify_clock(5.0) is False, "a node 6 s ahead of etcd was allowed to execute"
        assert session.skewed
        assert store.get(keys.candidate(session.lease)) is None, "a skewed node kept its candidacy"
        assert not session.clock_trusted()
        clock.offset = 0.0  # corrected
        assert wait_for(session.clock_trusted, 5.0), "the corrected clock was not trusted again"
        assert not session.skewed
        assert session.verify_clock(5.0) is True
        assert store.get(keys.candidate(session.lease)) is not None, "candidacy not restored"
    finally:
        session.close()


def test_small_drift_is_not_a_step_and_skew_is_untrusted(store, keys):
    """A slew well under the tolerance keeps the clock trusted; a node skewed from the start never is."""
    clock = SteppableClock()
    session = _session(store, keys, clock)
    session.start()
    try:
        clock.offset = 0.05
        assert session.clock_trusted()
    finally:
        session.close()
    clock = SteppableClock()
    clock.offset = 10.0
    session = _session(store, keys, clock)
    session.start()
    try:
        assert session.skewed and not session.valid()
        assert not session.clock_trusted()
        assert store.get(keys.candidate(session.lease)) is None, "a node skewed from the start is a candidate"
    finally:
        session.close()


# --- case 7: a lost lease is reported, once, before the session takes a new one

@pytest.mark.parametrize("mode", ["fail", "hang"])
def test_lease_lost_reported_before_deadline_and_before_new_lease(etcd, keys, mode):
    """Keep-alives fail (or hang): on_lease_lost gets the old lease by the local deadline (+0.5 s at
    most), while the old lease is still the session's and before any new lease is granted."""
    store = FlakyLeaseStore(etcd)
    lost: list[dict] = []

    def on_lost(lease: int) -> None:
        lost.append({"lease": lease, "at": time.monotonic(), "bound": store.refreshed + store.refreshed_ttl,
                     "grants": store.grants, "session_lease": session.lease, "valid": session.valid()})
        store.mode = "ok"
        store.unhang.set()

    session = _session(store, keys, SteppableClock(), ttl=2, on_lease_lost=on_lost)
    session.start()
    try:
        time.sleep(1.0)
        assert session.valid()
        old = session.lease
        store.mode = mode
        assert wait_for(lambda: lost, 6.0), "on_lease_lost was never called"
        info = lost[0]
        assert info["lease"] == old
        late = info["at"] - info["bound"]
        assert late <= 0.5, f"lease loss noticed {late:.2f} s after the deadline"
        assert info["grants"] == 1 and info["session_lease"] == old, "a new lease came before on_lease_lost"
        assert not info["valid"], "the session was still valid while reporting its lease lost"
        assert wait_for(lambda: session.lease != old and session.valid(), 5.0), "no new lease after the loss"
        time.sleep(2.5)  # more than a TTL: the new lease is kept alive, nothing else reported
        assert [x["lease"] for x in lost] == [old], f"on_lease_lost calls: {lost}"
        assert session.valid()
    finally:
        store.unhang.set()
        session.close()
        store.close()


def test_lease_reported_gone_by_etcd_is_lost_once_then_renewed(etcd, keys):
    store = FlakyLeaseStore(etcd)
    lost: list[tuple[int, int]] = []
    renewed: list[int] = []
    session = _session(store, keys, SteppableClock(), ttl=2,
                       on_lease_lost=lambda lease: lost.append((lease, store.grants)),
                       on_renewed=lambda: renewed.append(session.lease))
    session.start()
    try:
        old = session.lease
        store.mode = "zero_once"
        assert wait_for(lambda: lost, 3.0), "on_lease_lost was never called"
        assert lost == [(old, 1)]
        assert wait_for(lambda: renewed, 3.0)
        assert renewed[0] != old and store.grants == 2
        time.sleep(2.5)
        assert lost == [(old, 1)], f"on_lease_lost calls: {lost}"
        assert session.valid()
        assert store.get(keys.node("n1")).lease == session.lease, "the node key is not on the new lease"
    finally:
        session.close()
        store.close()


def test_pause_past_the_deadline_loses_the_lease(store, keys):
    """The monotonic clock jumps past the deadline (as after SIGSTOP/SIGCONT): the lease is assumed
    lost even though etcd would still refresh it."""
    clock = SteppableClock()
    lost: list[int] = []
    session = _session(store, keys, clock, ttl=3, on_lease_lost=lost.append)
    session.start()
    try:
        old = session.lease
        clock.mono_offset = 7.0
        assert wait_for(lambda: lost, 2.0), "a pause past the deadline went unnoticed"
        assert lost == [old]
        assert wait_for(lambda: session.lease != old and session.valid(), 3.0)
    finally:
        session.close()


def test_close_revokes_without_reporting_a_loss(store, keys):
    lost: list[int] = []
    session = _session(store, keys, SteppableClock(), ttl=2, on_lease_lost=lost.append)
    session.start()
    lease = session.lease
    session.close(revoke=True)
    time.sleep(2.5)
    assert lost == [], "a lease we revoked ourselves was reported lost"
    assert store.get(keys.node("n1")) is None, f"lease {lease:x} not revoked"
