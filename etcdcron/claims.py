"""Claims: who runs a firing, decided by compare-and-swap in etcd and fenced by revisions.

A firing (job, slot) has one persistent record ``claims/<job>/<slot>`` and, while a run is alive,
``running/<job>/<slot>`` on the runner's lease. Both are written in one transaction, so:

* the fencing token of a run is the revision of the transaction that gave it the claim (strictly
  greater for every later claim and every retry, because etcd revisions only grow);
* a run is *lost* exactly when its record says ``running`` (or ``interrupted``) but its running key
  is gone (the lease expired with the node, or its node stopped it: then the completion that
  records it ``interrupted`` also writes ``control/lost/<job>/<slot>``, which the nodes watch);
* a completion or a retry is accepted only if the record still carries our fence and the running
  key is still the one we created (``run_fence``): a node that slept through its lease is refused.

Overlap policies live here too: ``forbid`` claims only if no running key exists for the job (one
range comparison in the same transaction); ``replace`` writes ``control/kill/<job>`` in the claim's
transaction, whose revision tells every node which older runs to stop.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Iterable

from . import store as st
from .errors import StoreError, StoreUnavailable
from .keys import Keys
from .metrics import Metrics
from .states import UNFINISHED, State, Why
from .store import KV, EtcdStore

BATCH = 64  # firings per claim round trip (etcd allows 128 operations per transaction by default)
LINGER = 0.1  # a completion sent less than this after the previous round trip waits to share the next one
ETCD_OUTPUT = 512  # bytes of a run's output tail kept in its etcd record (the history store keeps 4 KiB)


_FIELDS = ("state", "attempt", "node", "fence", "started", "ended", "reason", "exit_code", "output", "killed_by",
           "prev_fence", "prev_node", "tries", "recorded_by")


@dataclass(frozen=True)
class ClaimRecord:
    """The value stored at ``claims/<job>/<slot>``: what became of one firing. Fields that do not
    apply are None and not stored; the node that writes a record adds only what it knows."""

    state: State
    attempt: int = 0  # 1 for the first run, + 1 for each retry and each recovery; 0: never run
    node: str | None = None  # the node that runs (or ran) it; None for a firing never run
    fence: int | None = None  # the fence its outcome was recorded under (set once it is final)
    started: float | None = None  # wall time of the claim, then of the run's start
    ended: float | None = None  # wall time the run ended (or the loss was recorded)
    reason: str | None = None  # why it ran: schedule, catchup, trigger, backfill, recovery, retry, adopted
    exit_code: int | None = None
    output: str | None = None  # the tail of its output (ETCD_OUTPUT bytes in etcd)
    killed_by: str | None = None  # killed or interrupted: kill, replace, degrade, shutdown, clock, lease_lost
    prev_fence: int | None = None  # a recovery: the fence of the run that was lost
    prev_node: str | None = None  # a recovery: the node that ran it
    tries: list | None = None  # with retries: {attempt, fence, state, exit_code, started, ended} per try
    recorded_by: str | None = None  # a non-run (missed, skipped, degraded, lost): the node that recorded it
    extra: dict = field(default_factory=dict)  # any other field (level, running, recorded_at, adopted…), kept as is

    @classmethod
    def of(cls, state: State | str, **fields: Any) -> "ClaimRecord":
        """A record from keyword fields; those that are not attributes go to ``extra``."""
        known = {k: v for k, v in fields.items() if k in _FIELDS}
        extra = {k: v for k, v in fields.items() if k not in _FIELDS}
        return cls(_state(state), **known, extra=extra)

    @classmethod
    def from_json(cls, raw: bytes | str) -> "ClaimRecord":
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("a claim record is a JSON object")
        return cls.of(data.pop("state", "?"), **data)

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k in _FIELDS if (v := getattr(self, k)) is not None}
        out.update(self.extra)
        return out

    def to_json(self) -> bytes:
        return _dump(self.as_dict())

    def replace(self, **changes: Any) -> "ClaimRecord":
        return dataclasses.replace(self, **changes)


def _state(value: State | str) -> State | str:
    try:
        return State(value)
    except ValueError:
        return value  # a record written by a newer version: shown as is, never acted on


class Claim:
    """A firing's record as stored in etcd, with the key's mod revision.

    Parsed lazily: every node's view holds a Claim per firing of the cluster and sees several
    changes per firing, but reads the record of only a few of them."""

    __slots__ = ("job", "slot", "mod_revision", "_raw", "_record")

    def __init__(self, job: str, slot: int, raw: bytes, mod_revision: int) -> None:
        self.job, self.slot, self.mod_revision, self._raw = job, slot, mod_revision, raw
        self._record: ClaimRecord | None = None

    @classmethod
    def parse(cls, job: str, slot: int, value: bytes, mod_revision: int) -> "Claim":
        return cls(job, slot, value, mod_revision)

    @property
    def record(self) -> ClaimRecord:
        if self._record is None:
            try:
                self._record = ClaimRecord.from_json(self._raw)
            except (ValueError, TypeError):
                self._record = ClaimRecord("?")
        return self._record

    @property
    def data(self) -> dict[str, Any]:
        """The record as a dict (for display)."""
        return self.record.as_dict()

    @property
    def state(self) -> State | str:
        return self.record.state

    @property
    def attempt(self) -> int:
        return int(self.record.attempt or 0)

    @property
    def node(self) -> str | None:
        return self.record.node

    @property
    def fence(self) -> int:
        """Revision of the claim that ran (or runs) it; 0 for a firing never run."""
        return self.record.fence or (self.mod_revision if self.state == State.RUNNING else 0)

    @property
    def running(self) -> bool:
        return self.state == State.RUNNING

    @property
    def unfinished(self) -> bool:
        """Running, or interrupted by its node's shutdown: lost once its running key is gone.

        Asked of every firing whose running key goes, on every node: a record whose bytes hold no
        unfinished state's name as a JSON string anywhere is answered without parsing it."""
        if self._record is None and isinstance(self._raw, bytes) and not any(m in self._raw for m in _UNFINISHED_MARKS):
            return False
        return self.state in UNFINISHED

    def __repr__(self) -> str:
        return f"Claim({self.job!r}, {self.slot}, {self.state!r}, attempt={self.attempt}, node={self.node!r}, fence={self.fence})"


