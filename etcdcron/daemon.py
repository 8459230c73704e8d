"""One etcdcron node: the timer, the firing path and the watch that keeps the view current.

Threads: the *timer* pops due entries off a heap and never runs a job; a bounded *worker pool*
claims, runs and completes firings; the *watch* feeds the view; the session's *keep-alive*; the
*leader* chores (see :mod:`etcdcron.leader`).

Who runs a firing: every node computes the rendezvous order of the live nodes serving the job's
level for (job, slot). The first claims at the scheduled instant; the one ranked r re-checks at
``slot + r * takeover`` and claims if nobody has. A lost run is recovered the same way, ranked on
(job, slot, attempt).
"""

from __future__ import annotations

import heapq
import itertools
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone

import structlog

from .claims import Claim, Claims, rank
from .clock import Clock, SystemClock
from .errors import StoreError
from .executor import RunContext, run_job
from .jobs import JobSpec
from .keys import Keys
from .leader import LeaderChores
from .nodes import Session
from .store import EtcdStore
from .view import Changes, View

log = structlog.get_logger("etcdcron.node")

CATCHUP_CAP = 100  # at most this many overdue firings per job are picked up on (re)start


@dataclass(order=True)
class _Entry:
    due: float
    seq: int
    kind: str = field(compare=False)  # fire | check | recover
    job: str = field(compare=False)
    slot: int = field(compare=False)
    rev: int = field(compare=False)
    claim: Claim | None = field(compare=False, default=None)
    gen: int = field(compare=False, default=0)


@dataclass
class NodeConfig:
    node_id: str
    levels: tuple[int, ...] = (1, 2, 3)
    ttl: int = 3
    workers: int = 16
    takeover: float = 0.5  # seconds between ranks when the owner does not claim
    grace: float = 30.0  # SIGTERM: how long running jobs may finish
    max_skew: float = 2.0  # refuse to execute when our clock is off etcd's by more than this
    mongo: str | None = None  # MongoDB URI: run history (job_runs) and the analytics builtins


