"""A 3-member etcd cluster on loopback for the fault suite: members can be SIGKILLed, restarted on
their data dir (they rejoin as ``--initial-cluster-state existing``) and the leader can be found."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from etcdcron.embedded import EmbeddedEtcd, etcd_binary, free_port
from etcdcron.errors import StoreError
from etcdcron.nodes import wait_for
from etcdcron.store import EtcdStore

# Fast elections keep each fault short; loopback latency is far below these.
TIMING = ["--heartbeat-interval", "50", "--election-timeout", "500"]


class Member(EmbeddedEtcd):
    """One member of a static multi-member cluster. ``initial_cluster`` lists every member; a member
    restarted on its data dir rejoins with state ``existing``."""

    def __init__(self, base: Path, name: str, initial_cluster: str, client_port: int, peer_port: int) -> None:
        super().__init__(base / name, client_port, peer_port, name, base / f"{name}.log")
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
                "--initial-cluster-token", "etcdcron-faults", "--log-level", "warn", "--logger", "zap", *TIMING]
        logf = open(self.log_path, "ab")
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
        s = EtcdStore(self.endpoint, timeout=1.0)
        try:
            return s.status()
        except StoreError:
            return None
        finally:
            s.close()


class EtcdCluster:
    def __init__(self, base: Path, size: int = 3) -> None:
        names = [f"e{i + 1}" for i in range(size)]
        ports = {n: (free_port(), free_port()) for n in names}
        initial = ",".join(f"{n}=http://127.0.0.1:{ports[n][1]}" for n in names)
        self.members = [Member(base, n, initial, *ports[n]) for n in names]

    @property
    def endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members)

    def start(self, timeout: float = 30) -> "EtcdCluster":
        for m in self.members:
            if not m.alive():
                m.start_async()
        assert wait_for(self.healthy, timeout, step=0.2), f"etcd cluster not healthy: {[m.status() for m in self.members]}"
        return self

    def healthy(self) -> bool:
        """Every member up and all agree on one leader."""
        st = [m.status() for m in self.members]
        return all(st) and len({s["leader"] for s in st}) == 1 and st[0]["leader"] != 0

    def leader(self, timeout: float = 15) -> Member:
        found: list[Member] = []

        def find() -> bool:
            for m in self.members:
                s = m.status() if m.alive() else None
                if s and s["leader"] and s["leader"] == s["member"]:
                    found.append(m)
                    return True
            return False
        assert wait_for(find, timeout, step=0.1), "no etcd leader"
        return found[0]

    def kill_all(self) -> None:
        for m in self.members:
            m.kill()

    def stop(self) -> None:
        for m in self.members:
            m.stop()

