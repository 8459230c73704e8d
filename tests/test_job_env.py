"""What a job sees (DESIGN §3): a clean environment, the kinds and hosts a node allows, HTTP jobs that
follow no redirect, and a node that reaps the orphans its jobs leave behind — against real nodes,
real processes and real HTTP servers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pymongo
import pytest

from etcdcron.errors import InvalidSpec
from etcdcron.executor import OUTPUT_TAIL, RunContext, RunPolicy, host_allowed, run_job
from etcdcron.jobenv import DEFAULT_PATH, job_environment
from etcdcron.jobs import JobSpec, make_spec, parse_env, read_env_file
from etcdcron.nodes import wait_for
from etcdcron.reaper import zombies
from etcdcron.testing import FINAL

ROOT = Path(__file__).resolve().parent.parent
CTX = RunContext("report", 1795791600, "n1", 4242, 1, {"k": "v"})
FIELDS = CTX.fields()


# --- the environment builder ---------------------------------------------------------------------

def test_env_builder_keeps_only_the_allowed_daemon_variables():
    """Of the daemon's environment only PATH, HOME, LANG, LC_*, TZ and the pass_env names reach a job."""
    daemon = {"PATH": "/opt/bin", "HOME": "/home/cron", "LANG": "C.UTF-8", "LC_TIME": "de_DE", "TZ": "UTC",
              "AWS_SECRET_ACCESS_KEY": "xyz", "ETCDCRON_MONGO": "mongodb://u:pw@h/db", "PASSME": "yes", "SHELL": "/bin/zsh"}
    env = job_environment(FIELDS, {}, {}, ("PASSME", "NOT_SET_ANYWHERE"), daemon)
    assert env == {"PATH": "/opt/bin", "HOME": "/home/cron", "LANG": "C.UTF-8", "LC_TIME": "de_DE", "TZ": "UTC",
                   "PASSME": "yes", **FIELDS}


def test_env_builder_default_path():
    """Without a PATH in the daemon's environment a job still finds the usual programs."""
    assert job_environment(FIELDS, {}, {}, (), {})["PATH"] == DEFAULT_PATH


def test_env_builder_precedence():
    """daemon-allowed < pass_env < job env < ETCDCRON_* (args and the firing's fields cannot be overridden)."""
    daemon = {"PATH": "/daemon", "X": "from-daemon", "Y": "from-daemon", "ETCDCRON_JOB": "forged", "ETCDCRON_ARG_K": "forged"}
    env = job_environment(FIELDS, {"k": "v"}, {"PATH": "/job", "Y": "from-job"},
                          ("X", "Y", "ETCDCRON_JOB", "ETCDCRON_ARG_K"), daemon)
    assert env["PATH"] == "/job" and env["X"] == "from-daemon" and env["Y"] == "from-job"
    assert env["ETCDCRON_JOB"] == "report" and env["ETCDCRON_ARG_K"] == "v"


def test_shell_job_does_not_inherit_the_callers_environment(monkeypatch):
    """A shell run gets the built environment, not a copy of the process's own."""
    monkeypatch.setenv("ETCDCRON_TEST_SECRET", "hunter2")
    monkeypatch.setenv("PASSME", "visible")
    spec = make_spec("report", "@hourly", shell="env", env={"JOBVAR": "j"})
    r = run_job(spec, CTX, policy=RunPolicy(pass_env=("PASSME",)))
    assert r.state == "succeeded"
    assert "hunter2" not in r.output and "ETCDCRON_TEST_SECRET" not in r.output
    assert "PASSME=visible" in r.output.splitlines() and "JOBVAR=j" in r.output.splitlines()


# --- env in job specs ----------------------------------------------------------------------------

def test_spec_env_round_trips_and_old_specs_load():
    """A spec's env survives its JSON form; a spec stored before jobs had an env loads with an empty one."""
    spec = make_spec("x", "@hourly", shell="true", env={"A": "1", "b_2": "x=y"})
    assert JobSpec.from_json(spec.to_json()) == spec and spec.env == {"A": "1", "b_2": "x=y"}
    old = json.loads(spec.to_json())
    del old["env"]
    assert JobSpec.from_json(json.dumps(old)).env == {}


