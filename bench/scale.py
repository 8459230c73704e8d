#!/usr/bin/env python
"""Scale: 100,000 (or 1,000,000) registered jobs; node start-up, memory per job, etcd size, idle CPU; etcd requests per firing.

    python bench/scale.py [--jobs 100000] [--idle 30] [--rate 200] [--seconds 20] [--out docs/scale.md]
    python bench/scale.py --jobs 1000000 --no-spread [--profile-startup FILE]   # issue 11's goals, ~10 min

A real etcd (one member, temp dir, loopback, started with ``etcdcron.testing``; ``--quota-mb`` raises
its 2 GiB backend quota, not needed at 1,000,000 jobs: ~0.4 GB). First a node starts on the empty
prefix (its RSS with 0 jobs is the base of the *memory per job*) and stops. ``--jobs`` jobs
are written straight into etcd in batched transactions (100 puts per ``Txn``, 8 threads, each batch
built where it is sent): daily
schedules ``M H * * *`` spread over all minutes of the day except the current and the next UTC
hour, so none fires while we measure. The spec of each is a copy (``dataclasses.replace``) of one spec built and validated by ``make_spec``.

1. One node (``cli.py serve``) starts: time from ``Popen`` until the node is registered in etcd
   (``nodes/<id>``) and until it logs ``node.started`` (its view is loaded and its timer runs);
   its CPU spent getting there; its RSS (``VmRSS``, and ``VmHWM`` = peak) after start-up and after
   the idle window; its CPU over ``--idle`` seconds of idling (after ``--settle`` seconds).
2. Two more nodes start (the first keeps running): the same figures for them, then all three idle.
3. etcd's database size (Status RPC, the figure ``etcdcron status --json`` prints as etcd.db_size),
   after registration and at the end; ``etcdcron status --json`` itself is timed once.
   ``--profile-startup FILE`` samples b1's start-up with py-spy and reports the inclusive seconds
   of the package's functions (where start-up goes).
4. Steady firing (``--rate 0`` skips it): ``--rate`` more jobs ``* * * * * *`` running ``ledger`` (default options), warm-up,
   then ``--seconds`` seconds during which etcd's own Prometheus counters
   (``grpc_server_handled_total`` and ``grpc_server_msg_received_total``, by ``grpc_method``) are
   read before and after; divided by the firings executed in the window (ledger lines). Done twice:
   aligned (all firings at the top of the second, claims batch) and spread (``--jitter 1``,
   ``--concurrency allow``: one claim round trip per firing); ``--no-spread`` skips the second.

The jobs are active since two hours ago (steady state: the leader's missed-firing scan looks at
every job from the start); about 3 minutes with the defaults.

Only loopback traffic; every process started here is stopped here, by its PID.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from failover import log_sigkill, write_section  # noqa: E402
from firing_lag import CODE, ROOT, STOP_WAIT, cpu_seconds, pct, describe_work_tree, log, machine, sleep_until  # noqa: E402

sys.path.insert(0, str(CODE))

# issue 5's goals at 100,000 jobs; issue 11's at 1,000,000 (used from --jobs 200,000 on)
GOALS_100K = {"startup": 10.0, "rss_mb": 300.0, "db_mb": 200.0, "idle_cpu": 5.0}
GOALS_1M = {"startup": 30.0, "rss_mb": 1024.0, "db_mb": 1024.0, "idle_cpu": 5.0}


def goals(jobs: int) -> dict[str, float]:
    return GOALS_1M if jobs >= 200_000 else GOALS_100K


def proc_status(pid: int) -> dict[str, float]:
    """VmRSS / VmHWM in MB, and the thread count."""
    out = {}
    try:
        for line in open(f"/proc/{pid}/status"):
            k, _, v = line.partition(":")
            if k in ("VmRSS", "VmHWM"):
                out[k] = int(v.split()[0]) / 1024.0
            elif k == "Threads":
                out[k] = int(v)
    except OSError:
        pass
    return out


def grpc_counters(endpoint: str) -> dict[str, dict[str, float]]:
    """{metric: {grpc_method: value summed over codes/types}} from etcd's /metrics."""
    text = urllib.request.urlopen(endpoint + "/metrics", timeout=5).read().decode()
    out: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    pat = re.compile(r'^(grpc_server_handled_total|grpc_server_msg_received_total|grpc_server_started_total)\{(.*)\} (\S+)$')
    for line in text.splitlines():
        m = pat.match(line)
        if m:
            meth = re.search(r'grpc_method="([^"]+)"', m.group(2))
            out[m.group(1)][meth.group(1) if meth else "?"] += float(m.group(3))
        elif line.startswith(("etcd_mvcc_db_total_size_in_bytes ", "etcd_mvcc_db_total_size_in_use_in_bytes ",
                              "etcd_debugging_mvcc_keys_total ", "etcd_server_proposals_committed_total ",
                              "etcd_debugging_mvcc_events_total ")):
            k, v = line.rsplit(" ", 1)
            out["etcd"][k] = float(v)
    return {k: dict(v) for k, v in out.items()}


