"""Running one job: shell in its own process group, HTTP POST, or a builtin Python callable.

The executor knows nothing of etcd: it gets a spec and a :class:`RunContext`, returns a
:class:`RunResult`. A ``cancel`` event stops a run (the whole process group for shell jobs).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from .jobs import JobSpec, load_builtin

OUTPUT_TAIL = 4096
KILL_GRACE = 5.0


@dataclass(frozen=True)
class RunContext:
    """What a job sees (DESIGN §3): the firing's identity and the claim that runs it."""

    job: str
    slot_epoch: int
    node: str
    fence: int
    attempt: int
    args: dict[str, str] = field(default_factory=dict)
    mongo: str | None = None  # the node's --mongo URI, for builtin jobs that write to MongoDB

    @property
    def slot_iso(self) -> str:
        return datetime.fromtimestamp(self.slot_epoch, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")

    def fields(self) -> dict[str, str]:
        return {
            "ETCDCRON_JOB": self.job,
            "ETCDCRON_SLOT": self.slot_iso,
            "ETCDCRON_SLOT_EPOCH": str(self.slot_epoch),
            "ETCDCRON_NODE": self.node,
            "ETCDCRON_FENCE": str(self.fence),
            "ETCDCRON_ATTEMPT": str(self.attempt),
        }


@dataclass(frozen=True)
class RunResult:
    state: str  # succeeded | failed | timeout | killed
    exit_code: int | None
    output: str
    started: float
    ended: float


class Cancel(threading.Event):
    """Stops a run when set: the process group gets SIGTERM, then SIGKILL after ``grace`` seconds
    (at once when ``grace`` is 0). ``reason`` says who asked (kill, replace, shutdown, lease_lost…)."""

    def __init__(self) -> None:
        super().__init__()
        self.reason = ""
        self.grace = KILL_GRACE

    def stop(self, reason: str, grace: float = KILL_GRACE) -> bool:
        """Ask the run to stop; False if it was asked already (a harder ask still shortens the grace)."""
        first = not self.is_set()
        if first:
            self.reason = reason
        self.grace = min(self.grace, grace)
        self.set()
        return first


def _tail(data: bytes) -> str:
    return data[-OUTPUT_TAIL:].decode(errors="replace")


def run_job(spec: JobSpec, ctx: RunContext, cancel: threading.Event | None = None) -> RunResult:
    """Run ``spec`` once for ``ctx``; never raises for a failing job, only records it."""
    cancel = cancel or threading.Event()
    started = time.time()
    try:
        if spec.kind == "shell":
            state, code, out = _run_shell(spec, ctx, cancel)
        elif spec.kind == "http":
            state, code, out = _run_http(spec, ctx)
        else:
            state, code, out = _run_builtin(spec, ctx, cancel)
    except Exception as exc:  # noqa: BLE001 - a job's failure is data, not a crash of the node
        state, code, out = "failed", None, f"{type(exc).__name__}: {exc}"[-OUTPUT_TAIL:]
    return RunResult(state, code, out, started, time.time())


def _killpg(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _run_shell(spec: JobSpec, ctx: RunContext, cancel: threading.Event) -> tuple[str, int | None, str]:
    env = dict(os.environ)
    env.update(ctx.fields())
    env.update({f"ETCDCRON_ARG_{k.upper()}": v for k, v in spec.args.items()})
    proc = subprocess.Popen(
        ["/bin/sh", "-c", spec.target], env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    chunks: list[bytes] = []
    size = 0

    def pump() -> None:
        nonlocal size
        assert proc.stdout is not None
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):
            chunks.append(chunk)
            size += len(chunk)
            while size > 2 * OUTPUT_TAIL and len(chunks) > 1:
                size -= len(chunks.pop(0))

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = time.monotonic() + spec.timeout if spec.timeout else None
    outcome = None
    while outcome is None:
        wait = 0.1 if deadline is None else max(0.0, min(0.1, deadline - time.monotonic()))
        try:
            proc.wait(timeout=wait)
            break
        except subprocess.TimeoutExpired:
            pass
        if cancel.is_set():
            outcome = "killed"
        elif deadline is not None and time.monotonic() >= deadline:
            outcome = "timeout"
    if outcome:
        _stop_group(proc, cancel.grace if outcome == "killed" and isinstance(cancel, Cancel) else KILL_GRACE)
    code = proc.wait()
    # The group may still hold children that outlived the shell: they go with it.
    _killpg(proc, signal.SIGKILL)
    reader.join(timeout=2)
    out = _tail(b"".join(chunks))
    if outcome:
        return outcome, code, out
    return ("succeeded" if code == 0 else "failed"), code, out


def _stop_group(proc: subprocess.Popen, grace: float = KILL_GRACE) -> None:
    if grace > 0:
        _killpg(proc, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            pass
    _killpg(proc, signal.SIGKILL)


def _run_http(spec: JobSpec, ctx: RunContext) -> tuple[str, int | None, str]:
    body = {k.removeprefix("ETCDCRON_").lower(): v for k, v in ctx.fields().items()}
    body["args"] = spec.args
    headers = {"Content-Type": "application/json"}
    headers.update({"X-Etcdcron-" + k.removeprefix("ETCDCRON_").title().replace("_", "-"): v for k, v in ctx.fields().items()})
    req = urllib.request.Request(spec.target, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=spec.timeout or 60) as resp:
            return "succeeded", resp.status, _tail(resp.read(OUTPUT_TAIL * 2))
    except urllib.error.HTTPError as exc:
        return "failed", exc.code, _tail(exc.read(OUTPUT_TAIL * 2) if exc.fp else b"")
    except TimeoutError:
        return "timeout", None, "http request timed out"
    except (urllib.error.URLError, OSError) as exc:
        return "failed", None, f"http request failed: {exc}"


def _run_builtin(spec: JobSpec, ctx: RunContext, cancel: threading.Event) -> tuple[str, int | None, str]:
    fn = load_builtin(spec.target)
    if not spec.timeout:
        # No timeout to enforce: run on the worker thread we are on (a thread per run costs more
        # than most builtins, and a Python callable cannot be killed anyway).
        try:
            value = fn(ctx)
        except Exception as exc:  # noqa: BLE001
            return "failed", 1, f"{type(exc).__name__}: {exc}"[-OUTPUT_TAIL:]
        return "succeeded", 0, "" if value is None else _tail(json.dumps(value, default=str).encode())
    outcome: dict[str, Any] = {}

    def call() -> None:
        try:
            outcome["value"] = fn(ctx)
        except Exception as exc:  # noqa: BLE001
            outcome["error"] = f"{type(exc).__name__}: {exc}"

    # A Python callable cannot be killed; on timeout or cancel we stop waiting and record it.
    t = threading.Thread(target=call, daemon=True, name=f"builtin-{spec.name}")
    t.start()
    deadline = time.monotonic() + spec.timeout if spec.timeout else None
    while t.is_alive():
        wait = 0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic()))
        t.join(wait)
        if not t.is_alive():
            break
        if cancel.is_set():
            return "killed", None, "cancelled (builtin left to finish in the background)"
        if deadline is not None and time.monotonic() >= deadline:
            return "timeout", None, "timed out (builtin left to finish in the background)"
    if "error" in outcome:
        return "failed", 1, outcome["error"][-OUTPUT_TAIL:]
    value = outcome.get("value")
    return "succeeded", 0, "" if value is None else _tail(json.dumps(value, default=str).encode())