@pytest.mark.parametrize("env, needle", [
    ({"1A": "x"}, "1A"), ({"A-B": "x"}, "A-B"), ({"": "x"}, "''"), ({"ETCDCRON_FENCE": "9"}, "ETCDCRON_FENCE"),
    ({"A": "x\0y"}, "NUL"), ({"A": 1}, "NUL"),
])
def test_bad_env_is_refused(env, needle):
    """Env names must be [A-Za-z_][A-Za-z0-9_]* and not ETCDCRON_*; values are text without NUL."""
    with pytest.raises(InvalidSpec, match="--env") as exc:
        make_spec("x", "@hourly", shell="true", env=env)
    assert needle in str(exc.value) and "\n" not in str(exc.value)


def test_env_only_for_shell_jobs():
    """An HTTP or builtin job has no environment: --env on one is refused rather than ignored."""
    with pytest.raises(InvalidSpec, match="only --shell jobs"):
        make_spec("x", "@hourly", http="http://h/", env={"A": "1"})


def test_env_file_and_pairs(tmp_path):
    """--env-file reads NAME=VALUE lines (comments, blank lines, export, quotes); --env takes NAME=VALUE."""
    f = tmp_path / "job.env"
    f.write_text("# the job's settings\n\nA=1\nexport B = two words\nC=\"quoted # not a comment\"\nD='x=y'\nE=\n")
    assert read_env_file(str(f)) == {"A": "1", "B": "two words", "C": "quoted # not a comment", "D": "x=y", "E": ""}
    assert parse_env(["A=1", "B=x=y", "C="]) == {"A": "1", "B": "x=y", "C": ""}
    with pytest.raises(InvalidSpec, match="NAME=VALUE"):
        parse_env(["novalue"])


@pytest.mark.parametrize("line", ["NOEQUALS", "1BAD=x", "ETCDCRON_NODE=n9", "A B=c"])
def test_bad_env_file_line_names_file_and_line(tmp_path, line):
    """A bad line of an --env-file is one error naming the file and the line number."""
    f = tmp_path / "bad.env"
    f.write_text(f"# ok\nGOOD=1\n{line}\n")
    with pytest.raises(InvalidSpec) as exc:
        read_env_file(str(f))
    assert f"{f} line 3" in str(exc.value) and "\n" not in str(exc.value)


def test_cli_add_env_and_bad_env_file(cluster, tmp_path):
    """`add --env-file F --env K=V` stores the env (--env wins); a bad file line exits 2, one line, nothing written."""
    good, bad = tmp_path / "good.env", tmp_path / "bad.env"
    good.write_text("A=from-file\nB=file\n")
    bad.write_text("A=1\n\nthis is not a pair\n")
    r = cluster.cli("add", "@hourly", "--name", "envjob", "--shell", "env", "--env-file", str(good), "--env", "A=flag")
    assert r.returncode == 0, r.stderr
    assert cluster.admin.get_job("envjob").env == {"A": "flag", "B": "file"}
    r = cluster.cli("add", "@hourly", "--name", "other", "--shell", "env", "--env-file", str(bad))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith(f"error: bad --env-file {bad} line 3: must be NAME=VALUE"), r.stderr
    assert [j.name for j in cluster.admin.jobs()] == ["envjob"]


# --- a real node: secrets stay out of jobs and records ---------------------------------------------

def _final(cluster, job: str, timeout: float = 20):
    """The final record of the job's one firing (after a trigger)."""
    found = []

    def done() -> bool:
        found[:] = [c for c in cluster.admin.history(job, 10) if c.state in FINAL]
        return bool(found)
    assert wait_for(done, timeout, step=0.1), f"no final record for {job}: {cluster.admin.history(job, 10)}"
    return found[0]


