"""A node's mirror of the cluster: everything under the prefix, kept current by one watch.

Scheduling decisions read the view (which jobs, which live nodes, who leads, which firings are
claimed); correctness never depends on it being fresh, because every decision that matters is a
compare-and-swap in etcd.
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass, field

import structlog

from .claims import Claim
from .jobs import JobSpec
from .keys import Keys, Kind, Parsed
from .nodes import leader_of, serves
from .store import KV, Event

log = structlog.get_logger("etcdcron.view")

_CONTROL = frozenset({Kind.DEGRADE, Kind.KILL, Kind.DRAIN, Kind.TRIGGER, Kind.BACKFILL})


@dataclass
class Changes:
    """What one batch of events changed, for the node to act on."""

    jobs: set[str] = field(default_factory=set)
    lost: list[Claim] = field(default_factory=list)
    control: bool = False
    relisted: bool = False


class View:
    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.lock = threading.RLock()
        self.revision = 0
        self.jobs: dict[str, tuple[JobSpec, int]] = {}
        self.nodes: dict[str, dict] = {}
        self.candidates: dict[str, tuple[int, str]] = {}  # key -> (create_revision, node id)
        self.claims: dict[tuple[str, int], Claim] = {}
        self.running: dict[tuple[str, int], int] = {}  # -> create revision (= fence)
        self.running_lease: dict[tuple[str, int], int] = {}  # -> the runner's lease
        self.degrade: dict = {}
        self.kills: dict[str, int] = {}  # job -> revision below which its runs must stop
        self.drains: set[str] = set()
        self.triggers: dict[str, tuple[int, dict]] = {}  # job -> (mod revision, request)
        self.backfills: dict[tuple[str, str], tuple[int, dict]] = {}  # (job, id) -> (mod revision, request)
        self.runs: dict[str, int] = {}  # job -> number of claims so far (for --max-runs)
        # jobs whose spec or run count changed, for the leader's scan; None: not tracked (not leading)
        self._changed_jobs: set[str] | None = None

    # --- loading
    def load(self, kvs: list[KV], revision: int) -> Changes:
        with self.lock:
            old_jobs = set(self.jobs)
            self.jobs.clear(); self.nodes.clear(); self.candidates.clear()
            self.claims.clear(); self.running.clear(); self.running_lease.clear(); self.degrade = {}
            self.kills.clear(); self.drains.clear(); self.triggers.clear(); self.backfills.clear(); self.runs.clear()
            for kv in kvs:
                self._put(self.keys.parse(kv.key), kv)
            self.revision = revision
            if self._changed_jobs is not None:
                self._changed_jobs = old_jobs | set(self.jobs)
            return Changes(jobs=old_jobs | set(self.jobs), lost=self.lost_runs(), control=True, relisted=True)

    def apply(self, events: list[Event], revision: int) -> Changes:
        ch = Changes()
        with self.lock:
            touched: set[tuple[str, int]] = set()
            for ev in events:
                k = self.keys.parse(ev.kv.key)
                if k.kind is Kind.JOB:
                    ch.jobs.add(k.job)
                if self._changed_jobs is not None and k.kind in (Kind.JOB, Kind.RUNS):
                    self._changed_jobs.add(k.job)
                elif k.kind in _CONTROL:
                    ch.control = True
                elif k.kind is Kind.RUNNING and ev.kind == "delete":
                    touched.add(k.firing)
                if ev.kind == "put":
                    self._put(k, ev.kv)
                else:
                    self._delete(k, ev.kv.key)
            self.revision = max(self.revision, revision)
            # judged after the whole batch: a completion deletes the running key and finalises the
            # claim in one revision, which is not a loss
            for ident in touched:
                c = self.claims.get(ident)
                if c is not None and c.unfinished and ident not in self.running:
                    ch.lost.append(c)
        return ch

    def _put(self, k: Parsed, kv: KV) -> None:
        try:
            if k.kind is Kind.JOB:  # the name interned: one string per job, shared with its spec's
                self.jobs[sys.intern(k.job)] = (JobSpec.from_json(kv.value), kv.mod_revision)
            elif k.kind is Kind.NODE:
                self.nodes[k.node] = json.loads(kv.value)
            elif k.kind is Kind.CANDIDATE:
                self.candidates[kv.key] = (kv.create_revision, kv.value.decode())
            elif k.kind is Kind.CLAIM:
                self.claims[k.firing] = Claim.parse(k.job, k.slot, kv.value, kv.mod_revision)
            elif k.kind is Kind.RUNNING:
                self.running[k.firing] = kv.create_revision
                self.running_lease[k.firing] = kv.lease
            elif k.kind is Kind.RUNS:
                self.runs[k.job] = kv.version
            elif k.kind is Kind.DEGRADE:
                self.degrade = json.loads(kv.value)
            elif k.kind is Kind.KILL:
                self.kills[k.job] = kv.mod_revision
            elif k.kind is Kind.DRAIN:
                self.drains.add(k.node)
            elif k.kind is Kind.TRIGGER:
                self.triggers[k.job] = (kv.mod_revision, json.loads(kv.value))
            elif k.kind is Kind.BACKFILL:
                self.backfills[(k.job, k.ident)] = (kv.mod_revision, json.loads(kv.value))
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("view.bad_value", key=kv.key, error=str(exc)[:200])

    def _delete(self, k: Parsed, key: str) -> None:
        if k.kind is Kind.JOB:
            self.jobs.pop(k.job, None)
        elif k.kind is Kind.NODE:
            self.nodes.pop(k.node, None)
        elif k.kind is Kind.CANDIDATE:
            self.candidates.pop(key, None)
        elif k.kind is Kind.CLAIM:
            self.claims.pop(k.firing, None)
        elif k.kind is Kind.RUNNING:
            self.running.pop(k.firing, None)
            self.running_lease.pop(k.firing, None)
        elif k.kind is Kind.RUNS:
            self.runs.pop(k.job, None)
        elif k.kind is Kind.DEGRADE:
            self.degrade = {}
        elif k.kind is Kind.KILL:
            self.kills.pop(k.job, None)
        elif k.kind is Kind.DRAIN:
            self.drains.discard(k.node)
        elif k.kind is Kind.TRIGGER:
            self.triggers.pop(k.job, None)
        elif k.kind is Kind.BACKFILL:
            self.backfills.pop((k.job, k.ident), None)

    def track_changed_jobs(self, on: bool) -> None:
        """Start (or stop) noting which jobs change, for :meth:`take_changed_jobs`; a node that does
        not lead keeps no such set (it would hold every job's name)."""
        with self.lock:
            self._changed_jobs = set() if on else None

    def take_changed_jobs(self) -> set[str]:
        """The jobs whose spec or run count changed since the last call (every job after a load);
        tracking starts with the first call."""
        with self.lock:
            out, self._changed_jobs = self._changed_jobs or set(), set()
            return out

    # --- queries
    def lost_runs(self) -> list[Claim]:
        with self.lock:
            return [c for ident, c in self.claims.items() if c.unfinished and ident not in self.running]

    def leader(self) -> str | None:
        with self.lock:
            return leader_of(self.candidates.values())

    def eligible(self, level: int) -> list[str]:
        with self.lock:
            return [nid for nid, info in self.nodes.items() if serves(info, level)]

    def job(self, name: str) -> tuple[JobSpec, int] | None:
        with self.lock:
            return self.jobs.get(name)

    def degraded(self) -> set[int]:
        with self.lock:
            return set(self.degrade.get("levels", ()))

    def running_of(self, job: str) -> list[int]:
        """Slots of the job whose runs are alive somewhere."""
        with self.lock:
            return [slot for (j, slot) in self.running if j == job]

    def runs_on_lease(self, lease: int) -> list[tuple[str, int, int]]:
        """(job, slot, run fence) of every live run on ``lease``."""
        with self.lock:
            return [(j, s, self.running[(j, s)]) for (j, s), le in self.running_lease.items() if le == lease]

    def exhausted(self, spec: JobSpec) -> bool:
        with self.lock:
            return spec.max_runs is not None and self.runs.get(spec.name, 0) >= spec.max_runs

    def claimed(self, job: str, slot: int) -> bool:
        with self.lock:
            return (job, slot) in self.claims
