"""Reaping orphans: a node that is PID 1 (a container without an init) waits for the processes its
jobs leave behind, so that their zombies do not pile up until the pid table is full.

A shell job's descendants that outlive it (``setsid cmd &``, a script that daemonises, the members
of its process group killed after the shell exited) become orphans, and the kernel hands an orphan
to its nearest ancestor that is a *subreaper*, else to PID 1. In a container that is the node, and
nothing else will ever wait for them. On Linux the node also makes itself a subreaper
(``prctl(PR_SET_CHILD_SUBREAPER)``): it then behaves the same whether it is PID 1 or not, which is
also how this is tested.

Why not ``waitpid(-1)``: the node's own children — the shell of each running job — are waited for
by their ``subprocess.Popen``. A blanket wait would steal their exit status (Popen then reports 0:
a job that exited 3 would be recorded succeeded). So a pass of the reaper waits, by pid, only for
the zombie children that it was not told about. The executor starts children through :func:`popen`,
which registers the pid under the lock a pass holds, so no pass ever sees a child between its fork
and its registration; :func:`release` forgets the pid once its Popen has waited for it. A child
started with ``subprocess.Popen`` directly in a node that runs the reaper is not protected: if it
exits and is not waited for within one pass, its status is lost (start it through :func:`popen`).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import threading
from typing import Any, Iterable

import structlog

log = structlog.get_logger("etcdcron.reaper")

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
INTERVAL = 1.0  # seconds between passes: a zombie holds only a pid table slot, never a resource

_lock = threading.Lock()
_ours: dict[int, subprocess.Popen] = {}  # children whose Popen waits for them
_running: "Reaper | None" = None


def popen(args: Any, **kw: Any) -> subprocess.Popen:
    """``subprocess.Popen(args, **kw)``, registered so that the reaper leaves its exit status to it;
    call :func:`release` once it has been waited for."""
    with _lock:
        proc = subprocess.Popen(args, **kw)
        _ours[proc.pid] = proc
    return proc


def release(proc: subprocess.Popen) -> None:
    """Forget a child started by :func:`popen` (after its Popen has waited for it)."""
    with _lock:
        if _ours.get(proc.pid) is proc:  # the pid may be another child's by now
            del _ours[proc.pid]


def set_subreaper() -> bool:
    """Make this process the reaper of its orphaned descendants (Linux); False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        log.warning("reaper.no_subreaper", error=os.strerror(ctypes.get_errno()))
        return False
    return True


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of ``pid`` from /proc, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    rest = raw[raw.rindex(")") + 2:].split()  # the command name (field 2) may hold spaces and ')'
    return rest[0], int(rest[1])


def _children(parent: int) -> Iterable[int]:
    """The pids of ``parent``'s children: from each thread's ``children`` list where the kernel has
    it, else from every pid in /proc."""
    try:
        pids: set[int] = set()
        for tid in os.listdir(f"/proc/{parent}/task"):
            with open(f"/proc/{parent}/task/{tid}/children") as f:
                pids.update(int(p) for p in f.read().split())
        return pids
    except OSError:
        return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def zombies(parent: int) -> list[int]:
    """The zombie children of ``parent`` (Linux /proc)."""
    out = []
    for pid in _children(parent):
        st = _stat(pid)
        if st is not None and st[0] == "Z" and st[1] == parent:
            out.append(pid)
    return out


class Reaper:
    """A thread that waits, every ``interval`` seconds, for the zombie children nobody else waits for."""

    def __init__(self, interval: float = INTERVAL) -> None:
        self.interval = interval
        self.reaped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="reaper", daemon=True)

    def start(self) -> "Reaper":
        subreaper = set_subreaper()
        self._thread.start()
        log.info("reaper.started", pid=os.getpid(), subreaper=subreaper)
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * self.interval + 1)

    def reap(self) -> int:
        """One pass; the number of zombies waited for."""
        n, me = 0, os.getpid()
        with _lock:  # no child of ours can be between its fork and its registration now
            for pid in zombies(me):
                if pid in _ours:
                    continue
                try:
                    got, status = os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    continue
                if got:
                    n += 1
                    log.debug("reaper.reaped", pid=pid, exit_code=os.waitstatus_to_exitcode(status))
        self.reaped += n
        return n

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.reap()
            except Exception as exc:  # noqa: BLE001 - a failed pass is retried; the node must not die of it
                log.warning("reaper.pass_failed", error=repr(exc)[:200])


def start() -> Reaper | None:
    """Start this process's reaper (once; on Linux only, where /proc tells zombies apart)."""
    global _running
    if _running is None and sys.platform.startswith("linux"):
        _running = Reaper().start()
    return _running