def test_daemon_secrets_never_reach_a_job_nor_its_records(cluster, mongo_uri, tmp_path):
    """A node whose environment holds secrets runs `env`: no secret is in the job's environment, in etcd or in
    the MongoDB history; a --pass-env variable and the job's own --env are there."""
    db = pymongo.MongoClient(mongo_uri).get_default_database()
    db.command("createUser", "cron", pwd="mongo-pw-77", roles=["readWrite"])
    secret_uri = mongo_uri.replace("mongodb://", "mongodb://cron:mongo-pw-77@")
    secrets = ["hunter2", "AKIAsecretAWSkey42", "mongo-pw-77", "ETCDCRON_TEST_SECRET", "AWS_SECRET_ACCESS_KEY", "ETCDCRON_MONGO"]
    cluster.extra_env.update({"ETCDCRON_TEST_SECRET": "hunter2", "AWS_SECRET_ACCESS_KEY": "AKIAsecretAWSkey42",
                              "ETCDCRON_MONGO": secret_uri, "OPERATOR_OK": "visible-to-jobs"})
    cluster.start_nodes(["n1"], ("--pass-env", "OPERATOR_OK"))
    dump = tmp_path / "env.txt"
    r = cluster.cli("add", "@yearly", "--name", "printenv", "--shell", f"env > {dump}; env", "--env", "JOBVAR=mine")
    assert r.returncode == 0, r.stderr
    cluster.admin.trigger("printenv")
    rec = _final(cluster, "printenv")
    assert rec.state == "succeeded", rec.data
    seen = dict(line.split("=", 1) for line in dump.read_text().splitlines() if "=" in line)
    assert seen["OPERATOR_OK"] == "visible-to-jobs" and seen["JOBVAR"] == "mine" and seen["ETCDCRON_NODE"] == "n1"
    assert set(seen) <= {"PATH", "HOME", "LANG", "TZ", "OPERATOR_OK", "JOBVAR", "PWD", "SHLVL", "_", "OLDPWD"} \
        | {k for k in seen if k.startswith(("LC_", "ETCDCRON_"))}, sorted(seen)
    assert not [k for k in seen if k.startswith("ETCDCRON_") and k not in RunContext("j", 0, "n", 0, 0).fields()]
    text = dump.read_text() + rec.data.get("output", "")
    assert not [s for s in secrets if s in text]
    kvs, _ = cluster.store.get_prefix(cluster.prefix + "/")  # every record, node key and job under the prefix
    stored = b"".join(kv.key.encode() + kv.value for kv in kvs).decode(errors="replace")
    assert not [s for s in secrets if s in stored]
    assert wait_for(lambda: db["job_runs"].count_documents({"job": "printenv"}) == 1, 10)
    history = json.dumps(list(db["job_runs"].find({}, {"_id": 0})), default=str)
    assert "JOBVAR=mine" in history  # the output's tail is archived, and it is the job's environment
    assert not [s for s in secrets if s in history]


# --- kinds and hosts a node refuses ----------------------------------------------------------------

class _Server:
    """A local HTTP server in a thread; records every request path; ``routes`` maps a path to
    (status, headers, body)."""

    def __init__(self, routes: dict[str, tuple[int, dict, bytes]], delay: float = 0.0) -> None:
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                outer.requests.append(self.path)
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                time.sleep(delay)
                status, headers, body = routes.get(self.path, (404, {}, b"no such path"))
                self.send_response(status)
                for k, v in {"Content-Length": str(len(body)), **headers}.items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(body)
                except OSError:
                    pass

            do_GET = do_POST  # a followed 302 turns into a GET

            def log_message(self, *a):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_port
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "_Server":
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_policy_refuses_kinds_and_hosts():
    """A kind the node does not allow, or an HTTP host it does not list, is refused, not run."""
    ran = []
    with _Server({"/": (200, {}, b"ok")}) as srv:
        no_shell = RunPolicy(allow_kinds=frozenset({"builtin", "http"}))
        r = run_job(make_spec("x", "@hourly", shell="echo ran"), CTX, policy=no_shell)
        assert (r.state, r.exit_code, r.output) == ("refused", None, "kind shell not allowed on node n1")
        listed = RunPolicy(http_allow=(f"127.0.0.1:{srv.port}",))
        assert run_job(make_spec("x", "@hourly", http=srv.url + "/"), CTX, policy=listed).state == "succeeded"
        r = run_job(make_spec("x", "@hourly", http=f"http://localhost:{srv.port}/"), CTX, policy=listed)
        assert r.state == "refused" and r.output.startswith("host localhost not allowed on node n1")
        ran = list(srv.requests)
    assert ran == ["/"]


