"""An offline checker of every guarantee of DESIGN §4 over a fault run's evidence:

* the *ledger*: one ``start`` and one ``end`` line per run, written by the job itself from its
  ``ETCDCRON_*`` environment (job, slot, node, fence, attempt, wall time);
* the *run history*: the final claim record of each firing in etcd (state, node, fence, attempt).

``check(...)`` is a pure function; it returns the list of violations (empty when every guarantee
held), each a line naming the guarantee, the firing and the evidence. It knows nothing about how the
run was produced, so it is unit-tested on its own with ledgers that break each guarantee
(tests/faults/test_checker.py).

Public through :mod:`etcdcron.testing`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable

from ._testing_ledger import Line

# Record states that end a firing, and those of the firings that ended without a run. Plain strings:
# the checker reads evidence, it does not share the daemon's types (etcdcron.states.State compares equal).
FINAL = ("succeeded", "failed", "timeout", "killed", "missed", "lost", "skipped", "degraded", "refused")
NOT_RUN = ("missed", "skipped", "degraded", "refused")


@dataclass(frozen=True)
class Record:
    """The final record of one firing in etcd's run history."""

    job: str
    slot: int
    state: str
    node: str | None = None
    fence: int = 0
    attempt: int = 0


@dataclass
class Scenario:
    """What the test knows about its own run.

    ``due``: every (job, slot) inside the checked window: each must end with a final record.
    ``must_run``: the due firings that some eligible node was up (and etcd reachable) to run within
    the starting deadline: each must have run. ``disturbed``: nodes killed, paused or cut off: only
    their runs may be run again. ``skip_on_loss``: jobs with ``--on-node-loss skip``.
    """

    due: set[tuple[str, int]]
    must_run: set[tuple[str, int]] = field(default_factory=set)
    disturbed: set[str] = field(default_factory=set)
    skip_on_loss: set[str] = field(default_factory=set)
    tolerance: float = 0.0  # seconds a start may precede its slot (0: none; the ledger and the node share a clock)
    # Firings before this slot may have lost their record to the leader's claim collection (DESIGN §4.6:
    # finished claims older than the starting deadline + 60 s go, beyond the last 20 per job).
    history_from: int = 0


def record_of(claim) -> Record:
    """A Record from an ``etcdcron.claims.Claim``."""
    return Record(claim.job, claim.slot, claim.state, claim.node, int(claim.fence or 0), claim.attempt)


def check(ledger: Iterable[Line], records: Iterable[Record], sc: Scenario) -> list[str]:
    """Every violation of DESIGN §4 over the firings of ``sc.due`` (empty: every guarantee held)."""
    lines = list(ledger)
    recs = {(r.job, r.slot): r for r in records}
    starts: dict[tuple[str, int], list[Line]] = defaultdict(list)
    ends: dict[tuple[str, int, int], list[Line]] = defaultdict(list)
    for ln in lines:
        if ln.what == "start":
            starts[(ln.job, ln.slot)].append(ln)
        else:
            ends[(ln.job, ln.slot, ln.fence)].append(ln)
    bad: list[str] = []
    for key in sorted(sc.due):
        runs = sorted(starts.get(key, []), key=lambda r: r.at)
        rec = recs.get(key)
        name = f"{key[0]}@{key[1]}"
        bad += _one_winner(name, runs, rec, sc)
        bad += _no_early(name, runs, sc)
        bad += _no_silent_miss(name, key, runs, rec, sc)
        bad += _crash_recovery(name, key, runs, rec, ends, sc)
        bad += _no_doubled_completion(name, key, runs, rec, ends)
    return bad


