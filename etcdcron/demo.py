"""The quickstart: three nodes on embedded defaults, a few jobs, a handover, and what ran where.

    python -m etcdcron.demo [--seconds 20]

The first node finds no etcd at the default endpoint and starts an embedded one (as
``etcdcron serve`` always does); the other two join it. Half-way, one node is stopped with SIGTERM
and its share moves to the others.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .app import DEFAULT_ETCD
from .nodes import wait_for
from .store import reachable

PREFIX = "/etcdcron-demo"


def _cli(*args: str, env: dict) -> str:
    r = subprocess.run([sys.executable, "-m", "cli", *args], env=env, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise SystemExit(f"demo: etcdcron {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout


def _etcd_up() -> bool:
    return reachable(DEFAULT_ETCD)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    opts = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="etcdcron-demo-"))
    env = dict(os.environ, ETCDCRON_PREFIX=PREFIX, PYTHONUNBUFFERED="1")
    env.pop("ETCDCRON_ETCD", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH")]))
    procs: dict[str, subprocess.Popen] = {}

    def start(node: str) -> None:
        log = open(work / f"{node}.log", "ab")
        procs[node] = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--node-id", node, "--grace", "5"],
                                       env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    print(f"demo: logs in {work}")
    embedded = not _etcd_up()
    start("demo-1")
    if not wait_for(_etcd_up, 30, step=0.2):
        raise SystemExit(f"demo: etcd did not come up; see {work}/demo-1.log")
    if embedded:
        print(f"demo: no etcd was running at {DEFAULT_ETCD}; node demo-1 started an embedded one")
    start("demo-2")
    start("demo-3")
    try:
        ledger = work / "ledger.txt"
        _cli("add", "* * * * * *", "--name", "hello", "--shell",
             f'echo "$ETCDCRON_SLOT hello from $ETCDCRON_NODE (fence $ETCDCRON_FENCE)" >> {ledger}', env=env)
        _cli("add", "*/2 * * * * *", "--name", "report", "--level", "1", "--shell", "date -u +%T", env=env)
        _cli("add", "@every 5s", "noop", env=env)
        print(_cli("ls", env=env))
        wait_for(lambda: len(_cli("nodes", "--json", env=env)) > 2 and _cli("nodes", env=env).count("demo-") == 3, 20)
        print(_cli("nodes", env=env))
        half = opts.seconds / 2
        time.sleep(half)  # the demo's own pacing: let jobs fire for a while
        print("demo: stopping demo-3 with SIGTERM; its share moves to demo-1 and demo-2")
        procs["demo-3"].send_signal(signal.SIGTERM)
        procs["demo-3"].wait(timeout=30)
        time.sleep(opts.seconds - half)
        print(_cli("nodes", env=env))
        print(_cli("history", "--limit", "12", env=env))
        lines = ledger.read_text().splitlines() if ledger.exists() else []
        print(f"demo: the 'hello' job ran {len(lines)} times; the last five:")
        print("\n".join("  " + ln for ln in lines[-5:]))
        print(_cli("status", env=env))
        for name in ("hello", "report", "noop"):
            _cli("rm", name, env=env)
    finally:
        for node in ("demo-3", "demo-2", "demo-1"):  # demo-1 last: it may hold the embedded etcd
            p = procs.get(node)
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
