"""What the CLI's management commands do, against etcd; the CLI only parses and prints."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

from . import store as st
from .claims import Claim
from .errors import JobNotFound
from .jobs import JobSpec, check_name
from .keys import Keys
from .store import EtcdStore


class Admin:
    def __init__(self, store: EtcdStore, keys: Keys) -> None:
        self.store, self.keys = store, keys

    def put_job(self, spec: JobSpec) -> tuple[JobSpec, bool]:
        """Create or replace; returns (spec, created). A replaced job keeps its paused state."""
        old = self.store.get(self.keys.job(spec.name))
        if old is not None:
            spec = spec.replace(paused=JobSpec.from_json(old.value).paused)
        self.store.put(self.keys.job(spec.name), spec.to_json())
        return spec, old is None

    def get_job(self, name: str) -> JobSpec:
        check_name(name)
        kv = self.store.get(self.keys.job(name))
        if kv is None:
            raise JobNotFound(f"no job named {name!r}")
        return JobSpec.from_json(kv.value)

    def jobs(self) -> list[JobSpec]:
        kvs, _ = self.store.get_prefix(self.keys.jobs)
        return [JobSpec.from_json(kv.value) for kv in kvs]

    def remove(self, name: str) -> None:
        self.get_job(name)
        self.store.delete(self.keys.job(name))

    def set_paused(self, name: str, paused: bool) -> JobSpec:
        """Pause or resume with a compare-and-swap, so a concurrent change is never overwritten."""
        while True:
            check_name(name)
            kv = self.store.get(self.keys.job(name))
            if kv is None:
                raise JobNotFound(f"no job named {name!r}")
            spec = JobSpec.from_json(kv.value)
            new = spec.replace(paused=paused, active_since=spec.active_since if paused else time.time())
            res = self.store.txn([st.mod_rev(kv.key, "==", kv.mod_revision)], [st.put(kv.key, new.to_json())])
            if res.succeeded:
                return new

    def next_firings(self, name: str, n: int) -> list[tuple[datetime, datetime]]:
        spec = self.get_job(name)
        zone = ZoneInfo(spec.tz)
        t = datetime.fromtimestamp(max(time.time(), spec.active_since), timezone.utc)
        out = []
        for _ in range(n):
            t = spec.parsed.next_after(t)
            out.append((t.astimezone(zone), t))
        return out

    def history(self, name: str | None, limit: int) -> list[Claim]:
        if name:
            check_name(name)
        kvs, _ = self.store.get_prefix(self.keys.claims(name))
        claims = []
        for kv in kvs:
            _, parts = self.keys.split(kv.key)
            claims.append(Claim.parse(parts[0], int(parts[1]), kv.value, kv.mod_revision))
        claims.sort(key=lambda c: (c.slot, c.job), reverse=True)
        return claims[:limit]

    def nodes(self) -> tuple[list[dict], str | None]:
        kvs, _ = self.store.get_prefix(self.keys.nodes)
        cands, _ = self.store.get_prefix(self.keys.leader)
        leader = min(cands, key=lambda kv: kv.create_revision).value.decode() if cands else None
        nodes = [json.loads(kv.value) for kv in kvs]
        for n in nodes:
            n["leader"] = n.get("id") == leader
        return sorted(nodes, key=lambda n: n.get("id", "")), leader

    def status(self) -> dict:
        nodes, leader = self.nodes()
        jobs = self.jobs()
        recent = self.history(None, 10_000)
        states: dict[str, int] = {}
        for c in recent:
            states[c.state] = states.get(c.state, 0) + 1
        return {
            "etcd": self.store.status(),
            "nodes": len(nodes), "leader": leader,
            "jobs": len(jobs), "paused": sum(1 for j in jobs if j.paused),
            "running": self.store.count_prefix(self.keys.runnings),
            "claims_by_state": states,
        }
