"""A node's mirror of the cluster: what decisions need of the prefix, kept current by one watch.

Scheduling decisions read the view (which jobs, which live nodes, who leads, what is asked of the
control keys); correctness never depends on it being fresh, because every decision that matters is
a compare-and-swap in etcd.

The per-firing keys, ``claims/`` and ``running/``, are left out of the watch (issue 11): every node
receiving every firing's four key changes made each node pay for the whole cluster, so adding nodes
added no capacity. What a node needs of them it reads when it needs it (a takeover's check, a
``forbid`` wait, a backfill). Lost runs are found without them: a lease's death is the delete of its
``leases/<hex>`` mark, in the same revision as every running key on it (see
:meth:`etcdcron.firing.Firing.find_lost`), and a run its node stopped is handed over through
``control/lost/<job>/<slot>``. A relist still reads the whole prefix, and finds there the runs lost
while the watch was away.
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import dataclass, field

import structlog

from .claims import _UNFINISHED_MARKS, Claim
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
    lost: list[Claim] = field(default_factory=list)  # a relist: runs lost while the watch was away
    dead: list[tuple[int, int]] = field(default_factory=list)  # (lease, revision of its death)
    # (lease, revision) of a node gone from nodes/ whose lease has no mark: a node of a version from
    # before the marks (a rolling upgrade), whose runs are followed until they end
    unmarked: list[tuple[int, int]] = field(default_factory=list)
    handed: list[tuple[str, int]] = field(default_factory=list)  # firings their nodes stopped (control/lost)
    control: bool = False
    relisted: bool = False


def lost_in(listing: list[tuple[Parsed, KV]]) -> list[Claim]:
    """The lost runs of a listing of ``claims/`` and ``running/`` at one revision (each key parsed):
    records still unfinished whose running key is not listed. A record whose bytes name no
    unfinished state is not parsed."""
    claims: list[tuple[Parsed, KV]] = []
    running: set[tuple[str, int]] = set()
    for k, kv in listing:
        if k.kind is Kind.CLAIM and any(m in kv.value for m in _UNFINISHED_MARKS):
            claims.append((k, kv))
        elif k.kind is Kind.RUNNING:
            running.add(k.firing)
    return [c for k, kv in claims if k.firing not in running
            and (c := Claim.parse(k.job, k.slot, kv.value, kv.mod_revision)).unfinished]


class View:
    def __init__(self, keys: Keys) -> None:
        self.keys = keys
        self.lock = threading.RLock()
        self.revision = 0
        self.jobs: dict[str, tuple[JobSpec, int]] = {}
        self.nodes: dict[str, dict] = {}
        self.candidates: dict[str, tuple[int, str]] = {}  # key -> (create_revision, node id)
        self.lost_marks: dict[tuple[str, int], int] = {}  # control/lost: (job, slot) -> mod revision
        self.marked: set[int] = set()  # leases with a leases/ mark
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
        """Replace the view by a listing of the whole prefix; the listing's claims and running keys
        are read for the runs lost meanwhile, not kept."""
        firings: list[tuple[Parsed, KV]] = []
        with self.lock:
            old_jobs = set(self.jobs)
            self.jobs.clear(); self.nodes.clear(); self.candidates.clear(); self.lost_marks.clear(); self.marked.clear()
            self.degrade = {}
            self.kills.clear(); self.drains.clear(); self.triggers.clear(); self.backfills.clear(); self.runs.clear()
            for kv in kvs:
                k = self.keys.parse(kv.key)
                if k.kind in (Kind.CLAIM, Kind.RUNNING):
                    firings.append((k, kv))
                else:
                    self._put(k, kv)
            self.revision = revision
            if self._changed_jobs is not None:
                self._changed_jobs = old_jobs | set(self.jobs)
        return Changes(jobs=old_jobs | set(self.jobs), lost=lost_in(firings), control=True, relisted=True)

    def apply(self, events: list[Event], revision: int) -> Changes:
        ch = Changes()
        with self.lock:
            for ev in events:
                k = self.keys.parse(ev.kv.key)
                if k.kind is Kind.JOB:
                    ch.jobs.add(k.job)
                if self._changed_jobs is not None and k.kind in (Kind.JOB, Kind.RUNS):
                    self._changed_jobs.add(k.job)
                elif k.kind in _CONTROL:
                    ch.control = True
                elif k.kind is Kind.LEASE and ev.kind == "delete":
                    ch.dead.append((int(k.node, 16), ev.kv.mod_revision))
                elif k.kind is Kind.NODE and ev.kind == "delete":
                    lease = (self.nodes.get(k.node) or {}).get("lease")
                    # a marked lease's death comes as its mark's delete, in the same revision
                    if isinstance(lease, int) and lease not in self.marked and all(d != lease for d, _ in ch.dead):
                        ch.unmarked.append((lease, ev.kv.mod_revision))
                elif k.kind is Kind.LOST and ev.kind == "put":
                    ch.handed.append(k.firing)
                if ev.kind == "put":
                    self._put(k, ev.kv)
                else:
                    self._delete(k, ev.kv.key)
            self.revision = max(self.revision, revision)
        return ch

    def _put(self, k: Parsed, kv: KV) -> None:
        try:
            if k.kind is Kind.JOB:  # the name interned: one string per job, shared with its spec's
                self.jobs[sys.intern(k.job)] = (JobSpec.from_json(kv.value), kv.mod_revision)
            elif k.kind is Kind.NODE:
                self.nodes[k.node] = json.loads(kv.value)
            elif k.kind is Kind.CANDIDATE:
                self.candidates[kv.key] = (kv.create_revision, kv.value.decode())
            elif k.kind is Kind.LOST:
                self.lost_marks[k.firing] = kv.mod_revision
            elif k.kind is Kind.LEASE:
                self.marked.add(int(k.node, 16))
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
        elif k.kind is Kind.LOST:
            self.lost_marks.pop(k.firing, None)
        elif k.kind is Kind.LEASE:
            self.marked.discard(int(k.node, 16))
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

    def exhausted(self, spec: JobSpec) -> bool:
        with self.lock:
            return spec.max_runs is not None and self.runs.get(spec.name, 0) >= spec.max_runs
