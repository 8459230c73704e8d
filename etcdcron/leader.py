"""Cluster-wide chores, done by the leader only: recording missed firings and collecting old claims.

Leadership is etcd's election recipe: every node puts ``leader/<lease>`` on its lease; the key with
the lowest create revision leads, and when its lease dies the next one does. Firing never waits
for the leader; if two nodes briefly both believe they lead, every chore is still a
compare-and-swap, so nothing is done twice.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import TYPE_CHECKING

import structlog

from . import store as st
from .claims import FINAL_STATES
from .errors import StoreError

if TYPE_CHECKING:
    from .daemon import Node

log = structlog.get_logger("etcdcron.leader")

MISSED_SLACK = 2.0  # a firing is judged missed this long after its starting deadline has passed
KEEP_PER_JOB = 20  # finished claims kept per job beyond the deadline window
GC_EVERY = 30.0
MISSED_EVERY = 5.0  # recording a miss is bookkeeping: a few seconds late costs nothing, scanning every job each second does
LOOKBACK = 3600.0  # a new leader looks this far back for unrecorded misses
SCAN_CAP = 1000
COMPACT_EVERY = 300.0
COMPACT_KEEP = 10_000


class LeaderChores:
    def __init__(self, node: "Node") -> None:
        self.node = node
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="leader", daemon=True)
        self._cursor: dict[str, float] = {}
        self._next: dict[str, tuple] = {}  # job -> (cursor, schedule, next firing after the cursor)
        self._last_gc = 0.0
        self._last_missed = -MISSED_EVERY
        self._last_compact = 0.0
        self._compacted = 0
        self.leading = False

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.wait(1.0):
            node = self.node
            leading = node.view.leader() == node.node_id and node.session.valid()
            if leading != self.leading:
                log.info("leader.elected" if leading else "leader.resigned", node=node.node_id)
                self.leading = leading
                self._cursor.clear()
            if not leading:
                continue
            try:
                if node.clock.monotonic() - self._last_missed >= MISSED_EVERY:
                    self._last_missed = node.clock.monotonic()
                    self.record_missed(node.clock.time())
                if node.clock.monotonic() - self._last_gc > GC_EVERY:
                    self._last_gc = node.clock.monotonic()
                    self.collect(node.clock.time())
            except StoreError as exc:
                log.warning("leader.chore_failed", error=str(exc)[:200])

    def record_missed(self, now: float) -> int:
        """Record ``missed`` for every firing past its starting deadline that nobody claimed."""
        view, recorded = self.node.view, 0
        with view.lock:
            jobs = list(view.jobs.values())
        for spec, _rev in jobs:
            if spec.paused or view.exhausted(spec):
                self._cursor.pop(spec.name, None)
                continue
            horizon = now - spec.starting_deadline - MISSED_SLACK
            start = max(self._cursor.setdefault(spec.name, now - spec.starting_deadline - LOOKBACK), spec.active_since)
            if horizon <= start:
                continue
            # most passes find nothing due: remember the job's next firing after the cursor, and only
            # ask croniter again once the horizon has passed it
            due = self._next.get(spec.name)
            if due is None or due[0] != start or due[1] != spec.schedule + spec.tz:
                nxt = spec.next_after(start)
                due = self._next[spec.name] = (start, spec.schedule + spec.tz, nxt)
            if due[2] is None or due[2] > horizon:
                continue
            slots = spec.firings(start, horizon, limit=SCAN_CAP)
            for slot in slots:
                if not view.claimed(spec.name, slot) and self.node.claims.record(spec.name, slot, "missed", recorded_at=now):
                    recorded += 1
                    log.warning("firing.missed", job=spec.name, slot=slot, deadline=spec.starting_deadline)
            self._cursor[spec.name] = slots[-1] if len(slots) == SCAN_CAP else horizon
        return recorded

    def collect(self, now: float) -> int:
        """Delete finished claims older than their job's deadline window, keeping the newest few per job."""
        view = self.node.view
        with view.lock:
            by_job: dict[str, list[int]] = defaultdict(list)
            for (job, slot), c in view.claims.items():
                if c.state in FINAL_STATES:
                    by_job[job].append(slot)
            specs = {name: spec for name, (spec, _) in view.jobs.items()}
            # a backfill in progress relies on its claims to run each firing once: keep them
            shielded = [(job, req["from"], req["to"]) for (job, _), (_, req) in view.backfills.items()]
        doomed: list[str] = []
        for job, slots in by_job.items():
            spec = specs.get(job)
            window = (spec.starting_deadline if spec else 0.0) + 60.0
            slots.sort()
            keep = set(slots[-KEEP_PER_JOB:]) if spec else set()
            doomed += [self.node.keys.claim(job, s) for s in slots if s < now - window and s not in keep
                       and not any(j == job and lo <= s <= hi for j, lo, hi in shielded)]
        for i in range(0, len(doomed), 100):
            self.node.store.txn([], [st.delete(k) for k in doomed[i:i + 100]])
        if doomed:
            log.info("leader.collected", claims=len(doomed))
        self._compact()
        return len(doomed)

    def _compact(self) -> None:
        """Keep etcd's history short: compact to ``COMPACT_KEEP`` revisions behind the head, now and then.
        Watchers further behind re-list (the watch supervisor handles it)."""
        now = self.node.clock.monotonic()
        if now - self._last_compact < COMPACT_EVERY:
            return
        self._last_compact = now
        target = self.node.view.revision - COMPACT_KEEP
        if target > self._compacted:
            try:
                self.node.store.compact(target)
                self._compacted = target
                log.info("leader.compacted", revision=target)
            except StoreError as exc:
                if "compacted" not in str(exc):
                    raise
                self._compacted = target
