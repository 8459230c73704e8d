"""The closed vocabularies of a firing, one enum each (string-valued: they are stored in etcd as is).

A firing's *record* (``claims/<job>/<slot>``) is in one :class:`State`; a claim attempt comes to one
:class:`Why`; on the node that holds it, a firing is in one :class:`Phase` (see
:mod:`etcdcron.firing` for the diagram).
"""

from __future__ import annotations

from enum import StrEnum


class State(StrEnum):
    """The state of a firing's record in etcd."""

    RUNNING = "running"
    """Claimed; its run is alive while ``running/<job>/<slot>`` exists on the runner's lease."""
    SUCCEEDED = "succeeded"
    """The run exited 0 (or the builtin returned, or the HTTP call answered 2xx)."""
    FAILED = "failed"
    """The run failed, after its retries."""
    TIMEOUT = "timeout"
    """The run outlived ``--timeout`` and was stopped."""
    KILLED = "killed"
    """Stopped by ``kill``, ``replace`` or ``degrade --kill``."""
    INTERRUPTED = "interrupted"
    """Stopped by its node's shutdown at the end of the grace, by its node's lease loss, or by its
    node's clock (before it could start): not final.
    Like a run whose node died, it is run again elsewhere (``--on-node-loss rerun``) or recorded
    ``lost`` (``skip``)."""
    MISSED = "missed"
    """Never run: nobody could claim it inside its starting deadline, or the catch-up policy said no."""
    LOST = "lost"
    """Its node died mid-run and the job is at-most-once (``--on-node-loss skip``)."""
    SKIPPED = "skipped"
    """Not run: ``forbid`` and a previous run was still alive."""
    DEGRADED = "degraded"
    """Not run: its level was degraded."""
    REFUSED = "refused"
    """Claimed but not run: the node that claimed it does not run the job's kind (``serve
    --allow-kinds``) or an HTTP job's host (``--http-allow``); the record's ``reason`` says which."""


FINAL = frozenset({State.SUCCEEDED, State.FAILED, State.TIMEOUT, State.KILLED, State.MISSED, State.LOST,
                   State.SKIPPED, State.DEGRADED, State.REFUSED})
NON_RUNS = frozenset({State.MISSED, State.SKIPPED, State.DEGRADED, State.LOST, State.REFUSED})
UNFINISHED = frozenset({State.RUNNING, State.INTERRUPTED})  # lost when the running key is gone


class Why(StrEnum):
    """What one claim attempt came to."""

    CLAIMED = "claimed"
    """Ours: this transaction created the claim."""
    RESOLVED = "resolved"
    """Ours: an earlier attempt whose answer was lost had committed (the record names us and the
    running key lives on our lease)."""
    TAKEN = "taken"
    """Another claim (or a record) exists for the firing."""
    BLOCKED = "blocked"
    """``forbid``: another run of the job is alive."""
    CHANGED = "changed"
    """The job's spec changed since we read it."""
    EXHAUSTED = "exhausted"
    """``--max-runs`` reached."""


class Phase(StrEnum):
    """Where a firing held by this node stands (see :class:`etcdcron.firing.Local`)."""

    CLAIMING = "claiming"
    """A claim transaction is in flight."""
    UNRESOLVED = "unresolved"
    """The claim's answer was lost (etcd unavailable, an election): it is sent again until known."""
    CLAIMED = "claimed"
    """Ours; waiting for its start time."""
    RUNNING = "running"
    """Its run (with retries) is going."""
    COMPLETING = "completing"
    """Its outcome is being recorded (sent again while the answer is unknown)."""
