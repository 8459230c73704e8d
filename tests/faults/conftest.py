"""Fixtures of the fault suite: a 3-member etcd cluster on loopback, loopback TCP proxies that can
cut a node from etcd, node processes on top, and the evidence the checker reads.

Short mode by default (the whole suite in a few minutes); ``ETCDCRON_FAULTS_LONG=1`` runs each
fault for minutes (longer windows, more repetitions)."""

from __future__ import annotations

import uuid

import pytest

from etcdcron.testing import Cluster, EtcdCluster

from .proxy import TcpProxy


@pytest.fixture(scope="session")
def etcd3_shared(tmp_path_factory) -> EtcdCluster:
    """A 3-member etcd cluster shared by the faults that do not touch etcd itself."""
    c = EtcdCluster(tmp_path_factory.mktemp("etcd3")).start()
    yield c
    c.stop()


@pytest.fixture
def etcd3(tmp_path) -> EtcdCluster:
    """A 3-member etcd cluster of this test's own, for faults that kill or restart etcd members."""
    c = EtcdCluster(tmp_path / "etcd3").start()
    yield c
    c.stop()


@pytest.fixture
def proxies():
    """``proxies(port)`` -> a TcpProxy to 127.0.0.1:port; all closed at the end."""
    made: list[TcpProxy] = []

    def make(port: int) -> TcpProxy:
        p = TcpProxy(port)
        made.append(p)
        return p
    yield make
    for p in made:
        p.close()


@pytest.fixture
def make_cluster(tmp_path):
    """``make_cluster(endpoints)`` -> a Cluster (fresh key prefix); its node processes stopped at the end."""
    made: list[Cluster] = []

    def make(endpoints: str) -> Cluster:
        c = Cluster(endpoints, f"/f-{uuid.uuid4().hex[:10]}", tmp_path)
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()
