"""The ``burn`` builtin: a run that costs a known amount of CPU (bench/overload.py's per-run work)."""

from __future__ import annotations

import json
import time

from etcdcron.builtins import burn
from etcdcron.executor import RunContext
from etcdcron.jobs import load_builtin


def test_burn_spends_the_cpu_it_is_asked_for_and_writes_the_ledger_line(tmp_path):
    path = tmp_path / "ledger"
    ctx = RunContext("j1", 1_700_000_000, "n1", 42, 1, {"path": str(path), "ms": "30"})
    cpu0 = time.thread_time()
    line = burn(ctx)
    spent = time.thread_time() - cpu0
    assert spent >= 0.030
    assert spent < 0.5  # a spin bounded by its own clock, not left running
    written = [json.loads(raw) for raw in path.read_text().splitlines()]
    assert written == [line]
    assert (line["job"], line["slot"], line["node"], line["fence"], line["attempt"]) == ("j1", 1_700_000_000, "n1", 42, 1)


def test_burn_without_a_path_returns_nothing_and_is_registered_as_a_builtin():
    assert load_builtin("burn") is burn
    cpu0 = time.thread_time()
    assert burn(RunContext("j1", 1, "n1", 1, 1, {"ms": "5"})) is None
    assert time.thread_time() - cpu0 >= 0.005
