"""Test harness: `etcdcron serve` nodes as separate processes, a ledger their jobs append to, and
checks over both. Shipped with the tests so fault tests can build on it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from etcdcron.admin import Admin
from etcdcron.keys import Keys
from etcdcron.nodes import wait_for
from etcdcron.store import EtcdStore

ROOT = Path(__file__).resolve().parent.parent

# One line per run start and per run end, written by the shell job itself from its environment.
LEDGER_CMD = ('echo "start $ETCDCRON_JOB $ETCDCRON_SLOT_EPOCH $ETCDCRON_NODE $ETCDCRON_FENCE $ETCDCRON_ATTEMPT '
              '$(date +%s.%N)" >> {ledger}{body}; '
              'echo "end $ETCDCRON_JOB $ETCDCRON_SLOT_EPOCH $ETCDCRON_NODE $ETCDCRON_FENCE $ETCDCRON_ATTEMPT '
              '$(date +%s.%N)" >> {ledger}')


@dataclass(frozen=True)
class Line:
    what: str
    job: str
    slot: int
    node: str
    fence: int
    attempt: int
    at: float


class Cluster:
    def __init__(self, etcd: str, prefix: str, tmp: Path) -> None:
        self.etcd, self.prefix, self.tmp = etcd, prefix, tmp
        self.ledger = tmp / "ledger"
        self.procs: dict[str, subprocess.Popen] = {}
        self.store = EtcdStore(etcd)
        self.keys = Keys(prefix)
        self.admin = Admin(self.store, self.keys)

    # --- processes
    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"ETCDCRON_ETCD": self.etcd, "ETCDCRON_PREFIX": self.prefix, "PYTHONUNBUFFERED": "1"})
        return env

    def start(self, node_id: str, *extra: str, ttl: int = 3) -> subprocess.Popen:
        log = open(self.tmp / f"{node_id}.log", "ab")
        proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "serve", "--node-id", node_id, "--ttl", str(ttl),
                                 "--grace", "10", *extra], env=self.env(), stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs[node_id] = proc
        return proc

    def start_nodes(self, n: int, extra: tuple[str, ...] = (), **kw) -> list[str]:
        ids = [f"n{i + 1}" for i in range(n)]
        for nid in ids:
            self.start(nid, *extra, **kw)
        assert wait_for(lambda: set(ids) <= self.live(), 20), f"nodes did not register: {self.live()}"
        return ids

    def live(self) -> set[str]:
        kvs, _ = self.store.get_prefix(self.keys.nodes)
        return {kv.key.rsplit("/", 1)[1] for kv in kvs}

    def signal(self, node_id: str, sig: int) -> None:
        self.procs[node_id].send_signal(sig)

    def log(self, node_id: str) -> list[dict]:
        out = []
        for line in (self.tmp / f"{node_id}.log").read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
        return out

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.kill(proc.pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.store.close()

    # --- jobs
    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], env=self.env(),
                              capture_output=True, text=True, timeout=60)

    def add_ledger_job(self, name: str, schedule: str = "* * * * * *", sleep: float = 0, *extra: str,
                       concurrency: str = "allow", body: str = "") -> None:
        """A shell job that writes start and end lines to the ledger (overlapping runs allowed unless
        told); ``body`` runs between them."""
        body = (f"; sleep {sleep}" if sleep else "") + body
        r = self.cli("add", schedule, "--name", name, "--shell", LEDGER_CMD.format(ledger=self.ledger, body=body),
                     "--concurrency", concurrency, *extra)
        assert r.returncode == 0, r.stderr

    # --- the ledger
    def lines(self) -> list[Line]:
        if not self.ledger.exists():
            return []
        out = []
        for raw in self.ledger.read_text().splitlines():
            what, job, slot, node, fence, attempt, at = raw.split()
            out.append(Line(what, job, int(slot), node, int(fence), int(attempt), float(at)))
        return out

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
        assert wait_for(done, timeout, step=0.2), f"jobs did not reach slot {slot}"

    def mid_run(self, node: str) -> bool:
        """Has ``node`` started a run whose end line is not written yet?"""
        lines = self.lines()
        ended = {(ln.job, ln.slot, ln.fence) for ln in lines if ln.what == "end"}
        return any(ln.node == node and ln.what == "start" and (ln.job, ln.slot, ln.fence) not in ended for ln in lines)

    def claims(self) -> dict[tuple[str, int], object]:
        return {(c.job, c.slot): c for c in self.admin.history(None, 1_000_000)}

    def settled_claims(self, first: int, last: int, timeout: float = 15) -> dict[tuple[str, int], object]:
        """The claims once none with a slot in [first, last] is still `running` (a run's ledger end line
        comes just before its completion is recorded)."""
        def settled() -> bool:
            return not any(c.state == "running" for (_, s), c in self.claims().items() if first <= s <= last)
        assert wait_for(settled, timeout, step=0.1), "runs did not complete"
        return self.claims()


def assert_exactly_once(cluster: Cluster, jobs: list[str], first: int, last: int) -> dict[tuple[str, int], list[Line]]:
    """Every (job, slot) in [first, last] started, once per attempt, never before its instant, with
    strictly increasing attempts and fences. (A claim lost before its run began is recovered as
    attempt 2 with no attempt 1 in the ledger.) Returns the starts."""
    starts = cluster.starts()
    for job in jobs:
        for slot in range(first, last + 1):
            runs = sorted(starts.get((job, slot), []), key=lambda ln: ln.attempt)
            assert runs, f"firing {job}@{slot} was never executed"
            attempts = [r.attempt for r in runs]
            assert attempts == sorted(set(attempts)), f"{job}@{slot} attempts {runs}"
            fences = [r.fence for r in runs]
            assert fences == sorted(set(fences)), f"{job}@{slot} fences not increasing: {runs}"
            for r in runs:
                assert r.at >= slot, f"{job}@{slot} started early at {r.at}"
    return starts
