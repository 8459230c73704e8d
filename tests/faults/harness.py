"""Helpers of the fault suite: the window of a test and the short/long mode switch. (Nodes, the
ledger and the checker are etcdcron.testing's.)"""

from __future__ import annotations

import os

from etcdcron.testing import slots

LONG = os.environ.get("ETCDCRON_FAULTS_LONG") == "1"


def scale(short: float, long: float) -> float:
    """A duration or count: ``short`` in CI, ``long`` with ETCDCRON_FAULTS_LONG=1."""
    return long if LONG else short


def due(jobs: list[str], first: int, last: int, every: int = 1) -> set[tuple[str, int]]:
    """Every (job, slot) of every-``every``-seconds jobs in [first, last]."""
    return {(j, s) for j in jobs for s in slots(first, last, every)}
