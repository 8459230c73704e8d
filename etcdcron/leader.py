"""Cluster-wide chores, done by the leader only: recording missed firings and collecting old claims.

Leadership is etcd's election recipe: every node puts ``leader/<lease>`` on its lease; the key with
the lowest create revision leads, and when its lease dies the next one does. Firing never waits
for the leader; if two nodes briefly both believe they lead, every record and every collection is
still a compare-and-swap, so nothing is done twice (the scan's watermark is a plain put: see
``LeaderChores._store_watermark`` for why that is enough).

No node mirrors ``claims/`` (issue 11): the leader reads the claims it judges or collects from etcd,
in read-only round trips of many Ranges (a Txn with no compare), never one round trip per job.
"""

from __future__ import annotations

import heapq
import itertools
import json
import threading
from typing import TYPE_CHECKING

import structlog

from . import store as st
from .claims import Claim
from .errors import StoreError
from .keys import Kind
from .states import FINAL, UNFINISHED, State

if TYPE_CHECKING:
    from .daemon import Node
    from .jobs import JobSpec

log = structlog.get_logger("etcdcron.leader")

MISSED_SLACK = 2.0  # a firing is judged missed this long after its starting deadline has passed
KEEP_PER_JOB = 20  # finished claims kept per job beyond the deadline window
GC_EVERY = 30.0
FULL_COLLECT_EVERY = 600.0  # seconds between collections that list every job's claims (see collect)
TICK_EVERY = 30.0  # seconds between the leader's ticks (Keys.ticks)
MISSED_EVERY = 5.0  # recording a miss is bookkeeping: a few seconds late costs nothing, scanning every job each second does
LOOKBACK = 3600.0  # on a fresh cluster (no watermark yet) the first leader looks this far back for unrecorded misses
SCAN_CAP = 1000  # firings judged per job and pass
PASS_CAP = 50_000  # firings judged per pass over all jobs; a pass that hits a cap is followed by another at once
COLLECT_OPS = 1000  # deletes per collecting round trip
COLLECT_CHUNK = 120  # deletes per job in one collecting round trip (one nested transaction, with its mark)
COLLECTED_RANGES = 32  # slot ranges kept per job in ``collected/<job>``; the oldest are dropped beyond
LOG_EACH = 20  # misses logged one by one per job and pass; beyond, one summary line
COMPACT_EVERY = 300.0
COMPACT_KEEP = 10_000
# etcd refuses a transaction with more than st.TXN_OPS operations (--max-txn-ops); a nested
# transaction may hold only what its parent leaves of them: that minus the parent's own operations
TXN_OPS = st.TXN_OPS
READ_SLOTS = 8192  # firings whose claims one missed-scan round trip reads (bounds its answer)
SEGMENT_JOBS = 32  # jobs per Range of the collector's listing of claim keys (see _claim_keys)
SEGMENTS = 32  # such Ranges per round trip
SEGMENT_PAGE = 2000  # keys per answer of one of them; a fuller segment is read on, page by page
VALUE_KEYS = 4000  # claims read with their values per round trip (each value is up to ~1 KB)
LOST_MARK_AGE = 60.0  # a hand-over mark whose firing is no longer unfinished goes once seen this long


def reach(spec: "JobSpec") -> float:
    """How long after its slot a firing may still start: its jitter, its starting deadline and the
    slack. A firing is judged (missed if nobody claimed it) only once this much time has passed."""
    return spec.jitter + spec.starting_deadline + MISSED_SLACK


def add_collected(spec: "JobSpec", ranges: list[list[int]], slots: list[int]) -> list[list[int]]:
    """The job's collected slot ranges with ``slots`` (ascending) added. Two slots or ranges join only
    when no firing of the job lies strictly between them, so a range never spans a firing that had no
    claim when it was collected (a paused period, the time before the job existed, a firing not yet
    judged): inside a range, a firing without a record is one whose claim was collected."""
    def joined(hi: float, lo: float) -> bool:
        if lo <= hi:
            return True
        nxt = spec.next_after(hi)
        return nxt is None or nxt >= lo

    out: list[list[int]] = []
    for lo, hi in sorted([list(r) for r in ranges] + [[s, s] for s in slots]):
        if out and joined(out[-1][1], lo):
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return out[-COLLECTED_RANGES:]


