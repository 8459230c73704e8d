"""The firing path, on worker threads: claim under the job's policies, run with retries, complete.

One owner for what this node holds: :class:`Local`, a table of :class:`Held` firings keyed by
(job, slot). A firing enters it *before* its claim is sent and leaves it only when its outcome is
known (acknowledged, fenced out, or given up), so no two paths on one node ever run one firing, and
the sweep that adopts orphaned claims (answers lost) never races the path that made them::

                      claim sent                 ours (CLAIMED / RESOLVED)
    (absent) ──────────▶ CLAIMING ───────────────────────────▶ CLAIMED ──start time──▶ RUNNING
       ▲                   │  ▲ │ answer lost                     │                     │ run ended
       │  taken, skipped,  │  │ ▼                                 │ cancelled before    ▼
       ├──── changed … ────┘  UNRESOLVED ─(sent again until       │ it started     COMPLETING
       │                      known or past the deadline)          │                 │  ▲ answer lost:
       │                                                           ▼                 │  └ sent again
       └─────────────── outcome acknowledged / fenced out / dropped ◀────────────────┘

Stopping a held firing (kill, replace, degrade --kill, shutdown at grace expiry, lease lost) sets
its :class:`~etcdcron.executor.Cancel`. A run stopped by its node's shutdown is recorded
``interrupted`` and run again elsewhere, like a run whose node died (DESIGN §4.4, §4.6).

Everything that decides is a compare-and-swap (see :mod:`etcdcron.claims`); what a node believes
from its view only decides what to *try*.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

import structlog

from . import store as st
from .claims import Claim, ClaimRecord, ClaimRequest, Outcome, unit_hash
from .errors import StoreCompacted, StoreError
from .executor import KILL_GRACE, Cancel, RunContext, RunResult, run_job
from .jobs import JobSpec
from .keys import Kind
from .states import NON_RUNS, Phase, State, Why
from .view import lost_in

if TYPE_CHECKING:
    from .daemon import Node

log = structlog.get_logger("etcdcron.firing")

MAX_BACKOFF = 300.0
LATE = 1.0  # a scheduled run starting later than this is logged as a warning
BLOCKED_WAIT = 3600.0  # how long a catch-up or backfill firing waits for a running run to end
RESOLVE_BACKOFF = (0.2, 0.5, 1.0)  # re-sending a claim whose answer was lost (then every second)
ORPHAN_READS = 60  # orphans confirmed per round trip (two reads each; etcd allows 128 operations)
SHED_AFTER_QUEUED = 0.1  # a run (a claim) that waited less than this for a worker (a claimer) is never shed
ETCD_SLOW = 0.5  # a claim round trip this long means etcd, not this node, holds the claims up: no shedding
MIN_RESOLVE_WINDOW = 30.0  # a claim for a past firing (backfill, trigger) is re-sent at least this long
ORPHAN_SCAN_EVERY = 30.0  # seconds between reads of running/ for claims of ours no path holds
ORPHAN_SCAN_AFTER = 60.0  # ... and after giving a claim up unresolved, at every sweep for this long
FOLLOW_EVERY = 2.0  # seconds between reads of the runs of a node that left without a lease mark
REPLACE_POLL = 0.1  # seconds between reads while a replace waits for the runs it replaced to stop
BLOCKED_POLL = 1.0  # seconds between reads while a catch-up or backfill waits for a forbid run to end


@dataclass(eq=False)
class Held:
    """A firing this node holds, from its claim being sent until its outcome is known."""

    job: str
    slot: int
    level: int
    lease: int  # the lease the claim was (or is being) made on
    phase: Phase = Phase.CLAIMING
    fence: int = 0  # the claim's revision (a retry raises it)
    run_fence: int = 0  # create revision of our running key
    cancel: Cancel = field(default_factory=Cancel)
    unacked: tuple | None = None  # a completion whose answer was lost: its arguments, to send again
    queued: float = 0.0  # monotonic: when its run was handed to the worker pool (0: run directly)
    picked: float = 0.0  # monotonic: when a worker took it up


class Local:
    """The firings this node holds (see the module's diagram). Every transition goes through here."""

    def __init__(self) -> None:
        self._held: dict[tuple[str, int], Held] = {}
        self._cond = threading.Condition()

    def enter(self, job: str, slot: int, level: int, lease: int) -> Held | None:
        """Start holding a firing (before claiming it); None if this node holds it already."""
        with self._cond:
            if (job, slot) in self._held:
                return None
            held = self._held[(job, slot)] = Held(job, slot, level, lease)
            return held

    def get(self, job: str, slot: int) -> Held | None:
        with self._cond:
            return self._held.get((job, slot))

    def known(self, job: str, slot: int) -> bool:
        with self._cond:
            return (job, slot) in self._held

    def leave(self, held: Held) -> None:
        with self._cond:
            if self._held.get((held.job, held.slot)) is held:
                del self._held[(held.job, held.slot)]
            self._cond.notify_all()

    def select(self, match: Callable[[Held], bool] = lambda h: True) -> list[Held]:
        with self._cond:
            return [h for h in self._held.values() if match(h)]

    def wait_empty(self, timeout: float, ignore: frozenset = frozenset({Phase.UNRESOLVED})) -> bool:
        """Wait until nothing is held (but ``ignore``'s phases); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: all(h.phase in ignore for h in self._held.values()), timeout)

    def __len__(self) -> int:
        with self._cond:
            return len(self._held)


class LogQuota:
    """Log lines of one kind one by one up to ``each`` per ``period`` seconds; beyond, they are
    counted and said in one summary line when the period ends. Under overload a node sheds and skips
    hundreds of firings a second (each also recorded in etcd and counted in the metrics): a log line
    for each would be a flood and a cost of its own."""

    def __init__(self, event: str, each: int = 20, period: float = 10.0) -> None:
        self.event, self.each, self.period = event, each, period
        self._lock = threading.Lock()
        self._start = float("-inf")
        self._n = 0
        self._quiet = 0

    def allow(self, now: float) -> bool:
        """Whether this occurrence is logged one by one (``now`` monotonic)."""
        with self._lock:
            if now - self._start >= self.period:
                if self._quiet:
                    log.warning(f"{self.event}.summary", unlogged=self._quiet, seconds=round(now - self._start, 1),
                                note=f"more {self.event} than {self.each} in {self.period:g} s: the rest were not "
                                     "logged one by one (each is recorded in etcd and counted in the metrics)")
                self._start, self._n, self._quiet = now, 0, 0
            self._n += 1
            if self._n > self.each:
                self._quiet += 1
                return False
            return True


class Firing:
    def __init__(self, node: "Node") -> None:
        self.node = node
        self.claims = node.claims
        self.view = node.view
        self.local = Local()
        self._shed_log = LogQuota("firing.shed")
        self._in_etcd: dict[int, float] = {}  # claimer thread -> when its claim round trip began
        self._not_run_log = LogQuota("firing.not_run")
        self._gave_up = float("-inf")  # monotonic: when a claim was last given up unresolved
        self._scanned = float("-inf")  # monotonic: the last read of running/ for orphans

    # --- stopping runs
    def stop_runs(self, match: Callable[[Held], bool], reason: str, grace: float = KILL_GRACE) -> int:
        """Stop every held firing (claimed or running) for which ``match(held)`` is true."""
        n = 0
        for held in self.local.select(lambda h: h.phase in (Phase.CLAIMED, Phase.RUNNING)):
            if match(held) and held.cancel.stop(reason, grace):
                n += 1
                log.info("run.stopping", job=held.job, slot=held.slot, fence=held.fence, reason=reason)
        return n

    def deadline(self, spec: JobSpec, slot: int) -> float:
        """Until when a claim of the firing is worth re-sending: its starting deadline, from its start time."""
        return self.node.start_time(spec, slot) + spec.starting_deadline

    # --- one firing, claimed alone (catch-up, triggers, backfills)
    def fire(self, spec: JobSpec, rev: int, slot: int, reason: str = "schedule", over: Claim | None = None,
             wait_blocked: bool = False, extra_cmp=(), extra_ops=()) -> str:
        """Try to run one firing; returns what happened (ran, taken, skipped, degraded, …)."""
        node = self.node
        # a catch-up, trigger or backfill firing may be past its own deadline already: give it a while
        until = max(self.deadline(spec, slot), node.clock.time() + MIN_RESOLVE_WINDOW)
        tries = 0
        while True:
            if not node.can_claim():
                return "not-claiming"
            if spec.level in self.view.degraded():
                self._degraded(spec, slot)
                return "degraded"
            if self.view.exhausted(spec):
                return Why.EXHAUSTED
            held = self.local.enter(spec.name, slot, spec.level, node.session.lease)
            if held is None:
                return "held"
            try:
                out = self.claims.claim(spec.name, slot, rev, held.lease, node.clock.time(),
                                        concurrency=spec.concurrency, max_runs=spec.max_runs, over=over,
                                        reason=reason, extra_cmp=extra_cmp, extra_ops=extra_ops)
            except StoreError as exc:
                # the claim may have committed: send it again until we know (DESIGN §4.8)
                self.local.leave(held)
                if node.clock.time() > until:
                    log.warning("firing.unresolved", job=spec.name, slot=slot, error=str(exc)[:200],
                                then="given up: past its deadline")
                    self._gave_up = node.clock.monotonic()
                    return "error"
                log.info("firing.claim_unresolved", job=spec.name, slot=slot, error=str(exc)[:200])
                node.stopping.wait(RESOLVE_BACKOFF[min(tries, len(RESOLVE_BACKOFF) - 1)])
                tries += 1
                continue
            if out.why == Why.BLOCKED and wait_blocked:
                self.local.leave(held)
                if not self._wait_runs_end(spec.name, BLOCKED_WAIT, BLOCKED_POLL):
                    return "blocked"
                continue
            break
        if out.why == Why.BLOCKED:
            self.local.leave(held)
            self._skip(spec, slot, out)
            return State.SKIPPED
        if not out:
            self.local.leave(held)
            return out.why
        node.stats["claimed"] += 1
        self._claimed(held, out)
        self.start(spec, slot, out.fence, reason, run_fence=out.run_fence)
        return "ran"

    # --- the firings due at one instant, claimed together
    def fire_batch(self, items: list[tuple[JobSpec, int, int, bool]], queued: float = 0.0) -> None:
        """The firings due at one instant that this node owns: claimed in one round trip, then run
        on the worker pool. ``items`` are (spec, rev, slot, owner); ``queued`` (monotonic) is when the
        batch was handed to the claimers: one that waited for a claimer sheds its owner's firings that
        are already late by the job's policy (see :meth:`_late`), unless etcd is what held the
        claimers (an election is invisible to the schedule, §4.8)."""
        node = self.node
        if not node.can_claim():
            return
        # judged before the takeovers' read: time spent in etcd never sheds (§4.8)
        degraded, now = self.view.degraded(), node.clock.time()
        waited = bool(queued) and node.clock.monotonic() - queued >= SHED_AFTER_QUEUED and not self._etcd_slow()
        items = self._unclaimed_takeovers(items)
        todo: list[tuple[JobSpec, ClaimRequest, Held]] = []
        shed: list[tuple[JobSpec, int, State, dict]] = []
        for spec, rev, slot, owner in items:
            if spec.level in degraded:
                shed.append((spec, slot, State.DEGRADED, {"level": spec.level}))
            elif waited and owner and (late := self._late(spec, slot, now, "a claimer")):
                shed.append((spec, slot, late[0], {"reason": late[1]}))
            elif not self.view.exhausted(spec):
                held = self.local.enter(spec.name, slot, spec.level, node.session.lease)
                if held is not None:
                    todo.append((spec, ClaimRequest(spec.name, slot, rev, spec.concurrency, spec.max_runs), held))
        self._record_many(shed)
        self._claim_batch(todo, 0)

    def _unclaimed_takeovers(self, items: list[tuple[JobSpec, int, int, bool]]) -> list[tuple[JobSpec, int, int, bool]]:
        """Leave out the ranked takeovers whose firing is claimed already: read, in one round trip for
        the batch, not claimed (a compare-and-swap that fails is a write through etcd's log, and the
        view no longer mirrors the claims). Unreadable: all are claimed, each a compare-and-swap."""
        keys = [self.node.keys.claim(spec.name, slot) for spec, _, slot, owner in items if not owner]
        if not keys:
            return items
        me = threading.get_ident()
        self._in_etcd[me] = self.node.clock.monotonic()  # a slow read holds the claimers up too (_etcd_slow)
        try:
            exists = iter(self.node.store.exists_many(keys))
        except StoreError:
            return items
        finally:
            self._in_etcd.pop(me, None)
        return [it for it in items if it[3] or not next(exists)]

    def resolve(self, todo: list[tuple[JobSpec, ClaimRequest, Held]], tries: int) -> None:
        """Send again the claims whose answer was lost, until each is known or past its deadline."""
        now, keep = self.node.clock.time(), []
        for spec, req, held in todo:
            if not self.node.can_claim() or now > self.deadline(spec, req.slot):
                self.local.leave(held)  # if it had committed, the sweep adopts it (or its lease dies with us)
                self._gave_up = self.node.clock.monotonic()
                log.warning("firing.unresolved", job=req.job, slot=req.slot, then="given up")
            else:
                keep.append((spec, req, held))
        self._claim_batch(keep, tries)

    def _claim_batch(self, todo: list[tuple[JobSpec, ClaimRequest, Held]], tries: int) -> None:
        if not todo:
            return
        node = self.node
        lease = node.session.lease
        for _, _, held in todo:
            held.lease, held.phase = lease, Phase.CLAIMING
        me = threading.get_ident()
        self._in_etcd[me] = node.clock.monotonic()
        try:
            outs = self.claims.claim_many([r for _, r, _ in todo], lease, node.clock.time())
        except StoreError as exc:
            for _, _, held in todo:
                held.phase = Phase.UNRESOLVED
            delay = RESOLVE_BACKOFF[min(tries, len(RESOLVE_BACKOFF) - 1)]
            log.warning("firing.claim_unresolved", firings=len(todo), error=str(exc)[:200], retry_in=delay)
            node.schedule_resolve(todo, tries + 1, delay)
            return
        finally:
            self._in_etcd.pop(me, None)
        now, changed, skipped = node.clock.time(), [], []
        for (spec, req, held), out in zip(todo, outs):
            if out.why == Why.BLOCKED and now < node.start_time(spec, req.slot):
                self.local.leave(held)
                node.retry_claim_at_instant(spec, req.job_rev, req.slot)  # the run in the way may end in time
            elif out.why == Why.BLOCKED:
                self.local.leave(held)
                skipped.append((spec, req.slot, State.SKIPPED, self._skip_extra(out)))
            elif out:
                node.stats["claimed"] += 1
                if out.why == Why.RESOLVED:
                    log.info("firing.claim_resolved", job=req.job, slot=req.slot, fence=out.fence)
                self._claimed(held, out)
                node.schedule_start(spec, req.slot, out.fence, "schedule")
            else:
                self.local.leave(held)
                if out.why == Why.CHANGED and (again := self._still_due(out, req.slot)) is not None:
                    changed.append((again, out.current.mod_revision, req.slot, False))
        self._record_many(skipped)
        if changed:  # the job changed under us and still fires at this instant: claim it as it is now
            self.fire_batch(changed)

    def _still_due(self, out: Outcome, slot: int) -> JobSpec | None:
        if out.current is None:
            return None
        try:
            spec = JobSpec.from_json(out.current.value)
        except Exception:  # noqa: BLE001 - a bad value is the view's to report
            return None
        ok = not spec.paused and spec.level in self.node.cfg.levels and spec.fires_at(slot)
        return spec if ok else None

    @staticmethod
    def _claimed(held: Held, out: Outcome) -> None:
        held.phase, held.fence, held.run_fence = Phase.CLAIMED, out.fence, out.run_fence or out.fence

    def _record(self, job: str, slot: int, state: State, **extra) -> bool:
        try:
            return self.claims.record(job, slot, state, **extra)
        except StoreError as exc:  # the leader records it `missed` if nothing else does
            log.warning("firing.record_failed", job=job, slot=slot, state=state, error=str(exc)[:200])
            return False

    def _record_many(self, items: list[tuple[JobSpec, int, State, dict]]) -> None:
        """Record firings that do not run (skipped, degraded), in few round trips."""
        if not items:
            return
        try:
            oks = self.claims.record_many([(spec.name, slot, state, extra) for spec, slot, state, extra in items])
        except StoreError as exc:  # the leader records them `missed` if nothing else does
            log.warning("firing.record_failed", firings=len(items), error=str(exc)[:200])
            return
        mono = self.node.clock.monotonic()
        for (spec, slot, state, extra), ok in zip(items, oks):
            if not ok or not self._not_run_log.allow(mono):
                continue
            if state == State.DEGRADED:
                log.info("firing.degraded", job=spec.name, slot=slot, level=spec.level)
            else:
                log.info(f"firing.{state}", job=spec.name, slot=slot, reason=extra["reason"], running=extra.get("running"))

    @staticmethod
    def _skip_extra(out: Outcome) -> dict:
        return {"reason": "forbid", "running": list(out.running)}

    def _degraded(self, spec: JobSpec, slot: int) -> None:
        self._record_many([(spec, slot, State.DEGRADED, {"level": spec.level})])

    def _skip(self, spec: JobSpec, slot: int, out: Outcome) -> None:
        self._record_many([(spec, slot, State.SKIPPED, self._skip_extra(out))])

    def _wait_runs_end(self, job: str, timeout: float, poll: float, besides: int | None = None) -> bool:
        """Wait until no run of ``job`` (but the firing ``besides``) is alive, read from etcd every
        ``poll`` seconds; False on timeout or when the node stops."""
        node, prefix = self.node, self.node.keys.runnings_of(job)
        end = node.clock.monotonic() + timeout
        while True:
            try:
                kvs, _ = node.store.get_prefix(prefix, limit=2, keys_only=True)
                if not [kv for kv in kvs if besides is None or node.keys.parse(kv.key).slot != besides]:
                    return True
            except StoreError:
                pass  # not known: keep waiting
            if node.clock.monotonic() + poll > end or node.stopping.wait(poll):
                return False

    def start(self, spec: JobSpec, slot: int, fence: int, reason: str, run_fence: int | None = None) -> None:
        held = self.local.get(spec.name, slot)
        if held is not None and held.queued and not held.picked:
            held.picked = self.node.clock.monotonic()  # how long it waited for a worker, for _shed
        if spec.concurrency == "replace":
            # the claim told older runs to stop; start once they are gone (or their grace is over)
            self._wait_runs_end(spec.name, KILL_GRACE + 2, REPLACE_POLL, besides=slot)
        self.run(spec, slot, fence, 1, reason, run_fence=run_fence)

    # --- lost runs
    def find_lost(self, lease: int, revision: int, follow: bool = False) -> None:
        """``lease`` died at ``revision`` (its ``leases/`` mark was deleted): every running key on it
        went in that same revision, so the runs it held are read from ``running/`` as it was just
        before (an MVCC read); those whose record is still unfinished are lost. Every node reads this
        for itself (a node's death is rare; the reads are one range each) and ranks the recoveries.

        ``follow``: the lease of a node that left ``nodes/`` at ``revision`` without a mark (a version
        from before them, in a rolling upgrade): it may still live, so its runs are read again until
        each has ended (see :meth:`check_lost`)."""
        node = self.node
        try:
            kvs, _ = node.store.get_prefix(node.keys.runnings, revision=revision - 1, keys_only=True)
        except StoreCompacted:  # history gone: read every unfinished record instead
            log.info("firing.lost_scan", lease=f"{lease:x}", reason="its death's revision was compacted")
            self.scan_lost()
            return
        except StoreError as exc:
            log.warning("firing.lost_unread", lease=f"{lease:x}", error=str(exc)[:200], then="read again in 1 s")
            node.call_later(1.0, self.find_lost, lease, revision, follow)
            return
        self.check_lost([k.firing for k in self._on_lease(kvs, lease)], lease if follow else 0)

    def _on_lease(self, running: list, lease: int) -> list:
        """The parsed ``running/`` keys of a listing that live on ``lease``."""
        return [k for kv in running if kv.lease == lease and (k := self.node.keys.parse(kv.key)).kind is Kind.RUNNING]

    def check_lost(self, firings: list[tuple[str, int]], follow: int = 0) -> None:
        """Hand the firings among ``firings`` whose record is unfinished and whose running key is gone
        to the ranked recovery (reads now, in batched round trips). ``follow``: a lease that may still
        live; the firings still running on it are read again every :data:`FOLLOW_EVERY` seconds."""
        node, alive = self.node, []
        for i in range(0, len(firings), ORPHAN_READS):
            chunk = firings[i:i + ORPHAN_READS]
            try:
                kvs = node.store.get_many([key for job, slot in chunk
                                           for key in (node.keys.claim(job, slot), node.keys.running(job, slot))])
            except StoreError as exc:
                log.warning("firing.lost_unread", firings=len(firings), error=str(exc)[:200], then="read again in 1 s")
                node.call_later(1.0, self.check_lost, firings[i:] + alive, follow)
                return
            for n, (job, slot) in enumerate(chunk):
                claim_kv, run_kv = kvs[2 * n], kvs[2 * n + 1]
                if claim_kv is not None and run_kv is None:
                    c = Claim.parse(job, slot, claim_kv.value, claim_kv.mod_revision)
                    if c.unfinished:
                        node.retry_recovery(c, 0.0)
                elif follow and run_kv is not None and run_kv.lease == follow:
                    alive.append((job, slot))
        if alive:
            node.call_later(FOLLOW_EVERY, self.check_lost, alive, follow)

    def scan_lost(self) -> None:
        """Every unfinished record whose running key is gone, from a listing of ``claims/`` and
        ``running/`` (when a lease's death can no longer be read in etcd's history)."""
        node = self.node
        try:
            runs, rev = node.store.get_prefix(node.keys.runnings, keys_only=True)
            claims, _ = node.store.get_prefix(node.keys.claims(), revision=rev)
        except StoreError as exc:
            log.warning("firing.lost_unread", error=str(exc)[:200], then="read again in 1 s")
            node.call_later(1.0, self.scan_lost)
            return
        for c in lost_in([(node.keys.parse(kv.key), kv) for kv in runs + claims]):
            node.retry_recovery(c, 0.0)

    def recover(self, spec: JobSpec, rev: int, old: Claim) -> None:
        node = self.node
        if node.stopping.is_set():
            return  # the others recover it
        held = self.local.enter(old.job, old.slot, spec.level, node.session.lease)
        if held is None:
            return
        if not node.can_claim():
            self.local.leave(held)
            node.retry_recovery(old, delay=1.0)
            return
        try:  # a read first: a node ranked after the one that recovered it finds it moved on
            kv = node.store.get(node.keys.claim(old.job, old.slot))
            # moved on by another node (one of ours, whose answer was lost, is found RESOLVED below)
            moved = kv is None or (kv.mod_revision != old.mod_revision
                                   and Claim.parse(old.job, old.slot, kv.value, kv.mod_revision).node != node.node_id)
        except StoreError:
            moved = False  # not known: the compare-and-swap decides
        if moved:
            self.local.leave(held)
            return
        skip = spec.on_node_loss == "skip"
        try:
            out = self.claims.recover(old, rev, held.lease, node.clock.time(), skip,
                                      forbid=spec.concurrency == "forbid")
        except StoreError as exc:
            self.local.leave(held)
            self._gave_up = node.clock.monotonic()  # if it committed, the sweep finds it on our lease
            log.warning("firing.recover_failed", job=old.job, slot=old.slot, error=str(exc)[:200], then="retried")
            node.retry_recovery(old, delay=1.0)  # a recovery that committed is found by the retry (RESOLVED)
            return
        if out.why == Why.BLOCKED:
            self.local.leave(held)
            node.retry_recovery(old, delay=1.0)  # at-least-once, but never beside a live run under forbid
            return
        if not out or skip:
            self.local.leave(held)
            if out and skip:
                node.stats["recovered"] += 1
                log.info("firing.lost", job=old.job, slot=old.slot, prev_node=old.node, prev_fence=old.fence)
            return
        node.stats["recovered"] += 1
        self._claimed(held, out)
        log.info("firing.recovered", job=old.job, slot=old.slot, attempt=old.attempt + 1, fence=out.fence,
                 prev_node=old.node, prev_fence=old.fence)
        self.run(spec, old.slot, out.fence, old.attempt + 1, "recovery",
                 extra={"prev_fence": old.fence, "prev_node": old.node})

    # --- running a held firing
    def _may_start(self, spec: JobSpec, held: Held) -> str | None:
        """Why a claimed firing must not start now (checked just before it does), or None."""
        session = self.node.session
        if held.lease != session.lease or not session.valid():
            return "lease"  # its running key dies with that lease; another node recovers it
        if not session.clock_trusted() and not session.verify_clock():
            return "clock"
        return None

    def run(self, spec: JobSpec, slot: int, fence: int, attempt: int, reason: str = "schedule",
            extra: dict | None = None, run_fence: int | None = None) -> None:
        """Run (and retry) a held firing, then record its outcome under our fence."""
        node = self.node
        held = self.local.get(spec.name, slot)
        if held is None:
            log.error("firing.not_held", job=spec.name, slot=slot, fence=fence)
            return
        run_fence = run_fence or fence
        held.phase, held.fence, held.run_fence = Phase.RUNNING, fence, run_fence
        # Never early, jitter included: our claim may have been quick, or made ahead of the instant.
        start_at = node.start_time(spec, slot)
        while (wait := start_at - node.clock.time()) > 0 and not held.cancel.wait(wait):
            pass
        if node.view.kills.get(spec.name, 0) > fence:  # a kill that arrived between our claim and now
            held.cancel.stop("kill")
        tries: list[dict] = []
        result: RunResult | None = None
        if not held.cancel.is_set() and (why_not := self._may_start(spec, held)):
            log.warning("firing.not_started", job=spec.name, slot=slot, fence=fence, reason=why_not)
            if why_not == "lease":
                self.local.leave(held)
                return
            held.cancel.stop("clock")
        if reason == "schedule" and not held.cancel.is_set() and (shed := self._shed(spec, slot, held)):
            state, why = shed
            now = node.clock.time()
            if self._shed_log.allow(node.clock.monotonic()):
                log.warning("firing.shed", job=spec.name, slot=slot, fence=fence, state=state, reason=why,
                            lag_ms=round((now - start_at) * 1000))
            record = ClaimRecord.of(state, attempt=attempt, reason=why, started=None, ended=now,
                                    lag=round(now - start_at, 3))
            self._complete(held, spec, record, 0.0, now - slot)
            return
        retries_left = spec.retries
        while not held.cancel.is_set():
            ctx = RunContext(spec.name, slot, node.node_id, held.fence, attempt, dict(spec.args), node.cfg.mongo)
            lag = node.clock.time() - slot
            if reason == "schedule" and not tries:  # the scheduler's lateness, not a retry's backoff
                node.metrics.lag.observe(max(0.0, node.clock.time() - start_at))
            if lag > LATE and reason == "schedule":
                log.warning("firing.late", job=spec.name, slot=slot, lag_ms=round(lag * 1000),
                            note="this node is behind: more workers or more nodes")
            log.debug("firing.started", job=spec.name, slot=slot, fence=held.fence, attempt=attempt,
                      lag_ms=round(lag * 1000, 1))
            result = run_job(spec, ctx, held.cancel, node.policy)
            node.stats["ran"] += 1
            tries.append({"attempt": attempt, "fence": held.fence, "state": result.state, "exit_code": result.exit_code,
                          "started": result.started, "ended": result.ended})
            if result.state not in ("failed", "timeout") or retries_left <= 0 or held.cancel.is_set():
                break
            delay = min(MAX_BACKOFF, spec.retry_delay * 2 ** (len(tries) - 1))
            delay *= 0.5 + 0.5 * unit_hash(f"{spec.name}|{slot}|{attempt}")  # jitter, alike on every node
            log.info("firing.retrying", job=spec.name, slot=slot, attempt=attempt + 1, delay=round(delay, 2),
                     after=result.state)
            if held.cancel.wait(delay) or node.stopping.is_set():
                break
            new_fence = self._retry(spec, slot, held, attempt + 1, tries)
            if new_fence is None:
                log.warning("firing.fenced_out", job=spec.name, slot=slot, fence=held.fence, when="retry")
                node.stats["fenced_out"] += 1
                self.local.leave(held)
                return
            held.fence, attempt, retries_left = new_fence, attempt + 1, retries_left - 1
        if result is None:  # stopped before it started
            now = node.clock.time()
            result = RunResult("killed", None, f"stopped before it started ({held.cancel.reason})", now, now)
        state = State(result.state)
        if state == State.REFUSED:  # like the other non-runs, its reason says why it did not run
            reason = result.output
        if state == State.KILLED and held.cancel.reason in ("shutdown", "clock", "lease_lost"):
            # not the job's doing: it runs again elsewhere (or is recorded lost). A lease only assumed
            # lost may still be held by etcd: then this record commits, and must not be final (§4.4)
            state = State.INTERRUPTED
        record = ClaimRecord.of(state, attempt=attempt, started=tries[0]["started"] if tries else result.started,
                                ended=result.ended, exit_code=result.exit_code, output=result.output, reason=reason,
                                killed_by=held.cancel.reason if state in (State.KILLED, State.INTERRUPTED) else None,
                                tries=tries if len(tries) > 1 else None, **(extra or {}))
        self._complete(held, spec, record, round(result.ended - result.started, 3), result.started - slot)

    def _shed(self, spec: JobSpec, slot: int, held: Held) -> tuple[State, str] | None:
        """Whether a scheduled firing that waited for a worker is shed rather than run late, by the
        job's own policies: past its starting deadline it is ``missed`` (DESIGN §4.3); under ``forbid``
        or ``replace``, once the job's next firing's start has passed it is ``skipped``.

        Without this an overloaded node ran every queued firing later and later and never caught up
        (issue 11). The price, under ``forbid``: the queued firing held its job's slot, so its
        successor was most likely skipped already, and the job loses both; the node's workers go to
        firings that can still start on time instead of to runs already a period late. Only a wait
        for a worker counts (at least :data:`SHED_AFTER_QUEUED`): a claim that etcd answered late
        (an election, §4.8), a takeover, or a wait for a replaced run to stop never sheds."""
        if not held.queued or held.picked - held.queued < SHED_AFTER_QUEUED:
            return None
        return self._late(spec, slot, self.node.clock.time(), "a worker")

    def _late(self, spec: JobSpec, slot: int, now: float, waited_for: str) -> tuple[State, str] | None:
        """Is a firing, held up on this node, late past what its job's policy would still run? Past its
        starting deadline: ``missed``; under ``forbid`` or ``replace``, once the job's next firing's
        start has passed: ``skipped``."""
        start_at = self.node.start_time(spec, slot)
        if now - start_at > spec.starting_deadline:
            return State.MISSED, f"late: its starting deadline passed while it waited for {waited_for}"
        if spec.concurrency != "allow" and (nxt := spec.next_after(slot)) is not None:
            nxt_start = self.node.start_time(spec, int(nxt))
            if start_at < nxt_start <= now:  # (a jitter longer than the period may order them the other way)
                return State.SKIPPED, f"late: the job's next firing was due while it waited for {waited_for}"
        return None

    def _etcd_slow(self) -> bool:
        """A claim round trip of ours has been waiting for etcd for a while (an election, a stall)."""
        now = self.node.clock.monotonic()
        return any(now - began > ETCD_SLOW for began in list(self._in_etcd.values()))

    def _retry(self, spec: JobSpec, slot: int, held: Held, attempt: int, tries: list[dict]) -> int | None:
        """Re-claim our firing for the next attempt, re-sent until its answer is known (a lost answer
        must not leave the firing half-retried: the sweep would run the old attempt again)."""
        node, n = self.node, 0
        while True:
            try:
                return self.claims.retry(spec.name, slot, held.fence, held.run_fence, attempt, node.clock.time(), tries)
            except StoreError as exc:
                if held.lease != node.session.lease or node.stopping.is_set():
                    return None  # our running key dies with the lease; another node recovers the firing
                log.info("firing.retry_unresolved", job=spec.name, slot=slot, error=str(exc)[:200])
                node.stopping.wait(RESOLVE_BACKOFF[min(n, len(RESOLVE_BACKOFF) - 1)])
                n += 1

    def _complete(self, held: Held, spec: JobSpec, record: ClaimRecord, seconds: float, lag: float) -> None:
        node = self.node
        held.phase = Phase.COMPLETING
        args = (held.job, held.slot, held.fence, record, held.run_fence)

        def completed(fut) -> None:
            exc = fut.exception()
            if exc is not None:  # the outcome is unknown: the sweep sends it again (see adopt_orphans)
                held.unacked = args
                log.warning("firing.complete_failed", job=held.job, slot=held.slot, fence=held.fence,
                            error=str(exc)[:200], then="retried by the next sweep")
                return
            self.local.leave(held)
            if fut.result():
                log.info("firing.finished", job=held.job, slot=held.slot, fence=held.fence, state=record.state,
                         attempt=record.attempt, exit_code=record.exit_code, seconds=seconds,
                         lag_ms=round(lag * 1000, 1))
            else:
                node.stats["fenced_out"] += 1
                log.warning("firing.fenced_out", job=held.job, slot=held.slot, fence=held.fence,
                            reason="the claim is no longer ours (lease expired or taken over)")

        self.claims.complete_async(*args[:4], run_fence=held.run_fence,
                                   urgent=self._next_is_near(spec, held.slot)).add_done_callback(completed)

    def _next_is_near(self, spec: JobSpec, slot: int) -> bool:
        """A ``forbid`` or ``replace`` job whose next claim may come within a second or so: its
        completion is not held back to share a round trip (the next claim would find the slot taken)."""
        if spec.concurrency == "allow" or (nxt := spec.next_after(slot)) is None:
            return False
        cfg = self.node.cfg
        return self.node.start_time(spec, int(nxt)) - self.node.clock.time() < 1.0 + cfg.claim_ahead + cfg.claim_window

    def adopt_orphans(self) -> int:
        """Resolve what lost answers left behind.

        A completion whose answer was lost is sent again (if the first had committed, this one is
        refused and the record already carries our outcome). A claim on our live lease that this
        node does not hold — a claim given up as unresolved that had committed after all — is
        confirmed against etcd (the view may lag a completion of ours) and run now: late, but not
        silently missed."""
        node, view = self.node, self.view
        lease = node.session.lease
        self.resend_unacked()
        if not node.can_claim() or not lease:
            return 0
        mono = node.clock.monotonic()
        if mono - self._scanned < ORPHAN_SCAN_EVERY and mono - self._gave_up > ORPHAN_SCAN_AFTER:
            return 0  # orphans come only from claims given up unresolved (the scan now and then is a belt)
        self._scanned = mono
        try:
            runs, _ = node.store.get_prefix(node.keys.runnings, keys_only=True)  # the lease comes with the key
        except StoreError:
            return 0
        candidates = [(k.job, k.slot, found[0]) for k in self._on_lease(runs, lease)
                      if (found := view.job(k.job)) is not None and not self.local.known(k.job, k.slot)]
        adopted = 0
        for i in range(0, len(candidates), ORPHAN_READS):
            chunk = candidates[i:i + ORPHAN_READS]
            gets = [op for job, slot, _ in chunk for op in (st.get(node.keys.claim(job, slot)),
                                                            st.get(node.keys.running(job, slot)))]
            try:  # confirmed in etcd, in one round trip: the view may lag a completion of ours
                ranges = node.store.txn([], gets).ranges
            except StoreError:
                return adopted
            for n, (job, slot, spec) in enumerate(chunk):
                adopted += self._adopt(spec, slot, lease, ranges[2 * n], ranges[2 * n + 1])
        return adopted

    def _adopt(self, spec: JobSpec, slot: int, lease: int, claim_kv: list, run_kv: list) -> int:
        """Run an orphan (our claim, on our live lease, that no path holds); 1 if adopted."""
        if not claim_kv or not run_kv or run_kv[0].lease != lease:
            return 0
        c = Claim.parse(spec.name, slot, claim_kv[0].value, claim_kv[0].mod_revision)
        if not c.running or c.node != self.node.node_id:
            return 0
        held = self.local.enter(c.job, c.slot, spec.level, lease)
        if held is None:
            return 0
        log.warning("firing.adopted", job=c.job, slot=c.slot, fence=c.mod_revision,
                    reason="our claim committed although its answer was lost")
        self._claimed(held, Outcome(c.mod_revision, Why.RESOLVED, run_fence=run_kv[0].create_revision))
        self.node.submit(self.run, spec, c.slot, c.mod_revision, max(c.attempt, 1), "adopted",
                         {"adopted": True}, run_kv[0].create_revision, claimed=True)
        return 1

    def resend_unacked(self) -> None:
        """Send again each completion whose answer was lost (if the first had committed, the record
        already carries our outcome)."""
        node = self.node
        for held in self.local.select(lambda h: h.unacked is not None):
            args, held.unacked = held.unacked, None
            try:
                kv = node.store.get(node.keys.claim(held.job, held.slot))
            except StoreError:
                held.unacked = args  # the next sweep tries again
                continue
            c = Claim.parse(held.job, held.slot, kv.value, kv.mod_revision) if kv is not None else None
            if c is not None and not c.unfinished and c.record.fence == held.fence:
                self.local.leave(held)  # it had committed
                continue
            self.claims.complete_async(*args[:4], run_fence=args[4]).add_done_callback(
                lambda fut, h=held, a=args: self._resent(fut, h, a))

    def _resent(self, fut, held: Held, args: tuple) -> None:
        if fut.exception() is not None:
            held.unacked = args
            return
        self.local.leave(held)
        if not fut.result():
            log.warning("firing.fenced_out", job=held.job, slot=held.slot, fence=held.fence, when="completion retry")

    # --- tasks over several firings
    def catch_up(self, spec: JobSpec, rev: int, now: float) -> None:
        """After (re)start: firings inside the starting deadline that nobody claimed, per --catchup."""
        overdue = self.node.overdue(spec, now)
        try:
            claimed = self.node.store.exists_many([self.node.keys.claim(spec.name, s) for s in overdue])
        except StoreError as exc:  # the next relist hands the catch-up out again
            log.warning("catchup.failed", job=spec.name, error=str(exc)[:200])
            return
        due = [s for s, c in zip(overdue, claimed) if not c]
        if not due:
            return
        if spec.catchup == "none":
            run: list[int] = []
        elif spec.catchup == "latest":
            run = due[-1:]
        else:
            run = due[-spec.catchup_cap:]
        for slot in due:
            if slot not in run and self._record(spec.name, slot, State.MISSED, reason=f"catchup {spec.catchup}"):
                log.info("firing.missed", job=spec.name, slot=slot, reason=f"catch-up policy {spec.catchup}")
        for slot in run:  # oldest first, one after the other (one claimed meanwhile is answered TAKEN)
            self.fire(spec, rev, slot, reason="catchup", wait_blocked=True)

    def backfill(self, spec: JobSpec, rev: int, ident: str, req_rev: int, req: dict) -> None:
        """Run each firing of a past range once, through the same claims. A firing with no record inside
        the job's collected ranges (``collected/<job>``, kept by the leader) is not run: its claim was
        collected, so it ran or was recorded."""
        import json  # (kept local to this function)
        skip = req.get("skip", [])
        try:
            kv = self.node.store.get(self.node.keys.collected(spec.name))
            collected = [(lo, hi) for lo, hi in json.loads(kv.value)] if kv is not None else []
        except (StoreError, ValueError, TypeError) as exc:  # the request stays; the next relist hands it out again
            log.warning("backfill.failed", job=spec.name, request=ident, error=str(exc)[:200])
            return
        slots = [s for s in spec.firings(req["from"] - 1, req["to"], limit=req.get("limit", 10_000))
                 if not any(lo <= s <= hi for lo, hi in skip)]
        gone = 0
        for i in range(0, len(slots), ORPHAN_READS):
            if self.node.stopping.is_set():
                return
            chunk = slots[i:i + ORPHAN_READS]
            try:
                kvs = self.node.store.get_many([self.node.keys.claim(spec.name, s) for s in chunk])
            except StoreError as exc:  # the request stays; the next relist hands it out again
                log.warning("backfill.failed", job=spec.name, request=ident, error=str(exc)[:200])
                return
            gone += self._backfill(spec, rev, chunk, kvs, collected)
        if gone:
            log.info("backfill.skipped_collected", job=spec.name, request=ident, firings=gone,
                     why="their claims were collected: they ran or were recorded")
        # done: every firing of the range has a record that is a run (or a run now in progress elsewhere)
        try:
            self.node.store.txn([st.mod_rev(self.node.keys.backfill(spec.name, ident), "==", req_rev)],
                                [st.delete(self.node.keys.backfill(spec.name, ident))])
        except StoreError as exc:
            log.warning("backfill.finish_failed", job=spec.name, error=str(exc)[:200])
        log.info("backfill.done", job=spec.name, request=ident, firings=len(slots))

    def _backfill(self, spec: JobSpec, rev: int, slots: list[int], kvs: list, collected: list) -> int:
        """Run the firings of ``slots`` (whose claims, as read, are ``kvs``) that have no run; the
        number of them found collected."""
        gone = 0
        for slot, kv in zip(slots, kvs):
            if self.node.stopping.is_set():
                return gone
            c = Claim.parse(spec.name, slot, kv.value, kv.mod_revision) if kv is not None else None
            if c is None and any(lo <= slot <= hi for lo, hi in collected):
                gone += 1
            elif c is None or c.state in NON_RUNS:
                self.fire(spec, rev, slot, reason="backfill", over=c if c is not None else None, wait_blocked=True)
        return gone

    def trigger(self, spec: JobSpec, rev: int, trig_rev: int, req: dict) -> None:
        """A manual run now: the first free second from the request's instant becomes its slot. A
        request that cannot run (forbid, degraded, max-runs) is answered all the same: consumed, so
        that it never fires later by surprise."""
        tk = self.node.keys.trigger(spec.name)
        at = int(req.get("at", self.node.clock.time()))
        what = ""
        try:
            claimed = self.node.store.exists_many([self.node.keys.claim(spec.name, s) for s in range(at, at + 10)])
        except StoreError:
            claimed = [False] * 10  # each claim is a compare-and-swap all the same
        for slot, taken in zip(range(at, at + 10), claimed):
            if taken:
                continue
            what = self.fire(spec, rev, slot, reason="trigger", extra_cmp=[st.mod_rev(tk, "==", trig_rev)],
                             extra_ops=[st.delete(tk)])
            if what != Why.TAKEN or self.view.triggers.get(spec.name, (0, {}))[0] != trig_rev:
                break  # ran, or refused for a reason another second won't change, or consumed elsewhere
        if what in ("ran", "not-claiming", "error", "held"):
            return
        try:
            if self.node.store.txn([st.mod_rev(tk, "==", trig_rev)], [st.delete(tk)]).succeeded:
                log.info("trigger.refused", job=spec.name, why=str(what) or "no free second")
        except StoreError as exc:
            log.warning("trigger.consume_failed", job=spec.name, error=str(exc)[:200])
