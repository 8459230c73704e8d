"""Running jobs: the environment of DESIGN §3, process groups, timeouts, output tails, HTTP and builtins."""

from __future__ import annotations

import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

from etcdcron.executor import OUTPUT_TAIL, RunContext, run_job
from etcdcron.jobs import make_spec
from etcdcron.nodes import wait_for

CTX = RunContext("report", 1795791600, "node-a", 4242, 2, {"k": "v"})


def shell(cmd: str, **kw):
    return make_spec("report", "@hourly", shell=cmd, **kw)


def test_shell_job_sees_the_contract_environment():
    """A shell job gets ETCDCRON_JOB/SLOT/SLOT_EPOCH/NODE/FENCE/ATTEMPT with the firing's values."""
    r = run_job(shell("env | grep ^ETCDCRON_ | sort"), CTX)
    assert r.state == "succeeded" and r.exit_code == 0
    env = dict(line.split("=", 1) for line in r.output.splitlines())
    assert env["ETCDCRON_JOB"] == "report"
    assert env["ETCDCRON_SLOT"] == "2026-11-27T15:00:00Z"
    assert env["ETCDCRON_SLOT_EPOCH"] == "1795791600"
    assert env["ETCDCRON_NODE"] == "node-a" and env["ETCDCRON_FENCE"] == "4242" and env["ETCDCRON_ATTEMPT"] == "2"


def test_exit_code_and_output_tail_are_kept():
    """A failing job is recorded failed with its exit code and only the tail of a long output."""
    r = run_job(shell(f"head -c {OUTPUT_TAIL * 3} /dev/zero | tr '\\0' x; echo END; exit 7"), CTX)
    assert r.state == "failed" and r.exit_code == 7
    assert len(r.output) <= OUTPUT_TAIL and r.output.endswith("END\n")


def test_timeout_kills_the_whole_process_group(tmp_path):
    """On timeout the job's children die with it: nothing it started outlives the run."""
    pidfile = tmp_path / "child"
    r = run_job(shell(f"sleep 60 & echo $! > {pidfile}; wait", timeout=0.5), CTX)
    assert r.state == "timeout"
    assert r.ended - r.started < 5
    child = int(pidfile.read_text())
    assert wait_for(lambda: not _alive(child), 5), "the job's child process survived the timeout"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"  # a zombie is dead, only not yet reaped by init
    except FileNotFoundError:
        return False


def test_cancel_stops_a_running_job():
    """Setting the cancel event stops the run and records it killed."""
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    r = run_job(shell("sleep 30"), CTX, cancel)
    assert r.state == "killed" and r.ended - r.started < 10


def test_http_job_posts_the_fields():
    """An HTTP job POSTs the firing's fields as JSON and X-Etcdcron-* headers; a 5xx is a failure."""
    received = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            received["body"] = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            received["fence"] = self.headers["X-Etcdcron-Fence"]
            code = 500 if self.path == "/fail" else 200
            self.send_response(code)
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, *a):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        r = run_job(make_spec("report", "@hourly", http=url + "/ok", args={"k": "v"}), CTX)
        assert r.state == "succeeded" and r.exit_code == 200 and r.output == "ok"
        assert received["body"]["job"] == "report" and received["body"]["fence"] == "4242"
        assert received["body"]["slot"] == "2026-11-27T15:00:00Z" and received["body"]["args"] == {"k": "v"}
        assert received["fence"] == "4242"
        assert run_job(make_spec("report", "@hourly", http=url + "/fail"), CTX).state == "failed"
    finally:
        server.shutdown()


def test_builtin_job_gets_the_context(tmp_path):
    """The builtin `ledger` job receives the context and records it."""
    path = tmp_path / "ledger"
    r = run_job(make_spec(None, "@hourly", builtin="ledger", args={"path": str(path)}), CTX.__class__(
        "ledger", CTX.slot_epoch, "node-a", 7, 1, {"path": str(path)}))
    assert r.state == "succeeded"
    line = json.loads(path.read_text())
    assert line["slot"] == CTX.slot_epoch and line["fence"] == 7 and line["node"] == "node-a"


def test_builtin_failure_is_recorded():
    """A builtin that raises is a failed run with the error in its output, not a crash."""
    r = run_job(make_spec(None, "@hourly", builtin="ledger"), CTX)  # no path argument
    assert r.state == "failed" and "KeyError" in r.output
