"""A node's session: its lease, its own keep-alive loop, its registration and its candidacy.

We do not trust a client library's keep-alive for liveness. Our loop refreshes the lease every
TTL/3 and keeps a *monotonic local deadline*: the moment the lease may have expired on the server,
counted from when the last successful refresh was sent. Claims are made only before that deadline
(less a margin), so a node that is cut off or paused stops claiming before anyone else can take
over.

Three threads, so that no slow call delays another's duty:

* ``keepalive`` only refreshes the lease. A refresh may block for the store's whole timeout (as
  long as the TTL), so it never decides on its own that the lease is lost;
* ``lease-watch`` is the watchdog: it wakes at ``deadline - CLAIM_MARGIN`` (or when a refresh
  reports TTL <= 0) and, if no refresh moved the deadline, declares the lease lost: it calls
  ``on_lease_lost(old lease)`` so the node stops the runs claimed on it (a run must never outlive
  its claim's lease), and only then registers again on a new lease. A pause (SIGSTOP, a frozen VM)
  shows up here as a monotonic clock already past the deadline on waking;
* ``clock-check`` compares our wall clock with etcd's over HTTP (``/version``, which can take the
  store's full timeout) every ``SKEW_EVERY`` seconds or on demand.

Between two checks a clock *step* is caught locally: the offset wall - monotonic only moves by slew
(well under a millisecond a second) unless someone steps the clock, so ``clock_trusted()`` compares
it with the offset at the last measurement, at no cost, before every run.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Callable, Iterable

import structlog

from . import store as st
from .clock import Clock
from .errors import StoreError
from .keys import Keys
from .store import EtcdStore

log = structlog.get_logger("etcdcron.nodes")

CLAIM_MARGIN = 0.5  # seconds before the local lease deadline at which we stop claiming and give the lease up
SKEW_EVERY = 5.0  # seconds between clock checks against etcd
STEP_TOLERANCE = 0.25  # seconds the offset wall - monotonic may move before we call it a clock step
MEASURE_GAP = 0.2  # at least this long between two clock checks, however often they are asked for
RETRY_AFTER = 0.25  # seconds before a failed keep-alive is tried again (capped at the refresh interval)


def leader_of(candidates: Iterable[tuple[int, str]]) -> str | None:
    """The leader rule (etcd's election recipe): of the candidacies ``(create revision, node id)``,
    each on its node's lease, the oldest leads."""
    oldest = min(candidates, default=None)
    return oldest[1] if oldest else None


def serves(info: dict, level: int) -> bool:
    """The live-node rule: may a node whose registration says ``info`` own firings of ``level``?
    Not while it drains (or stops) or its clock is skewed."""
    return level in info.get("levels", (1, 2, 3)) and not info.get("draining") and not info.get("skewed")


def measure_skew(store: EtcdStore, clock: Clock) -> tuple[float, float]:
    """Bounds (low, high) on this node's clock minus etcd's, from etcd's HTTP Date header.

    The header has whole seconds, so the true skew lies in an interval about a second wide; a node
    is judged skewed only when the whole interval lies beyond the threshold (no false alarms).
    """
    offset = clock.time() - time.time()  # an injected clock's offset from the real one
    sent, received, server = store.server_time()
    sent, received = sent + offset, received + offset
    return sent - (server + 1.0), received - server


class Session:
    """The node's lease and registration.

    ``on_lease_lost(old_lease)`` is called on the lease-watch thread, exactly once per lease that
    we did not revoke ourselves, as soon as that lease may be gone (see :meth:`_lose`), and before
    the session registers on a new lease; ``on_renewed()`` after it has. Both should return soon
    (the node is not registered meanwhile) and must not call :meth:`close`."""

    def __init__(self, store: EtcdStore, keys: Keys, node_id: str, levels: tuple[int, ...], ttl: int,
                 clock: Clock, on_renewed: Callable[[], None] | None = None, max_skew: float = 2.0,
                 on_lease_lost: Callable[[int], None] | None = None) -> None:
        self.store, self.keys, self.node_id, self.levels, self.ttl, self.clock = store, keys, node_id, levels, ttl, clock
        self.on_renewed = on_renewed
        self.on_lease_lost = on_lease_lost
        self.lease = 0
        self.deadline = 0.0  # monotonic
        self.draining = False
        self.max_skew = max_skew
        self.skewed = False
        self.sessions = 0
        self._stop = threading.Event()
        # lease, deadline and the two flags below change together under _lock: a refresh of a lease
        # the watchdog has just given up must not revive it
        self._lock = threading.Lock()
        self._lost = False  # the current lease was declared lost; a new one is being registered
        self._gone = 0  # a lease a refresh reported gone (TTL <= 0), for the watchdog to act on
        self._refreshed_at = 0.0  # monotonic: when the refresh (or grant) behind the deadline was sent
        self.ticked = 0.0  # monotonic: the keep-alive loop's last turn, for /healthz
        self._watch_wake = threading.Event()
        # registration writes (open, candidacy on a skew change, drain) go one at a time, so that
        # the last one written reflects the last state
        self._reg_lock = threading.Lock()
        self._registered_skewed: bool | None = None  # the candidacy state written for the current lease
        # clock checks: _asked counts requests, _done the last request a finished check served
        self._skew_cond = threading.Condition()
        self._asked = self._done = 0
        self._measured_ok = False  # did the last finished check get an answer from etcd?
        self._offset_base: float | None = None  # wall - monotonic at the last good check (or at start)
        self._threads: list[threading.Thread] = []

    def info(self, lease: int | None = None) -> bytes:
        return json.dumps({"id": self.node_id, "levels": list(self.levels), "host": socket.gethostname(),
                           "pid": os.getpid(), "started": self.clock.time(),
                           "lease": self.lease if lease is None else lease,
                           "draining": self.draining, "skewed": self.skewed}).encode()

    # --- life cycle
    def start(self) -> None:
        # Measure the clock once before registering: a skewed node never becomes a candidate, and
        # no lease is at stake yet if /version is slow.
        self._offset_base = self._offset()
        self.check_skew()
        self.open()
        for target, name in ((self._keepalive_loop, "keepalive"), (self._watch_loop, "lease-watch"),
                             (self._clock_loop, "clock-check")):
            t = threading.Thread(target=target, name=name, daemon=True)
            self._threads.append(t)
            t.start()

    def open(self) -> None:
        """Grant a lease, register the node and (unless skewed or draining) its leader candidacy on it."""
        sent = self.clock.monotonic()
        lease = self.store.grant(self.ttl)
        with self._reg_lock:
            # the lease's mark: its delete tells every node that the lease died, with its runs
            ops = [st.put(self.keys.lease_mark(lease), self.node_id, lease=lease)]
            if not self.draining:  # a draining node keeps a lease for its runs but owns no firings
                ops.append(st.put(self.keys.node(self.node_id), self.info(lease), lease=lease))
                skewed = self.skewed
                if not skewed:
                    ops.append(st.put(self.keys.candidate(lease), self.node_id, lease=lease))
            self.store.txn([], ops)
            if not self.draining:
                self._registered_skewed = skewed
            with self._lock:
                self.lease, self.deadline, self._refreshed_at = lease, sent + self.ttl, sent
                self._lost, self._gone = False, 0
        self.sessions += 1
        log.info("node.registered", node=self.node_id, lease=f"{lease:x}", ttl=self.ttl, levels=list(self.levels))

    def valid(self) -> bool:
        """May we claim now? Only while our lease certainly still lives."""
        return not self._stop.is_set() and not self.skewed and self.clock.monotonic() < self.deadline - CLAIM_MARGIN

    def drain(self) -> None:
        """Leave the set of nodes that own firings (others re-rank at once), keep the lease for our runs."""
        with self._reg_lock:
            self.draining = True
            try:
                self.store.delete(self.keys.node(self.node_id))
                self.store.delete(self.keys.candidate(self.lease))
            except StoreError as exc:
                log.warning("node.drain_failed", error=str(exc)[:200])

    def close(self, revoke: bool = True) -> None:
        with self._lock:  # under the lock: the watchdog declares a loss only while not stopping
            self._stop.set()
        self._watch_wake.set()
        with self._skew_cond:
            self._skew_cond.notify_all()
        end = time.monotonic() + 5.0  # a refresh or clock check in flight ends within the store timeout
        for t in self._threads:
            t.join(timeout=max(0.0, end - time.monotonic()))
        if revoke and self.lease:
            try:
                self.store.revoke(self.lease)
                log.info("node.lease_revoked", node=self.node_id, lease=f"{self.lease:x}")
            except StoreError as exc:
                log.warning("node.revoke_failed", error=str(exc)[:200])

    # --- the lease: refresh (keepalive thread), loss and renewal (lease-watch thread)
    def _keepalive_loop(self) -> None:
        interval = max(self.ttl / 3.0, 0.2)
        retry_at = 0.0
        while not self._stop.is_set():
            self.ticked = self.clock.monotonic()
            with self._lock:
                lease, deadline, refreshed_at, lost = self.lease, self.deadline, self._refreshed_at, self._lost
            now = self.clock.monotonic()
            if lost or not lease:  # the watchdog is registering a new lease
                self._stop.wait(0.05)
                continue
            if now >= deadline - CLAIM_MARGIN:
                # Too late to refresh: the lease is given up (after a pause, we may wake before the
                # watchdog). A refresh now could revive a lease whose runs are being stopped.
                self._watch_wake.set()
                self._stop.wait(0.05)
                continue
            # Due an interval after the refresh behind the deadline: right away after a call that
            # blocked, sooner than an interval after a failure.
            wait = max(refreshed_at + interval, retry_at) - now
            if wait > 0:
                self._stop.wait(min(wait, interval))
                continue
            sent = self.clock.monotonic()
            try:
                ttl = self.store.keepalive(lease)
            except StoreError as exc:
                retry_at = self.clock.monotonic() + min(RETRY_AFTER, interval)
                log.warning("node.keepalive_failed", node=self.node_id, error=str(exc)[:200],
                            seconds_left=round(deadline - self.clock.monotonic(), 2))
                continue
            with self._lock:
                if self.lease != lease or self._lost:
                    continue  # an answer about a lease already given up
                if ttl <= 0:
                    self._gone = lease
                else:
                    self.deadline, self._refreshed_at = sent + ttl, sent
            if ttl <= 0:
                self._watch_wake.set()

    def _watch_loop(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                lease, deadline, gone = self.lease, self.deadline, self._gone
            now = self.clock.monotonic()
            left = deadline - CLAIM_MARGIN - now
            if gone == lease:
                reason = "etcd reported the lease gone"
            elif left <= 0:
                reason = "no refresh before the deadline" if left > -1.0 else \
                    "woke long past the deadline (paused?)"
            else:
                # The deadline only moves later, so waking at the old one and looking again is
                # enough; the cap guards against a clock that does not follow real time.
                self._watch_wake.wait(min(left, 1.0))
                self._watch_wake.clear()
                continue
            if self._lose(lease, reason, left + CLAIM_MARGIN):
                self._reopen()

    def _lose(self, lease: int, reason: str, seconds_left: float) -> bool:
        """Give ``lease`` up and tell the node, before any new lease exists.

        Called ``CLAIM_MARGIN`` before the server may expire the lease (sooner if etcd said it is
        gone), so the node can stop its runs before anyone else may take their firings over. We do
        not revoke the old lease: if it still lives, it dies on its own within that margin, and a
        revoke would let others take over at once, perhaps while our runs are still stopping."""
        with self._lock:
            if self._stop.is_set() or self.lease != lease or self._lost:
                return False  # closing (we revoke it ourselves), or already handled
            self._lost, self.deadline = True, 0.0
        log.warning("node.lease_lost", node=self.node_id, lease=f"{lease:x}", reason=reason,
                    seconds_left=round(seconds_left, 2))
        if self.on_lease_lost:
            try:
                self.on_lease_lost(lease)
            except Exception:  # noqa: BLE001 - the session must go on to a new lease whatever happens
                log.exception("node.lease_lost_handler_failed", node=self.node_id)
        return True

    def _reopen(self) -> None:
        while not self._stop.is_set():
            try:
                self.open()
            except StoreError as exc:
                log.warning("node.reregister_failed", node=self.node_id, error=str(exc)[:200])
                self._stop.wait(0.5)
                continue
            if self.on_renewed:
                self.on_renewed()
            return

    # --- the clock
    def _offset(self) -> float:
        return self.clock.time() - self.clock.monotonic()

    def clock_trusted(self) -> bool:
        """May a run start now, by our clock? Cheap (no I/O): False while skewed, or when the wall
        clock stepped by more than ``STEP_TOLERANCE`` since the last check against etcd; a step also
        asks the clock-check thread to measure again at once (see :meth:`verify_clock`)."""
        base = self._offset_base
        if base is not None and abs(self._offset() - base) > STEP_TOLERANCE:
            with self._skew_cond:
                if self._asked == self._done:  # one request pending is enough
                    self._asked += 1
                    self._skew_cond.notify_all()
            return False
        return not self.skewed

    def verify_clock(self, timeout: float = 3.0) -> bool:
        """Check our clock against etcd's now (a measurement begun after this call, shared with any
        other caller waiting at the same time) and say whether the node may execute: True only if
        etcd answered within ``timeout`` seconds, we are not skewed and the clock has not stepped
        since. Blocking: call it only when :meth:`clock_trusted` is False."""
        end = time.monotonic() + timeout
        with self._skew_cond:
            self._asked += 1
            mine = self._asked
            self._skew_cond.notify_all()
            while self._done < mine:
                left = end - time.monotonic()
                if left <= 0 or self._stop.is_set():
                    return False
                self._skew_cond.wait(left)
            ok = self._measured_ok
        return ok and self.clock_trusted()

    def _clock_loop(self) -> None:
        last = time.monotonic()  # real time: this paces requests, it decides nothing
        while True:
            with self._skew_cond:
                while not self._stop.is_set():
                    now = time.monotonic()
                    if self._asked > self._done and now >= last + MEASURE_GAP:
                        break
                    if now >= last + SKEW_EVERY:
                        break
                    wake = last + (MEASURE_GAP if self._asked > self._done else SKEW_EVERY)
                    self._skew_cond.wait(max(wake - now, 0.01))
                if self._stop.is_set():
                    return
                asked = self._asked
            last = time.monotonic()
            ok = self.check_skew()
            with self._skew_cond:
                self._done, self._measured_ok = max(self._done, asked), ok
                self._skew_cond.notify_all()

    def check_skew(self) -> bool:
        """Refuse to execute while our clock is off etcd's by more than ``max_skew`` (contract: no
        early firing). Measures now, on the calling thread; True if etcd's time was read."""
        before = self._offset()
        try:
            low, high = measure_skew(self.store, self.clock)
        except StoreError as exc:
            log.debug("node.skew_unmeasured", error=str(exc)[:200])
            return False
        after = self._offset()
        if abs(after - before) > STEP_TOLERANCE:
            log.info("node.skew_unmeasured", error="the clock stepped while measuring")
            return False
        skewed = low > self.max_skew or high < -self.max_skew
        changed = skewed != self.skewed
        # skewed first, then the offset: clock_trusted() never sees the new offset with the old verdict
        self.skewed = skewed
        self._offset_base = after
        if changed:
            if skewed:
                log.error("node.clock_skew", node=self.node_id, skew_low=round(low, 2), skew_high=round(high, 2),
                          threshold=self.max_skew, action="refusing to execute until the clock is corrected")
            else:
                log.info("node.clock_ok", node=self.node_id, skew_low=round(low, 2), skew_high=round(high, 2))
        if self._registered_skewed is not None and self._registered_skewed != skewed:
            self._register_candidacy()  # also retries a write that failed at an earlier check
        return True

    def _register_candidacy(self) -> None:
        """A node that may not execute may not lead either: it withdraws its candidacy (and puts it back)."""
        with self._reg_lock:
            lease = self.lease  # read under the lock: open() may be moving us to a new lease
            if self.draining or not lease or self._stop.is_set():
                return  # open() registers a new lease according to self.skewed
            cand = st.delete(self.keys.candidate(lease)) if self.skewed else \
                st.put(self.keys.candidate(lease), self.node_id, lease=lease)
            try:
                self.store.txn([], [st.put(self.keys.node(self.node_id), self.info(lease), lease=lease), cand])
                self._registered_skewed = self.skewed
            except StoreError as exc:  # retried at the next check; on a lost lease, open() does it
                log.warning("node.candidacy_unchanged", node=self.node_id, skewed=self.skewed, error=str(exc)[:200])


def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll ``cond`` until true or ``timeout``; for tools and tests that watch another process."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()
