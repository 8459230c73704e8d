"""Small builtin jobs shipped with etcdcron (registered under the entry-point group ``etcdcron.jobs``).

``noop`` does nothing; ``ledger`` appends one JSON line per run to ``--arg path=FILE`` (tests and
benchmarks read it); ``sleep`` sleeps ``--arg seconds=S``; ``burn`` spends ``--arg ms=M`` of CPU (and
writes the ledger line first when given ``path``), a job whose cost is CPU for overload benchmarks.
"""

from __future__ import annotations

import json
import os
import time

from .executor import RunContext


def noop(ctx: RunContext) -> None:
    """Do nothing."""
    return None


def ledger(ctx: RunContext) -> dict:
    """Append (job, slot, node, fence, attempt, start) to the file named by ``path``."""
    line = {"job": ctx.job, "slot": ctx.slot_epoch, "node": ctx.node, "fence": ctx.fence,
            "attempt": ctx.attempt, "start": time.time()}
    data = (json.dumps(line) + "\n").encode()
    fd = os.open(ctx.args["path"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)  # one write of < PIPE_BUF with O_APPEND: lines from many processes never interleave
    finally:
        os.close(fd)
    return line


def sleep(ctx: RunContext) -> None:
    """Sleep ``seconds`` (default 1)."""
    time.sleep(float(ctx.args.get("seconds", "1")))


def burn(ctx: RunContext) -> dict | None:
    """Append the ledger line (when ``path`` is given), then spend ``ms`` (default 1) milliseconds of
    this thread's CPU time: a run that costs CPU, so a benchmark can reach a cluster's capacity
    with fewer jobs. CPU time, not wall time: on a busy machine the run lasts longer, its cost stays."""
    line = ledger(ctx) if "path" in ctx.args else None
    end = time.thread_time() + float(ctx.args.get("ms", "1")) / 1000.0
    while time.thread_time() < end:
        pass
    return line