class _Deleter:
    """The collector's deletes, sent as they come in round trips of nested transactions (one per job
    and chunk, see :meth:`LeaderChores._delete`) that etcd accepts: at most :data:`COLLECT_OPS`
    deletes, and a nested transaction holds at most what its parent leaves of :data:`TXN_OPS` (8
    jobs of 120 deletes each were refused as a whole, at every pass). A job's second chunk goes in a
    later round trip: it is conditional on the mark its first one writes."""

    def __init__(self, chores: "LeaderChores", specs: dict) -> None:
        self.chores, self.specs = chores, specs
        self.batch: list[tuple[str, list[int]]] = []
        self.ops = self.widest = 0
        self.done = 0

    def add(self, job: str, chunk: list[int]) -> None:
        width = len(chunk) + 1  # the deletes and the mark
        if self.batch and (any(j == job for j, _ in self.batch) or self.ops + width > COLLECT_OPS
                           or len(self.batch) + 1 + max(self.widest, width) > TXN_OPS):
            self.flush()
        self.batch.append((job, chunk))
        self.ops += width
        self.widest = max(self.widest, width)

    def flush(self) -> int:
        if self.batch:
            self.done += self.chores._delete(self.batch, self.specs)
            self.batch, self.ops, self.widest = [], 0, 0
        return self.done


def _range(start: bytes, end: bytes, limit: int = 0, keys_only: bool = False):
    """A Range op over the keys in [start, end): :func:`etcdcron.store.get` widened to a range, whose
    answer leaves out the values with ``keys_only``."""
    op = st.get(start.decode())
    r = op.request_range
    r.range_end, r.limit, r.keys_only = end, limit, keys_only
    return op


