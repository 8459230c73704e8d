"""README "Run it in production", end to end on loopback: a 3-member etcd with TLS (client certificates)
and auth (a user limited to the prefix), three nodes configured by a TOML file, jobs applied from a
file, probes and Prometheus metrics scraped from the real processes."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from etcdcron.embedded import free_port
from etcdcron.nodes import wait_for
from etcdcron.testing import LEDGER_CMD, Cluster, EtcdCluster, assert_exactly_once, make_certs

PREFIX = "/prod"


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def samples(url: str) -> dict[str, float]:
    """``name{labels}`` -> value, summed over the labels not named (e.g. all outcomes)."""
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(get(url)[1]):
        for s in fam.samples:
            out[s.name] = out.get(s.name, 0.0) + s.value
            for k, v in s.labels.items():
                key = f"{s.name}{{{k}={v}}}"
                out[key] = out.get(key, 0.0) + s.value
    return out


@pytest.fixture(scope="module")
def secured(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prod")
    certs = make_certs(tmp / "pki")
    etcd = EtcdCluster(tmp / "etcd", size=3, tls=certs).start()
    etcd.enable_auth(PREFIX, user="etcdcron", password="node-pw", root_password="root-pw")
    yield etcd, certs, tmp
    etcd.stop()


def test_three_tls_nodes_with_auth_config_file_apply_and_metrics(secured):
    """The walkthrough: nodes read one TOML file, become ready, run every firing of the applied jobs once,
    and their /metrics show the firings and exactly one leader."""
    etcd, certs, tmp = secured
    (tmp / "etcd-password").write_text("node-pw\n")
    conf = tmp / "etcdcron.toml"
    conf.write_text(f'''
[etcd]
endpoints = "{etcd.endpoints}"
prefix = "{PREFIX}"
ca = "{certs.ca}"
cert = "{certs.client_cert}"
key = "{certs.client_key}"
user = "etcdcron"
password_file = "{tmp / 'etcd-password'}"

[serve]
grace = 5
''')
    admin_store = etcd.client("etcdcron", "node-pw")
    # Only the config file names etcd: the variables Cluster would set are overridden by empty ones.
    (tmp / "nodes").mkdir()
    c = Cluster(etcd.endpoints, PREFIX, tmp / "nodes", store=admin_store,
                env={"ETCDCRON_CONFIG": str(conf), "ETCDCRON_ETCD": "", "ETCDCRON_PREFIX": ""})
    try:
        jobs = tmp / "jobs.yaml"
        jobs.write_text(json.dumps({"jobs": [
            {"name": "tick", "schedule": "* * * * * *", "concurrency": "allow",
             "shell": LEDGER_CMD.format(ledger=c.ledger, body="")},
            {"name": "hourly", "schedule": "0 * * * *", "builtin": "noop"},
        ]}))
        r = c.cli("apply", str(jobs), "--json")
        assert r.returncode == 0, r.stderr
        assert sorted(json.loads(r.stdout)["created"]) == ["hourly", "tick"]
        again = json.loads(c.cli("apply", str(jobs), "--json").stdout)
        assert again["created"] == [] and again["replaced"] == [] and sorted(again["unchanged"]) == ["hourly", "tick"]

        ports = {n: free_port() for n in ("n1", "n2", "n3")}
        for n, port in ports.items():
            c.start(n, "--http", f"127.0.0.1:{port}", ttl=None, grace=5)
        base = {n: f"http://127.0.0.1:{p}" for n, p in ports.items()}
        assert wait_for(lambda: all(get(b + "/readyz")[0] == 200 for b in base.values()), 40, step=0.2), \
            {n: get(b + "/readyz") for n, b in base.items()}
        assert all(get(b + "/healthz")[0] == 200 for b in base.values())

        first = int(time.time()) + 2
        c.wait_until_slot(first + 6, ["tick"], timeout=40)
        assert_exactly_once(c, ["tick"], first, first + 5)

        scraped = {n: samples(b + "/metrics") for n, b in base.items()}
        fired = sum(s.get("etcdcron_firings_total{outcome=succeeded}", 0) for s in scraped.values())
        assert fired >= 6, scraped
        assert sorted(s.get("etcdcron_leader", 0) for s in scraped.values()) == [0, 0, 1]
        # Lag is observed for scheduled first attempts only (not catch-ups or retries).
        assert sum(s.get("etcdcron_firing_lag_seconds_count", 0) for s in scraped.values()) >= 5
    finally:
        c.close()
