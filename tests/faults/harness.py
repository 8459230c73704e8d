"""Helpers of the fault suite: the harness's Cluster with the evidence the checker reads, the
window of a test, and the short/long mode switch."""

from __future__ import annotations

import os
import time

from etcdcron.nodes import wait_for

from ..cluster import Cluster
from .checker import FINAL, Scenario, check, record_of, slots

LONG = os.environ.get("ETCDCRON_FAULTS_LONG") == "1"


def scale(short: float, long: float) -> float:
    """A duration or count: ``short`` in CI, ``long`` with ETCDCRON_FAULTS_LONG=1."""
    return long if LONG else short


class FaultCluster(Cluster):
    """The harness's Cluster, with the evidence for the checker."""

    def records(self):
        return [record_of(c) for c in self.claims().values()]

    def wait_settled(self, due: set[tuple[str, int]], timeout: float = 20) -> bool:
        """Wait until every firing in ``due`` has a final record (run or not-run; none `running`, none absent).
        Returns False on timeout and lets the checker say what is wrong (a stuck firing is a violation)."""
        def settled() -> bool:
            claims = self.claims()
            return all(k in claims and claims[k].state in FINAL for k in due)
        return wait_for(settled, timeout, step=0.25)

    def verify(self, sc: Scenario, horizon: float = 110) -> None:
        """Run the checker; fail with every violation found. Records older than ``horizon`` seconds may
        have been collected by the leader (long mode only: short windows are far younger)."""
        sc.history_from = max(sc.history_from, int(time.time() - horizon))
        runs = [ln for ln in self.lines() if ln.what in ("start", "end")]  # not a job's own lines (heartbeats)
        violations = check(runs, self.records(), sc)
        assert not violations, "guarantees violated:\n" + "\n".join(violations[:40])


def due(jobs: list[str], first: int, last: int, every: int = 1) -> set[tuple[str, int]]:
    """Every (job, slot) of every-``every``-seconds jobs in [first, last]."""
    return {(j, s) for j in jobs for s in slots(first, last, every)}
