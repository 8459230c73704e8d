"""A node's mirror of the cluster: everything under the prefix, kept current by one watch.

Scheduling decisions read the view (which jobs, which live nodes, who leads, which firings are
claimed); correctness never depends on it being fresh, because every decision that matters is a
compare-and-swap in etcd.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field

import structlog

from .claims import Claim
from .jobs import JobSpec
from .keys import Keys
from .store import KV, Event

log = structlog.get_logger("etcdcron.view")


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

    # --- loading
    def load(self, kvs: list[KV], revision: int) -> Changes:
        with self.lock:
            old_jobs = set(self.jobs)
            self.jobs.clear(); self.nodes.clear(); self.candidates.clear()
            self.claims.clear(); self.running.clear(); self.running_lease.clear(); self.degrade = {}
            self.kills.clear(); self.drains.clear(); self.triggers.clear(); self.backfills.clear(); self.runs.clear()
            for kv in kvs:
                self._put(kv)
            self.revision = revision
            return Changes(jobs=old_jobs | set(self.jobs), lost=self.lost_runs(), control=True, relisted=True)

    def apply(self, events: list[Event], revision: int) -> Changes:
        ch = Changes()
        with self.lock:
            touched: set[tuple[str, int]] = set()
            for ev in events:
                kind, parts = self.keys.split(ev.kv.key)
                if kind == "jobs":
                    ch.jobs.add(parts[0])
                elif kind == "control":
                    ch.control = True
                elif kind == "running" and ev.kind == "delete" and len(parts) == 2:
                    touched.add((parts[0], int(parts[1])))
                if ev.kind == "put":
                    self._put(ev.kv)
                else:
                    self._delete(kind, parts, ev.kv.key)
            self.revision = max(self.revision, revision)
            # judged after the whole batch: a completion deletes the running key and finalises the
            # claim in one revision, which is not a loss
            for ident in touched:
                c = self.claims.get(ident)
                if c is not None and c.unfinished and ident not in self.running:
                    ch.lost.append(c)
        return ch

    def _put(self, kv: KV) -> None:
        kind, parts = self.keys.split(kv.key)
        try:
            if kind == "jobs" and len(parts) == 1:
                self.jobs[parts[0]] = (JobSpec.from_json(kv.value), kv.mod_revision)
            elif kind == "nodes" and len(parts) == 1:
                self.nodes[parts[0]] = json.loads(kv.value)
            elif kind == "leader":
                self.candidates[kv.key] = (kv.create_revision, kv.value.decode())
            elif kind == "claims" and len(parts) == 2:
                slot = int(parts[1])
                self.claims[(parts[0], slot)] = Claim.parse(parts[0], slot, kv.value, kv.mod_revision)
            elif kind == "running" and len(parts) == 2:
                self.running[(parts[0], int(parts[1]))] = kv.create_revision
                self.running_lease[(parts[0], int(parts[1]))] = kv.lease
            elif kind == "control":
                self._put_control(parts, kv)
            elif kind == "runs" and len(parts) == 1:
                self.runs[parts[0]] = kv.version
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("view.bad_value", key=kv.key, error=str(exc)[:200])

    def _delete(self, kind: str, parts: list[str], key: str) -> None:
        if kind == "jobs" and parts:
            self.jobs.pop(parts[0], None)
        elif kind == "nodes" and parts:
            self.nodes.pop(parts[0], None)
        elif kind == "leader":
            self.candidates.pop(key, None)
        elif kind == "claims" and len(parts) == 2:
            self.claims.pop((parts[0], int(parts[1])), None)
        elif kind == "running" and len(parts) == 2:
            self.running.pop((parts[0], int(parts[1])), None)
            self.running_lease.pop((parts[0], int(parts[1])), None)
        elif kind == "control" and parts == ["degrade"]:
            self.degrade = {}
        elif kind == "control" and len(parts) == 2 and parts[0] == "kill":
            self.kills.pop(parts[1], None)
        elif kind == "control" and len(parts) == 2 and parts[0] == "drain":
            self.drains.discard(parts[1])
        elif kind == "control" and len(parts) == 2 and parts[0] == "trigger":
            self.triggers.pop(parts[1], None)
        elif kind == "control" and len(parts) == 3 and parts[0] == "backfill":
            self.backfills.pop((parts[1], parts[2]), None)
        elif kind == "runs" and parts:
            self.runs.pop(parts[0], None)

    def _put_control(self, parts: list[str], kv: KV) -> None:
        if parts == ["degrade"]:
            self.degrade = json.loads(kv.value)
        elif len(parts) == 2 and parts[0] == "kill":
            self.kills[parts[1]] = kv.mod_revision
        elif len(parts) == 2 and parts[0] == "drain":
            self.drains.add(parts[1])
        elif len(parts) == 2 and parts[0] == "trigger":
            self.triggers[parts[1]] = (kv.mod_revision, json.loads(kv.value))
        elif len(parts) == 3 and parts[0] == "backfill":
            self.backfills[(parts[1], parts[2])] = (kv.mod_revision, json.loads(kv.value))

    # --- queries
    def lost_runs(self) -> list[Claim]:
        with self.lock:
            return [c for ident, c in self.claims.items() if c.unfinished and ident not in self.running]

    def leader(self) -> str | None:
        with self.lock:
            if not self.candidates:
                return None
            return min(self.candidates.values())[1]

    def eligible(self, level: int) -> list[str]:
        with self.lock:
            return [nid for nid, info in self.nodes.items()
                    if level in info.get("levels", (1, 2, 3)) and not info.get("draining") and not info.get("skewed")]

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
