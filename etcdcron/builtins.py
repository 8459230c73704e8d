"""Small builtin jobs shipped with etcdcron (registered under the entry-point group ``etcdcron.jobs``).

``noop`` does nothing; ``ledger`` appends one JSON line per run to ``--arg path=FILE`` (tests and
benchmarks read it); ``sleep`` sleeps ``--arg seconds=S``.
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