def leader_of(store, keys) -> str | None:
    kvs, _ = store.get_prefix(keys.leader)
    return min(((kv.create_revision, kv.value.decode()) for kv in kvs), default=(0, None))[1]


def diff(a: dict, b: dict) -> dict[str, dict[str, float]]:
    return {m: {k: b[m].get(k, 0.0) - a.get(m, {}).get(k, 0.0) for k in b[m]} for m in b}


class Watcher:
    """Polls one starting node: its log for ``node.started``, etcd for its registration."""

    def __init__(self, nid: str, proc: subprocess.Popen, logpath: Path, store, keys, t0: float) -> None:
        self.nid, self.proc, self.logpath, self.store, self.keys, self.t0 = nid, proc, logpath, store, keys, t0
        self.registered = self.started = None
        self.started_cpu = None
        self.started_rss = None
        self.logged = {}
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        end = time.time() + 300
        while time.time() < end and self.proc.poll() is None and self.started is None:
            now = time.time()
            if self.registered is None and self.store.get(self.keys.node(self.nid)) is not None:
                self.registered = now - self.t0
            text = self.logpath.read_text(errors="replace") if self.logpath.exists() else ""
            if '"node.started"' in text:
                self.started = now - self.t0
                self.started_cpu = cpu_seconds(self.proc.pid)
                self.started_rss = proc_status(self.proc.pid).get("VmRSS")
                for raw in text.splitlines():
                    if '"node.started"' in raw:
                        try:
                            self.logged = json.loads(raw)
                        except ValueError:
                            pass
                if self.registered is None:
                    self.registered = self.started
                return
            time.sleep(0.05)


def register_jobs(store, keys, n: int, ledger: Path) -> tuple[float, int]:
    from etcdcron import store as st
    from etcdcron.jobs import make_spec

    now = datetime.now(timezone.utc)
    busy = {(now.hour - 1) % 24, now.hour, (now.hour + 1) % 24}
    hm = [(h, m) for h in range(24) if h not in busy for m in range(60)]
    # active since two hours ago: a cluster whose jobs were registered long ago (steady state); no
    # firing falls in the last, the current or the next hour, so there is nothing to catch up or miss
    base = make_spec("scale-template", "0 0 * * *", builtin="noop", active_since=time.time() - 7200)

    def write(first: int) -> None:  # each batch built where it is sent: a million puts never sit in memory at once
        ops = []
        for i in range(first, min(first + 100, n)):
            h, m = hm[i % len(hm)]
            spec = dataclasses.replace(base, name=f"s{i:07d}", schedule=f"{m} {h} * * *")
            ops.append(st.put(keys.job(spec.name), spec.to_json()))
        store.txn([], ops)
    t = time.time()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(write, range(0, n, 100)))
    return time.time() - t, len(base.replace(name="s0000000").to_json()) + len(keys.job("s0000000"))


def baseline_node(cluster, work: Path, settle: float) -> dict:
    """A node on the empty prefix: its start-up and RSS with 0 jobs, the base of the memory per job.
    Stopped (by PID) before the jobs are registered."""
    t0 = time.time()
    proc = cluster.start("b0", "--workers", "32", ttl=None, grace=5)
    logpath = work / "b0.log"
    try:
        while '"node.started"' not in (logpath.read_text(errors="replace") if logpath.exists() else ""):
            if proc.poll() is not None or time.time() - t0 > 60:
                raise RuntimeError(f"b0 (0 jobs) did not start (exit {proc.poll()}); logs in {work}")
            time.sleep(0.05)
        started = time.time() - t0
        time.sleep(settle)
        st_ = proc_status(proc.pid)
        return {"started_s": round(started, 2), "rss_mb": st_.get("VmRSS"), "hwm_mb": st_.get("VmHWM")}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_WAIT)
        except subprocess.TimeoutExpired:
            log_sigkill("b0", proc)
            proc.kill()
            proc.wait()
        del cluster.procs["b0"]