@dataclass(frozen=True)
class Outcome:
    """What a claim attempt came to: ``fence`` when we got it, else why not."""

    fence: int | None
    why: Why = Why.CLAIMED
    current: KV | None = None  # CHANGED: the job's spec as it is now
    run_fence: int | None = None  # RESOLVED: the create revision of our running key
    running: tuple[int, ...] = ()  # BLOCKED: the slot of a run of the job in the way

    def __bool__(self) -> bool:
        return self.fence is not None


@dataclass(frozen=True)
class ClaimRequest:
    """One firing to claim, with the job's policies."""

    job: str
    slot: int
    job_rev: int
    concurrency: str = "allow"
    max_runs: int | None = None
    over: Claim | None = None
    reason: str = "schedule"
    extra_cmp: tuple = ()
    extra_ops: tuple = ()


_UNFINISHED_MARKS = tuple(f'"{state}"'.encode() for state in sorted(UNFINISHED))  # as a JSON string, anywhere


def rank(key: str, nodes: Iterable[str]) -> list[str]:
    """Rendezvous (highest random weight) order of ``nodes`` for ``key``: every node computes the same."""
    def weight(node: str) -> bytes:
        return hashlib.blake2b(f"{key}|{node}".encode(), digest_size=8).digest()
    return sorted(nodes, key=weight, reverse=True)


