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
    nodes: bool = False
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
        self.degrade: dict = {}

    # --- loading
    def load(self, kvs: list[KV], revision: int) -> Changes:
        with self.lock:
            old_jobs = set(self.jobs)
            self.jobs.clear(); self.nodes.clear(); self.candidates.clear()
            self.claims.clear(); self.running.clear(); self.degrade = {}
            for kv in kvs:
                self._put(kv)
            self.revision = revision
            return Changes(jobs=old_jobs | set(self.jobs), lost=self.lost_runs(), nodes=True, relisted=True)

    def apply(self, events: list[Event], revision: int) -> Changes:
        ch = Changes()
        with self.lock:
            touched: set[tuple[str, int]] = set()
            for ev in events:
                kind, parts = self.keys.split(ev.kv.key)
                if kind == "jobs":
                    ch.jobs.add(parts[0])
                elif kind == "nodes":
                    ch.nodes = True
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
                if c is not None and c.running and ident not in self.running:
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
            elif kind == "control" and parts == ["degrade"]:
                self.degrade = json.loads(kv.value)
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
        elif kind == "control" and parts == ["degrade"]:
            self.degrade = {}

    # --- queries
    def lost_runs(self) -> list[Claim]:
        with self.lock:
            return [c for ident, c in self.claims.items() if c.running and ident not in self.running]

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

    def claimed(self, job: str, slot: int) -> bool:
        with self.lock:
            return (job, slot) in self.claims