def _one_winner(name: str, runs: list[Line], rec: Record | None, sc: Scenario) -> list[str]:
    """§4.1: one run per claim; a later run only under a later (higher-fence, higher-attempt) claim,
    and only when the earlier runner was disturbed."""
    bad = []
    fences = [r.fence for r in runs]
    if len(set(fences)) != len(fences):
        bad.append(f"one-winner: {name} ran twice under one claim (fences {fences}, nodes {[r.node for r in runs]})")
    for a, b in zip(runs, runs[1:]):
        if b.fence <= a.fence or b.attempt <= a.attempt:
            bad.append(f"one-winner: {name} run on {b.node} (fence {b.fence}, attempt {b.attempt}) started after "
                       f"a run on {a.node} with fence {a.fence}, attempt {a.attempt}: fences/attempts must rise")
        elif a.node not in sc.disturbed:
            bad.append(f"one-winner: {name} ran again on {b.node} (attempt {b.attempt}) although {a.node}, "
                       f"which ran it first, was never disturbed")
    if rec is not None and runs and rec.state not in NOT_RUN and rec.state != "lost":
        top = max(runs, key=lambda r: r.fence)
        if rec.fence != top.fence or rec.node != top.node or rec.attempt != top.attempt:
            bad.append(f"one-winner: {name} history says node {rec.node} fence {rec.fence} attempt {rec.attempt}, "
                       f"the last run was node {top.node} fence {top.fence} attempt {top.attempt}")
    return bad


def _no_early(name: str, runs: list[Line], sc: Scenario) -> list[str]:
    """§4.2: never before the scheduled instant."""
    return [f"no-early: {name} started on {r.node} at {r.at:.3f}, {r.slot - r.at:.3f} s early"
            for r in runs if r.at + sc.tolerance < r.slot]


def _no_silent_miss(name: str, key, runs: list[Line], rec: Record | None, sc: Scenario) -> list[str]:
    """§4.3: every firing in the window ends with a final record; those due while a node could run them ran."""
    bad = []
    if key in sc.due and (rec is not None or key[1] >= sc.history_from):
        if rec is None:
            bad.append(f"no-silent-miss: {name} has no record at all" + (" (it ran)" if runs else ""))
        elif rec.state not in FINAL:
            bad.append(f"no-silent-miss: {name} never settled: state {rec.state!r}")
    if key in sc.must_run and not runs:
        bad.append(f"no-silent-miss: {name} was due while a node could run it, but never ran "
                   f"(record: {rec.state if rec else None})")
    if rec is not None and rec.state in NOT_RUN and runs:
        bad.append(f"no-silent-miss: {name} is recorded {rec.state!r} but ran on {[r.node for r in runs]}")
    return bad


def _crash_recovery(name: str, key, runs: list[Line], rec: Record | None, ends, sc: Scenario) -> list[str]:
    """§4.4: a run that never ended (its node died) is rerun with a higher attempt and fence, or
    recorded ``lost`` for an at-most-once job, which then never runs again."""
    bad = []
    at_most_once = key[0] in sc.skip_on_loss
    for i, r in enumerate(runs):
        if ends.get((r.job, r.slot, r.fence)):
            continue
        later = [x for x in runs[i + 1:] if x.attempt > r.attempt and x.fence > r.fence]
        if at_most_once:
            if later:
                bad.append(f"crash-recovery: {name} is at-most-once but its lost run on {r.node} was rerun on "
                           f"{[x.node for x in later]}")
            if rec is None or rec.state != "lost":
                bad.append(f"crash-recovery: {name} lost its run on {r.node} but is recorded "
                           f"{rec.state if rec else None!r}, not 'lost'")
        elif not later:
            bad.append(f"crash-recovery: {name} run on {r.node} (fence {r.fence}) never ended and was not rerun "
                       f"(record: {rec.state if rec else None})")
    if rec is not None and rec.state == "lost" and not at_most_once:
        bad.append(f"crash-recovery: {name} recorded 'lost' but the job reruns lost runs")
    return bad


def _no_doubled_completion(name: str, key, runs: list[Line], rec: Record | None, ends) -> list[str]:
    """§4.4 fencing: one completion per claim, and the accepted completion is that of the last claim."""
    bad = []
    for r in runs:
        n = len(ends.get((r.job, r.slot, r.fence), []))
        if n > 1:
            bad.append(f"doubled-completion: {name} fence {r.fence} ended {n} times")
    fences = {r.fence for r in runs}
    for (job, slot, fence), e in ends.items():
        if (job, slot) == key and fence not in fences:
            bad.append(f"doubled-completion: {name} ended under fence {fence} that never started")
    if rec is not None and rec.state == "succeeded" and not ends.get((key[0], key[1], rec.fence)):
        bad.append(f"doubled-completion: {name} recorded succeeded under fence {rec.fence} with no run ending under it")
    return bad


def slots(first: int, last: int, every: int = 1) -> range:
    """The slots of an every-``every``-seconds job in [first, last]."""
    start = first + (-first) % every
    return range(start, last + 1, every)