def unit_hash(key: str) -> float:
    """A number in [0, 1) that every node derives alike from ``key`` (jitter, backoff)."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") / 2**64


def _dump(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


class Claims:
    """The transactions on claims; each returns what happened, none retries on its own."""

    def __init__(self, store: EtcdStore, keys: Keys, node_id: str, on_record=None, metrics: Metrics | None = None,
                 linger: float = LINGER) -> None:
        self.store, self.keys, self.node_id = store, keys, node_id
        self.linger = linger
        self._last_send = float("-inf")  # monotonic: when the last group of completions was sent
        metrics = metrics or Metrics.off()
        self._claim_txn, self._complete_txn = metrics.claim_txn, metrics.complete_txn  # round-trip latency
        # called with (job, slot, record) for every final record we write: the long-term history
        self.on_record = on_record or (lambda job, slot, rec: None)
        self._group: queue.Queue = queue.Queue()
        self._group_lock = threading.Lock()
        self._group_thread: threading.Thread | None = None
        self._group_idle = threading.Condition(self._group_lock)
        self._pending = 0

    def claim(self, job: str, slot: int, job_rev: int, lease: int, now: float, *, concurrency: str = "allow",
              max_runs: int | None = None, over: Claim | None = None, reason: str = "schedule",
              extra_cmp: Iterable = (), extra_ops: Iterable = ()) -> Outcome:
        """Claim a firing for its first run. ``over`` is a final non-run record (missed, …) that a
        backfill may replace; otherwise the firing must have no record at all.

        Safe to send again after a transport error: if the lost attempt had committed, the answer is
        ``RESOLVED`` with its fence (the record names us and the running key lives on ``lease``)."""
        req = ClaimRequest(job, slot, job_rev, concurrency, max_runs, over, reason, tuple(extra_cmp), tuple(extra_ops))
        cond, ops, diag = self._parts(req, lease, now)
        with self._claim_txn.time():
            res = self.store.txn(cond, ops, diag)
        return Outcome(res.revision) if res.succeeded else self._why(req, res.ranges, lease)

    def claim_many(self, reqs: list["ClaimRequest"], lease: int, now: float) -> list[Outcome]:
        """Claim many firings in one round trip (one nested transaction each, all in one revision).
        Like :meth:`claim`, safe to send again after a transport error."""
        out: list[Outcome] = []
        for i in range(0, len(reqs), BATCH):
            chunk = reqs[i:i + BATCH]
            parts = [self._parts(r, lease, now) for r in chunk]
            with self._claim_txn.time():
                results, _rev = self.store.txn_batch(parts)
            out += [Outcome(res.revision) if res.succeeded else self._why(r, res.ranges, lease)
                    for r, res in zip(chunk, results)]
        return out

    def _parts(self, r: "ClaimRequest", lease: int, now: float):
        ck, rk, jk = self.keys.claim(r.job, r.slot), self.keys.running(r.job, r.slot), self.keys.job(r.job)
        rec = ClaimRecord(State.RUNNING, attempt=1, node=self.node_id, started=now, reason=r.reason)
        cond = [st.mod_rev(ck, "==", r.over.mod_revision) if r.over else st.version(ck, "==", 0),
                st.version(rk, "==", 0), st.mod_rev(jk, "==", r.job_rev), *r.extra_cmp]
        ops = [st.put(ck, rec.to_json()), st.put(rk, self.node_id, lease=lease), *r.extra_ops]
        if r.concurrency == "forbid":
            cond.append(st.none_under(self.keys.runnings_of(r.job)))
        elif r.concurrency == "replace":
            ops.append(st.put(self.keys.kill(r.job), _dump({"reason": "replace", "by": self.node_id, "slot": r.slot})))
        if r.max_runs is not None:
            cond.append(st.version(self.keys.runs(r.job), "<", r.max_runs))
            ops.append(st.put(self.keys.runs(r.job), str(r.slot)))  # its version counts the claims of the job
        diag = [st.get(ck), st.get(jk), st.get_prefix(self.keys.runnings_of(r.job), limit=1), st.get(self.keys.runs(r.job)),
                st.get(rk)]
        return cond, ops, diag

    def _ours(self, claim: list[KV], running: list[KV], lease: int) -> int | None:
        """The fence of a claim that an earlier attempt of ours committed, or None."""
        if not claim or not running or running[0].lease != lease or running[0].create_revision != claim[0].mod_revision:
            return None
        rec = Claim.parse("", 0, claim[0].value, claim[0].mod_revision)
        return claim[0].mod_revision if rec.node == self.node_id and rec.running else None

    def _why(self, r: "ClaimRequest", ranges: list, lease: int) -> Outcome:
        existing, jobkv, running, runs, mine = ranges
        if (fence := self._ours(existing, mine, lease)) is not None:
            return Outcome(fence, Why.RESOLVED, run_fence=fence)
        if (existing and not r.over) or (r.over and existing and existing[0].mod_revision != r.over.mod_revision):
            return Outcome(None, Why.TAKEN)
        if not jobkv or jobkv[0].mod_revision != r.job_rev:
            return Outcome(None, Why.CHANGED, current=jobkv[0] if jobkv else None)
        if r.max_runs is not None and runs and runs[0].version >= r.max_runs:
            return Outcome(None, Why.EXHAUSTED)
        if r.concurrency == "forbid" and running:
            return Outcome(None, Why.BLOCKED, running=self._slots(running))
        return Outcome(None, Why.TAKEN)

    def _slots(self, running: list[KV]) -> tuple[int, ...]:
        return tuple(k.slot for kv in running if (k := self.keys.parse(kv.key)).slot)

    def recover(self, old: Claim, job_rev: int, lease: int, now: float, skip: bool, forbid: bool = False) -> Outcome:
        """Take over a lost run: rerun it under a new fence, or (``skip``) record it ``lost``.
        With ``forbid``, a rerun waits ("blocked") while another run of the job is alive. Safe to send
        again after a transport error (an earlier rerun claim of ours comes back ``RESOLVED``)."""
        ck, rk = self.keys.claim(old.job, old.slot), self.keys.running(old.job, old.slot)
        cond = [st.mod_rev(ck, "==", old.mod_revision), st.version(rk, "==", 0)]
        handed = st.delete(self.keys.lost(old.job, old.slot))  # its hand-over mark, if its node stopped it
        if skip:
            rec = old.record.replace(state=State.LOST, fence=old.fence, ended=now, recorded_by=self.node_id)
            res = self.store.txn(cond, [st.put(ck, rec.to_json()), handed])
            if res.succeeded:
                self.on_record(old.job, old.slot, rec.as_dict())
            return Outcome(0) if res.succeeded else Outcome(None, Why.TAKEN)
        rec = ClaimRecord(State.RUNNING, attempt=old.attempt + 1, node=self.node_id, started=now,
                          prev_fence=old.fence, prev_node=old.node, reason="recovery")
        cond.append(st.mod_rev(self.keys.job(old.job), "==", job_rev))
        if forbid:
            cond.append(st.none_under(self.keys.runnings_of(old.job)))
        res = self.store.txn(cond, [st.put(ck, rec.to_json()), st.put(rk, self.node_id, lease=lease), handed],
                             [st.get(ck), st.get_prefix(self.keys.runnings_of(old.job), limit=1), st.get(rk)])
        if res.succeeded:
            return Outcome(res.revision)
        current, running, mine = res.ranges
        if (fence := self._ours(current, mine, lease)) is not None:
            return Outcome(fence, Why.RESOLVED, run_fence=fence)
        if forbid and current and current[0].mod_revision == old.mod_revision and running:
            return Outcome(None, Why.BLOCKED, running=self._slots(running))
        return Outcome(None, Why.TAKEN)

    def retry(self, job: str, slot: int, fence: int, run_fence: int, attempt: int, now: float,
              previous: list[dict]) -> int | None:
        """Re-claim our own firing for attempt ``attempt``: a new, higher fence; None if fenced out.

        Refused after a ``kill`` (or a ``replace``) newer than the run: its key's revision would
        otherwise be below the new fence and the retry would escape it. Safe to send again after a
        transport error: a retry of ours that had committed is recognised by its attempt number."""
        ck, rk, kk = self.keys.claim(job, slot), self.keys.running(job, slot), self.keys.kill(job)
        rec = ClaimRecord(State.RUNNING, attempt=attempt, node=self.node_id, started=now, reason="retry", tries=previous)
        res = self.store.txn([st.mod_rev(ck, "==", fence), st.create_rev(rk, "==", run_fence),
                              st.mod_rev(kk, "<", run_fence + 1)], [st.put(ck, rec.to_json())], [st.get(ck), st.get(rk)])
        if res.succeeded:
            return res.revision
        claim, running = res.ranges
        if claim and running and running[0].create_revision == run_fence:
            current = Claim.parse(job, slot, claim[0].value, claim[0].mod_revision)
            if current.node == self.node_id and current.attempt == attempt and current.running:
                return claim[0].mod_revision
        return None

    def complete(self, job: str, slot: int, fence: int, record: ClaimRecord | dict, run_fence: int | None = None) -> bool:
        """Record the outcome of our run; False means we were fenced out."""
        return self.complete_async(job, slot, fence, record, run_fence).result()

    def complete_async(self, job: str, slot: int, fence: int, record: ClaimRecord | dict,
                       run_fence: int | None = None, urgent: bool = False) -> Future:
        """Like :meth:`complete`, without waiting: the future resolves to True, or False if fenced out.

        Completions are group-committed: those queued while a round trip is in flight share the next
        one (a nested transaction each), so a node finishing hundreds of runs a second neither pays a
        round trip per run nor holds a worker for it. A completion that comes less than ``linger``
        after the previous round trip waits out the rest of it, gathering the others that come
        meanwhile: at most one completion round trip per ``linger`` (unless a batch fills), while an
        isolated completion is sent at once, and so is an ``urgent`` one (and those gathered with it):
        a ``forbid`` job whose next firing is near must not find its finished run still holding the slot. The etcd record keeps a short output tail; the
        history store gets the whole record."""
        ck, rk = self.keys.claim(job, slot), self.keys.running(job, slot)
        record = ClaimRecord.of(**record) if isinstance(record, dict) else record
        rec = record.replace(node=self.node_id, fence=fence)
        stored = rec.replace(output=rec.output[-ETCD_OUTPUT:]) if len(rec.output or "") > ETCD_OUTPUT else rec
        ops = [st.put(ck, stored.to_json()), st.delete(rk)]
        if rec.state == State.INTERRUPTED:  # handed over: the other nodes watch control/, not claims/
            ops.append(st.put(self.keys.lost(job, slot), str(fence)))
        txn = ([st.mod_rev(ck, "==", fence), st.create_rev(rk, "==", run_fence or fence)], ops, [])
        done: Future = Future()
        with self._group_lock:
            if self._group_thread is None:
                self._group_thread = threading.Thread(target=self._group_commit, name="completer", daemon=True)
                self._group_thread.start()
            self._pending += 1
        self._group.put((txn, done, job, slot, rec, urgent))
        return done

    def flush(self, timeout: float) -> bool:
        """Wait until every queued completion has been sent; False on timeout."""
        with self._group_lock:
            return self._group_idle.wait_for(lambda: self._pending == 0, timeout)

    def _group_commit(self) -> None:
        held: list = []  # items that named a firing already in the batch: they go in the next one
        while True:
            items = held or [self._group.get()]
            held = []
            firings = {(it[2], it[3]) for it in items}
            until = float("-inf") if any(it[5] for it in items) else self._last_send + self.linger
            while len(items) < BATCH:
                try:
                    left = until - time.monotonic()
                    item = self._group.get(timeout=left) if left > 0 else self._group.get_nowait()
                except queue.Empty:
                    break
                # etcd refuses a transaction that names one key twice, and would refuse the whole batch
                if (item[2], item[3]) in firings:
                    held.append(item)
                else:
                    firings.add((item[2], item[3]))
                    items.append(item)
                    if item[5]:
                        until = float("-inf")  # send now, with what has come so far
            self._last_send = time.monotonic()
            outcomes = self._send(items)
            for (_, done, job, slot, rec, _), ok in zip(items, outcomes):
                if isinstance(ok, Exception):
                    done.set_exception(ok)
                    continue
                done.set_result(ok)
                if ok:
                    self.on_record(job, slot, rec.as_dict())
            with self._group_lock:
                self._pending -= len(items)
                self._group_idle.notify_all()

    def _send(self, items: list) -> list[Any]:
        """One round trip for the batch; if etcd refuses it as a whole for another reason than being
        unavailable, each item is sent alone, so that one bad item does not sink the others."""
        try:
            with self._complete_txn.time():
                results, _ = self.store.txn_batch([item[0] for item in items])
            return [res.succeeded for res in results]
        except StoreUnavailable as exc:  # the outcome is unknown: every waiter hears so
            return [exc] * len(items)
        except StoreError as exc:
            if len(items) == 1:
                return [exc]
        out: list[Any] = []
        for item in items:
            try:
                out.append(self.store.txn(*item[0]).succeeded)
            except StoreError as exc:
                out.append(exc)
        return out

    def record_many(self, items: list[tuple[str, int, str, dict]]) -> list[bool]:
        """:meth:`record` for many firings, ``(job, slot, state, extra)`` each: BATCH per round trip,
        each its own compare-and-swap. Under overload, skips come by the hundred a second, and one
        round trip each held the workers (issue 11)."""
        seen: set[tuple[str, int]] = set()
        out: list[bool] = []
        for i in range(0, len(items), BATCH):
            chunk = items[i:i + BATCH]
            recs = [ClaimRecord.of(state, recorded_by=self.node_id, **extra) for _, _, state, extra in chunk]
            txns = []
            for (job, slot, _, _), rec in zip(chunk, recs):  # a firing named twice would sink the batch
                dup = (job, slot) in seen
                seen.add((job, slot))
                txns.append(None if dup else ([st.version(self.keys.claim(job, slot), "==", 0)],
                                              [st.put(self.keys.claim(job, slot), rec.to_json())], []))
            sent = [t for t in txns if t is not None]
            try:
                results = iter(self.store.txn_batch(sent)[0])
                oks = [t is not None and next(results).succeeded for t in txns]
            except StoreUnavailable:
                raise
            except StoreError:  # refused as a whole for another reason: each alone, so one bad item sinks none
                oks = [t is not None and self.store.txn(*t).succeeded for t in txns]
            for (job, slot, _, _), rec, ok in zip(chunk, recs, oks):
                if ok:
                    self.on_record(job, slot, rec.as_dict())
                out.append(ok)
        return out

    def record(self, job: str, slot: int, state: str, **extra: Any) -> bool:
        """Record a firing that did not run (``missed`` …) if nothing is recorded for it yet."""
        return self.record_many([(job, slot, state, extra)])[0]
