"""`etcdcron trigger NAME --wait [--timeout S]` against real nodes: it follows exactly the firing it
triggered and exits with its outcome (0 succeeded, 1 otherwise, 124 when --timeout passes first)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from etcdcron.nodes import wait_for
from etcdcron.testing import Cluster, cli_command

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def tc(etcd, tmp_path_factory):
    """Two nodes serving levels 1 and 2 only: a level-3 job is never taken."""
    c = Cluster(etcd, f"/tw-{uuid.uuid4().hex[:8]}", tmp_path_factory.mktemp("trigger-wait"))
    c.start_nodes(2, ("--levels", "1,2"))
    yield c
    c.close()


def _records(c: Cluster, job: str):
    return sorted((cl for (j, _), cl in c.claims().items() if j == job), key=lambda cl: cl.slot)


def _add(c: Cluster, name: str, shell: str, *extra: str) -> None:
    r = c.cli("add", "@yearly", "--name", name, "--shell", shell, *extra)
    assert r.returncode == 0, r.stderr


def _waiter(c: Cluster, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*cli_command(), "trigger", *args], env=c.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_succeeding_job_exits_0_with_its_outcome(tc):
    """A job that exits 0: `trigger --wait` prints the trigger, then that firing's outcome line, and exits 0."""
    _add(tc, "hello", "echo hello")
    before = int(time.time())
    r = tc.cli("trigger", "hello", "--wait", "--timeout", "30")
    assert r.returncode == 0, (r.stdout, r.stderr)
    first, *_, last = r.stdout.strip().splitlines()
    assert first.startswith("triggered job hello at ")
    [rec] = _records(tc, "hello")
    assert rec.state == "succeeded" and rec.slot >= before and rec.data["reason"] == "trigger"
    assert last.startswith(f"job hello, firing {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(rec.slot))}: succeeded (exit 0) "
                           f"on {rec.node}, attempt 1"), last
    assert r.stderr == ""


def test_json_is_the_record_of_this_firing_not_an_earlier_one(tc):
    """--json prints the run record of the firing just triggered (a second trigger reports the second run)."""
    _add(tc, "twice", "echo out-$ETCDCRON_SLOT_EPOCH")
    assert tc.cli("trigger", "twice", "--wait", "--timeout", "30").returncode == 0
    [first] = _records(tc, "twice")
    r = tc.cli("trigger", "twice", "--wait", "--timeout", "30", "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    second = [cl for cl in _records(tc, "twice") if cl.slot != first.slot]
    assert len(second) == 1
    assert data["slot"] == second[0].slot != first.slot
    assert data["fence"] == second[0].fence > first.fence
    assert (data["state"], data["exit_code"], data["reason"], data["final"]) == ("succeeded", 0, "trigger", True)
    assert data["output"].strip() == f"out-{second[0].slot}"
    assert data["triggered"] <= data["slot_utc"]


def test_failing_job_exits_1(tc):
    """A job that exits 3: the outcome line says failed (exit 3), and the command exits 1."""
    _add(tc, "broken", "exit 3")
    r = tc.cli("trigger", "broken", "--wait", "--timeout", "30")
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert ": failed (exit 3) on " in r.stdout.strip().splitlines()[-1]
    assert [cl.state for cl in _records(tc, "broken")] == ["failed"]


def test_follows_its_own_firing_while_another_run_of_the_job_fails(tc):
    """Another run of the same job, triggered later, fails while ours still runs: the waiter reports ours (0)."""
    flag = tc.tmp / "mixed-flag"
    flag.mkdir()
    # the run that takes the flag succeeds after 3 s; any other run fails at once
    _add(tc, "mixed", f"if rmdir {flag} 2>/dev/null; then sleep 3; exit 0; else exit 3; fi", "--concurrency", "allow")
    waiter = _waiter(tc, "mixed", "--wait", "--json", "--timeout", "60")
    try:
        assert wait_for(lambda: not flag.exists(), 15), "the triggered run did not start"
        assert tc.cli("trigger", "mixed").returncode == 0
        assert wait_for(lambda: any(cl.state == "failed" for cl in _records(tc, "mixed")), 15)
        assert waiter.poll() is None, "the waiter stopped at another run's outcome"
        out, err = waiter.communicate(timeout=30)
    finally:
        if waiter.poll() is None:
            waiter.kill()
    assert waiter.returncode == 0, (out, err)
    data = json.loads(out)
    states = {cl.slot: cl.state for cl in _records(tc, "mixed")}
    assert sorted(states.values()) == ["failed", "succeeded"]
    assert states[data["slot"]] == data["state"] == "succeeded"


def test_job_outliving_the_timeout_exits_124_and_goes_on(tc):
    """--timeout 2 on a 30 s job: one line 'still running after 2 s' on stderr, exit 124; the run goes on."""
    _add(tc, "slow", "sleep 30")
    started = time.monotonic()
    r = tc.cli("trigger", "slow", "--wait", "--timeout", "2")
    assert r.returncode == 124, (r.stdout, r.stderr)
    assert time.monotonic() - started < 10
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "still running after 2 s" in lines[0] and "etcdcron kill slow" in lines[0], lines
    assert [cl.state for cl in _records(tc, "slow")] == ["running"]
    assert tc.cli("kill", "slow").returncode == 0
    assert wait_for(lambda: [cl.state for cl in _records(tc, "slow")] == ["killed"], 15)


def test_timeout_before_any_node_takes_it(tc):
    """A level-3 job no node serves: exit 124 saying no node took the trigger; the request stays in etcd."""
    _add(tc, "orphan", "true", "--level", "3")
    r = tc.cli("trigger", "orphan", "--wait", "--timeout", "1", "--json")
    assert r.returncode == 124, (r.stdout, r.stderr)
    assert "no node took the trigger within 1 s" in r.stderr and "level 3" in r.stderr
    data = json.loads(r.stdout)
    assert (data["state"], data["final"]) == (None, False)
    assert tc.store.get(tc.keys.trigger("orphan")) is not None
    assert _records(tc, "orphan") == []


def test_job_removed_while_waiting_exits_1(tc):
    """Waiting without --timeout on a trigger nobody takes; `rm` of the job ends the wait: exit 1, 'removed'."""
    _add(tc, "doomed", "true", "--level", "3")
    waiter = _waiter(tc, "doomed", "--wait")
    try:
        assert wait_for(lambda: tc.store.get(tc.keys.trigger("doomed")) is not None, 15)
        assert tc.cli("rm", "doomed").returncode == 0
        out, err = waiter.communicate(timeout=30)
    finally:
        if waiter.poll() is None:
            waiter.kill()
    assert waiter.returncode == 1, (out, err)
    assert out.strip().splitlines()[-1] == "job doomed was removed before the trigger ran"


def test_refused_by_forbid_exits_1_with_the_skipped_record(tc):
    """forbid and a run alive: the node refuses the trigger and records it skipped; the waiter says so, exit 1."""
    _add(tc, "busy", "sleep 30")  # concurrency forbid (the default)
    assert tc.cli("trigger", "busy").returncode == 0
    assert wait_for(lambda: [cl.state for cl in _records(tc, "busy")] == ["running"], 15)
    r = tc.cli("trigger", "busy", "--wait", "--timeout", "30")
    assert r.returncode == 1, (r.stdout, r.stderr)
    last = r.stdout.strip().splitlines()[-1]
    assert "the trigger was refused" in last and "skipped (forbid)" in last, last
    assert sorted(cl.state for cl in _records(tc, "busy")) == ["running", "skipped"]
    assert tc.store.get(tc.keys.trigger("busy")) is None
    tc.cli("kill", "busy")
    assert wait_for(lambda: "running" not in [cl.state for cl in _records(tc, "busy")], 15)


def _run(etcd: str, prefix: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, ETCDCRON_ETCD=etcd, ETCDCRON_PREFIX=prefix)
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], env=env, capture_output=True, text=True,
                          timeout=60)


