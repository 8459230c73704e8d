"""The command line against a real etcd: output, bad input refused with one line and exit 2, etcd unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(etcd: str, prefix: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ETCDCRON_ETCD=etcd, ETCDCRON_PREFIX=prefix)
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], env=env, capture_output=True, text=True, timeout=60)


def snapshot(store, prefix: str) -> list[tuple[str, bytes, int]]:
    kvs, _ = store.get_prefix(prefix + "/")
    return [(kv.key, kv.value, kv.mod_revision) for kv in kvs]


BAD = [
    (["add", "61 * * * *", "--name", "x", "--shell", "true"], "61"),
    (["add", "* * * *", "--name", "x", "--shell", "true"], "* * * *"),
    (["add", "* * * * * * *", "--name", "x", "--shell", "true"], "schedule"),
    (["add", "@reboot", "--name", "x", "--shell", "true"], "@reboot"),
    (["add", "@every 0s", "--name", "x", "--shell", "true"], "0s"),
    (["add", "@every soon", "--name", "x", "--shell", "true"], "soon"),
    (["add", "0 0 30 2 *", "--name", "x", "--shell", "true"], "never"),
    (["add", "0 * * * *", "--name", "x", "--shell", "true", "--tz", "Mars/Olympus"], "Mars/Olympus"),
    (["add", "0 * * * *", "--name", "Bad Name", "--shell", "true"], "Bad Name"),
    (["add", "0 * * * *", "--name", "-x", "--shell", "true"], "-x"),
    (["add", "0 * * * *", "--name", "a" * 64, "--shell", "true"], "a" * 64),
    (["add", "0 * * * *", "no-such-builtin"], "no-such-builtin"),
    (["add", "0 * * * *", "--name", "x"], "--shell"),
    (["add", "0 * * * *", "noop", "--shell", "true"], "exactly one"),
    (["add", "0 * * * *", "--name", "x", "--http", "ftp://host/x"], "ftp://host/x"),
    (["add", "0 * * * *", "--name", "x", "--shell", "true", "--level", "4"], "level"),
    (["add", "0 * * * *", "--name", "x", "--shell", "true", "--concurrency", "sometimes"], "sometimes"),
    (["add", "0 * * * *", "--name", "x", "--shell", "true", "--timeout", "-1"], "timeout"),
    (["add", "0 * * * *", "--name", "x", "--shell", "true", "--retries", "-2"], "retries"),
    (["add", "0 * * * *", "--name", "x", "--shell", "true", "--on-node-loss", "maybe"], "maybe"),
    (["add", "0 * * * *", "--name", "x", "--shell", "true", "--arg", "novalue"], "novalue"),
    (["add", "0 * * * *", "--name", "x", "--shell", "true", "--starting-deadline", "0"], "starting-deadline"),
    (["add", "0 * * * *", "--name", "x", "--shell", "true", "--catchup", "some"], "some"),
    (["add", "0 * * * *", "--name", "x", "--shell", "true", "--catchup-cap", "0"], "catchup-cap"),
    (["add", "0 * * * *", "--name", "x", "--shell", "true", "--start-at", "tomorrow"], "tomorrow"),
    (["add", "0 * * * *", "--name", "x", "--shell", "true", "--start-at", "2030-01-02", "--end-at", "2030-01-01"], "end-at"),
    (["add", "0 * * * *", "--name", "x", "--shell", "true", "--max-runs", "0"], "max-runs"),
    (["trigger", "missing"], "missing"),
    (["kill", "missing"], "missing"),
    (["degrade", "4"], "4"),
    (["restore", "0"], "0"),
    (["backfill", "keep", "--from", "2026-01-02T00:00:00Z", "--to", "2026-01-01T00:00:00Z"], "--to"),
    (["backfill", "keep", "--from", "2020-01-01T00:00:00Z", "--to", "2099-01-01T00:00:00Z"], "past"),
    (["backfill", "keep", "--from", "yesterday", "--to", "2026-01-01T00:00:00Z"], "yesterday"),
    (["backfill", "keep", "--from", "0001-01-01T00:00:00+10:00", "--to", "2026-01-01T00:00:00Z"], "years 1 and 9999"),
    (["add", "0 * * * *", "--name", "x", "--shell", "true", "--end-at", "nan"], "years 1 and 9999"),
    (["backfill", "keep", "--from", "2000-01-01T00:00:00Z", "--to", "2026-01-01T00:00:00Z"], "split"),
    (["nodes", "drain", "nobody"], "nobody"),
    (["history", "Bad!"], "Bad!"),
    (["show", "Not_A_Name"], "Not_A_Name"),
    (["show", "missing"], "missing"),
    (["rm", "missing"], "missing"),
    (["pause", "missing"], "missing"),
    (["next", "keep", "-n", "0"], "-n"),
    (["next"], "NAME or --schedule"),
    (["next", "keep", "--schedule", "* * * * *"], "NAME or --schedule"),
    (["next", "keep", "--tz", "Europe/Berlin"], "--tz goes with --schedule"),
    (["next", "keep", "--from", "soon"], "'soon'"),
    (["next", "--schedule", "* * * * *", "--from", "2027-13-01T00:00:00Z"], "--from"),
    (["next", "--schedule", "* * * * *", "--from", "nan"], "'nan'"),
    (["next", "--schedule", "* * * * *", "--from", "1e300"], "'1e300'"),
    (["next", "--schedule", "* * * * *", "--from", "0001-01-01T00:00:00+10:00"], "years 1 and 9999"),
    (["next", "--schedule", "* * * * *", "--from", "9999-12-31T23:59:59-10:00"], "years 1 and 9999"),
    (["next", "--schedule", "61 * * * *"], "'61'"),
    (["next", "--schedule", "* * * * *", "--tz", "Mars/Olympus"], "Mars/Olympus"),
    (["next", "--schedule", "@reboot"], "@reboot"),
    (["next", "missing"], "missing"),
    (["frobnicate"], "frobnicate"),
    (["serve", "--levels", "1,5", "--etcd", "http://127.0.0.1:1"], "levels"),
    (["serve", "--node-id", "NODE!", "--etcd", "http://127.0.0.1:1"], "NODE!"),
]


@pytest.mark.parametrize("args,needle", BAD, ids=[" ".join(a)[:60] for a, _ in BAD])
def test_bad_input_exits_2_with_one_line_and_changes_nothing(etcd, prefix, store, args, needle):
    """Each bad input: exit 2, one line on stderr naming the bad part, and not a key in etcd changed."""
    assert run(etcd, prefix, "add", "@hourly", "--name", "keep", "--shell", "echo kept").returncode == 0
    before = snapshot(store, prefix)
    r = run(etcd, prefix, *args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert needle in lines[0], lines[0]
    assert "Traceback" not in r.stderr
    assert snapshot(store, prefix) == before


def test_add_show_ls_next_json(etcd, prefix):
    """add then show/ls/next print what was stored, as text and as JSON."""
    r = run(etcd, prefix, "add", "30 2 * * *", "--name", "nightly", "--shell", "echo hi", "--tz", "Europe/Berlin",
            "--level", "3", "--arg", "a=b")
    assert r.returncode == 0 and "added job nightly" in r.stdout
    spec = json.loads(run(etcd, prefix, "show", "nightly", "--json").stdout)
    assert spec["schedule"] == "30 2 * * *" and spec["tz"] == "Europe/Berlin" and spec["level"] == 3
    assert spec["args"] == {"a": "b"} and spec["kind"] == "shell"
    names = [j["name"] for j in json.loads(run(etcd, prefix, "ls", "--json").stdout)]
    assert names == ["nightly"]
    nxt = json.loads(run(etcd, prefix, "next", "nightly", "-n", "3", "--json").stdout)
    assert len(nxt) == 3
    assert all(f["local"][11:19] in ("02:30:00", "03:00:00") for f in nxt)
    assert all(f["utc"][11:19] in ("00:30:00", "01:30:00", "01:00:00") for f in nxt)
    r = run(etcd, prefix, "add", "@hourly", "noop")
    assert r.returncode == 0 and "added job noop" in r.stdout
    assert run(etcd, prefix, "add", "@daily", "noop").stdout.startswith("replaced job noop")


def test_unreachable_etcd_is_one_line_exit_1(prefix):
    """A command against an etcd that does not answer says so in one line and exits 1."""
    r = run("http://127.0.0.1:1", prefix, "ls")
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "unavailable" in r.stderr


def test_nodes_and_status_show_leader(cluster):
    """`nodes` lists live nodes with exactly one leader; `status` summarises the cluster."""
    cluster.start_nodes(2)
    nodes = json.loads(cluster.cli("nodes", "--json").stdout)
    assert {n["id"] for n in nodes} == {"n1", "n2"}
    assert sum(n["leader"] for n in nodes) == 1
    status = json.loads(cluster.cli("status", "--json").stdout)
    assert status["nodes"] == 2 and status["leader"] in ("n1", "n2")
