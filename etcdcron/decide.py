"""The timer's decisions, pure: what a due entry asks this node to do, given the view.

``decide(entry, view, me, gen)`` reads the view and returns typed actions; it sends nothing, starts
nothing and reads no clock, so the scheduling rules are tested without etcd or sleeping
(tests/test_decide.py). :class:`etcdcron.daemon.Node` carries the actions out: ``ClaimNow`` goes to
the batch claimed in one round trip, ``Schedule`` onto the timer heap, ``Submit`` to the worker pool.

Who runs a firing: every node computes the rendezvous order of the live nodes serving the job's
level for (job, slot). The first claims just before the firing's start time (its instant plus the
job's jitter); the one ranked r re-checks ``r * takeover`` after the start time (a read of the claim
key, batched with the other checks due) and claims if nobody has. Only the first :data:`EAGER_RANKS`
ranks check every firing; a node ranked further checks once a dead node would have left the view
(``lease_wait`` after the start time), and only if a node ranked before it has left, so that what a
node reads follows its share of the firings (issue 11), not the whole cluster's. Lost runs, catch-up, backfills and triggers are handed out the same way, ranked on their
own keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Union

from .claims import Claim, rank, unit_hash
from .jobs import JobSpec
from .view import View


class Task(Enum):
    """What a timer entry asks for when it is due."""

    FIRE = "fire"  # a job's next firing: the owner claims it (others schedule a CHECK); chains the next FIRE
    CHECK = "check"  # a ranked takeover: claim the firing if nobody has
    START = "start"  # a claimed firing's start time: run it
    RESOLVE = "resolve"  # claims whose answer was lost: send them again
    RECOVER = "recover"  # a lost run: rerun it (or record it lost)
    CATCHUP = "catchup"  # after a relist: firings inside the starting deadline nobody claimed
    TRIGGER = "trigger"  # a manual run request
    BACKFILL = "backfill"  # a backfill request
    LATER = "later"  # a call put off (a read to try again): extra is (function, args)


@dataclass(order=True, slots=True)
class Entry:
    """One timer entry; the heap orders entries by (due, seq)."""

    due: float
    seq: int
    kind: Task = field(compare=False)
    job: str = field(compare=False)
    slot: int = field(compare=False)
    rev: int = field(compare=False)  # the job's spec revision the entry was made for (0: any)
    claim: Claim | None = field(compare=False, default=None)  # RECOVER: the lost run's record
    gen: int = field(compare=False, default=0)  # FIRE: the chain's generation
    extra: tuple = field(compare=False, default=())  # START (spec, fence, reason); RESOLVE (todo, tries);
    # TRIGGER (request rev,); BACKFILL (request id, request rev)


EAGER_RANKS = 3  # the owner and the next two: each checks every firing it ranks for


@dataclass(frozen=True)
class Me:
    """What a decision needs to know of this node."""

    node_id: str
    eligible: bool  # may own firings of its levels now (not stopping, draining or skewed)
    levels: tuple[int, ...] = (1, 2, 3)
    takeover: float = 0.4
    claim_ahead: float = 0.2
    lease_wait: float = 4.0  # a node's TTL + 1 s: by then a node that died has left the view


@dataclass(frozen=True)
class ClaimNow:
    """Claim the firing now, in this instant's batch."""

    spec: JobSpec
    rev: int
    slot: int
    owner: bool = True  # the owner's claim at its time (False: a ranked takeover, never shed as late)


@dataclass(frozen=True)
class Schedule:
    """Put an entry on the timer heap."""

    due: float
    kind: Task
    job: str
    slot: int
    rev: int
    claim: Claim | None = None
    gen: int = 0
    extra: tuple = ()


@dataclass(frozen=True)
class Submit:
    """Hand a task's work to the worker pool."""

    kind: Task
    args: tuple[Any, ...]


Action = Union[ClaimNow, Schedule, Submit]


def start_time(spec: JobSpec, slot: int) -> float:
    """When a firing's run starts: its instant plus the job's jitter (alike on every node)."""
    return slot + (spec.jitter * unit_hash(f"{spec.name}|{slot}|jitter") if spec.jitter else 0.0)


