"""The firing path, on worker threads: claim under the job's policies, run with retries, complete.

Also the multi-firing tasks: catch-up after downtime, backfill of a past range, manual triggers.
Everything that decides is a compare-and-swap (see :mod:`etcdcron.claims`); what a node believes
from its view only decides what to *try*.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import structlog

from . import store as st
from .claims import NON_RUNS, Claim, ClaimRequest, unit_hash
from .errors import StoreError
from .executor import KILL_GRACE, RunContext, run_job
from .jobs import JobSpec

if TYPE_CHECKING:
    from .daemon import Node

log = structlog.get_logger("etcdcron.firing")

MAX_BACKOFF = 300.0
LATE = 1.0  # a scheduled run starting later than this is logged as a warning
BLOCKED_WAIT = 3600.0  # how long a catch-up or backfill firing waits for a running run to end


@dataclass
class LocalRun:
    """A run on this node, so that kill, replace and degrade --kill can stop it."""

    job: str
    slot: int
    level: int
    fence: int
    cancel: threading.Event = field(default_factory=threading.Event)
    reason: str = ""


class Firing:
    def __init__(self, node: "Node") -> None:
        self.node = node
        self.claims = node.claims
        self.view = node.view
        self.runs: dict[tuple[str, int], LocalRun] = {}
        self.lock = threading.Lock()
        # firings this node holds a claim on but has no LocalRun for (yet, or any more): claimed and
        # waiting for their instant, or run and waiting for their completion to be acknowledged
        self.pending: set[tuple[str, int]] = set()
        self.unacked: dict[tuple[str, int], tuple] = {}  # completions whose answer was lost -> their args

    # --- stopping runs
    def stop_runs(self, match, reason: str) -> int:
        """Cancel every local run for which ``match(run)`` is true."""
        n = 0
        with self.lock:
            runs = list(self.runs.values())
        for run in runs:
            if not run.cancel.is_set() and match(run):
                run.reason = reason
                run.cancel.set()
                n += 1
                log.info("run.stopping", job=run.job, slot=run.slot, fence=run.fence, reason=reason)
        return n

    # --- one firing
    def fire(self, spec: JobSpec, rev: int, slot: int, reason: str = "schedule", over: Claim | None = None,
             wait_blocked: bool = False, extra_cmp=(), extra_ops=()) -> str:
        """Try to run one firing; returns what happened (ran, taken, skipped, degraded, …)."""
        node = self.node
        while True:
            if not node.can_claim():
                return "not-claiming"
            if spec.level in self.view.degraded():
                if self.claims.record(spec.name, slot, "degraded", level=spec.level):
                    log.info("firing.degraded", job=spec.name, slot=slot, level=spec.level)
                return "degraded"
            if self.view.exhausted(spec):
                return "exhausted"
            try:
                out = self.claims.claim(spec.name, slot, rev, node.session.lease, node.clock.time(),
                                        concurrency=spec.concurrency, max_runs=spec.max_runs, over=over,
                                        reason=reason, extra_cmp=extra_cmp, extra_ops=extra_ops)
            except StoreError as exc:
                log.warning("firing.claim_failed", job=spec.name, slot=slot, error=str(exc)[:200])
                return "error"
            if out.why == "blocked" and wait_blocked:
                if not node.wait_view(lambda: not self.view.running_of(spec.name), BLOCKED_WAIT):
                    return "blocked"
                continue
            break
        if out.why == "blocked":
            self._skip(spec, slot)
            return "skipped"
        if not out:
            return out.why
        self.node.stats["claimed"] += 1
        with self.lock:
            self.pending.add((spec.name, slot))
        self.start(spec, slot, out.fence, reason)
        return "ran"

    def fire_batch(self, items: list[tuple[JobSpec, int, int]]) -> None:
        """The firings due at one instant that this node owns: claimed in one round trip, then run
        on the worker pool."""
        node = self.node
        if not node.can_claim():
            return
        degraded = self.view.degraded()
        todo: list[tuple[JobSpec, ClaimRequest]] = []
        for spec, rev, slot in items:
            if spec.level in degraded:
                if self.claims.record(spec.name, slot, "degraded", level=spec.level):
                    log.info("firing.degraded", job=spec.name, slot=slot, level=spec.level)
            elif not self.view.exhausted(spec):
                todo.append((spec, ClaimRequest(spec.name, slot, rev, spec.concurrency, spec.max_runs)))
        if not todo:
            return
        try:
            outs = self.claims.claim_many([r for _, r in todo], node.session.lease, node.clock.time())
        except StoreError as exc:
            log.warning("firing.claim_failed", firings=len(todo), error=str(exc)[:200])
            return
        now = node.clock.time()
        for (spec, req), out in zip(todo, outs):
            if out.why == "blocked" and now < req.slot:
                node.retry_claim_at_instant(spec, req.job_rev, req.slot)  # the run in the way may end in time
            elif out.why == "blocked":
                self._skip(spec, req.slot)
            elif out:
                node.stats["claimed"] += 1
                node.schedule_start(spec, req.slot, out.fence, "schedule")

    def _skip(self, spec: JobSpec, slot: int) -> None:
        busy = self.view.running_of(spec.name)
        if self.claims.record(spec.name, slot, "skipped", reason="forbid", running=busy[:3]):
            log.info("firing.skipped", job=spec.name, slot=slot, reason="previous run still running", running=busy[:3])

    def start(self, spec: JobSpec, slot: int, fence: int, reason: str) -> None:
        if spec.concurrency == "replace":
            # the claim told older runs to stop; start once they are gone (or their grace is over)
            self.node.wait_view(lambda: not [s for s in self.view.running_of(spec.name) if s != slot], KILL_GRACE + 2)
        self.run(spec, slot, fence, 1, reason)

    def recover(self, spec: JobSpec, rev: int, old: Claim) -> None:
        node = self.node
        if not node.can_claim():
            return
        skip = spec.on_node_loss == "skip"
        try:
            out = self.claims.recover(old, rev, node.session.lease, node.clock.time(), skip,
                                      forbid=spec.concurrency == "forbid")
        except StoreError as exc:
            log.warning("firing.recover_failed", job=old.job, slot=old.slot, error=str(exc)[:200])
            return
        if out.why == "blocked":
            node.retry_recovery(old, delay=1.0)  # at-least-once, but never beside a live run under forbid
            return
        if not out:
            return
        node.stats["recovered"] += 1
        if not skip:
            with self.lock:
                self.pending.add((old.job, old.slot))
        if skip:
            log.info("firing.lost", job=old.job, slot=old.slot, prev_node=old.node, prev_fence=old.fence)
            return
        log.info("firing.recovered", job=old.job, slot=old.slot, attempt=old.attempt + 1, fence=out.fence,
                 prev_node=old.node, prev_fence=old.fence)
        self.run(spec, old.slot, out.fence, old.attempt + 1, "recovery",
                 extra={"prev_fence": old.fence, "prev_node": old.node})

    def run(self, spec: JobSpec, slot: int, fence: int, attempt: int, reason: str = "schedule",
            extra: dict | None = None, run_fence: int | None = None) -> None:
        """Run (and retry) a claimed firing, then record its outcome under our fence."""
        node = self.node
        run_fence = run_fence or fence
        local = LocalRun(spec.name, slot, spec.level, fence)
        with self.lock:
            self.runs[(spec.name, slot)] = local
            self.pending.add((spec.name, slot))  # until its completion is acknowledged
        tries: list[dict] = []
        retries_left = spec.retries
        try:
            # Never early: our claim may have been quick, the instant may not have come by our clock.
            while (wait := slot - node.clock.time()) > 0:
                time.sleep(wait)
            killed_before = self.view.kills.get(spec.name, 0)
            if killed_before > fence:  # a kill that arrived between our claim and now
                local.cancel.set()
            while True:
                ctx = RunContext(spec.name, slot, node.node_id, local.fence, attempt, dict(spec.args), node.cfg.mongo)
                lag = node.clock.time() - slot
                if lag > LATE and reason == "schedule":
                    log.warning("firing.late", job=spec.name, slot=slot, lag_ms=round(lag * 1000),
                                note="this node is behind: more workers or more nodes")
                log.debug("firing.started", job=spec.name, slot=slot, fence=local.fence, attempt=attempt,
                          lag_ms=round(lag * 1000, 1))
                result = run_job(spec, ctx, local.cancel)
                node.stats["ran"] += 1
                tries.append({"attempt": attempt, "fence": local.fence, "state": result.state, "exit_code": result.exit_code,
                              "started": result.started, "ended": result.ended})
                if result.state not in ("failed", "timeout") or retries_left <= 0 or local.cancel.is_set():
                    break
                delay = min(MAX_BACKOFF, spec.retry_delay * 2 ** (len(tries) - 1))
                delay *= 0.5 + 0.5 * unit_hash(f"{spec.name}|{slot}|{attempt}")  # jitter, alike on every node
                log.info("firing.retrying", job=spec.name, slot=slot, attempt=attempt + 1, delay=round(delay, 2),
                         after=result.state)
                if local.cancel.wait(delay) or node.stopping.is_set():
                    break
                new_fence = self.claims.retry(spec.name, slot, local.fence, run_fence, attempt + 1, node.clock.time(), tries)
                if new_fence is None:
                    log.warning("firing.fenced_out", job=spec.name, slot=slot, fence=local.fence, when="retry")
                    node.stats["fenced_out"] += 1
                    with self.lock:
                        self.pending.discard((spec.name, slot))
                    return
                local.fence, attempt, retries_left = new_fence, attempt + 1, retries_left - 1
        finally:
            with self.lock:
                self.runs.pop((spec.name, slot), None)
        state = result.state
        record = {"state": state, "attempt": attempt, "started": tries[0]["started"], "ended": result.ended,
                  "exit_code": result.exit_code, "output": result.output, "reason": reason, **(extra or {})}
        if state == "killed":
            record["killed_by"] = local.reason
        if len(tries) > 1:
            record["tries"] = tries
        fence, lag = local.fence, tries[0]["started"] - slot
        seconds = round(result.ended - result.started, 3)

        args = (spec.name, slot, fence, record, run_fence)

        def completed(fut) -> None:
            exc = fut.exception()
            with self.lock:
                if exc is None:
                    self.pending.discard((spec.name, slot))
                    self.unacked.pop((spec.name, slot), None)
                else:  # the outcome is unknown: the sweep sends it again (see adopt_orphans)
                    self.unacked[(spec.name, slot)] = args
            if exc is not None:
                log.warning("firing.complete_failed", job=spec.name, slot=slot, fence=fence, error=str(exc)[:200],
                            then="retried by the next sweep")
            elif fut.result():
                log.info("firing.finished", job=spec.name, slot=slot, fence=fence, state=state, attempt=attempt,
                         exit_code=result.exit_code, seconds=seconds, lag_ms=round(lag * 1000, 1))
            else:
                node.stats["fenced_out"] += 1
                log.warning("firing.fenced_out", job=spec.name, slot=slot, fence=fence,
                            reason="the claim is no longer ours (lease expired or taken over)")

        self.claims.complete_async(*args[:4], run_fence=run_fence).add_done_callback(completed)

    def adopt_orphans(self, min_age: float = 3.0) -> int:
        """Resolve claims whose transaction's answer was lost.

        A claim or completion that failed with a transport error may have committed all the same. A
        claim that did leaves a record saying `running` on our live lease that no local run knows:
        we run it now (late, but not silently missed). A completion whose answer was lost is sent
        again; if the first one had committed, the record already carries our outcome and fence."""
        node, view = self.node, self.view
        lease = node.session.lease
        if not node.can_claim() or not lease:
            return 0
        with self.lock:
            unacked = list(self.unacked.items())
        for (job, slot), (name, s, fence, record, run_fence) in unacked:
            c = view.claims.get((job, slot))
            if c is not None and not c.running and c.data.get("fence") == fence:
                with self.lock:  # it had committed
                    self.unacked.pop((job, slot), None)
                    self.pending.discard((job, slot))
                continue
            fut = self.claims.complete_async(name, s, fence, record, run_fence=run_fence)
            try:
                ok = fut.result(timeout=10)
            except Exception:  # noqa: BLE001 - still unknown: next sweep
                continue
            with self.lock:
                self.unacked.pop((job, slot), None)
                self.pending.discard((job, slot))
            if not ok:
                log.warning("firing.fenced_out", job=job, slot=slot, fence=fence, when="completion retry")
        adopted = 0
        now = node.clock.time()
        for job, slot, run_fence in view.runs_on_lease(lease):
            c = view.claims.get((job, slot))
            with self.lock:
                known = (job, slot) in self.runs or (job, slot) in self.pending
            if known or c is None or not c.running or c.node != node.node_id:
                continue
            if now - float(c.data.get("started", now)) < min_age:
                continue  # a claim in flight on the normal path: give it time
            found = view.job(job)
            if found is None:
                continue
            adopted += 1
            log.warning("firing.adopted", job=job, slot=slot, fence=c.mod_revision,
                        reason="our claim committed although its answer was lost")
            with self.lock:
                self.pending.add((job, slot))
            node.submit(self.run, found[0], slot, c.mod_revision, c.attempt, "adopted",
                        {"adopted": True}, run_fence, claimed=True)
        return adopted

    # --- tasks over several firings
    def catch_up(self, spec: JobSpec, rev: int, now: float) -> None:
        """After (re)start: firings inside the starting deadline that nobody claimed, per --catchup."""
        start = max(now - spec.starting_deadline, spec.active_since)
        due = [s for s in spec.firings(start, now, limit=100_000) if not self.view.claimed(spec.name, s)]
        if not due:
            return
        if spec.catchup == "none":
            run: list[int] = []
        elif spec.catchup == "latest":
            run = due[-1:]
        else:
            run = due[-spec.catchup_cap:]
        for slot in due:
            if slot not in run and self.claims.record(spec.name, slot, "missed", reason=f"catchup {spec.catchup}"):
                log.info("firing.missed", job=spec.name, slot=slot, reason=f"catch-up policy {spec.catchup}")
        for slot in run:  # oldest first, one after the other
            if not self.view.claimed(spec.name, slot):
                self.fire(spec, rev, slot, reason="catchup", wait_blocked=True)

    def backfill(self, spec: JobSpec, rev: int, ident: str, req_rev: int, req: dict) -> None:
        """Run each firing of a past range once, through the same claims."""
        skip = req.get("skip", [])
        slots = [s for s in spec.firings(req["from"] - 1, req["to"], limit=req.get("limit", 10_000))
                 if not any(lo <= s <= hi for lo, hi in skip)]
        for slot in slots:
            if self.node.stopping.is_set():
                return
            c = self.view.claims.get((spec.name, slot))
            if c is None or c.state in NON_RUNS:
                self.fire(spec, rev, slot, reason="backfill", over=c if c is not None else None, wait_blocked=True)
        # done: every firing of the range has a record that is a run (or a run now in progress elsewhere)
        try:
            self.node.store.txn([st.mod_rev(self.node.keys.backfill(spec.name, ident), "==", req_rev)],
                                [st.delete(self.node.keys.backfill(spec.name, ident))])
        except StoreError as exc:
            log.warning("backfill.finish_failed", job=spec.name, error=str(exc)[:200])
        log.info("backfill.done", job=spec.name, request=ident, firings=len(slots))

    def trigger(self, spec: JobSpec, rev: int, trig_rev: int, req: dict) -> None:
        """A manual run now: the first free second from the request's instant becomes its slot."""
        tk = self.node.keys.trigger(spec.name)
        at = int(req.get("at", self.node.clock.time()))
        for slot in range(at, at + 10):
            if self.view.claimed(spec.name, slot):
                continue
            what = self.fire(spec, rev, slot, reason="trigger", extra_cmp=[st.mod_rev(tk, "==", trig_rev)],
                             extra_ops=[st.delete(tk)])
            if what != "taken" or self.view.triggers.get(spec.name, (0, {}))[0] != trig_rev:
                return  # ran, or refused for a reason another second won't change, or consumed elsewhere
