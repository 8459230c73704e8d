"""Running one job: shell in its own process group, HTTP POST, or a builtin Python callable.

The executor knows nothing of etcd: it gets a spec, a :class:`RunContext` and the node's
:class:`RunPolicy`, returns a :class:`RunResult`. A ``cancel`` event stops a run (the whole process
group for shell jobs). A job the policy forbids is not run: its result is ``refused``, with the
reason as its output. Shell jobs get a clean environment (:mod:`etcdcron.jobenv`) and are started
through :mod:`etcdcron.reaper`, which must not take their exit status.
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
from urllib.parse import urlparse

from . import reaper
from .jobenv import job_environment
from .jobs import KINDS, JobSpec, load_builtin

OUTPUT_TAIL = 4096
KILL_GRACE = 5.0
HTTP_TIMEOUT = 60.0  # an HTTP job without --timeout
HTTP_BODY_MAX = 1 << 20  # bytes of a response read at most (the tail of them is kept)


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
class RunPolicy:
    """What a node lets its jobs do: the kinds it runs (``serve --allow-kinds``), the daemon variables
    shell jobs see (``--pass-env``), the hosts HTTP jobs may call (``--http-allow``; empty: any)."""

    allow_kinds: frozenset[str] = frozenset(KINDS)
    pass_env: tuple[str, ...] = ()
    http_allow: tuple[str, ...] = ()

    def refusal(self, spec: JobSpec, node: str) -> str | None:
        """Why ``spec`` may not run on ``node``, or None."""
        if spec.kind not in self.allow_kinds:
            return f"kind {spec.kind} not allowed on node {node}"
        if spec.kind == "http" and self.http_allow and not host_allowed(spec.target, self.http_allow):
            return f"host {urlparse(spec.target).hostname} not allowed on node {node} (http_allow: {', '.join(self.http_allow)})"
        return None


ANY = RunPolicy()


def host_allowed(url: str, allowed: tuple[str, ...]) -> bool:
    """Is ``url``'s host named in ``allowed``? An entry is a host name or address (any port) or
    ``HOST:PORT`` (that port only; ``[ADDR]:PORT`` for IPv6); case does not matter."""
    u = urlparse(url)
    host = (u.hostname or "").lower()
    try:
        port = u.port or (443 if u.scheme == "https" else 80)
    except ValueError:
        return False
    names = {host, f"{host}:{port}", f"[{host}]", f"[{host}]:{port}"}
    return any(entry.strip().lower() in names for entry in allowed)


@dataclass(frozen=True)
class RunResult:
    state: str  # succeeded | failed | timeout | killed | refused
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


def run_job(spec: JobSpec, ctx: RunContext, cancel: threading.Event | None = None,
            policy: RunPolicy = ANY) -> RunResult:
    """Run ``spec`` once for ``ctx`` (unless ``policy`` refuses it); never raises for a failing job,
    only records it."""
    cancel = cancel or threading.Event()
    started = time.time()
    if (why := policy.refusal(spec, ctx.node)) is not None:
        return RunResult("refused", None, why, started, started)
    try:
        if spec.kind == "shell":
            state, code, out = _run_shell(spec, ctx, cancel, policy.pass_env)
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


def _run_shell(spec: JobSpec, ctx: RunContext, cancel: threading.Event,
               pass_env: tuple[str, ...] = ()) -> tuple[str, int | None, str]:
    env = job_environment(ctx.fields(), spec.args, spec.env, pass_env)
    proc = reaper.popen(
        ["/bin/sh", "-c", spec.target], env=env, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        return _supervise(proc, spec, cancel)
    finally:
        reaper.release(proc)


def _supervise(proc: subprocess.Popen, spec: JobSpec, cancel: threading.Event) -> tuple[str, int | None, str]:
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


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is the run's result, never followed: a redirect could lead off the hosts ``--http-allow``
    names, and the firing's POST must reach the URL the job names or nothing."""

    def redirect_request(self, *args: Any, **kw: Any) -> None:
        return None


_HTTP = urllib.request.build_opener(_NoRedirects)


def _read_tail(resp: Any, deadline: float) -> tuple[bytes, str]:
    """The tail of a response body, reading at most HTTP_BODY_MAX bytes until ``deadline``; and a
    note when the rest was left unread."""
    tail, total = b"", 0
    while True:
        if total >= HTTP_BODY_MAX:
            return tail, f"\n[body truncated: more than {HTTP_BODY_MAX} bytes]"
        if time.monotonic() >= deadline:
            return tail, "\n[body truncated: timed out reading it]"
        chunk = resp.read(min(65536, HTTP_BODY_MAX - total))
        if not chunk:
            return tail, ""
        total += len(chunk)
        tail = (tail + chunk)[-OUTPUT_TAIL:]


def _run_http(spec: JobSpec, ctx: RunContext) -> tuple[str, int | None, str]:
    body = {k.removeprefix("ETCDCRON_").lower(): v for k, v in ctx.fields().items()}
    body["args"] = spec.args
    headers = {"Content-Type": "application/json"}
    headers.update({"X-Etcdcron-" + k.removeprefix("ETCDCRON_").title().replace("_", "-"): v for k, v in ctx.fields().items()})
    req = urllib.request.Request(spec.target, data=json.dumps(body).encode(), headers=headers, method="POST")
    timeout = spec.timeout or HTTP_TIMEOUT
    deadline = time.monotonic() + timeout
    try:
        with _HTTP.open(req, timeout=timeout) as resp:
            data, note = _read_tail(resp, deadline)
            return "succeeded", resp.status, _tail(data + note.encode())
    except urllib.error.HTTPError as exc:  # 3xx (not followed), 4xx, 5xx
        data, note = _read_tail(exc, deadline) if exc.fp else (b"", "")
        if 300 <= exc.code < 400:
            note += f"\n[redirect to {exc.headers.get('Location', '?')} not followed]"
        return "failed", exc.code, _tail(data + note.encode())
    except TimeoutError:
        return "timeout", None, "http request timed out"
    except (urllib.error.URLError, OSError) as exc:
        if isinstance(getattr(exc, "reason", None), TimeoutError):
            return "timeout", None, "http request timed out"
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