def claim_time(spec: JobSpec, slot: int, claim_ahead: float) -> float:
    # An at-most-once job is claimed at its start: a claim made ahead and lost with its node before
    # the start would be recorded `lost` although nothing had started.
    return start_time(spec, slot) - (0.0 if spec.on_node_loss == "skip" else claim_ahead)


def order(view: View, me: Me, spec: JobSpec, key: str) -> list[str]:
    """The rendezvous order of the nodes that may own ``key`` (ourselves by what we know now, not by
    our registration as the view last saw it)."""
    nodes = view.eligible(spec.level)
    mine = me.eligible and spec.level in me.levels
    if mine and me.node_id not in nodes:
        nodes.append(me.node_id)
    if not mine and me.node_id in nodes:
        nodes.remove(me.node_id)
    return rank(key, nodes)


def ranked(view: View, me: Me, kind: Task, key: str, spec: JobSpec, base: float, slot: int, rev: int,
           claim: Claim | None = None, extra: tuple = ()) -> list[Action]:
    """Schedule a task at ``base + rank * takeover`` if this node serves the job at all."""
    nodes = order(view, me, spec, key)
    if me.node_id not in nodes:
        return []
    return [Schedule(base + nodes.index(me.node_id) * me.takeover, kind, spec.name, slot, rev, claim, extra=extra)]


def decide(e: Entry, view: View, me: Me, gen: int | None = None) -> list[Action]:
    """What the due entry ``e`` asks of this node. ``gen`` is the live generation of the job's FIRE chain."""
    if e.kind is Task.START:  # claimed: runs whatever happened to the job since
        return [Submit(Task.START, (e.extra[0], e.slot, e.extra[1], e.extra[2]))]
    if e.kind is Task.RESOLVE:
        return [Submit(Task.RESOLVE, e.extra)]
    if e.kind is Task.LATER:
        return [Submit(Task.LATER, e.extra)]
    found = view.job(e.job)
    if found is None:
        return []
    spec, rev = found
    if e.kind is Task.CHECK:
        # a change of the job since does not cancel a firing its new spec still has; whether it is
        # claimed already is read from etcd with the other takeovers due now (the view has no claims)
        if spec.paused or not spec.fires_at(e.slot):
            return []
        if e.extra:  # a late rank: only if a node ranked before us has left since
            nodes = order(view, me, spec, f"{e.job}|{e.slot}")
            if me.node_id not in nodes or nodes.index(me.node_id) >= e.extra[0]:
                return []
        return [ClaimNow(spec, rev, e.slot, owner=False)]
    if rev != e.rev or spec.paused:
        return []  # a newer spec has its own entries
    if e.kind is Task.FIRE:
        if gen != e.gen:
            return []  # a superseded chain (the job was rescheduled)
        out: list[Action] = []
        nxt = spec.next_after(e.slot)
        if nxt is not None:
            out.append(Schedule(claim_time(spec, int(nxt), me.claim_ahead), Task.FIRE, e.job, int(nxt), rev, gen=e.gen))
        nodes = order(view, me, spec, f"{e.job}|{e.slot}")
        if me.node_id in nodes:
            r, start = nodes.index(me.node_id), start_time(spec, e.slot)
            if r == 0:
                out.append(ClaimNow(spec, rev, e.slot))
            elif r < EAGER_RANKS:
                out.append(Schedule(start + r * me.takeover, Task.CHECK, e.job, e.slot, rev))
            else:
                out.append(Schedule(start + me.lease_wait + (r - EAGER_RANKS) * me.takeover, Task.CHECK, e.job,
                                    e.slot, rev, extra=(r,)))
        return out
    if e.kind is Task.RECOVER:  # the recovery is a compare-and-swap on the lost record: a cheap no if done
        return [Submit(Task.RECOVER, (spec, rev, e.claim))]
    if e.kind is Task.CATCHUP:
        return [Submit(Task.CATCHUP, (spec, rev, float(e.slot)))]
    if e.kind is Task.TRIGGER:
        trig = view.triggers.get(e.job)
        return [Submit(Task.TRIGGER, (spec, rev, trig[0], trig[1]))] if trig and trig[0] == e.extra[0] else []
    if e.kind is Task.BACKFILL:
        req = view.backfills.get((e.job, e.extra[0]))
        return [Submit(Task.BACKFILL, (spec, rev, e.extra[0], req[0], req[1]))] if req and req[0] == e.extra[1] else []
    return []
