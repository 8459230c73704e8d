"""`serve --http`: /healthz, /readyz and /metrics of real node processes (real etcd), and the probe
server itself."""

from __future__ import annotations

import signal
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.parser import text_string_to_metric_families

from etcdcron.embedded import free_port
from etcdcron.errors import EtcdCronError
from etcdcron.nodes import wait_for
from etcdcron.probe import Probe, start_probe
from etcdcron.testing import Cluster


def get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of GET http://127.0.0.1:PORT/PATH; (0, error) when nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    """Every sample of the node's /metrics, keyed by (sample name, sorted labels)."""
    status, text = get(port, "/metrics")
    assert status == 200, text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def value(samples: dict, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when there is none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def start_http(cluster: Cluster, node: str, *extra: str, **kw) -> int:
    """Start ``node`` with ``--http 127.0.0.1:PORT``; its port."""
    port = free_port()
    cluster.start(node, "--http", f"127.0.0.1:{port}", *extra, **kw)
    return port


def test_metrics_move_with_real_firings(cluster):
    """Two nodes and a job every second: succeeded firings, lag and transaction latencies count up, exactly one node leads."""
    ports = {n: start_http(cluster, n) for n in ("n1", "n2")}
    assert wait_for(lambda: {"n1", "n2"} <= cluster.live(), 20), "nodes did not register"
    assert wait_for(lambda: all(get(p, "/readyz")[0] == 200 for p in ports.values()), 20), \
        {n: get(p, "/readyz") for n, p in ports.items()}
    cluster.admin.put_job(cluster.ledger_spec("tick", level=1, active_since=time.time()))

    def total(name: str, **labels: str) -> float:
        return sum(value(scrape(p), name, **labels) for p in ports.values())

    assert wait_for(lambda: total("etcdcron_firings_total", outcome="succeeded", level="1") >= 2, 20, step=0.2)
    succeeded, lags = total("etcdcron_firings_total", outcome="succeeded"), total("etcdcron_firing_lag_seconds_count")
    claims = total("etcdcron_txn_duration_seconds_count", op="claim")
    assert wait_for(lambda: total("etcdcron_firings_total", outcome="succeeded") >= succeeded + 3, 20, step=0.2), \
        "succeeded firings did not count up"
    assert total("etcdcron_firing_lag_seconds_count") >= lags + 3
    assert total("etcdcron_txn_duration_seconds_count", op="claim") > claims
    assert total("etcdcron_txn_duration_seconds_count", op="complete") > 0
    assert total("etcdcron_firings_total") == total("etcdcron_firings_total", outcome="succeeded", level="1"), \
        "another outcome or level counted"
    # the leader needs a chore-loop turn to see itself elected
    assert wait_for(lambda: sorted(value(scrape(p), "etcdcron_leader") for p in ports.values()) == [0.0, 1.0], 10)
    for port in ports.values():
        m = scrape(port)
        assert value(m, "etcdcron_watch_events_total") > 0
        assert 0 < value(m, "etcdcron_lease_seconds_left") <= 3
        assert value(m, "etcdcron_ready") == 1
        assert value(m, "etcdcron_etcd_errors_total") == 0
        assert value(m, "process_resident_memory_bytes") > 0
        assert not any("job" in dict(ls) for _, ls in m), "a per-job label"
        assert get(port, "/healthz") == (200, "ok\n")


@pytest.mark.parametrize("how", ["drain", "sigterm"])
def test_readyz_says_draining_while_runs_finish(cluster, how):
    """`etcdcron nodes drain` or SIGTERM: /readyz answers 503 "draining" during the grace, /healthz stays 200."""
    port = start_http(cluster, "n1", grace=20)
    assert wait_for(lambda: "n1" in cluster.live(), 20)
    assert wait_for(lambda: get(port, "/readyz") == (200, "ok\n"), 10), get(port, "/readyz")
    r = cluster.cli("add", "* * * * * *", "--name", "slow", "--shell", "sleep 4", "--concurrency", "forbid")
    assert r.returncode == 0, r.stderr
    assert wait_for(lambda: value(scrape(port), "etcdcron_runs_running") == 1, 15), "the job did not start"
    if how == "drain":
        r = cluster.cli("nodes", "drain", "n1")
        assert r.returncode == 0, r.stderr
    else:
        cluster.signal("n1", signal.SIGTERM)
    assert wait_for(lambda: get(port, "/readyz")[0] == 503, 5, step=0.02), get(port, "/readyz")
    status, body = get(port, "/readyz")
    assert status == 503 and body.startswith("draining"), (status, body)
    assert get(port, "/healthz")[0] == 200, "a stopping node must stay live: a restart would cut its grace short"
    assert value(scrape(port), "etcdcron_ready") == 0
    assert cluster.procs["n1"].wait(30) == 0


def test_readyz_503_while_etcd_is_unreachable(prefix, tmp_path):
    """A node whose etcd does not answer serves /readyz 503 naming etcd, and /healthz 200 (it waits, it is not stuck)."""
    dead = free_port()  # nothing listens there
    cluster = Cluster(f"http://127.0.0.1:{dead}", prefix, tmp_path)
    try:
        port = start_http(cluster, "n1")
        assert wait_for(lambda: get(port, "/readyz")[0] == 503, 20), get(port, "/readyz")
        assert wait_for(lambda: "etcd unreachable" in get(port, "/readyz")[1], 10), get(port, "/readyz")
        assert get(port, "/healthz")[0] == 200
        assert value(scrape(port), "etcdcron_ready") == 0  # /metrics answers too
    finally:
        codes = cluster.stop_nodes()
        cluster.store.close()
    assert codes == {"n1": 0}, (tmp_path / "n1.log").read_text()[-2000:]


def test_probe_server_answers_its_checks():
    """The probe server: 200/503 with the check's one-line reason, a failing check is 503, /metrics is the registry, other paths 404."""
    registry = CollectorRegistry()
    Counter("etcdcron_test_things_total", "things", registry=registry).inc(3)
    probe = start_probe("127.0.0.1:0", registry)
    try:
        port = probe.port
        assert get(port, "/healthz") == (200, "starting\n")
        assert get(port, "/readyz") == (503, "starting\n")
        probe.waiting("connecting to etcd\nsecond line")
        assert get(port, "/readyz") == (503, "connecting to etcd\n")
        probe.health, probe.ready = (lambda: (False, "the timer loop has not turned")), (lambda: (True, "ok"))
        assert get(port, "/healthz") == (503, "the timer loop has not turned\n")
        assert get(port, "/readyz") == (200, "ok\n")
        probe.ready = lambda: 1 / 0
        status, body = get(port, "/readyz")
        assert status == 503 and "ZeroDivisionError" in body
        assert value(scrape(port), "etcdcron_test_things_total") == 3
        assert get(port, "/")[0] == 404
    finally:
        probe.close()
    assert get(port, "/healthz")[0] == 0, "still serving after close"
    with pytest.raises(EtcdCronError, match="cannot serve --http"):
        with_port_taken = start_probe("127.0.0.1:0", None)
        try:
            Probe(f"127.0.0.1:{with_port_taken.port}", None).start()
        finally:
            with_port_taken.close()
    assert Probe(None, registry).start().port is None
