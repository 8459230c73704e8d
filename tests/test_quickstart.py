"""The quickstart's first command (`make demo` runs `python -m etcdcron.demo`) on embedded defaults."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from etcdcron.app import DEFAULT_ETCD
from etcdcron.store import reachable

ROOT = Path(__file__).resolve().parent.parent


def _etcd_at_default() -> bool:
    return reachable(DEFAULT_ETCD)


def _console(url: str, password: str) -> list[str]:
    """Log in to the demo's console as it printed, and list the jobs the console's API shows."""
    with httpx.Client(base_url=url, timeout=30) as c:
        form = re.search(r'name="csrf" value="([^"]+)"', c.get("/login").text).group(1)
        r = c.post("/login", data={"username": "admin", "password": password, "csrf": form})
        assert r.status_code == 303, r.text
        return [j["name"] for j in c.get("/api/v1/jobs").json()["jobs"]]


def test_demo_starts_embedded_etcd_and_shows_jobs_firing(tmp_path):
    """With no etcd or MongoDB running, the demo starts embedded ones; jobs fire on several nodes, a node hands
    over, the analytics jobs compute a report, and the console it prints takes the account it prints."""
    was_running = _etcd_at_default()
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path), PYTHONUNBUFFERED="1")
    env.pop("ETCDCRON_ETCD", None)
    proc = subprocess.Popen([sys.executable, "-m", "etcdcron.demo", "--seconds", "8", "--no-stay"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines, console, console_jobs = [], None, None
    try:
        for line in proc.stdout:
            lines.append(line)
            m = re.search(r"web console at (\S+) \(log in as admin, password (\S+)\)", line)
            if m:
                console = m.groups()
            if "stopping demo-3" in line and console:  # the jobs are registered and firing by now
                console_jobs = _console(*console)
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stdout, stderr = "".join(lines), proc.stderr.read()
    r = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)
    assert r.returncode == 0, r.stdout + r.stderr
    assert console_jobs is not None, "the demo printed no console address and account"
    if not was_running:
        assert "started an embedded one" in r.stdout
        assert (tmp_path / "etcdcron" / "etcd").is_dir(), "embedded etcd data is not under the user's data dir"
    assert "stopping demo-3 with SIGTERM" in r.stdout
    ran = [ln for ln in r.stdout.splitlines() if "hello from demo-" in ln]
    assert ran, r.stdout
    history = [ln for ln in r.stdout.splitlines() if " succeeded " in ln]
    assert len({ln.split()[3] for ln in history}) >= 2, "jobs did not run on several nodes"
    report = r.stdout[r.stdout.index("the analytics report"):]
    assert "DAU" in report and "classic retention" in report, report
    assert "by channel" in report and "custom counter coins" in report and "registered users" in report, report
    daily = report[report.index("LAUNCHES"):].split("\n\n")[0].splitlines()[1:]
    rows = [ln.split() for ln in daily if not ln.startswith("* ")]  # not the "not final yet" footnote
    assert rows and all(int(row[2]) > 0 for row in rows), "the analytics jobs computed no daily active users"
    assert {"hello", "report", "rollup", "retention"} <= set(console_jobs), console_jobs
    assert not _etcd_at_default() or was_running, "the demo left its embedded etcd running"
