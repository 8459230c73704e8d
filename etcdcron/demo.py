"""The quickstart: three nodes on embedded defaults running the analytics jobs, a handover, and
what ran where.

    python -m etcdcron.demo [--seconds 20]

When no etcd answers at the default endpoint, the first node is started with ``--embedded`` and
runs a single-member etcd there; the other two join it. With no MongoDB answering at the default
address, the demo starts an embedded one (a SecantusDB server process), registers an app, seeds a
week of synthetic events through the collector's insert path, and schedules the builtin analytics
jobs; at the end it prints the app's report. Half-way, one node is stopped with SIGTERM and its
share moves to the others.
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
from .embedded import free_port
from .nodes import wait_for
from .store import reachable

PREFIX = "/etcdcron-demo"
CONSOLE_PORT = 8080


def _cli(*args: str, env: dict) -> str:
    r = subprocess.run([sys.executable, "-m", "etcdcron.cli", *args], env=env, capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise SystemExit(f"demo: etcdcron {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout


def _etcd_up() -> bool:
    return reachable(DEFAULT_ETCD)


def _console_account() -> str:
    """The demo's admin account, with a new random password each run (returned to be printed)."""
    import secrets  # noqa: PLC0415

    from .accounts import Accounts  # noqa: PLC0415
    from .errors import AccountExists  # noqa: PLC0415
    from .keys import Keys  # noqa: PLC0415
    from .store import EtcdStore  # noqa: PLC0415

    password = secrets.token_urlsafe(12)
    store = EtcdStore(DEFAULT_ETCD)
    try:
        accounts = Accounts(store, Keys(PREFIX))
        try:
            accounts.create("admin", "admin", password)
        except AccountExists:
            accounts.set_password("admin", password)
    finally:
        store.close()
    return password


def _answers(url: str) -> bool:
    import urllib.request  # noqa: PLC0415

    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--stay", action=argparse.BooleanOptionalAction, default=None,
                    help="keep the nodes and the console up until Ctrl-C (default: when run from a terminal)")
    opts = ap.parse_args()
    stay = sys.stdin.isatty() and sys.stdout.isatty() if opts.stay is None else opts.stay
    work = Path(tempfile.mkdtemp(prefix="etcdcron-demo-"))
    env = dict(os.environ, ETCDCRON_PREFIX=PREFIX, PYTHONUNBUFFERED="1")
    env.pop("ETCDCRON_ETCD", None)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent), env.get("PYTHONPATH")]))
    procs: dict[str, subprocess.Popen] = {}

    def start(node: str, *extra: str) -> None:
        log = open(work / f"{node}.log", "ab")
        procs[node] = subprocess.Popen([sys.executable, "-m", "etcdcron.cli", "serve", "--node-id", node, "--grace", "5",
                                        "--mongo", env["ETCDCRON_MONGO"], *extra],
                                       env=env, stdout=log, stderr=subprocess.STDOUT)
        log.close()

    print(f"demo: logs in {work}")
    from etcdcron.analytics.embedded import resolve

    mongo_base, mongo_server = resolve(None, embed=True)
    if mongo_server is not None:
        print(f"demo: no MongoDB was running at {mongo_base}; started an embedded one (SecantusDB server process)")
    mongo = mongo_base.rstrip("/") + "/etcdcron_demo"
    import pymongo

    pymongo.MongoClient(mongo).drop_database("etcdcron_demo")  # the demo's own database, fresh each time
    env["ETCDCRON_MONGO"] = mongo
    embedded = not _etcd_up()
    start("demo-1", *(["--embedded"] if embedded else []))
    if not wait_for(_etcd_up, 30, step=0.2):
        raise SystemExit(f"demo: etcd did not come up; see {work}/demo-1.log")
    if embedded:
        print(f"demo: no etcd was running at {DEFAULT_ETCD}; node demo-1 started an embedded one")
    start("demo-2")
    start("demo-3")
    port = CONSOLE_PORT if not _answers(f"http://127.0.0.1:{CONSOLE_PORT}/login") else free_port()
    try:
        password = _console_account()
        web_log = open(work / "web.log", "ab")
        procs["web"] = subprocess.Popen([sys.executable, "-m", "etcdcron.cli", "web", "--listen", f"127.0.0.1:{port}",
                                         "--mongo", env["ETCDCRON_MONGO"]], env=env, stdout=web_log, stderr=subprocess.STDOUT)
        web_log.close()
        url = f"http://127.0.0.1:{port}"
        if not wait_for(lambda: _answers(f"{url}/login"), 30, step=0.2):
            raise SystemExit(f"demo: the web console did not come up; see {work}/web.log")
        print(f"demo: web console at {url} (log in as admin, password {password})")
        ledger = work / "ledger.txt"
        _cli("add", "* * * * * *", "--name", "hello", "--shell",
             f'echo "$ETCDCRON_SLOT hello from $ETCDCRON_NODE (fence $ETCDCRON_FENCE)" >> {ledger}', env=env)
        _cli("add", "*/2 * * * * *", "--name", "report", "--level", "1", "--shell", "date -u +%T", env=env)
        _cli("add", "@every 5s", "noop", env=env)
        _cli("apps", "create", "demo-app", "--tz", "Asia/Kolkata", env=env)
        _cli("apps", "counter", "add", "demo-app", "coins", "--type", "sum", env=env)
        _cli("apps", "counter", "add", "demo-app", "taps", "--type", "slot", "--slots", "menu,play,shop", env=env)
        print("demo: seeding 8 days of events for 'demo-app' (Asia/Kolkata) through the collector's insert path")
        _cli("analytics", "seed", "--app", "demo-app", "--devices", "300", "--days", "8", env=env)
        for job in ("rollup", "active_users", "retention", "usage"):
            _cli("add", "*/3 * * * * *", job, "--level", "2", env=env)
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
        print("demo: the analytics report the builtin jobs computed")
        print(_cli("analytics", "report", "--app", "demo-app", "--days", "7", "--by", "channel", env=env))
        if stay:
            print(f"demo: the nodes and the console ({url}, admin / {password}) stay up; press Ctrl-C to stop")
            def stop(signum, frame):
                raise KeyboardInterrupt
            # SIGTERM too, and SIGINT even where a shell started the demo with it ignored (in the background)
            signal.signal(signal.SIGTERM, stop)
            signal.signal(signal.SIGINT, stop)
            try:
                signal.pause()
            except KeyboardInterrupt:
                print()
        for name in ("hello", "report", "noop", "rollup", "active_users", "retention", "usage"):
            _cli("rm", name, env=env)
    finally:
        for node in ("web", "demo-3", "demo-2", "demo-1"):  # demo-1 last: it may hold the embedded etcd
            p = procs.get(node)
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    p.kill()
        if mongo_server is not None:
            mongo_server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