def _snapshot(store, prefix: str) -> list[tuple[str, bytes, int]]:
    kvs, _ = store.get_prefix(prefix + "/")
    return [(kv.key, kv.value, kv.mod_revision) for kv in kvs]


BAD = [
    (["trigger", "missing", "--wait"], "no job named 'missing'"),
    (["trigger", "missing", "--wait", "--timeout", "5"], "no job named 'missing'"),
    (["trigger", "resting", "--wait"], "job 'resting' is paused"),
    (["trigger", "resting", "--wait", "--timeout", "5", "--json"], "job 'resting' is paused"),
    (["trigger", "keep", "--timeout", "5"], "--timeout goes with --wait"),
    (["trigger", "keep", "--wait", "--timeout", "0"], "bad --timeout"),
    (["trigger", "keep", "--wait", "--timeout", "-1"], "bad --timeout"),
    (["trigger", "keep", "--wait", "--timeout", "nan"], "bad --timeout"),
    (["trigger", "keep", "--wait", "--timeout", "soon"], "--timeout"),
]


@pytest.mark.parametrize("args,needle", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_refusals_exit_2_with_one_line_and_change_nothing(etcd, prefix, store, args, needle):
    """An unknown job, a paused job or a bad --timeout: exit 2, one line naming it, not a key in etcd changed."""
    assert _run(etcd, prefix, "add", "@hourly", "--name", "keep", "--shell", "true").returncode == 0
    assert _run(etcd, prefix, "add", "@hourly", "--name", "resting", "--shell", "true").returncode == 0
    assert _run(etcd, prefix, "pause", "resting").returncode == 0
    before = _snapshot(store, prefix)
    r = _run(etcd, prefix, *args)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], lines
    assert "Traceback" not in r.stderr and r.stdout == ""
    assert _snapshot(store, prefix) == before


def test_a_wait_without_timeout_says_once_that_no_node_took_the_trigger(tc):
    """Without --timeout a request no node takes would be waited for forever: after a while the wait
    says so, once, and goes on waiting (found in review: it waited in silence)."""
    from etcdcron.admin import Admin

    _add(tc, "unserved", "true", "--level", "3")
    adm = Admin(tc.store, tc.keys)
    told: list[str] = []
    out = adm.wait_trigger(adm.request_trigger("unserved"), timeout=2.5, notify=told.append, notify_after=0.5)
    assert not out.final and "no node took the trigger within 2.5 s" in out.note
    assert len(told) == 1 and "no node has taken the trigger after 0.5 s" in told[0] and "level 3" in told[0]
