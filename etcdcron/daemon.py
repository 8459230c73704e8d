"""One etcdcron node: the timer, the reactions to cluster changes, and the node's life cycle.

Threads: the *timer* pops due entries off a heap and never runs a job; a bounded *worker pool*
runs the firing path (:mod:`etcdcron.firing`); the *watch* feeds the view; the session's
*keep-alive*; the *leader* chores (:mod:`etcdcron.leader`).

What a due timer entry asks of the node is decided by :func:`etcdcron.decide.decide`, a pure
function of the entry and the view; the node carries its actions out. What the node holds of each
firing, and every transition of it, is :class:`etcdcron.firing.Local`'s.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import threading
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

import structlog

from . import decide as dc
from .claims import BATCH, Claim, Claims
from .decide import ClaimNow, Entry, Me, Schedule, Submit, Task
from .clock import Clock, SystemClock
from .errors import StoreError
from .executor import KILL_GRACE, RunPolicy
from .firing import Firing
from .history import History, NoHistory
from .jobs import KINDS, JobSpec
from .keys import Keys
from .leader import LeaderChores
from .metrics import Metrics
from .nodes import Session
from .states import Phase
from .store import TXN_OPS, EtcdStore
from .view import Changes, View
from .workers import Workers

log = structlog.get_logger("etcdcron.node")

SWEEP_EVERY = 2.0  # seconds between sweeps for claims and completions whose answers were lost
CLAIMERS = 8  # threads that claim the firings due now (apart from the workers that run them)
CHECK_LINGER = 0.5  # a due takeover check waits this long for others, to read them in one round trip


@dataclass
class NodeConfig:
    node_id: str
    levels: tuple[int, ...] = (1, 2, 3)
    ttl: int = 3
    workers: int = 16
    takeover: float = 0.4  # seconds between ranks when the owner does not act (not a divisor of 1 s: rank
    # checks then fall between the bursts of every-second jobs)
    claim_ahead: float = 0.2  # claim this long before the instant, so that the run starts on time
    claim_window: float = 0.3  # when a claim falls due, the claims due this much later are made with it
    # (one round trip for firings spread across the second: jitter, @every offsets)
    grace: float = 30.0  # SIGTERM: how long running jobs may finish
    max_skew: float = 2.0  # refuse to execute when our clock is off etcd's by more than this
    mongo: str | None = None  # MongoDB URI: run history (job_runs) and the analytics builtins
    # What this node lets jobs do (see etcdcron.executor.RunPolicy): a job of another kind, or an HTTP
    # job calling another host, is claimed and recorded `refused`, not run.
    allow_kinds: frozenset[str] = field(default_factory=lambda: frozenset(KINDS))
    pass_env: tuple[str, ...] = ()  # daemon variables shell jobs see (all others never reach them)
    http_allow: tuple[str, ...] = ()  # hosts HTTP jobs may call; empty: any


def _trim() -> None:
    """Give the heap's free memory back to the system (glibc's ``malloc_trim``; elsewhere nothing).
    A relist of 1,000,000 jobs holds every key at once; once the view is built, glibc keeps most of
    that freed memory mapped, ~200 bytes per job of resident memory for nothing (bench/scale.py)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Node:
    def __init__(self, store: EtcdStore, keys: Keys, config: NodeConfig, clock: Clock | None = None,
                 history: History | None = None, on_drain: Callable[[], None] | None = None,
                 metrics: Metrics | None = None) -> None:
        self.store, self.keys, self.cfg = store, keys, config
        self.clock = clock or SystemClock()
        self.view = View(keys)
        self.history = history or NoHistory()
        self.metrics = metrics or Metrics.off()
        if self.metrics.enabled:
            store.on_error = self.metrics.etcd_error
        self.session = Session(store, keys, config.node_id, config.levels, config.ttl, self.clock,
                               on_renewed=self._wake, max_skew=config.max_skew, on_lease_lost=self._lease_lost)
        self.claims = Claims(store, keys, config.node_id, on_record=self._recorded, metrics=self.metrics)
        self.policy = RunPolicy(frozenset(config.allow_kinds), tuple(config.pass_env), tuple(config.http_allow))
        self.firing = Firing(self)
        self.pool = Workers(config.workers)
        # claims never queue behind runs: under overload the runs queue, and a claim made late finds
        # its job's previous run still queued and is skipped, which feeds the queue (issue 11)
        self.claimer = Workers(CLAIMERS, name="claimer")
        self.leader = LeaderChores(self)
        self.on_drain = on_drain
        self.stopping = threading.Event()
        self._heap: list[Entry] = []
        self._fires: list[Entry] = []  # the FIRE entries, apart: the timer takes them in windows
        self._checks: list[Entry] = []  # the CHECK entries, apart: taken together once the first has lingered
        self._seq = itertools.count()
        self._gen: dict[str, int] = {}  # job -> generation of its live chain of "fire" entries
        self._seen: set[tuple] = set()  # control requests already scheduled here
        self._lock = threading.Lock()
        self._starts_direct = False  # stopping: claimed firings go to the pool at once, not to the heap
        f = self.firing
        self._work = {Task.START: f.start, Task.RESOLVE: f.resolve, Task.RECOVER: f.recover, Task.CATCHUP: f.catch_up,
                      Task.TRIGGER: f.trigger, Task.BACKFILL: f.backfill, Task.LATER: lambda fn, args: fn(*args)}
        self._wakeup = threading.Event()
        self._timer = threading.Thread(target=self._timer_loop, name="timer", daemon=True)
        self._watch = None
        self._draining = False
        self._next_sweep = 0.0
        self._timer_tick = 0.0  # monotonic: the timer loop's last turn (0: not started), for /healthz
        self.stats = {"claimed": 0, "ran": 0, "fenced_out": 0, "recovered": 0}

    @property
    def node_id(self) -> str:
        return self.cfg.node_id

    # --- life cycle
    def start(self) -> None:
        self.session.start()
        rev = self._relist(initial=True)
        # the per-firing keys are not watched: a node reads what it needs of them (see etcdcron.view)
        self._watch = self.store.watch(self.keys.root, rev + 1, self._on_events, self._relist, name="view",
                                       exclude=(self.keys.claims(), self.keys.runnings))
        self._timer.start()
        self.leader.start()
        self.metrics.bind(self)
        log.info("node.started", node=self.node_id, jobs=len(self.view.jobs), nodes=len(self.view.nodes),
                 allow_kinds=",".join(sorted(self.policy.allow_kinds)), pass_env=",".join(self.policy.pass_env),
                 http_allow=",".join(self.policy.http_allow) or "any")

    def stop(self, grace: float | None = None) -> None:
        """Hand over (DESIGN §4.5, §4.6): stop claiming, leave the owner set, let runs finish up to
        ``grace``; then stop what still runs (process group SIGTERM, SIGKILL after the kill grace),
        record it ``interrupted`` (it runs again elsewhere), and only then revoke the lease."""
        grace = self.cfg.grace if grace is None else grace
        held = self.firing.local
        log.info("node.stopping", node=self.node_id, held=len(held), grace=grace)
        self.stopping.set()
        self._wake()
        self.session.drain()
        self._timer.join(timeout=2)
        with self._lock:  # firings claimed ahead of their instant still run, within the grace
            self._starts_direct = True
            starts = sorted(e for e in self._heap if e.kind is Task.START)
            self._heap.clear()
            self._fires.clear()
            self._checks.clear()
        for e in starts:
            self._due(e, [])
        # runs, and claims in flight whose runs are still to be queued; completions until acknowledged
        if not self._wait_held(self.clock.monotonic() + grace):
            n = self.firing.stop_runs(lambda h: True, "shutdown")
            log.warning("node.grace_expired", node=self.node_id, stopping=n,
                        note="stopped and recorded interrupted: they run again elsewhere")
            if not self._wait_held(self.clock.monotonic() + KILL_GRACE + 2.0):
                log.warning("node.runs_unrecorded", node=self.node_id,
                            firings=[(h.job, h.slot, h.phase) for h in held.select()][:10],
                            note="their running keys go with our lease: others recover them")
        if not self.claims.flush(1.0):
            log.warning("node.completions_unsent", node=self.node_id)
        self.history.flush(5.0)
        self.leader.stop()
        if self._watch:
            self._watch.stop()
        if self._draining:
            try:
                self.store.delete(self.keys.drain(self.node_id))
            except StoreError:
                pass
        self.session.close(revoke=True)
        self.pool.shutdown()
        self.claimer.shutdown()
        log.info("node.stopped", node=self.node_id, **self.stats)

    def _wait_held(self, deadline: float) -> bool:
        """Wait until this node holds nothing, re-sending completions whose answer was lost (the timer
        and its sweep are gone); False at ``deadline``."""
        while not self.firing.local.wait_empty(min(1.0, max(0.0, deadline - self.clock.monotonic()))):
            if self.clock.monotonic() >= deadline:
                return False
            self.firing.resend_unacked()
        return True

    def _lease_lost(self, lease: int) -> None:
        """Our lease is gone (or must be assumed gone): its claims may be taken over at any moment,
        so their runs stop now, without a grace (DESIGN §4.7)."""
        self.metrics.etcd_error("lease_lost")
        n = self.firing.stop_runs(lambda h: h.lease == lease, "lease_lost", grace=0.0)
        log.warning("node.runs_stopped", node=self.node_id, lease=f"{lease:x}", runs=n, reason="lease lost")

    def can_claim(self) -> bool:
        return not self.stopping.is_set() and self.session.valid()

    # --- probes (/healthz, /readyz) and what metrics read when scraped
    def health(self) -> tuple[bool, str]:
        """Liveness: the timer and the keep-alive loops turned recently. A node that stops stays live:
        a restart would cut its grace short."""
        if self.stopping.is_set():
            return True, "stopping"
        if not self._timer_tick:
            return True, "starting"
        now, limit = self.clock.monotonic(), max(3.0 * self.cfg.ttl, 10.0)
        for loop, at in (("timer", self._timer_tick), ("keep-alive", self.session.ticked)):
            if now - at > limit:
                return False, f"the {loop} loop has not turned for {now - at:.0f} s (limit {limit:.0f} s)"
        return True, "ok"

    def readiness(self) -> tuple[bool, str]:
        """Readiness: the node holds a valid lease, its view is synced, its clock is within the skew
        limit, and it is not draining; else why not, in one line."""
        if self.stopping.is_set():
            return False, "draining: stopping, running jobs finish within the grace"
        if self._draining or self.session.draining:
            return False, "draining: asked to (etcdcron nodes drain)"
        if not self._timer_tick:
            return False, "starting"
        if not self.session.clock_trusted():
            return False, f"clock skewed: off etcd's by more than {self.cfg.max_skew:g} s (or it stepped)"
        if not self.session.valid():
            return False, "no valid lease: etcd unreachable, or the lease was lost and is being renewed"
        if self._watch is None or not self._watch.live:
            return False, "view not synced: the watch is reconnecting"
        return True, "ok"

    def runs_running(self) -> int:
        return len(self.firing.local.select(lambda h: h.phase is Phase.RUNNING))

    def _wake(self) -> None:
        self._wakeup.set()

    # --- the view and reactions to it
    def _relist(self, initial: bool = False) -> int:
        if not initial:  # the watch lost its place (compaction, cancellation)
            self.metrics.relists.inc()
        kvs, rev = self.store.get_prefix(self.keys.root)
        self._seen.clear()
        changes = self.view.load(kvs, rev)
        del kvs
        self._react(changes)
        _trim()  # the listing's memory (a few hundred bytes per key) back to the system
        return rev

    def _on_events(self, events, revision: int) -> None:
        self.metrics.watch_events.inc(len(events))
        self._react(self.view.apply(events, revision))

    def _react(self, ch: Changes) -> None:
        now = self.clock.time()
        with self.view.lock:  # taken once, not once per job (a relist of 1,000,000 jobs)
            found = [(name, self.view.jobs.get(name)) for name in ch.jobs]
        fires: list[Entry] = []
        for name, job in found:
            if job is None:
                continue  # removed: its heap entries are dropped when popped
            spec, rev = job
            if spec.paused or spec.level not in self.cfg.levels:
                continue
            gen = self._gen[name] = next(self._seq)
            nxt = spec.next_after(max(now, spec.active_since))
            if nxt is not None:
                fires.append(Entry(dc.claim_time(spec, int(nxt), self.cfg.claim_ahead), next(self._seq), Task.FIRE,
                                   name, int(nxt), rev, None, gen))
            if ch.relisted and self._overdue(spec, now):
                self._push_ranked(Task.CATCHUP, f"{name}|catchup", spec, now, int(now), rev)
        if fires:
            with self._lock:
                if len(fires) > len(self._fires) // 8:  # a relist: one heapify, not a push per job
                    self._fires.extend(fires)
                    heapq.heapify(self._fires)
                else:  # a few jobs changed: a heapify of a million entries per change would be O(jobs)
                    for entry in fires:
                        heapq.heappush(self._fires, entry)
        for claim in ch.lost:
            self.retry_recovery(claim, 0.0)
        for lease, revision in ch.dead:
            self.submit(self.firing.find_lost, lease, revision, urgent=True)
        for lease, revision in ch.unmarked:
            self.submit(self.firing.find_lost, lease, revision, True, urgent=True)
        if ch.handed:
            self.submit(self.firing.check_lost, ch.handed, urgent=True)
        if ch.control:
            self._react_control(now)
        if ch.jobs or ch.lost or ch.control or ch.relisted:  # something may have gone on the heap
            self._wake()

    def _react_control(self, now: float) -> None:
        v = self.view
        with v.lock:
            kills = dict(v.kills)
            degraded, kill_degraded = set(v.degrade.get("levels", ())), bool(v.degrade.get("kill"))
            triggers = dict(v.triggers)
            backfills = dict(v.backfills)
            drained = self.node_id in v.drains
        if kills:
            self.firing.stop_runs(lambda h: h.job in kills and h.fence < kills[h.job], "kill")
        if degraded and kill_degraded:
            self.firing.stop_runs(lambda h: h.level in degraded, "degrade")
        for job, (trev, _req) in triggers.items():
            if ("trigger", job, trev) not in self._seen and (found := v.job(job)):
                self._seen.add(("trigger", job, trev))
                self._push_ranked(Task.TRIGGER, f"{job}|trigger|{trev}", found[0], now, int(now), found[1], extra=(trev,))
        for (job, ident), (brev, _req) in backfills.items():
            if ("backfill", job, ident, brev) not in self._seen and (found := v.job(job)):
                self._seen.add(("backfill", job, ident, brev))
                self._push_ranked(Task.BACKFILL, f"{job}|backfill|{ident}", found[0], now, 0, found[1], extra=(ident, brev))
        if drained and not self._draining:
            self._draining = True
            log.info("node.drain_requested", node=self.node_id)
            if self.on_drain:
                self.on_drain()
            else:
                threading.Thread(target=self.stop, name="drain", daemon=True).start()

    @staticmethod
    def _overdue(spec: JobSpec, now: float) -> bool:
        """May the job have a firing inside its starting deadline before now? (One memoised step; the
        catch-up task itself decides what of it to run, see :meth:`overdue`.)"""
        first = spec.next_after(int(max(now - spec.starting_deadline - spec.jitter, spec.active_since)))
        return first is not None and first <= now

    def overdue(self, spec: JobSpec, now: float) -> list[int]:
        """The job's firings whose start time (jitter included) has come, inside the starting deadline."""
        start = max(now - spec.starting_deadline - spec.jitter, spec.active_since)
        return [s for s in spec.firings(start, now, limit=100_000)
                if now - spec.starting_deadline <= self.start_time(spec, s) <= now]

    @staticmethod
    def start_time(spec: JobSpec, slot: int) -> float:
        """When a firing's run starts: its instant plus the job's jitter (alike on every node)."""
        return dc.start_time(spec, slot)

    def me(self) -> Me:
        """This node as the decisions see it, now."""
        return Me(self.node_id, not (self.stopping.is_set() or self.session.draining or self.session.skewed),
                  self.cfg.levels, self.cfg.takeover, self.cfg.claim_ahead, self.cfg.ttl + 1.0)

    def schedule_start(self, spec: JobSpec, slot: int, fence: int, reason: str) -> None:
        """A claimed firing: its run is handed to the pool at its start time (at once once we are
        stopping: the timer is gone, and the run waits for its start time itself)."""
        with self._lock:
            if not self._starts_direct:
                heapq.heappush(self._heap, Entry(self.start_time(spec, slot), next(self._seq), Task.START, spec.name,
                                                  slot, 0, extra=(spec, fence, reason)))
                direct = False
            else:
                direct = True
        if direct:
            self._queued(spec.name, slot)
            self.submit(self.firing.start, spec, slot, fence, reason, claimed=True)
        self._wake()

    def call_later(self, delay: float, fn, *args) -> None:
        """Call ``fn(*args)`` on the claimers after ``delay`` (a read to try again)."""
        self._push(Task.LATER, self.clock.time() + delay, "", 0, 0, extra=(fn, args))

    def schedule_resolve(self, todo: list, tries: int, delay: float) -> None:
        """Claims whose answer was lost: sent again after ``delay``."""
        if todo:
            self._push(Task.RESOLVE, self.clock.time() + delay, todo[0][1].job, todo[0][1].slot, 0, extra=(todo, tries))
            self._wake()

    def _push(self, kind: Task, due: float, job: str, slot: int, rev: int, claim: Claim | None = None,
              gen: int = 0, extra: tuple = ()) -> None:
        entry = Entry(due, next(self._seq), kind, job, slot, rev, claim, gen, extra)
        with self._lock:
            heap = self._fires if kind is Task.FIRE else self._checks if kind is Task.CHECK else self._heap
            heapq.heappush(heap, entry)
            first = heap[0] is entry
        if first:  # due before whatever the timer sleeps for
            self._wake()

    def _push_ranked(self, kind: Task, key: str, spec: JobSpec, base: float, slot: int, rev: int,
                     claim: Claim | None = None, extra: tuple = ()) -> None:
        """Schedule a task at ``base + rank * takeover`` if this node serves the job at all."""
        self._carry_out(dc.ranked(self.view, self.me(), kind, key, spec, base, slot, rev, claim, extra), [])

    def retry_claim_at_instant(self, spec: JobSpec, rev: int, slot: int) -> None:
        """Our claim made ahead found the job's run in the way (``forbid``): claim again at the start
        time (on the main heap: not held back with the takeover checks)."""
        entry = Entry(self.start_time(spec, slot), next(self._seq), Task.CHECK, spec.name, slot, rev)
        with self._lock:
            heapq.heappush(self._heap, entry)
        self._wake()

    def retry_recovery(self, c: Claim, delay: float) -> None:
        if self.stopping.is_set():
            return  # the others recover it
        found = self.view.job(c.job)
        if found is not None:
            self._push_ranked(Task.RECOVER, f"{c.job}|{c.slot}|{c.attempt}", found[0], self.clock.time() + delay,
                              c.slot, found[1], claim=c)

    # --- the timer
    def _timer_loop(self) -> None:
        while not self.stopping.is_set():
            self._timer_tick = self.clock.monotonic()
            now = self.clock.time()
            with self._lock:
                due: list[Entry] = []
                while self._heap and self._heap[0].due <= now:
                    due.append(heapq.heappop(self._heap))
                paired = self._take_checks(now, due, self._take_fires(now, due))
                delay = min(self._heap[0].due if self._heap else now + 1.0,
                            self._fires[0].due if self._fires else now + 1.0,
                            self._checks[0].due + CHECK_LINGER if self._checks else now + 1.0) - now
            if self.clock.monotonic() >= self._next_sweep:
                self._next_sweep = self.clock.monotonic() + SWEEP_EVERY
                self.submit(self.firing.adopt_orphans)
            if not due:
                self._wakeup.wait(min(delay, 1.0))
                self._wakeup.clear()
                continue
            batch: list[tuple[JobSpec, int, int]] = []
            for entry in due:
                try:
                    self._due(entry, batch)
                except Exception as exc:  # noqa: BLE001 - the timer must survive any one entry
                    log.error("timer.entry_failed", job=entry.job, slot=entry.slot, error=repr(exc)[:300])
            # everything due now is claimed in a few round trips, not one per firing. Takeovers alone go
            # as many as one read can check (most are claimed already: few claims follow); with the
            # owners' claims, in order, so that a job's takeover precedes its next firing's claim
            groups = [(batch, BATCH)] if paired else [([b for b in batch if b[3]], BATCH),
                                                          ([b for b in batch if not b[3]], TXN_OPS)]
            for group, size in groups:
                for i in range(0, len(group), size):
                    self.submit(self.firing.fire_batch, group[i:i + size], self.clock.monotonic(), urgent=True)

    def _take_fires(self, now: float, due: list[Entry]) -> set[str]:
        """Once a claim is due, take with it those due within the claim window, so that firings spread
        across the second share a round trip; each still runs at its own start time. An at-most-once
        job (``--on-node-loss skip``) is claimed at its start only (see :func:`decide.claim_time`):
        taking stops at the first of them. Returns the ``forbid`` jobs taken (see :meth:`_take_checks`).
        Called with the lock held."""
        fires, jobs = self._fires, set()
        if not fires or fires[0].due > now:
            return jobs
        horizon = now + self.cfg.claim_window
        while fires and (fires[0].due <= now or (fires[0].due <= horizon and self._ahead_ok(fires[0].job))):
            if (found := self.view.jobs.get(fires[0].job)) is not None and found[0].concurrency == "forbid":
                jobs.add(fires[0].job)
            due.append(heapq.heappop(fires))
        return jobs

    def _take_checks(self, now: float, due: list[Entry], claiming: set[str]) -> bool:
        """Once the first takeover check has waited :data:`CHECK_LINGER`, take every check due by now:
        whether their firings are claimed is read in one round trip (spread firings would otherwise
        cost a read each). A takeover a little late is harmless, but not past its job's next claim:
        a ``forbid`` job's next firing, claimed first, would have it skipped. So the checks of the
        ``forbid`` jobs whose claims are taken now (``claiming``), due within the claim window, go
        with them, ahead of them; True if there are such. Called with the lock held."""
        checks = self._checks
        if checks and checks[0].due + CHECK_LINGER <= now:
            while checks and checks[0].due <= now:
                due.append(heapq.heappop(checks))
        if claiming and checks:
            horizon = now + self.cfg.claim_window
            paired = [e for e in checks if e.due <= horizon and e.job in claiming]
            if paired:
                self._checks = checks = [e for e in checks if not (e.due <= horizon and e.job in claiming)]
                heapq.heapify(checks)
                due[:0] = sorted(paired)
                return True
        return False

    def _ahead_ok(self, job: str) -> bool:
        found = self.view.jobs.get(job)
        return found is not None and found[0].on_node_loss != "skip"

    def _recorded(self, job: str, slot: int, record: dict) -> None:
        """A final record this node wrote: into the history, and counted by outcome and level."""
        self.history.write(job, slot, record)
        if not self.metrics.enabled:
            return
        level = record.get("level")
        if level is None:
            found = self.view.job(job)
            level = found[0].level if found else 0
        self.metrics.firing(record.get("state", "?"), level)

    def _due(self, e: Entry, batch: list) -> None:
        self._carry_out(dc.decide(e, self.view, self.me(), self._gen.get(e.job)), batch)

    def _carry_out(self, actions: list, batch: list) -> None:
        for a in actions:
            if isinstance(a, ClaimNow):
                batch.append((a.spec, a.rev, a.slot, a.owner))
            elif isinstance(a, Schedule):
                self._push(a.kind, a.due, a.job, a.slot, a.rev, a.claim, a.gen, a.extra)
            elif isinstance(a, Submit):
                if a.kind is Task.START:
                    self._queued(a.args[0].name, a.args[1])
                self.submit(self._work[a.kind], *a.args, claimed=a.kind is Task.START,
                            urgent=a.kind in (Task.RESOLVE, Task.LATER))

    def _queued(self, job: str, slot: int) -> None:
        """Stamp a held firing whose run goes to the pool now (how long it waits there may shed it)."""
        held = self.firing.local.get(job, slot)
        if held is not None:
            held.queued = self.clock.monotonic()

    def submit(self, fn, *args, claimed: bool = False, urgent: bool = False) -> None:
        """Queue work on the pool (``urgent``: on the claimers); once stopping, only the runs of
        firings already claimed."""
        if self.stopping.is_set() and not claimed:
            return
        (self.claimer if urgent else self.pool).submit(fn, *args).add_done_callback(self._done)

    @staticmethod
    def _done(fut: Future) -> None:
        exc = fut.exception() if not fut.cancelled() else None
        if exc is not None:
            log.error("worker.failed", error=repr(exc)[:300])
