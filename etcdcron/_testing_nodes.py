"""Node processes for tests and benchmarks: ``etcdcron serve`` run as separate processes on one etcd
and one key prefix, the ledger their jobs append to, and the evidence the checker reads.

Public through :mod:`etcdcron.testing`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable, Sequence

from ._testing_checker import FINAL, Record, Scenario, check, record_of
from ._testing_ledger import LEDGER_CMD, Line, read_ledger
from .admin import Admin
from .jobs import JobSpec, make_spec
from .keys import Keys
from .nodes import wait_for
from .store import EtcdStore

# The tree this package was imported from: in a checkout, cli.py sits next to etcdcron/.
ROOT = Path(__file__).resolve().parent.parent


def cli_command(code: Path | None = None) -> list[str]:
    """The argv prefix that runs the ``etcdcron`` CLI of ``code`` (a source tree), else of this package."""
    if code is not None:
        return [sys.executable, str(Path(code) / "cli.py")]
    if (ROOT / "cli.py").is_file():
        return [sys.executable, str(ROOT / "cli.py")]
    # An install: the console script's module (``etcdcron.cli``); -P keeps the working directory
    # from shadowing the installed package.
    return [sys.executable, "-P", "-m", "etcdcron.cli"]


class Cluster:
    """``etcdcron serve`` processes on the etcd at ``etcd`` under key prefix ``prefix``; their logs
    (``<node>.log``) and the ledger go to ``tmp``. ``code`` runs the nodes and the CLI from another
    source tree (a benchmark of an older revision; also put on their PYTHONPATH). Every process is
    stopped by PID in :meth:`stop_nodes` / :meth:`close`. ``env`` adds variables for the nodes and the
    CLI (e.g. ``ETCDCRON_ETCD_CA``, ``ETCDCRON_ETCD_USER``, ``ETCDCRON_ETCD_PASSWORD_FILE`` for a secured
    etcd); ``store`` replaces the plain client of ``etcd`` (one with those credentials; closed by :meth:`close`)."""

    def __init__(self, etcd: str, prefix: str, tmp: Path, *, code: Path | None = None,
                 store_timeout: float | None = None, env: dict[str, str] | None = None,
                 store: EtcdStore | None = None) -> None:
        self.etcd, self.prefix, self.tmp = etcd, prefix, Path(tmp)
        self.ledger = self.tmp / "ledger"
        self.code = code
        self.extra_env = dict(env or {})
        self.procs: dict[str, subprocess.Popen] = {}
        if store is None:
            store = EtcdStore(etcd) if store_timeout is None else EtcdStore(etcd, timeout=store_timeout)
        self.store = store
        self.keys = Keys(prefix)
        self.admin = Admin(self.store, self.keys)
        self._closed = False

    # --- processes
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"ETCDCRON_ETCD": self.etcd, "ETCDCRON_PREFIX": self.prefix, "PYTHONUNBUFFERED": "1"})
        env.update(self.extra_env)
        if self.code is not None:
            env["PYTHONPATH"] = str(self.code)
        return env

    def start(self, node_id: str, *extra: str, ttl: float | None = 3, grace: float = 10) -> subprocess.Popen:
        """Start node ``node_id`` (``serve --ttl ttl --grace grace *extra``; ``ttl=None``: the default)."""
        args = ["serve", "--node-id", node_id, *(["--ttl", str(ttl)] if ttl is not None else []),
                "--grace", str(grace), *extra]
        log = open(self.tmp / f"{node_id}.log", "ab")
        proc = subprocess.Popen([*cli_command(self.code), *args], env=self.env(), stdout=log,
                                stderr=subprocess.STDOUT)
        log.close()
        self.procs[node_id] = proc
        return proc

    def start_nodes(self, nodes: int | Sequence[str], extra: tuple[str, ...] = (), *, timeout: float = 20,
                    **kw) -> list[str]:
        """Start ``nodes`` (a count: ``n1``, ``n2``, ...; or the ids) and wait until all are registered."""
        ids = [f"n{i + 1}" for i in range(nodes)] if isinstance(nodes, int) else list(nodes)
        for nid in ids:
            self.start(nid, *extra, **kw)
        if not wait_for(lambda: set(ids) <= self.live(), timeout):
            exited = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
            raise AssertionError(f"nodes did not register: {self.live()} (exited: {exited}); logs in {self.tmp}")
        return ids

    def live(self) -> set[str]:
        """The ids of the nodes registered in etcd now."""
        kvs, _ = self.store.get_prefix(self.keys.nodes)
        return {kv.key.rsplit("/", 1)[1] for kv in kvs}

    def signal(self, node_id: str, sig: int) -> None:
        self.procs[node_id].send_signal(sig)

    def log(self, node_id: str) -> list[dict]:
        """The JSON lines node ``node_id`` logged (other lines left out)."""
        out = []
        for line in (self.tmp / f"{node_id}.log").read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def stop_nodes(self, wait: float = 15.0,
                   on_kill: Callable[[str, subprocess.Popen], None] | None = None) -> dict[str, int]:
        """SIGTERM every node (SIGCONT first, for a paused one); SIGKILL those still running ``wait``
        seconds later, after calling ``on_kill(node_id, proc)``. Returns the exit codes."""
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                proc.terminate()
        end = time.monotonic() + wait
        for nid, proc in self.procs.items():
            try:
                proc.wait(timeout=max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                if on_kill is not None:
                    on_kill(nid, proc)
                proc.kill()
                proc.wait()
        return {nid: proc.returncode for nid, proc in self.procs.items()}

    def close(self) -> None:
        """Stop every node, then the etcd client."""
        if self._closed:
            return
        self._closed = True
        self.stop_nodes()
        self.store.close()

    # --- jobs
    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        """Run ``etcdcron *args`` against this cluster (text output captured)."""
        return subprocess.run([*cli_command(self.code), *args], env=self.env(), capture_output=True, text=True,
                              timeout=timeout)

    def add_ledger_job(self, name: str, schedule: str = "* * * * * *", sleep: float = 0, *extra: str,
                       concurrency: str = "allow", body: str = "") -> None:
        """A shell job that writes start and end lines to the ledger (overlapping runs allowed unless
        told); ``body`` runs between them."""
        body = (f"; sleep {sleep}" if sleep else "") + body
        r = self.cli("add", schedule, "--name", name, "--shell", LEDGER_CMD.format(ledger=self.ledger, body=body),
                     "--concurrency", concurrency, *extra)
        if r.returncode != 0:
            raise AssertionError(r.stderr)

    def ledger_spec(self, name: str, schedule: str = "* * * * * *", **kw) -> JobSpec:
        """The spec of a job running the builtin ``ledger`` into this ledger (a start line per run, no
        process per run); ``kw`` as for ``make_spec``. Register it with ``self.admin.put_job``."""
        return make_spec(name, schedule, builtin="ledger", args={"path": str(self.ledger)}, **kw)

    # --- the ledger
    def lines(self) -> list[Line]:
        return read_ledger(self.ledger)

    def starts(self) -> dict[tuple[str, int], list[Line]]:
        by: dict[tuple[str, int], list[Line]] = defaultdict(list)
        for line in self.lines():
            if line.what == "start":
                by[(line.job, line.slot)].append(line)
        return by

    def wait_until_slot(self, slot: int, jobs: list[str], timeout: float = 30) -> None:
        """Wait until every job has finished (an end line for) a firing at or after ``slot``."""
        def done() -> bool:
            ends = {ln.job for ln in self.lines() if ln.what == "end" and ln.slot >= slot}
            return set(jobs) <= ends
        if not wait_for(done, timeout, step=0.2):
            raise AssertionError(f"jobs did not reach slot {slot}")

    def mid_run(self, node: str) -> bool:
        """Has ``node`` started a run whose end line is not written yet?"""
        lines = self.lines()
        ended = {(ln.job, ln.slot, ln.fence) for ln in lines if ln.what == "end"}
        return any(ln.node == node and ln.what == "start" and (ln.job, ln.slot, ln.fence) not in ended for ln in lines)

    # --- the run history and the checker
    def claims(self) -> dict[tuple[str, int], object]:
        return {(c.job, c.slot): c for c in self.admin.history(None, 1_000_000)}

    def settled_claims(self, first: int, last: int, timeout: float = 15) -> dict[tuple[str, int], object]:
        """The claims once none with a slot in [first, last] is still `running` (a run's ledger end line
        comes just before its completion is recorded)."""
        def settled() -> bool:
            return not any(c.state == "running" for (_, s), c in self.claims().items() if first <= s <= last)
        if not wait_for(settled, timeout, step=0.1):
            raise AssertionError("runs did not complete")
        return self.claims()

    def records(self) -> list[Record]:
        return [record_of(c) for c in self.claims().values()]

    def wait_settled(self, due: set[tuple[str, int]], timeout: float = 20) -> bool:
        """Wait until every firing in ``due`` has a final record (run or not-run; none `running`, none absent).
        Returns False on timeout and lets the checker say what is wrong (a stuck firing is a violation)."""
        def settled() -> bool:
            claims = self.claims()
            return all(k in claims and claims[k].state in FINAL for k in due)
        return wait_for(settled, timeout, step=0.25)

    def verify(self, sc: Scenario, horizon: float = 110) -> None:
        """Run the checker; fail with every violation found. Records older than ``horizon`` seconds may
        have been collected by the leader (long mode only: short windows are far younger)."""
        sc.history_from = max(sc.history_from, int(time.time() - horizon))
        runs = [ln for ln in self.lines() if ln.what in ("start", "end")]  # not a job's own lines (heartbeats)
        violations = check(runs, self.records(), sc)
        if violations:
            raise AssertionError("guarantees violated:\n" + "\n".join(violations[:40]))


def assert_exactly_once(cluster: Cluster, jobs: list[str], first: int, last: int) -> dict[tuple[str, int], list[Line]]:
    """Every (job, slot) in [first, last] started, once per attempt, never before its instant, with
    strictly increasing attempts and fences. (A claim lost before its run began is recovered as
    attempt 2 with no attempt 1 in the ledger.) Returns the starts."""
    starts = cluster.starts()
    for job in jobs:
        for slot in range(first, last + 1):
            runs = sorted(starts.get((job, slot), []), key=lambda ln: ln.attempt)
            if not runs:
                raise AssertionError(f"firing {job}@{slot} was never executed")
            attempts = [r.attempt for r in runs]
            if attempts != sorted(set(attempts)):
                raise AssertionError(f"{job}@{slot} attempts {runs}")
            fences = [r.fence for r in runs]
            if fences != sorted(set(fences)):
                raise AssertionError(f"{job}@{slot} fences not increasing: {runs}")
            for r in runs:
                if r.at < slot:
                    raise AssertionError(f"{job}@{slot} started early at {r.at}")
    return starts
