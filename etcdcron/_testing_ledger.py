"""The ledger: a file every run appends to from inside the job, the evidence tests and benchmarks read.

Two jobs write it, each in its own encoding, and one reader turns both into :class:`Line`:

* the shell job :data:`LEDGER_CMD` writes a ``start`` and an ``end`` text line per run
  (``start|end job slot node fence attempt at``); a test may add lines of its own kind
  (heartbeats) in the same shape;
* the builtin ``ledger`` job (:func:`etcdcron.builtins.ledger`) writes one JSON line per run,
  ``{job, slot, node, fence, attempt, start}``, only at its start. It costs no process per run,
  which a benchmark of a thousand firings a second needs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

# One line per run start and per run end, written by the shell job itself from its environment.
LEDGER_CMD = ('echo "start $ETCDCRON_JOB $ETCDCRON_SLOT_EPOCH $ETCDCRON_NODE $ETCDCRON_FENCE $ETCDCRON_ATTEMPT '
              '$(date +%s.%N)" >> {ledger}{body}; '
              'echo "end $ETCDCRON_JOB $ETCDCRON_SLOT_EPOCH $ETCDCRON_NODE $ETCDCRON_FENCE $ETCDCRON_ATTEMPT '
              '$(date +%s.%N)" >> {ledger}')


@dataclass(frozen=True)
class Line:
    """One ledger line: a run's ``start`` or ``end`` (or a test's own kind), as the job saw itself."""

    what: str
    job: str
    slot: int
    node: str
    fence: int
    attempt: int
    at: float


def parse_line(raw: str | bytes) -> Line:
    """One ledger line of either encoding; ValueError when it is neither (e.g. torn)."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    if text.lstrip().startswith("{"):
        d = json.loads(text)
        try:
            # an older builtin wrote no attempt: its runs were all first attempts
            return Line("start", d["job"], int(d["slot"]), d["node"], int(d.get("fence") or 0),
                        int(d.get("attempt", 1)), float(d["start"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a ledger line: {text!r}") from exc
    what, job, slot, node, fence, attempt, at = text.split()
    return Line(what, job, int(slot), node, int(fence), int(attempt), float(at))


def read_ledger(path: Path) -> list[Line]:
    """Every line of the ledger at ``path`` (none when it does not exist yet). A last line without
    its newline is still being written and is left out; any other line that does not parse raises."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    raws = data.split(b"\n")
    out = []
    for i, raw in enumerate(raws):
        if not raw.strip():
            continue
        try:
            out.append(parse_line(raw))
        except ValueError:
            if i == len(raws) - 1:  # no newline after it: a writer is still at it
                continue
            raise
    return out
