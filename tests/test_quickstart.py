"""The quickstart's first command (`make demo` runs `python -m etcdcron.demo`) on embedded defaults."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from etcdcron.app import DEFAULT_ETCD
from etcdcron.store import reachable

ROOT = Path(__file__).resolve().parent.parent


def _etcd_at_default() -> bool:
    return reachable(DEFAULT_ETCD)


def test_demo_starts_embedded_etcd_and_shows_jobs_firing(tmp_path):
    """With no etcd or MongoDB running, the demo starts embedded ones; jobs fire on several nodes, a node hands
    over, and the analytics jobs compute a report."""
    was_running = _etcd_at_default()
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path), PYTHONUNBUFFERED="1")
    env.pop("ETCDCRON_ETCD", None)
    r = subprocess.run([sys.executable, "-m", "etcdcron.demo", "--seconds", "8"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
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
    daily = report[report.index("LAUNCHES"):].split("\n\n")[0].splitlines()[1:]
    rows = [ln.split() for ln in daily if not ln.startswith("* ")]  # not the "not final yet" footnote
    assert rows and all(int(row[2]) > 0 for row in rows), "the analytics jobs computed no daily active users"
    assert not _etcd_at_default() or was_running, "the demo left its embedded etcd running"
