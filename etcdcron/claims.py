"""Claims: who runs a firing, decided by compare-and-swap in etcd and fenced by the claim's revision.

A firing (job, slot) has one persistent record ``claims/<job>/<slot>`` and, while a run is alive,
``running/<job>/<slot>`` on the runner's lease. Both are written in one transaction, so:

* the fencing token of a run is the revision of that transaction (strictly greater for every later
  claim, because etcd revisions only grow);
* a run is *lost* exactly when its record says ``running`` but its running key is gone (the lease
  expired with the node);
* a completion is accepted only if the record still carries our revision and our running key is
  still the one we created: a node that slept through its lease finds its completion refused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterable

from . import store as st
from .keys import Keys
from .store import EtcdStore

FINAL_STATES = ("succeeded", "failed", "timeout", "killed", "missed", "lost", "skipped", "degraded")


@dataclass(frozen=True)
class Claim:
    """The record of one firing as stored in etcd (plus the key's mod revision)."""

    job: str
    slot: int
    state: str
    attempt: int
    node: str | None
    fence: int  # revision of the claim that ran (or runs) it; 0 for a firing never run
    mod_revision: int
    data: dict[str, Any]

    @property
    def running(self) -> bool:
        return self.state == "running"

    @classmethod
    def parse(cls, job: str, slot: int, value: bytes, mod_revision: int) -> "Claim":
        data = json.loads(value)
        fence = data.get("fence") or (mod_revision if data.get("state") == "running" else 0)
        return cls(job, slot, data.get("state", "?"), int(data.get("attempt", 0)), data.get("node"), fence, mod_revision, data)


def rank(key: str, nodes: Iterable[str]) -> list[str]:
    """Rendezvous (highest random weight) order of ``nodes`` for ``key``: every node computes the same."""
    def weight(node: str) -> bytes:
        return hashlib.blake2b(f"{key}|{node}".encode(), digest_size=8).digest()
    return sorted(nodes, key=weight, reverse=True)


def _dump(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()


class Claims:
    """The transactions on claims; each returns what happened, none retries on its own."""

    def __init__(self, store: EtcdStore, keys: Keys, node_id: str) -> None:
        self.store, self.keys, self.node_id = store, keys, node_id

    def claim(self, job: str, slot: int, job_rev: int, lease: int, now: float) -> int | None:
        """First claim of a firing. Returns the fence, or None if the firing is already claimed or the
        job changed since ``job_rev``."""
        ck, rk = self.keys.claim(job, slot), self.keys.running(job, slot)
        rec = {"state": "running", "attempt": 1, "node": self.node_id, "started": now}
        res = self.store.txn(
            [st.version(ck, "==", 0), st.version(rk, "==", 0), st.mod_rev(self.keys.job(job), "==", job_rev)],
            [st.put(ck, _dump(rec)), st.put(rk, self.node_id, lease=lease)],
        )
        return res.revision if res.succeeded else None

    def recover(self, old: Claim, job_rev: int, lease: int, now: float, skip: bool) -> int | None:
        """Take over a lost run: rerun it under a new fence, or (``skip``) record it ``lost``.
        Returns the new fence (or 0 when recorded lost), None if someone else acted first."""
        ck, rk = self.keys.claim(old.job, old.slot), self.keys.running(old.job, old.slot)
        cond = [st.mod_rev(ck, "==", old.mod_revision), st.version(rk, "==", 0)]
        if skip:
            rec = {**old.data, "state": "lost", "fence": old.fence, "ended": now, "recorded_by": self.node_id}
            res = self.store.txn(cond, [st.put(ck, _dump(rec))])
            return 0 if res.succeeded else None
        rec = {"state": "running", "attempt": old.attempt + 1, "node": self.node_id, "started": now,
               "prev_fence": old.fence, "prev_node": old.node}
        res = self.store.txn(cond + [st.mod_rev(self.keys.job(old.job), "==", job_rev)],
                             [st.put(ck, _dump(rec)), st.put(rk, self.node_id, lease=lease)])
        return res.revision if res.succeeded else None

    def complete(self, job: str, slot: int, fence: int, record: dict[str, Any]) -> bool:
        """Record the outcome of our run; False means we were fenced out."""
        ck, rk = self.keys.claim(job, slot), self.keys.running(job, slot)
        rec = {**record, "node": self.node_id, "fence": fence}
        res = self.store.txn(
            [st.mod_rev(ck, "==", fence), st.create_rev(rk, "==", fence)],
            [st.put(ck, _dump(rec)), st.delete(rk)],
        )
        return res.succeeded

    def record(self, job: str, slot: int, state: str, **extra: Any) -> bool:
        """Record a firing that did not run (``missed`` …) if nothing is recorded for it yet."""
        ck = self.keys.claim(job, slot)
        rec = {"state": state, "attempt": 0, "node": None, "recorded_by": self.node_id, **extra}
        return self.store.txn([st.version(ck, "==", 0)], [st.put(ck, _dump(rec))]).succeeded