@pytest.mark.parametrize("url, allowed, ok", [
    ("http://api.example.com/x", ("api.example.com",), True),
    ("https://API.example.com:8443/x", ("api.example.com",), True),
    ("https://api.example.com/x", ("api.example.com:443",), True),
    ("http://api.example.com:8080/x", ("api.example.com:80",), False),
    ("http://evil.com/x", ("api.example.com",), False),
    ("http://api.example.com.evil.com/x", ("api.example.com",), False),
    ("http://[::1]:8080/x", ("[::1]:8080",), True),
    ("http://[::1]:8080/x", ("::1",), True),
])
def test_host_allowed(url, allowed, ok):
    """--http-allow entries are host names or addresses (any port) or HOST:PORT; nothing else matches."""
    assert host_allowed(url, allowed) is ok


def test_node_refuses_kinds_and_hosts_it_does_not_allow(cluster, tmp_path):
    """A node started with --allow-kinds builtin,http --http-allow HOST:PORT records a shell job and an HTTP job
    to another host `refused` (with the reason) without running them, and runs what it allows."""
    marker = tmp_path / "ran"
    with _Server({"/": (200, {}, b"called")}) as allowed, _Server({"/": (200, {}, b"called")}) as other:
        cluster.start_nodes(["n1"], ("--allow-kinds", "builtin,http", "--http-allow", f"127.0.0.1:{allowed.port}"))
        cluster.admin.put_job(make_spec("sh", "@yearly", shell=f"touch {marker}"))
        cluster.admin.put_job(make_spec("ok", "@yearly", http=allowed.url + "/"))
        cluster.admin.put_job(make_spec("elsewhere", "@yearly", http=other.url + "/"))
        for job in ("sh", "ok", "elsewhere"):
            cluster.admin.trigger(job)
        sh, ok, elsewhere = (_final(cluster, job) for job in ("sh", "ok", "elsewhere"))
        assert sh.state == "refused" and sh.data["reason"] == "kind shell not allowed on node n1", sh.data
        assert sh.node == "n1" and not marker.exists()
        assert ok.state == "succeeded" and allowed.requests == ["/"]
        assert elsewhere.state == "refused" and elsewhere.data["reason"].startswith("host 127.0.0.1 not allowed on node n1")
        assert other.requests == []


# --- HTTP jobs: no redirects, a bounded body, a timeout ---------------------------------------------

def test_http_redirect_is_the_result_and_never_followed():
    """A 302 is the run's result (failed, exit_code 302, the body's tail): its target is never requested."""
    with _Server({"/target": (200, {}, b"followed")}) as target:
        with _Server({"/start": (302, {"Location": target.url + "/target"}, b"moved along")}) as start:
            r = run_job(make_spec("x", "@hourly", http=start.url + "/start"), CTX)
            assert start.requests == ["/start"]
        assert (r.state, r.exit_code) == ("failed", 302)
        assert r.output.startswith("moved along") and f"redirect to {target.url}/target not followed" in r.output
        assert target.requests == []


def test_http_body_read_is_bounded_and_only_its_tail_kept():
    """A huge response body is read at most up to a bound, and only its tail is kept as the output."""
    body = b"x" * (3 << 20) + b"END"
    with _Server({"/big": (200, {}, body)}) as srv:
        r = run_job(make_spec("x", "@hourly", http=srv.url + "/big"), CTX)
    assert r.state == "succeeded" and len(r.output) <= OUTPUT_TAIL and "body truncated" in r.output