class LeaderChores:
    """The leader's chores. What the missed-firing scan has judged is kept in etcd, so that a new
    leader neither rescans (and records ``missed`` over firings that ran and whose claims were
    collected) nor leaves a gap after a long outage:

    * ``chores/missed`` {"at": W}: every firing whose slot + jitter + starting deadline + slack is at
      or before W has been judged: it has a claim, or was recorded ``missed``, or its claim was
      collected. A new leader starts each job's scan at W - reach(job).
    * ``collected/<job>`` [[lo, hi], …]: ranges of slots whose claims were collected (written in
      the transaction that deletes them). A scan never starts below the last range; a backfill does
      not rerun a firing inside a range that has no record.

    The collector deletes only claims at or below the slot up to which this leader's scan has judged
    their job, so neither it nor a later leader can take a collected claim for a missed firing.
    """

    def __init__(self, node: "Node") -> None:
        self.node = node
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="leader", daemon=True)
        self._cursor: dict[str, float] = {}  # job -> the scan's start: every firing at or before it is judged
        self._judged: dict[str, float] = {}  # job -> judged up to this slot by this leadership (what may be collected)
        self._next: dict[str, tuple] = {}  # job -> (cursor, schedule, next firing after the cursor)
        # when each job next has a firing to judge: a pass visits only those jobs (and the jobs the view
        # saw change), not every job; with 1,000,000 jobs a pass over all of them took seconds
        self._visits: list[tuple[float, int, str]] = []  # heap of (when, token, job)
        self._token: dict[str, int] = {}  # job -> token of its live entry in _visits
        self._tokens = itertools.count(1)
        self._all = True  # the next pass visits every job (a new leadership)
        self._loaded = False  # the watermark and the collected marks, read at the first pass of a leadership
        self._watermark: float | None = None  # as stored in etcd (read, or last written by us)
        self._marks: dict[str, tuple[list[list[int]], int]] = {}  # job -> (collected ranges, mod revision)
        self._last_gc = 0.0
        self._last_tick = float("-inf")
        self._last_missed = -MISSED_EVERY
        self._last_compact = 0.0
        self._compacted = 0
        self._lost_seen: dict[tuple[str, int], tuple[int, float]] = {}  # hand-over mark -> (mod revision, first seen)
        self._to_collect: set[str] = set()  # jobs whose claims the next collection reads (see collect)
        self._last_full = float("-inf")  # monotonic: the last collection that read every job's claims
        self.leading = False
        self.behind = False  # the last scan hit a cap: the next one comes at once

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
                self._forget()
            if not leading:
                continue
            try:
                if self.behind or node.clock.monotonic() - self._last_missed >= MISSED_EVERY:
                    self._last_missed = node.clock.monotonic()
                    self.record_missed(node.clock.time())
                if node.clock.monotonic() - self._last_tick >= TICK_EVERY:
                    self._last_tick = node.clock.monotonic()
                    self.tick()
                if node.clock.monotonic() - self._last_gc > GC_EVERY:
                    self._last_gc = node.clock.monotonic()
                    self.collect(node.clock.time())
            except StoreError as exc:
                log.warning("leader.chore_failed", error=str(exc)[:200])

    def tick(self) -> None:
        """Put a key in each range of the nodes' watch. A node's watch is several watchers, one per
        range between the left-out ``claims/`` and ``running/``, each resuming from the last revision
        it saw; one whose keys do not change for longer than the compaction keeps (``runs/``, say)
        would resume from a compacted revision after a break (an etcd election, a restart) and make
        its node re-list the whole prefix, every node at once. A tick keeps every range moving."""
        at = str(round(self.node.clock.time(), 3))
        self.node.store.txn([], [st.put(key, at) for key in self.node.keys.ticks])

    def _forget(self) -> None:
        """Leadership changed: what we knew may be stale; the next pass reads etcd again."""
        self.node.view.track_changed_jobs(self.leading)  # only a leader's scan needs them
        self._cursor.clear()
        self._judged.clear()
        self._visits.clear()
        self._token.clear()
        self._all = True
        self._loaded = False
        self._last_full = float("-inf")  # the first collection of a leadership reads every job's claims
        self._lost_seen.clear()
        self.behind = False

    def _load(self) -> None:
        keys, store = self.node.keys, self.node.store
        kv = store.get(keys.missed_watermark)
        self._watermark = None
        if kv is not None:
            try:
                self._watermark = float(json.loads(kv.value)["at"])
            except (ValueError, TypeError, KeyError):
                log.warning("leader.bad_watermark", key=kv.key, value=kv.value[:100])
        kvs, _ = store.get_prefix(keys.collecteds)
        self._marks = {}
        for kv in kvs:
            try:
                self._marks[kv.key[len(keys.collecteds):]] = ([[int(lo), int(hi)] for lo, hi in json.loads(kv.value)],
                                                              kv.mod_revision)
            except (ValueError, TypeError):
                log.warning("leader.bad_collected_mark", key=kv.key, value=kv.value[:100])
                self._marks[kv.key[len(keys.collecteds):]] = ([], kv.mod_revision)
        self._loaded = True
        log.info("leader.resumed_scan", watermark=self._watermark, collected_marks=len(self._marks))

    def _base(self, spec: "JobSpec", now: float) -> float:
        """Where the scan of a job starts when this leadership has no cursor for it yet."""
        if self._watermark is not None:
            base = min(self._watermark, now) - reach(spec)
        else:  # a fresh cluster: nobody has judged anything yet
            base = now - reach(spec) - LOOKBACK
        ranges = self._marks.get(spec.name, ([], 0))[0]
        return max(base, ranges[-1][1]) if ranges else base

    def record_missed(self, now: float) -> int:
        """Record ``missed`` for every firing past its start time (slot + jitter) + starting deadline
        + slack that nobody claimed, then store how far every job has been judged (one write).

        A pass that fails half-way (etcd unavailable) has already taken the jobs it was to visit off
        the heap and the view's changed set: the next pass visits every job again."""
        try:
            return self._record_missed(now)
        except BaseException:
            self._all = True
            raise

    def _record_missed(self, now: float) -> int:
        if not self._loaded:
            self._load()
        view, recorded = self.node.view, 0
        with view.lock:
            jobs = dict(view.jobs) if self._all else None
            changed = view.take_changed_jobs()
            if jobs is None:
                jobs = {name: found for name in changed if (found := view.jobs.get(name)) is not None}
        visit = set(jobs) if self._all else set(changed)
        self._all = False
        while self._visits and self._visits[0][0] <= now:
            _, token, name = heapq.heappop(self._visits)
            if self._token.get(name) == token:
                visit.add(name)
        if len(jobs) < len(visit):
            with view.lock:
                jobs.update((name, found) for name in visit - set(jobs) if (found := view.jobs.get(name)) is not None)
        judged_at = now  # every job judged for firings whose reach ends at or before this
        todo: list[tuple[float, "JobSpec", float]] = []
        for name in visit:
            found = jobs.get(name)
            if found is None:  # removed
                for known in (self._cursor, self._judged, self._next, self._token):
                    known.pop(name, None)
                self._to_collect.add(name)  # all of its claims go
                continue
            spec = found[0]
            self._token.pop(name, None)  # visited: a new visit is booked below, if any
            if spec.paused or view.exhausted(spec):
                self._cursor.pop(spec.name, None)  # _judged stays: the job's claims may still be collected
                continue  # visited again when the view sees the job change
            # jitter counts: a firing's run starts up to `jitter` after its slot, its deadline runs from there
            horizon = now - reach(spec)
            start = max(self._cursor.setdefault(spec.name, self._base(spec, now)), spec.active_since)
            due = self._due(spec, start)
            if horizon <= start or due is None or due > horizon:
                self._judged[spec.name] = max(self._judged.get(spec.name, horizon), horizon)
                self._book(spec, due)
                continue
            todo.append((start, spec, horizon))
        todo.sort(key=lambda t: t[0])  # the furthest behind first
        budget, capped = PASS_CAP, False
        group: list[tuple["JobSpec", float, int, list[int]]] = []  # judged together: one read, shared records
        group_slots = 0
        for start, spec, horizon in todo:
            if budget <= 0:
                judged_at = min(judged_at, start + reach(spec))
                capped = True
                self._visit(spec.name, float("-inf"))  # the next pass, which comes at once
                continue
            limit = min(SCAN_CAP, budget)
            slots = spec.firings(start, horizon, limit=limit)
            budget -= len(slots)
            if group and (len(group) >= TXN_OPS or group_slots + len(slots) > READ_SLOTS):
                n, at, full = self._judge(group, now)
                recorded, judged_at, capped = recorded + n, min(judged_at, at), capped or full
                group, group_slots = [], 0
            group.append((spec, horizon, limit, slots))
            group_slots += len(slots)
        if group:
            n, at, full = self._judge(group, now)
            recorded, judged_at, capped = recorded + n, min(judged_at, at), capped or full
        self.behind = capped
        if capped:
            log.info("leader.missed_backlog", judged_to=round(judged_at, 3), behind_s=round(now - judged_at, 1),
                     recorded=recorded)
        self._store_watermark(judged_at)
        return recorded

    def _judge(self, group: list[tuple["JobSpec", float, int, list[int]]], now: float) -> tuple[int, float, bool]:
        """Judge the firings of a few jobs: read which have a record (one round trip), record ``missed``
        for the others (shared round trips), then move the jobs' cursors. Returns (recorded, judged
        up to, capped). A round trip that fails raises before any cursor of the group moves."""
        claimed = self._claimed([(spec.name, slots) for spec, _, _, slots in group])
        unclaimed = [(spec, [s for s in slots if (spec.name, s) not in claimed]) for spec, _, _, slots in group]
        recorded = self._record(unclaimed, now)
        judged_at, capped = float("inf"), False
        for spec, horizon, limit, slots in group:
            if slots:
                self._to_collect.add(spec.name)  # it has new claims (or records) to collect one day
            if slots and len(slots) == limit:
                self._cursor[spec.name] = self._judged[spec.name] = slots[-1]
                judged_at = min(judged_at, slots[-1] + reach(spec))
                capped = True
                self._visit(spec.name, float("-inf"))
            else:
                self._cursor[spec.name] = self._judged[spec.name] = horizon
                self._book(spec, self._due(spec, horizon))
        return recorded, judged_at, capped

    def _claimed(self, firings: list[tuple[str, list[int]]]) -> set[tuple[str, int]]:
        """Which of ``firings`` (job, ascending slots) have a record in etcd, in one read-only round
        trip: per job, one keys-only Range over its claims from its first slot to its last (a job's
        firings are judged in a row, so that span holds little else). The read is linearizable: a
        record committed before it is seen; one committed after it wins over ours anyway, each record
        being a compare-and-swap on the firing having none."""
        keys = self.node.keys
        asked = [(job, slots) for job, slots in firings if slots]
        if not asked:
            return set()
        ops = [_range(keys.claim(job, slots[0]).encode(), keys.claim(job, slots[-1]).encode() + b"\0", keys_only=True)
               for job, slots in asked]
        out: set[tuple[str, int]] = set()
        for (job, slots), kvs in zip(asked, self.node.store.txn([], ops).ranges):
            found = {k.slot for kv in kvs if (k := keys.parse(kv.key)).kind is Kind.CLAIM and k.job == job}
            out.update((job, s) for s in slots if s in found)
        return out

    def _due(self, spec: "JobSpec", start: float) -> float | None:
        """The job's first firing after ``start`` (remembered: most visits find nothing due, and only
        ask croniter again once the horizon has passed it)."""
        due = self._next.get(spec.name)
        if due is None or due[0] != start or due[1] != spec.schedule + spec.tz:
            due = self._next[spec.name] = (start, spec.schedule + spec.tz, spec.next_after(start))
        return due[2]

    def _book(self, spec: "JobSpec", firing: float | None) -> None:
        """Visit the job again once ``firing`` can be judged (``firing`` None: only when it changes)."""
        if firing is not None:
            self._visit(spec.name, firing + reach(spec))

    def _visit(self, name: str, when: float) -> None:
        token = self._token[name] = next(self._tokens)
        heapq.heappush(self._visits, (when, token, name))

    def _store_watermark(self, at: float) -> None:
        # A plain put, not a compare-and-swap: only the leader writes it, and any value written is true
        # of the judgement of the node that wrote it. A node that briefly also believes it leads may
        # write a lower value; a lower watermark only makes a later leader rescan more (each record is
        # a compare-and-swap on the firing having none, and collected firings are below the job's
        # collected mark, where no scan starts). A CAS would buy nothing but a retry path.
        if at == self._watermark:
            return
        self.node.store.put(self.node.keys.missed_watermark, json.dumps({"at": at}))
        self._watermark = at

    def _record(self, missed: list[tuple["JobSpec", list[int]]], now: float) -> int:
        """Record ``missed`` for the firings of several jobs in shared round trips; each record is its
        own compare-and-swap on the firing having none yet (:meth:`Claims.record_many`)."""
        items = [(spec.name, s, State.MISSED, {"recorded_at": now}) for spec, slots in missed for s in slots]
        if not items:
            return 0
        oks = iter(self.node.claims.record_many(items))
        n = 0
        for spec, slots in missed:
            done = [slot for slot in slots if next(oks)]
            for slot in done[:LOG_EACH]:
                log.warning("firing.missed", job=spec.name, slot=slot, deadline=spec.starting_deadline)
            if len(done) > LOG_EACH:
                log.warning("firings.missed", job=spec.name, firings=len(done), logged=LOG_EACH, first=slots[0],
                            last=slots[-1], deadline=spec.starting_deadline)
            n += len(done)
        return n

    def collect(self, now: float) -> int:
        """Delete finished claims older than their job's deadline window, keeping the newest few per job,
        and only those the missed scan has judged; their slots are added to ``collected/<job>`` in
        the same transaction. Then drop the stale hand-over marks (:meth:`_drop_lost_marks`).

        The claims are read from etcd, job by job, never all at once: first their keys, then the values
        of only the jobs that may have a claim to collect. Whose keys: every job's (removed jobs' too)
        at a leadership's first collection and every :data:`FULL_COLLECT_EVERY`; otherwise only the
        jobs the missed scan judged firings of since, the removed ones, and those left with claims
        to collect later. With 1,000,000 registered jobs, listing every job's keys each time cost
        ~1,000 read round trips per collection (0.25 etcd `Txn` per firing at 200 firings/s) and
        most of the leader's idle CPU (bench/scale.py)."""
        if not self._loaded:
            self._load()
        mono = self.node.clock.monotonic()
        full = mono - self._last_full >= FULL_COLLECT_EVERY
        todo, self._to_collect = self._to_collect, set()
        try:
            done = self._collect(now, None if full else todo)
        except BaseException:
            self._to_collect |= todo  # read again next time
            raise
        if full:
            self._last_full = mono
        return done

    def _collect(self, now: float, only: set[str] | None) -> int:
        view = self.node.view
        with view.lock:
            specs = {name: spec for name, (spec, _) in view.jobs.items()}
            # a backfill in progress relies on its claims to run each firing once: keep them
            shielded = [(job, req["from"], req["to"]) for (job, _), (_, req) in view.backfills.items()]
            lost_marks = dict(view.lost_marks)
        deleter = _Deleter(self, specs)
        finished_jobs: set[str] = set()  # jobs with a finished claim: a removed one's mark goes with them
        for job, finished in self._finished(specs, shielded, now, only):
            if finished:
                finished_jobs.add(job)
            spec = specs.get(job)
            window = (spec.starting_deadline if spec else 0.0) + 60.0
            # a job's claims go only once this leadership's scan has judged their firings (a removed
            # job is never scanned again: all of its claims go)
            judged = self._judged.get(job, float("-inf")) if spec else float("inf")
            keep = set(finished[-KEEP_PER_JOB:]) if spec else set()
            doomed = [s for s in finished if s < now - window and s <= judged and s not in keep
                      and not any(j == job and lo <= s <= hi for j, lo, hi in shielded)]
            for i in range(0, len(doomed), COLLECT_CHUNK):
                deleter.add(job, doomed[i:i + COLLECT_CHUNK])
            if spec is not None and len(finished) - len(doomed) > KEEP_PER_JOB:
                self._to_collect.add(job)  # more go once their window has passed
        # the marks of removed jobs go with their last claims, or alone
        for job in [job for job in self._marks if job not in specs and job not in finished_jobs]:
            deleter.add(job, [])
        done = deleter.flush()
        if done:
            log.info("leader.collected", claims=done)
        self._drop_lost_marks(lost_marks, specs, now)
        self._compact()
        return done

    def _may_collect(self, job: str, slots: list[int], spec: "JobSpec | None", shielded: list, now: float) -> bool:
        """Could any of a job's claims (``slots``, from its keys) be collected? Only those that can are
        read with their values: a job with no more claims than it keeps costs its keys alone."""
        if spec is None:
            return True  # removed: read, so that its mark goes with its last claims or alone
        if len(slots) <= KEEP_PER_JOB:
            return False  # every finished claim among them is among the newest kept
        old, judged = now - spec.starting_deadline - 60.0, self._judged.get(job, float("-inf"))
        return any(s < old and s <= judged and not any(j == job and lo <= s <= hi for j, lo, hi in shielded)
                   for s in slots)

    def _finished(self, specs: dict, shielded: list, now: float, only: set[str] | None = None):
        """(job, ascending slots of its finished claims) for every job (of ``only``, if given) whose
        claims may be collected, read in round trips of up to :data:`VALUE_KEYS` claims (a job with
        more is read alone, paged)."""
        keys, store = self.node.keys, self.node.store
        pending: list[tuple[str, int]] = []  # (job, how many claims)
        size = 0

        def states(kvs) -> list[int]:
            out = []
            for kv in kvs:
                k = keys.parse(kv.key)
                if k.kind is Kind.CLAIM and Claim.parse(k.job, k.slot, kv.value, kv.mod_revision).state in FINAL:
                    out.append(k.slot)
            return sorted(out)

        def read(batch: list[tuple[str, int]]):
            ops = [_range(keys.claims(job).encode(), st.prefix_end(keys.claims(job))) for job, _ in batch]
            for (job, _), kvs in zip(batch, store.txn([], ops).ranges):
                yield job, states(kvs)

        for job, slots in self._claim_keys(specs, only):
            if not self._may_collect(job, slots, specs.get(job), shielded, now):
                continue
            if len(slots) > VALUE_KEYS:
                yield job, states(store.get_prefix(keys.claims(job))[0])
                continue
            if pending and (size + len(slots) > VALUE_KEYS or len(pending) >= SEGMENTS):
                yield from read(pending)
                pending, size = [], 0
            pending.append((job, len(slots)))
            size += len(slots)
        if pending:
            yield from read(pending)

    def _claim_keys(self, specs: dict, only: set[str] | None = None):
        """(job, ascending slots) of every job with claims, removed jobs' too, from the keys alone
        (``only``: of those jobs alone, one segment each).

        ``claims/`` is cut into segments at every :data:`SEGMENT_JOBS`-th known job, each read as one
        Range of at most :data:`SEGMENT_PAGE` keys (a fuller one page by page), :data:`SEGMENTS` per
        round trip. Not one Range over the whole prefix in pages: etcd counts every key from a page's
        start to the range's end, so paging through n keys costs it n²/2 per page size; a segment's
        end bounds that count to the segment."""
        keys, store = self.node.keys, self.node.store
        base = keys.claims()
        if only is not None:
            segments = [(keys.claims(job).encode(), st.prefix_end(keys.claims(job))) for job in sorted(only)]
        else:
            starts = sorted(keys.claims(name).encode() for name in specs)[SEGMENT_JOBS::SEGMENT_JOBS]
            edges = [base.encode(), *starts, st.prefix_end(base)]
            segments = list(zip(edges, edges[1:]))

        def claim_keys():
            for first in range(0, len(segments), SEGMENTS):
                chunk = segments[first:first + SEGMENTS]
                ops = [_range(lo, hi, SEGMENT_PAGE, keys_only=True) for lo, hi in chunk]
                for (_, hi), kvs in zip(chunk, store.txn([], ops).ranges):
                    while True:
                        yield from (k for kv in kvs if (k := keys.parse(kv.key)).kind is Kind.CLAIM)
                        if len(kvs) < SEGMENT_PAGE:
                            break
                        nxt = _range(kvs[-1].key.encode() + b"\0", hi, SEGMENT_PAGE, keys_only=True)
                        kvs = store.txn([], [nxt]).ranges[0]

        for job, parsed in itertools.groupby(claim_keys(), key=lambda k: k.job):
            yield job, [k.slot for k in parsed]

    def _drop_lost_marks(self, marks: dict[tuple[str, int], int], specs: dict, now: float) -> int:
        """Delete the hand-over marks (``control/lost/<job>/<slot>``, see ``marks``: firing -> mod
        revision) that nobody will consume: their firing's claim is no longer unfinished, or is gone,
        or their job is removed (nobody recovers a removed job's runs), and this leader has seen the mark unchanged for :data:`LOST_MARK_AGE`. The rerun's claim
        deletes its mark; one left over (the rerun found the firing done, a claim collected) would
        otherwise stay for ever. Each delete is a compare-and-swap on the mark and on the claim as
        read, so a mark written or a claim changed since goes nowhere."""
        seen = self._lost_seen
        self._lost_seen = {f: (rev, seen[f][1] if f in seen and seen[f][0] == rev else now) for f, rev in marks.items()}
        old = [(f, rev) for f, (rev, at) in self._lost_seen.items() if now - at >= LOST_MARK_AGE]
        if not old:
            return 0
        keys, store = self.node.keys, self.node.store
        lost_key = keys.lost
        txns = []
        for first in range(0, len(old), TXN_OPS):
            chunk = old[first:first + TXN_OPS]
            claims = store.txn([], [st.get(keys.claim(job, slot)) for (job, slot), _ in chunk]).ranges
            for ((job, slot), rev), kvs in zip(chunk, claims):
                kv = kvs[0] if kvs else None
                if job in specs and kv is not None and Claim.parse(job, slot, kv.value, kv.mod_revision).state in UNFINISHED:
                    continue  # still to be run again (or running again): the rerun's claim deletes it
                ck = keys.claim(job, slot)
                txns.append(([st.mod_rev(lost_key(job, slot), "==", rev),
                              st.mod_rev(ck, "==", kv.mod_revision) if kv else st.version(ck, "==", 0)],
                             [st.delete(lost_key(job, slot))], []))
        dropped = 0
        for first in range(0, len(txns), TXN_OPS // 2):
            results, _ = store.txn_batch(txns[first:first + TXN_OPS // 2])
            dropped += sum(res.succeeded for res in results)
        if dropped:
            log.info("leader.dropped_lost_marks", marks=dropped)
        return dropped

    def _delete(self, batch: list[tuple[str, list[int]]], specs: dict) -> int:
        """One round trip: per job, a nested transaction deleting its claims and updating its collected
        mark, on the condition that the mark is still the one we know (another node acting as leader
        at the same time could have moved it; then that job waits for the next pass)."""
        keys, txns, marks = self.node.keys, [], []
        for job, chunk in batch:
            ranges, rev = self._marks.get(job, ([], 0))
            mk = keys.collected(job)
            spec = specs.get(job)
            new = add_collected(spec, ranges, chunk) if spec is not None else None
            ops = [st.delete(keys.claim(job, s)) for s in chunk]
            ops.append(st.put(mk, json.dumps(new)) if new is not None else st.delete(mk))
            txns.append(([st.mod_rev(mk, "==", rev)], ops, []))
            marks.append(new)
        results, revision = self.node.store.txn_batch(txns)
        n = 0
        for (job, chunk), new, res in zip(batch, marks, results):
            if not res.succeeded:
                log.warning("leader.collect_refused", job=job, reason="its collected mark changed under us")
                self._loaded = False  # read the marks again before the next pass
                continue
            n += len(chunk)
            if new is None:
                self._marks.pop(job, None)
            else:
                self._marks[job] = (new, revision)
        return n

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