def start_py_spy(pid: int, out: Path) -> subprocess.Popen:
    """py-spy sampling ``pid`` (100 Hz, every thread, collapsed stacks) until :func:`stop_py_spy`."""
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if exe is None:
        raise RuntimeError("--profile-startup needs py-spy (pip install py-spy)")
    return subprocess.Popen([exe, "record", "--pid", str(pid), "--rate", "100", "--format", "raw", "--nonblocking",
                             "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_py_spy(spy: subprocess.Popen, out: Path, keep: str) -> list[tuple[str, float]]:
    """Stop py-spy (SIGINT: it writes its file) and sum each etcdcron function's inclusive seconds
    (a function counted once per sample, over all threads); ``keep`` gets a copy of the stacks."""
    spy.send_signal(signal.SIGINT)
    try:
        spy.wait(timeout=30)
    except subprocess.TimeoutExpired:
        spy.kill()
        spy.wait()
    if not out.exists():
        return []
    shutil.copy(out, keep)
    incl: dict[str, float] = defaultdict(float)
    for line in out.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        seen = set()
        for frame in stack.split(";"):
            m = re.match(r"(\S+) \(([^:)]+)", frame)
            if not m or "etcdcron" not in m.group(2) and "cli.py" not in m.group(2):
                continue
            name = f"{Path(m.group(2)).stem}.{m.group(1)}"
            if name not in seen:
                seen.add(name)
                incl[name] += int(count) / 100.0
    return sorted(incl.items(), key=lambda kv: -kv[1])[:25]


class Sampler:
    """CPU seconds of every process in ``procs`` (a live dict), once a second: a start-up timeline."""

    def __init__(self, procs: dict) -> None:
        self.procs, self.samples = procs, []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.samples.append((time.time(), {n: cpu_seconds(p.pid) for n, p in list(self.procs.items())}))

    def stop(self) -> None:
        self._stop.set()

    def timeline(self, nid: str, t0: float, step: float = 5.0, until: float = 90.0) -> list[float]:
        """% of one core in consecutive ``step``-second buckets from ``t0``."""
        pts = [(t, c[nid]) for t, c in self.samples if c.get(nid) is not None and t0 <= t <= t0 + until + 0.5]
        out, i = [], 0
        while pts and i < len(pts) - 1:
            j = i
            while j + 1 < len(pts) and pts[j + 1][0] - pts[i][0] <= step + 0.5:
                j += 1
            if j == i:
                break
            out.append(round(100.0 * (pts[j][1] - pts[i][1]) / (pts[j][0] - pts[i][0]), 1))
            i = j
        return out


def idle_window(pids: dict[str, int], seconds: float) -> dict[str, float]:
    c0, t0 = {k: cpu_seconds(v) for k, v in pids.items()}, time.monotonic()
    time.sleep(seconds)
    c1, t1 = {k: cpu_seconds(v) for k, v in pids.items()}, time.monotonic()
    return {k: round(100.0 * (c1[k] - c0[k]) / (t1 - t0), 2) for k in pids if c0[k] is not None and c1[k] is not None}


def run(opts, work: Path) -> dict:
    from etcdcron.claims import unit_hash
    from etcdcron.testing import Cluster, EtcdCluster, read_ledger

    prefix = "/bench-scale"
    extra = ["--quota-backend-bytes", str(opts.quota_mb * 2**20)] if opts.quota_mb else []
    etcd = EtcdCluster(work / "etcd", size=1, extra_args=extra).start()
    member = etcd.members[0]
    cluster = None
    R: dict = {"nodes": {}, "jobs": opts.jobs}
    sampler = None
    try:
        cluster = Cluster(etcd.endpoints, prefix, work, code=CODE, store_timeout=60)
        store, keys, ledger, procs = cluster.store, cluster.keys, cluster.ledger, cluster.procs
        sampler = Sampler(procs)
        R["etcd_version"] = store.status()["version"]
        R["db_empty"] = store.status()["db_size"]
        R["baseline"] = baseline_node(cluster, work, opts.settle_empty)
        log(f"node with 0 jobs: {R['baseline']}")
        log(f"registering {opts.jobs:,} jobs")
        R["register_s"], R["spec_bytes"] = register_jobs(store, keys, opts.jobs, ledger)
        R["db_after_register"] = store.status()["db_size"]
        log(f"registered in {R['register_s']:.1f}s; etcd db {R['db_after_register'] / 2**20:.1f} MB")

        launched: dict[str, float] = {}

        def launch(nids: list[str]) -> dict[str, Watcher]:
            ws = {}
            spy = None
            for nid in nids:
                t0 = launched[nid] = time.time()
                cluster.start(nid, "--workers", "32", ttl=None, grace=5)
                ws[nid] = Watcher(nid, procs[nid], work / f"{nid}.log", store, keys, t0)
                if opts.profile_startup and nid == "b1":
                    spy = start_py_spy(procs[nid].pid, work / "b1-startup.txt")
            for w in ws.values():
                w.thread.join()
            if spy is not None:
                R["startup_profile"] = stop_py_spy(spy, work / "b1-startup.txt", opts.profile_startup)
            return ws

        def phase(name: str, nids: list[str]) -> None:
            ws = launch(nids)
            for nid, w in ws.items():
                if w.started is None:
                    raise RuntimeError(f"{nid} did not start (exit {w.proc.poll()}); logs in {work}")
                R["nodes"][nid] = {"phase": name, "registered_s": round(w.registered, 2), "started_s": round(w.started, 2),
                                   "startup_cpu_s": w.started_cpu, "rss_started_mb": w.started_rss,
                                   "jobs_in_view": w.logged.get("jobs")}
                log(f"[{name}] {nid}: registered {w.registered:.2f}s, node.started {w.started:.2f}s "
                    f"(cpu {w.started_cpu:.1f}s, rss {w.started_rss:.0f} MB, jobs {w.logged.get('jobs')})")
            time.sleep(opts.settle)
            pids = {nid: p.pid for nid, p in procs.items()} | {"etcd": member.proc.pid}
            for nid in procs:
                R["nodes"][nid].setdefault("rss_settled_mb", proc_status(procs[nid].pid).get("VmRSS"))
            log(f"[{name}] idle window {opts.idle:g}s")
            cpu = idle_window(pids, opts.idle)
            R[f"idle_{name}"] = cpu
            for nid in procs:
                st_ = proc_status(procs[nid].pid)
                R["nodes"][nid][f"rss_end_{name}_mb"] = st_.get("VmRSS")
                R["nodes"][nid]["hwm_mb"] = st_.get("VmHWM")
                R["nodes"][nid]["threads"] = st_.get("Threads")
            log(f"[{name}] idle CPU %: {cpu}")

        phase("1node", ["b1"])
        phase("3nodes", ["b2", "b3"])
        R["leader_idle"] = leader_of(store, keys)
        t = time.time()
        cp = cluster.cli("status", "--json", timeout=900)
        R["status_cli_s"] = round(time.time() - t, 2)
        try:
            sj = json.loads(cp.stdout)
            R["status_cli"] = {"db_size": sj["etcd"]["db_size"], "jobs": sj["jobs"], "nodes": sj["nodes"]}
        except (ValueError, KeyError):
            R["status_cli"] = {"error": (cp.stderr or cp.stdout)[-300:]}
        R["db_after_idle"] = store.status()["db_size"]

        # steady firing
        admin = cluster.admin
        pids = {nid: p.pid for nid, p in procs.items()} | {"etcd": member.proc.pid}

        def measure_rate(tag: str, jitter: float, previous: list[str]) -> tuple[dict, list[str]]:
            for j in previous:  # the jobs of the previous measurement go away first
                admin.remove(j)
            rjobs = [f"{tag}{i:04d}" for i in range(opts.rate)]
            # spread: --concurrency allow, else a run jittered late in its second still holds its claim
            # when the next second's firing (jittered early) is claimed, and forbid records it skipped
            tmpl = cluster.ledger_spec("r-template", "* * * * * *", jitter=jitter,
                                       concurrency="allow" if jitter else "forbid", active_since=time.time())
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(lambda j: admin.put_job(dataclasses.replace(tmpl, name=j)), rjobs))
            first = math.ceil(time.time() + opts.warmup)
            last = first + opts.seconds - 1
            log(f"{opts.rate} jobs every second (jitter {jitter:g} s); window {opts.seconds}s")
            sleep_until(first)
            m0, c0 = grpc_counters(member.endpoint), {k: cpu_seconds(v) for k, v in pids.items()}
            sleep_until(last + 1)
            m1, c1 = grpc_counters(member.endpoint), {k: cpu_seconds(v) for k, v in pids.items()}
            time.sleep(3 + jitter)
            wanted = set(rjobs)
            lines = [ln for ln in read_ledger(ledger) if ln.job in wanted]
            executed = sum(1 for ln in lines if first <= ln.at < last + 1)
            in_slots = {(ln.job, ln.slot) for ln in lines if first <= ln.slot <= last}
            d = diff(m0, m1)
            lag_by_node: dict[str, list[float]] = defaultdict(list)
            first_start: dict[tuple, float] = {}
            for ln in lines:
                if first <= ln.slot <= last:
                    k = (ln.job, ln.slot)
                    if k not in first_start or ln.at < first_start[k]:
                        first_start[k] = ln.at
                        # lag behind the intended start: the slot plus the job's jitter offset (the same on every node)
                        offset = jitter * unit_hash(f"{ln.job}|{ln.slot}|jitter") if jitter else 0.0
                        lag_by_node[ln.node].append((ln.at - ln.slot - offset) * 1000.0)
            lag = {nid: {"runs": len(v), "p50_ms": round(pct(sorted(v), 50), 1), "p99_ms": round(pct(sorted(v), 99), 1)}
                   for nid, v in sorted(lag_by_node.items())}
            return {"jobs": opts.rate, "jitter": jitter, "first": first, "last": last, "executed_in_window": executed,
                    "window_slots_executed": len(in_slots), "expected": opts.rate * opts.seconds,
                    "handled": {k: v for k, v in d.get("grpc_server_handled_total", {}).items() if v},
                    "received": {k: v for k, v in d.get("grpc_server_msg_received_total", {}).items() if v},
                    "started": {k: v for k, v in d.get("grpc_server_started_total", {}).items() if v},
                    "cpu_pct": {k: round(100.0 * (c1[k] - c0[k]) / opts.seconds, 1) for k in pids},
                    "proposals": d.get("etcd", {}).get("etcd_server_proposals_committed_total"),
                    "watch_events": d.get("etcd", {}).get("etcd_debugging_mvcc_events_total"),
                    "lag_by_node": lag, "leader": leader_of(store, keys)}, rjobs

        if opts.rate:
            R["rate"], prev = measure_rate("r", 0.0, [])
        if opts.rate and opts.spread:
            R["rate_spread"], _ = measure_rate("q", 0.999, prev)
        R["db_end"] = store.status()["db_size"]
        for nid, t0 in launched.items():
            R["nodes"][nid]["cpu_timeline_5s"] = sampler.timeline(nid, t0)
        R["keys_end"] = store.status()["revision"]
    finally:
        if sampler is not None:
            sampler.stop()
        R["exit_codes"] = cluster.stop_nodes(STOP_WAIT, log_sigkill) if cluster is not None else {}
        if cluster is not None:
            cluster.close()
        etcd.stop()
    return R


def mb(b: float) -> float:
    return b / 2**20


def verdicts(R: dict) -> dict[str, tuple[bool, str]]:
    starts = [n["started_s"] for n in R["nodes"].values()]
    rss = [max(v for k, v in n.items() if k.startswith("rss_") and v) for n in R["nodes"].values()]
    hwm = [n.get("hwm_mb") or 0 for n in R["nodes"].values()]
    idle = [v for k, v in R["idle_1node"].items() if k != "etcd"] + [v for k, v in R["idle_3nodes"].items() if k != "etcd"]
    db = max(R["db_after_register"], R["db_after_idle"], R["db_end"])
    leader = R.get("rate", {}).get("leader") or R.get("leader_idle")
    others = [v for k, v in R["idle_3nodes"].items() if k not in ("etcd", leader)]
    g = goals(R["jobs"])
    rss_goal = f"{g['rss_mb'] / 1024:g} GB" if g["rss_mb"] >= 1024 else f"{g['rss_mb']:.0f} MB"
    db_goal = f"{g['db_mb'] / 1024:g} GB" if g["db_mb"] >= 1024 else f"{g['db_mb']:.0f} MB"
    per_job = memory_per_job(R)
    return {
        f"start-up <= {g['startup']:g} s": (max(starts) <= g["startup"], f"max {max(starts):.1f} s (1 node alone: {R['nodes']['b1']['started_s']:.1f} s)"),
        f"RSS <= {rss_goal}": (max(rss) <= g["rss_mb"], f"max VmRSS {max(rss):.0f} MB, peak VmHWM {max(hwm):.0f} MB"
                               + (f"; {per_job:,.0f} bytes per job" if per_job else "")),
        f"etcd DB <= {db_goal}": (mb(db) <= g["db_mb"], f"max {mb(db):.1f} MB"),
        "idle CPU <= 5 %": (max(idle) <= g["idle_cpu"], f"max {max(idle):.1f} % of one core per node"
                            + (f" (the leader, {leader}); the other nodes at most {max(others):.1f} %" if others else "")),
    }


def memory_per_job(R: dict) -> float | None:
    """(RSS of b1 with the jobs at the end of the idle windows - RSS of a node with 0 jobs) / jobs, in bytes."""
    base = (R.get("baseline") or {}).get("rss_mb")
    b1 = R["nodes"].get("b1", {})
    with_jobs = b1.get("rss_end_3nodes_mb") or b1.get("rss_end_1node_mb")
    if not base or not with_jobs or not R["jobs"]:
        return None
    return (with_jobs - base) * 2**20 / R["jobs"]


def per_firing(r: dict) -> list[tuple[str, float, float, float]]:
    n = max(1, r["executed_in_window"])
    meths = sorted(set(r["handled"]) | set(r["received"]), key=lambda m: -max(r["received"].get(m, 0), r["handled"].get(m, 0)))
    return [(m, r["handled"].get(m, 0.0), r["received"].get(m, 0.0), r["received"].get(m, r["handled"].get(m, 0.0)) / n)
            for m in meths]


def table(R: dict) -> str:
    rows = [f"{'node':<5} {'phase':<7} {'registered s':>12} {'started s':>9} {'cpu to start s':>14} "
            f"{'RSS started MB':>14} {'RSS end MB':>10} {'peak MB':>8} {'idle CPU % (1 node / 3 nodes)':>30}"]
    for nid, n in R["nodes"].items():
        i1 = R["idle_1node"].get(nid)
        i3 = R["idle_3nodes"].get(nid)
        rows.append(f"{nid:<5} {n['phase']:<7} {n['registered_s']:>12.2f} {n['started_s']:>9.2f} "
                    f"{(n['startup_cpu_s'] or 0):>14.1f} {(n['rss_started_mb'] or 0):>14.0f} "
                    f"{(n.get('rss_end_3nodes_mb') or 0):>10.0f} {(n.get('hwm_mb') or 0):>8.0f} "
                    f"{('-' if i1 is None else f'{i1:.1f}') + ' / ' + ('-' if i3 is None else f'{i3:.1f}'):>30}")
    per_job = memory_per_job(R)
    rows.append(f"node with 0 jobs: {R['baseline']}; memory per job (b1's RSS at the end - that) / jobs: "
                f"{per_job and round(per_job):,} bytes")
    rows.append(f"etcd idle CPU %: 1 node {R['idle_1node'].get('etcd')}, 3 nodes {R['idle_3nodes'].get('etcd')}; "
                f"db {mb(R['db_empty']):.1f} MB empty -> {mb(R['db_after_register']):.1f} MB after registering -> "
                f"{mb(R['db_end']):.1f} MB at end; jobs registered in {R['register_s']:.1f} s; "
                f"`etcdcron status --json` took {R['status_cli_s']} s")
    for nid, n in R["nodes"].items():
        rows.append(f"{nid} CPU % per 5 s from launch: {n.get('cpu_timeline_5s')}")
    for key in ("rate", "rate_spread"):
        r = R.get(key)
        if not r:
            continue
        rows.append("")
        rows.append(f"steady firing, jitter {r['jitter']:g} s: {r['jobs']} jobs/s for {r['last'] - r['first'] + 1} s: "
                    f"{r['executed_in_window']} runs started in the window, {r['window_slots_executed']}/{r['expected']} "
                    f"window firings ran; CPU % {r['cpu_pct']}; leader {r['leader']}; lag by node {r['lag_by_node']}; "
                    f"raft proposals {r['proposals']}, watch events sent {r['watch_events']}")
        rows.append(f"{'grpc_method':<18} {'handled':>9} {'msgs received':>14} {'per firing':>11}")
        tot = 0.0
        for m, h, rc, pf in per_firing(r):
            tot += pf
            rows.append(f"{m:<18} {h:>9.0f} {rc:>14.0f} {pf:>11.3f}")
        rows.append(f"{'total':<18} {'':>9} {'':>14} {tot:>11.3f}")
    for k, (ok, why) in verdicts(R).items():
        rows.append(f"goal {k}: {'met' if ok else 'NOT met'} ({why})")
    if R.get("startup_profile"):
        rows.append("b1's start-up, inclusive seconds by function (py-spy, all threads): "
                    + ", ".join(f"{f} {v:.1f}" for f, v in R["startup_profile"]))
    return "\n".join(rows)


BEGIN, END = "<!-- scale:begin (written by bench/scale.py) -->", "<!-- scale:end -->"


def markdown(R: dict, opts, command: str, mach: dict, started: float, elapsed: float, code: str) -> str:
    out = []
    w = out.append
    w(BEGIN)
    w(f"## {opts.jobs:,} jobs: start-up, memory, etcd size, idle CPU; etcd requests per firing (`bench/scale.py`)\n")
    w(f"- Run: {datetime.fromtimestamp(started, timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, took {elapsed:.0f} s; "
      f"command: `{command}`")
    w(f"- Machine: {mach['nproc']} CPUs ({mach['cpu']}), {mach['mem_gb']} GB RAM, {mach['os']}, Python {mach['python']}, "
      f"etcd {R['etcd_version']} (single member, embedded, loopback, "
      f"{f'--quota-backend-bytes {opts.quota_mb:,} MiB' if opts.quota_mb else 'default quota (2 GiB)'}); load average {mach['loadavg']} "
      f"at start (shared machine)")
    w(f"- Code: {code}")
    w(f"- Jobs: {opts.jobs:,} daily jobs `M H * * *` (builtin `noop`, all other options default; ~{R['spec_bytes']} bytes "
      f"per key) spread over the minutes of the day outside the previous, current and next UTC hour, active since two hours ago (a cluster in its steady state), so none fires, is caught up or is missed while "
      f"measuring; written in {R['register_s']:.1f} s as batched etcd `Txn`s (100 puts each, 8 threads).")
    w(f"- Nodes: `cli.py serve --workers 32` (default TTL 3 s, logging JSON/info). b1 starts alone, idles "
      f"{opts.idle:g} s after {opts.settle:g} s settling; then b2 and b3 start together while b1 runs, and all three idle "
      f"{opts.idle:g} s. *registered* = `nodes/<id>` exists in etcd; *started* = the `node.started` log line "
      f"(view loaded, timer running), both from `Popen`, polled every 50 ms. CPU from `/proc/<pid>/stat` "
      f"(utime + stime), RSS from `/proc/<pid>/status`. *Memory per job* = (b1's VmRSS at the end of the idle windows "
      f"- the VmRSS of a node started on the same etcd with 0 jobs before the jobs were registered, "
      f"{opts.settle_empty:g} s after its start) / jobs.\n")
    w("| node | started | registered (s) | `node.started` (s) | CPU used to start (s) | RSS at start (MB) | "
      "RSS at end (MB) | peak RSS VmHWM (MB) | idle CPU, 1 node (% of a core) | idle CPU, 3 nodes (% of a core) |")
    w("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for nid, n in R["nodes"].items():
        i1, i3 = R["idle_1node"].get(nid), R["idle_3nodes"].get(nid)
        w(f"| {nid} | {'alone' if n['phase'] == '1node' else 'with b1 running, b2+b3 together'} | {n['registered_s']:.2f} | "
          f"{n['started_s']:.2f} | {(n['startup_cpu_s'] or 0):.1f} | {(n['rss_started_mb'] or 0):.0f} | "
          f"{(n.get('rss_end_3nodes_mb') or 0):.0f} | {(n.get('hwm_mb') or 0):.0f} | "
          f"{'-' if i1 is None else f'{i1:.1f}'} | {'-' if i3 is None else f'{i3:.1f}'} |")
    w("")
    w(f"CPU of each node (% of one core) in consecutive 5-s buckets from its launch (start-up, then the "
      f"work it queues at start-up, then idle; the 3-node idle window and the firing window follow):\n")
    for nid, n in R["nodes"].items():
        w(f"- {nid}: {' '.join(str(v) for v in n.get('cpu_timeline_5s', []))}")
    w("")
    base, per_job = R["baseline"], memory_per_job(R)
    w(f"- Memory: a node with 0 jobs started in {base['started_s']:.2f} s with VmRSS {base['rss_mb']:.0f} MB; "
      f"**{per_job:,.0f} bytes per job** (b1: {R['nodes']['b1'].get('rss_end_3nodes_mb') or 0:.0f} MB with "
      f"{opts.jobs:,} jobs), i.e. ~{per_job * 1e6 / 2**20 + base['rss_mb']:,.0f} MB for 1,000,000 jobs at this rate.")
    if R.get("startup_profile"):
        w(f"- b1's start-up profiled with py-spy (100 Hz, all threads; inclusive seconds of wall time in which the "
          f"function was on a sampled stack, top {len(R['startup_profile'])}): "
          + ", ".join(f"`{f}` {v:.1f}" for f, v in R["startup_profile"]) + ".")
    w(f"- etcd: idle CPU {R['idle_1node'].get('etcd')} % (1 node) / {R['idle_3nodes'].get('etcd')} % (3 nodes); database "
      f"(Status RPC `dbSize`) {mb(R['db_empty']):.1f} MB empty, **{mb(R['db_after_register']):.1f} MB** after "
      f"registering {opts.jobs:,} jobs, {mb(R['db_after_idle']):.1f} MB after the idle windows, {mb(R['db_end']):.1f} MB "
      f"at the end; `etcdcron status --json` took {R['status_cli_s']} s and reported {R['status_cli']}.")
    rs = [R[k] for k in ("rate", "rate_spread") if R.get(k)]
    if not rs:
        w("\n(`--rate 0`: the requests-per-firing part was not run.)\n")
    else:
        firing_tables(R, opts, w, rs)
    w("### Goals\n")
    w("| goal | result | |")
    w("|---|---|---|")
    for k, (ok, why) in verdicts(R).items():
        w(f"| {k} | {why} | **{'met' if ok else 'not met'}** |")
    w("")
    w(END)
    return "\n".join(out)


def firing_tables(R: dict, opts, w, rs: list[dict]) -> None:
    w(f"\n### etcd requests per firing ({opts.rate} firings/s for {opts.seconds} s, 3 nodes, {opts.jobs:,} idle jobs "
      f"still registered)\n")
    w(f"{opts.rate} jobs `* * * * * *` running `ledger` (default options: `--concurrency forbid`), added while the nodes "
      f"run; warm-up {opts.warmup:g} s. Measured twice: *aligned* (no jitter: all {opts.rate} firings of a second fall "
      f"due at its top, so each node claims its share in one batched `Txn`) and, unless `--no-spread`, *spread* "
      f"(`--jitter 1 --concurrency allow`: each firing starts at its own offset inside the second, so claims cannot "
      f"share a round trip; the aligned jobs are removed first; `allow` because under `forbid` a run jittered late in "
      f"its second still holds its claim when the next second's firing, jittered early, is claimed, and ~7% were "
      f"recorded `skipped` in a trial run). Counters from etcd's `/metrics`, difference over the window, summed "
      f"over codes; *messages received* also counts each request message of a stream (LeaseKeepAlive, Watch), "
      f"*handled* counts finished RPCs/streams. Divided by the runs that started in the window.\n")
    meths = []
    for r in rs:
        for m, *_ in per_firing(r):
            if m not in meths:
                meths.append(m)
    w("| | " + " | ".join(("aligned" if r["jitter"] == 0 else f"spread (jitter {r['jitter']:g} s)") for r in rs) + " |")
    w("|---|" + "---:|" * len(rs))
    w("| runs started in the window | " + " | ".join(f"{r['executed_in_window']:,}" for r in rs) + " |")
    w("| window firings that ran (by 3 s + jitter after it) | " + " | ".join(f"{r['window_slots_executed']:,} / {r['expected']:,}" for r in rs) + " |")
    for m in meths:
        cells = []
        for r in rs:
            row = {x[0]: x for x in per_firing(r)}.get(m)
            cells.append("0" if row is None else f"{row[3]:.3f} ({row[2]:,.0f})")
        w(f"| `{m}` per firing (messages received) | " + " | ".join(cells) + " |")
    w("| **gRPC requests per firing, total** | " + " | ".join(f"**{sum(x[3] for x in per_firing(r)):.3f}**" for r in rs) + " |")
    w("| raft proposals per firing | " + " | ".join(f"{(r['proposals'] or 0) / max(1, r['executed_in_window']):.3f}" for r in rs) + " |")
    w("| watch events sent per firing (all 3 nodes' watches) | " + " | ".join(
        "-" if r.get("watch_events") is None else f"{r['watch_events'] / max(1, r['executed_in_window']):.1f}" for r in rs) + " |")
    w("| CPU in the window, % of one core | " + " | ".join(", ".join(f"{k} {v}" for k, v in r["cpu_pct"].items()) for r in rs) + " |")
    w("| firing lag p50 / p99 (ms) by executing node (start - slot - jitter offset) | " + " | ".join(
        ", ".join(f"{k} {v['p50_ms']:.0f} / {v['p99_ms']:.0f}" for k, v in r["lag_by_node"].items()) for r in rs) + " |")
    w("| leader | " + " | ".join(str(r["leader"]) for r in rs) + " |\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=100_000)
    ap.add_argument("--idle", type=float, default=30.0, help="seconds of idle CPU measurement per phase")
    ap.add_argument("--settle", type=float, default=20.0, help="seconds after start-up before the idle window")
    ap.add_argument("--rate", type=int, default=200, help="jobs firing every second in the requests-per-firing part (0: skip it)")
    ap.add_argument("--quota-mb", type=int, default=0, help="etcd --quota-backend-bytes in MiB (0: etcd's default, 2 GiB)")
    ap.add_argument("--settle-empty", type=float, default=5.0, help="seconds the 0-job node runs before its RSS is read")
    ap.add_argument("--profile-startup", default="", metavar="FILE",
                    help="py-spy b1's start-up (launch to node.started); collapsed stacks to FILE, a summary in the report")
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--no-spread", dest="spread", action="store_false",
                    help="skip the second firing measurement with --jitter 1 (firings spread over the second)")
    ap.add_argument("--out", default="docs/scale.md", help="markdown report ('' for none)")
    ap.add_argument("--json", dest="json_out", default="")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (node logs, etcd data)")
    opts = ap.parse_args(argv)
    command = "python bench/scale.py" + "".join(f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:]))
    tmp = Path(tempfile.mkdtemp(prefix="etcdcron-scale-"))
    code = describe_work_tree()
    started = time.time()
    try:
        R = run(opts, tmp)
    finally:
        if opts.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.time() - started
    mach = machine(R.get("etcd_version"))
    print(f"\nmachine: {mach['nproc']} CPUs, Python {mach['python']}, etcd {R['etcd_version']}; command: {command} ({elapsed:.0f} s)\n")
    print(table(R))
    if opts.out:
        out = Path(opts.out)
        if not out.is_absolute():
            out = ROOT / out
        write_section(out, BEGIN, END, markdown(R, opts, command, mach, started, elapsed, code),
                      "\n### Scale: interpretation\n\n_Not written yet._\n")
        print(f"wrote {out}")
    if opts.json_out:
        Path(opts.json_out).write_text(json.dumps(R, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