def test_http_timeout():
    """An HTTP job whose server does not answer within --timeout is recorded timeout."""
    with _Server({"/slow": (200, {}, b"late")}, delay=3) as srv:
        r = run_job(make_spec("x", "@hourly", http=srv.url + "/slow", timeout=0.5), CTX)
    assert r.state == "timeout" and r.ended - r.started < 2.5


# --- reaping orphans ------------------------------------------------------------------------------

def _ppid(pid: int) -> int | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(raw[raw.rindex(")") + 2:].split()[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the reaper reads /proc (Linux)")
def test_node_reaps_orphans_and_keeps_exit_codes(cluster, tmp_path):
    """A job leaves a child that escapes its process group: the node adopts it (subreaper, as PID 1 would)
    and reaps it when it exits — no zombie of the node remains — while a job's `exit 3` is still recorded 3."""
    pidfile = tmp_path / "orphan"
    node = cluster.start("n1")
    assert wait_for(lambda: "n1" in cluster.live(), 20)
    cluster.admin.put_job(make_spec("orphaner", "@yearly", shell=f"setsid sleep 2 & echo $! > {pidfile}; exit 0"))
    cluster.admin.put_job(make_spec("three", "* * * * * *", shell="exit 3", concurrency="allow",
                                          active_since=time.time()))
    cluster.admin.trigger("orphaner")
    assert wait_for(lambda: pidfile.exists() and pidfile.read_text().strip(), 20)
    orphan = int(pidfile.read_text())
    assert wait_for(lambda: _ppid(orphan) in (node.pid, None), 5) and _ppid(orphan) == node.pid, \
        "the orphan was not adopted by the node"
    assert _final(cluster, "orphaner").state == "succeeded"
    assert wait_for(lambda: _ppid(orphan) is None, 15), "the orphan's zombie was never reaped"
    assert wait_for(lambda: not zombies(node.pid), 5), zombies(node.pid)

    def threes() -> list:
        return [c for c in cluster.admin.history("three", 100) if c.state in FINAL]

    assert wait_for(lambda: len(threes()) >= 3, 20), threes()
    threes = threes()
    assert {(c.state, c.data.get("exit_code")) for c in threes} == {("failed", 3)}
    assert any(e.get("event") == "reaper.started" and e.get("subreaper") for e in cluster.log("n1"))


STRESS = """
import json, threading
from etcdcron import reaper
from etcdcron.executor import RunContext, run_job
from etcdcron.jobs import make_spec

r = reaper.Reaper(interval=0.0005).start()
spec = make_spec("x", "@hourly", shell="(sleep 0.01; exit 5) & exit 3")
ctx = RunContext("x", 0, "n", 1, 1)
codes = []
def work():
    for _ in range(40):
        codes.append(run_job(spec, ctx).exit_code)
threads = [threading.Thread(target=work) for _ in range(4)]
[t.start() for t in threads]
[t.join() for t in threads]
r.stop()
print(json.dumps({"codes": sorted(set(codes)), "runs": len(codes), "reaped": r.reaped}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the reaper reads /proc (Linux)")
def test_reaper_never_steals_a_jobs_exit_status():
    """With a reaper passing every half millisecond, 160 runs of `exit 3` each report 3, and the orphans they
    leave (exit 5) are reaped (in a process of its own: a subreaper changes the whole process)."""
    out = subprocess.run([sys.executable, "-c", STRESS], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["codes"] == [3] and result["runs"] == 160
    assert result["reaped"] > 0


def test_reaper_release_forgets_only_its_own_registration():
    """release() of a child whose pid now belongs to another registered child leaves that one registered
    (a reused pid must not lose the newer child's exit status to the reaper)."""
    from etcdcron import reaper

    newer = reaper.popen(["true"])
    newer.wait()

    class Older:  # a finished child that had the same pid before
        pid = newer.pid

    try:
        reaper.release(Older())
        assert reaper._ours.get(newer.pid) is newer
    finally:
        reaper.release(newer)
    assert newer.pid not in reaper._ours
