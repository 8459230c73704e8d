"""A node's session: its lease, its own keep-alive loop, its registration and its candidacy.

We do not trust a client library's keep-alive for liveness. Our loop refreshes the lease every
TTL/3 and keeps a *monotonic local deadline*: the moment the lease may have expired on the server,
counted from when the last successful refresh was sent. Claims are made only before that deadline
(less a margin), so a node that is cut off or paused stops claiming before anyone else can take
over. A refresh that reports TTL <= 0 means the lease is gone: the session ends and a new one
begins with a new lease (its old claims are fenced out by then).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from typing import Callable

import structlog

from . import store as st
from .clock import Clock
from .errors import LeaseLost, StoreError
from .keys import Keys
from .store import EtcdStore

log = structlog.get_logger("etcdcron.nodes")

CLAIM_MARGIN = 0.5  # seconds before the local lease deadline at which we stop claiming
SKEW_EVERY = 5.0  # seconds between clock checks against etcd


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
    def __init__(self, store: EtcdStore, keys: Keys, node_id: str, levels: tuple[int, ...], ttl: int,
                 clock: Clock, on_renewed: Callable[[], None] | None = None, max_skew: float = 2.0) -> None:
        self.store, self.keys, self.node_id, self.levels, self.ttl, self.clock = store, keys, node_id, levels, ttl, clock
        self.on_renewed = on_renewed
        self.lease = 0
        self.deadline = 0.0  # monotonic
        self.draining = False
        self.max_skew = max_skew
        self.skewed = False
        self._next_skew_check = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sessions = 0

    def info(self) -> bytes:
        return json.dumps({"id": self.node_id, "levels": list(self.levels), "host": socket.gethostname(),
                           "pid": os.getpid(), "started": self.clock.time(), "lease": self.lease,
                           "draining": self.draining, "skewed": self.skewed}).encode()

    def open(self) -> None:
        """Grant a lease, register the node and its leader candidacy on it."""
        sent = self.clock.monotonic()
        lease = self.store.grant(self.ttl)
        self.lease = lease
        self.store.txn([], [st.put(self.keys.node(self.node_id), self.info(), lease=lease),
                            st.put(self.keys.candidate(lease), self.node_id, lease=lease)])
        self.deadline = sent + self.ttl
        self.sessions += 1
        self.check_skew()
        log.info("node.registered", node=self.node_id, lease=f"{lease:x}", ttl=self.ttl, levels=list(self.levels))

    def start(self) -> None:
        self.open()
        self._thread = threading.Thread(target=self._loop, name="keepalive", daemon=True)
        self._thread.start()

    def valid(self) -> bool:
        """May we claim now? Only while our lease certainly still lives."""
        return not self._stop.is_set() and not self.skewed and self.clock.monotonic() < self.deadline - CLAIM_MARGIN

    def check_skew(self) -> None:
        """Refuse to execute while our clock is off etcd's by more than ``max_skew`` (contract: no early firing)."""
        try:
            low, high = measure_skew(self.store, self.clock)
        except StoreError as exc:
            log.debug("node.skew_unmeasured", error=str(exc)[:200])
            return
        skewed = low > self.max_skew or high < -self.max_skew
        if skewed != self.skewed:
            self.skewed = skewed
            if skewed:
                log.error("node.clock_skew", node=self.node_id, skew_low=round(low, 2), skew_high=round(high, 2),
                          threshold=self.max_skew, action="refusing to execute until the clock is corrected")
            else:
                log.info("node.clock_ok", node=self.node_id, skew_low=round(low, 2), skew_high=round(high, 2))
            if not self.draining:
                # A node that may not execute may not lead either: it withdraws its candidacy.
                cand = st.delete(self.keys.candidate(self.lease)) if skewed else \
                    st.put(self.keys.candidate(self.lease), self.node_id, lease=self.lease)
                self.store.txn([], [st.put(self.keys.node(self.node_id), self.info(), lease=self.lease), cand])

    def _loop(self) -> None:
        interval = max(self.ttl / 3.0, 0.2)
        while not self._stop.wait(interval):
            sent = self.clock.monotonic()
            try:
                ttl = self.store.keepalive(self.lease)
                if ttl <= 0:
                    raise LeaseLost(f"lease {self.lease:x} expired")
                self.deadline = sent + ttl
                if self.clock.monotonic() >= self._next_skew_check:
                    self._next_skew_check = self.clock.monotonic() + SKEW_EVERY
                    self.check_skew()
            except LeaseLost as exc:
                log.warning("node.lease_lost", node=self.node_id, error=str(exc))
                self._reopen()
            except StoreError as exc:
                log.warning("node.keepalive_failed", node=self.node_id, error=str(exc)[:200],
                            seconds_left=round(self.deadline - self.clock.monotonic(), 2))
                if self.clock.monotonic() > self.deadline:
                    # The server has surely expired the lease by now; don't wait to be told.
                    self._reopen()

    def _reopen(self) -> None:
        self.deadline = 0.0
        while not self._stop.is_set():
            try:
                self.open()
                if self.on_renewed:
                    self.on_renewed()
                return
            except StoreError as exc:
                log.warning("node.reregister_failed", node=self.node_id, error=str(exc)[:200])
                self._stop.wait(0.5)

    def drain(self) -> None:
        """Leave the set of nodes that own firings (others re-rank at once), keep the lease for our runs."""
        self.draining = True
        try:
            self.store.delete(self.keys.node(self.node_id))
            self.store.delete(self.keys.candidate(self.lease))
        except StoreError as exc:
            log.warning("node.drain_failed", error=str(exc)[:200])

    def close(self, revoke: bool = True) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        if revoke and self.lease:
            try:
                self.store.revoke(self.lease)
                log.info("node.lease_revoked", node=self.node_id, lease=f"{self.lease:x}")
            except StoreError as exc:
                log.warning("node.revoke_failed", error=str(exc)[:200])


def wait_for(cond: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Poll ``cond`` until true or ``timeout``; for tools and tests that watch another process."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()