class Node:
    def __init__(self, store: EtcdStore, keys: Keys, config: NodeConfig, clock: Clock | None = None) -> None:
        self.store, self.keys, self.cfg = store, keys, config
        self.clock = clock or SystemClock()
        self.view = View(keys)
        self.session = Session(store, keys, config.node_id, config.levels, config.ttl, self.clock,
                               on_renewed=self._wake, max_skew=config.max_skew)
        self.claims = Claims(store, keys, config.node_id)
        self.pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="worker")
        self.leader = LeaderChores(self)
        self._heap: list[_Entry] = []
        self._seq = itertools.count()
        self._gen: dict[str, int] = {}  # job -> generation of its live chain of "fire" entries
        self._lock = threading.Lock()
        self._wakeup = threading.Event()
        self._stopping = threading.Event()
        self._inflight: set[Future] = set()
        self._timer = threading.Thread(target=self._timer_loop, name="timer", daemon=True)
        self._watch = None
        self.stats = {"claimed": 0, "ran": 0, "fenced_out": 0, "recovered": 0, "lost_claims": 0}

    @property
    def node_id(self) -> str:
        return self.cfg.node_id

    # --- life cycle
    def start(self) -> None:
        self.session.start()
        rev = self._relist()
        self._watch = self.store.watch(self.keys.root, rev + 1, self._on_events, self._relist, name="view")
        self._timer.start()
        self.leader.start()
        log.info("node.started", node=self.node_id, jobs=len(self.view.jobs), nodes=len(self.view.nodes))

    def stop(self, grace: float | None = None) -> None:
        """Hand over: stop claiming, leave the owner set, let runs finish up to ``grace``, revoke."""
        grace = self.cfg.grace if grace is None else grace
        log.info("node.stopping", node=self.node_id, running=len(self._inflight), grace=grace)
        self._stopping.set()
        self._wake()
        self.session.drain()
        with self._lock:
            pending = list(self._inflight)
        deadline = self.clock.monotonic() + grace
        for fut in pending:
            try:
                fut.result(timeout=max(0.0, deadline - self.clock.monotonic()))
            except Exception:  # noqa: BLE001 - timeouts and job errors alike: we are leaving
                pass
        if any(not f.done() for f in pending):
            log.warning("node.grace_expired", node=self.node_id, unfinished=sum(not f.done() for f in pending),
                        note="their claims die with our lease and are recovered elsewhere")
        self.leader.stop()
        if self._watch:
            self._watch.stop()
        self.session.close(revoke=True)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self._timer.join(timeout=2)
        log.info("node.stopped", node=self.node_id, **self.stats)

    def _wake(self) -> None:
        self._wakeup.set()

    # --- the view
    def _relist(self) -> int:
        kvs, rev = self.store.get_prefix(self.keys.root)
        changes = self.view.load(kvs, rev)
        self._react(changes)
        return rev

    def _on_events(self, events, revision: int) -> None:
        self._react(self.view.apply(events, revision))

    def _react(self, ch: Changes) -> None:
        now = self.clock.time()
        for name in ch.jobs:
            found = self.view.job(name)
            if found is None:
                continue  # removed: its heap entries are dropped when popped
            spec, rev = found
            if spec.paused or spec.level not in self.cfg.levels:
                continue
            start = max(now, spec.active_since)
            gen = self._gen[name] = next(self._seq)
            self._push("fire", spec.parsed.next_after(_dt(start)).timestamp(), spec.name, None, rev, gen=gen)
            if ch.relisted:
                self._catch_up(spec, rev, now)
        for claim in ch.lost:
            self._schedule_recovery(claim)
        self._wake()

    def _catch_up(self, spec: JobSpec, rev: int, now: float) -> None:
        """After a (re)start, firings inside the starting deadline that nobody claimed are due now."""
        start = max(now - spec.starting_deadline, spec.active_since)
        if start >= now:
            return
        for t in spec.parsed.firings(_dt(start), _dt(now), limit=CATCHUP_CAP):
            slot = int(t.timestamp())
            if not self.view.claimed(spec.name, slot):
                self._push("check_owner", now, spec.name, slot, rev)

    def _push(self, kind: str, due: float, job: str, slot: int | None, rev: int, claim: Claim | None = None,
              gen: int = 0) -> None:
        entry = _Entry(due, next(self._seq), kind, job, int(due) if slot is None else slot, rev, claim, gen)
        with self._lock:
            heapq.heappush(self._heap, entry)

    # --- the timer
    def _timer_loop(self) -> None:
        while not self._stopping.is_set():
            with self._lock:
                top = self._heap[0] if self._heap else None
                delay = (top.due - self.clock.time()) if top else 1.0
                if top is not None and delay <= 0:
                    heapq.heappop(self._heap)
            if top is None or delay > 0:
                self._wakeup.wait(min(delay, 1.0))
                self._wakeup.clear()
                continue
            try:
                self._due(top)
            except Exception as exc:  # noqa: BLE001 - the timer must survive any one entry
                log.error("timer.entry_failed", job=top.job, slot=top.slot, error=repr(exc)[:300])

    def _due(self, e: _Entry) -> None:
        found = self.view.job(e.job)
        if found is None:
            return
        spec, rev = found
        if rev != e.rev or spec.paused:
            return  # a newer spec has its own entries
        if e.kind == "fire":
            if self._gen.get(e.job) != e.gen:
                return  # a superseded chain (the job was rescheduled)
            nxt = spec.parsed.next_after(_dt(e.slot)).timestamp()
            self._push("fire", nxt, e.job, None, rev, gen=e.gen)
        if e.kind in ("fire", "check_owner"):
            order = self._order(spec, f"{e.job}|{e.slot}")
            if self.node_id not in order:
                return
            r = order.index(self.node_id)
            if r == 0:
                self._submit(self._fire, spec, rev, e.slot)
            else:
                base = e.slot if e.kind == "fire" else self.clock.time()
                self._push("check", base + r * self.cfg.takeover, e.job, e.slot, rev)
        elif e.kind == "check":
            if not self.view.claimed(e.job, e.slot):
                self._submit(self._fire, spec, rev, e.slot)
        elif e.kind == "recover":
            c = self.view.claims.get((e.job, e.slot))
            if c is not None and c.running and c.mod_revision == e.claim.mod_revision and (e.job, e.slot) not in self.view.running:
                self._submit(self._recover, spec, rev, c)

    def _order(self, spec: JobSpec, key: str) -> list[str]:
        nodes = self.view.eligible(spec.level)
        if not self._stopping.is_set() and not self.session.draining and not self.session.skewed \
                and spec.level in self.cfg.levels and self.node_id not in nodes:
            nodes.append(self.node_id)
        if self._stopping.is_set() and self.node_id in nodes:
            nodes.remove(self.node_id)
        return rank(key, nodes)

    def _schedule_recovery(self, c: Claim) -> None:
        found = self.view.job(c.job)
        if found is None:
            return
        spec, rev = found
        order = self._order(spec, f"{c.job}|{c.slot}|{c.attempt}")
        if self.node_id not in order:
            return
        r = order.index(self.node_id)
        self._push("recover", self.clock.time() + r * self.cfg.takeover, c.job, c.slot, rev, claim=c)

    def _submit(self, fn, *args) -> None:
        if self._stopping.is_set():
            return
        fut = self.pool.submit(fn, *args)
        with self._lock:
            self._inflight.add(fut)
        fut.add_done_callback(self._done)

    def _done(self, fut: Future) -> None:
        with self._lock:
            self._inflight.discard(fut)
        exc = fut.exception() if not fut.cancelled() else None
        if exc is not None:
            log.error("worker.failed", error=repr(exc)[:300])

    # --- the firing path (worker threads)
    def _can_claim(self) -> bool:
        return not self._stopping.is_set() and self.session.valid()

    def _fire(self, spec: JobSpec, rev: int, slot: int) -> None:
        if not self._can_claim():
            self.stats["lost_claims"] += 1
            return
        lease = self.session.lease
        try:
            fence = self.claims.claim(spec.name, slot, rev, lease, self.clock.time())
        except StoreError as exc:
            log.warning("firing.claim_failed", job=spec.name, slot=slot, error=str(exc)[:200])
            return
        if fence is None:
            return
        self.stats["claimed"] += 1
        self._run(spec, slot, fence, 1)

    def _recover(self, spec: JobSpec, rev: int, old: Claim) -> None:
        if not self._can_claim():
            return
        skip = spec.on_node_loss == "skip"
        try:
            fence = self.claims.recover(old, rev, self.session.lease, self.clock.time(), skip)
        except StoreError as exc:
            log.warning("firing.recover_failed", job=old.job, slot=old.slot, error=str(exc)[:200])
            return
        if fence is None:
            return
        self.stats["recovered"] += 1
        if skip:
            log.info("firing.lost", job=old.job, slot=old.slot, prev_node=old.node, prev_fence=old.fence)
            return
        log.info("firing.recovered", job=old.job, slot=old.slot, attempt=old.attempt + 1, fence=fence,
                 prev_node=old.node, prev_fence=old.fence)
        self._run(spec, old.slot, fence, old.attempt + 1)

    def _run(self, spec: JobSpec, slot: int, fence: int, attempt: int) -> None:
        # Never early: our claim may have been quick, the instant may not have come by our clock.
        while (wait := slot - self.clock.time()) > 0:
            self._stopping.wait(wait)
        ctx = RunContext(spec.name, slot, self.node_id, fence, attempt, dict(spec.args), self.cfg.mongo)
        log.info("firing.started", job=spec.name, slot=slot, fence=fence, attempt=attempt,
                 lag_ms=round((self.clock.time() - slot) * 1000, 1))
        result = run_job(spec, ctx)
        self.stats["ran"] += 1
        record = {"state": result.state, "attempt": attempt, "started": result.started, "ended": result.ended,
                  "exit_code": result.exit_code, "output": result.output}
        try:
            ok = self.claims.complete(spec.name, slot, fence, record)
        except StoreError as exc:
            log.warning("firing.complete_failed", job=spec.name, slot=slot, fence=fence, error=str(exc)[:200])
            return
        if ok:
            log.info("firing.finished", job=spec.name, slot=slot, fence=fence, state=result.state,
                     exit_code=result.exit_code, seconds=round(result.ended - result.started, 3))
        else:
            self.stats["fenced_out"] += 1
            log.warning("firing.fenced_out", job=spec.name, slot=slot, fence=fence,
                        reason="the claim is no longer ours (lease expired or taken over)")


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)
