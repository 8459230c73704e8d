#!/usr/bin/env python
"""Overload: drive a cluster past its capacity on purpose; plot goodput and lag over time.

    python bench/overload.py                  # ~2 min: a ramp finds C, then steady 0.5 C, overload 2 C, recovery 0.5 C
    python bench/overload.py --capacity 500   # C given: no ramp
    python bench/overload.py --trial add --burn-ms 0   # the issue's trial: 1,000 jobs added one by one (~5 min)

A real etcd (one member) and ``--nodes`` ``etcdcron serve`` processes (``etcdcron.testing``, as
bench/firing_lag.py), every node serving /metrics. Every job fires every second (``* * * * * *``)
and runs the builtin ``ledger`` (one JSON line per run: job, slot, node, fence, attempt, start), or
with ``--burn-ms M`` the builtin ``burn`` (the same line, then M ms of CPU) so that capacity is
reached with fewer jobs on a small machine.

*Capacity* C: runs per second the cluster starts on time. Measured first (unless ``--capacity``
gives it) by a ramp on a cluster of its own: ``--ramp-step`` jobs more every ``--ramp-hold`` s until
fewer than 90 % of a step's firings start within 1 s (or p99 > 1 s); C = the most on-time runs/s of
any step. Measured on the code under test, so a cheaper firing path raises C and the overload with it.

Phases (bulk mode): 0.5 C jobs, a warm-up, ``--steady`` s; then the extra 1.5 C jobs registered in
bulk (etcd transactions of 100 puts), ``--overload`` s at 2 C; then the extra jobs deleted in bulk,
``--recovery`` s back at 0.5 C.

Per wall-clock second: runs started, runs *on time* (started within 1 s of their instant: a fixed
bar, not the job's starting deadline, which defaults to 60 s), runs started > 1 s late, firings
recorded as not run (missed, skipped, lost, … summed from the nodes' ``etcdcron_firings_total``),
lag p50/p99/max of the runs started in that second; per node its worker-pool queue depth, CPU,
watch events, claim round-trip time; etcd's Txn rate. Goodput = on-time runs per second.

Every process started here is stopped here, by its PID.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))

from firing_lag import cpu_seconds, describe_work_tree, machine, pct  # noqa: E402

from etcdcron import store as st  # noqa: E402
from etcdcron.embedded import free_port  # noqa: E402
from etcdcron.jobs import make_spec  # noqa: E402
from etcdcron.testing import Cluster, EtcdCluster, read_ledger  # noqa: E402

ON_TIME = 1.0  # seconds: a run started later than this after its instant is late
NOT_RUN = ("missed", "skipped", "lost", "degraded", "refused", "shed")  # outcomes that are not runs
REGISTER_TXN = 100  # puts (or deletes) per registration transaction (etcd allows 128 operations)
STOP_WAIT = 15.0
BEGIN, END = "<!-- overload:begin -->", "<!-- overload:end -->"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- the cluster ----------------------------------------------------------------------------------


class Bench:
    """etcd + nodes (each with /metrics) + the jobs of one measured run."""

    def __init__(self, work: Path, opts) -> None:
        self.work, self.opts = work, opts
        work.mkdir(parents=True)
        self.etcd = EtcdCluster(work / "etcd", size=1).start()
        self.cluster = Cluster(self.etcd.endpoints, "/overload", work)
        self.ports: dict[str, int] = {}
        self.jobs: list[str] = []  # registered now, in order

    def start(self) -> None:
        ids = [f"n{i + 1}" for i in range(self.opts.nodes)]
        for nid in ids:
            self.ports[nid] = free_port()
            self.cluster.start(nid, "--workers", str(self.opts.workers), "--http", f"127.0.0.1:{self.ports[nid]}",
                               ttl=None, grace=5)
        deadline = time.time() + 30
        while set(ids) - self.cluster.live():
            if time.time() > deadline:
                raise RuntimeError(f"nodes did not register; logs in {self.work}")
            time.sleep(0.2)

    @property
    def pids(self) -> dict[str, int]:
        return {**{n: p.pid for n, p in self.cluster.procs.items()}, "etcd": self.etcd.members[0].proc.pid}

    def spec(self, name: str):
        o = self.opts
        args = {"path": str(self.cluster.ledger)}
        if o.burn_ms:
            args["ms"] = str(o.burn_ms)
        kw = {"starting_deadline": o.starting_deadline} if o.starting_deadline else {}
        return make_spec(name, "* * * * * *", builtin="burn" if o.burn_ms else "ledger", args=args,
                         active_since=time.time(), **kw)

    def add_bulk(self, n: int) -> float:
        """Register ``n`` more jobs, REGISTER_TXN per transaction; returns the seconds it took."""
        t0 = time.time()
        names = [f"j{len(self.jobs) + i:05d}" for i in range(n)]
        keys, store = self.cluster.keys, self.cluster.store
        for i in range(0, n, REGISTER_TXN):
            store.txn([], [st.put(keys.job(name), self.spec(name).to_json()) for name in names[i:i + REGISTER_TXN]])
        self.jobs += names
        return time.time() - t0

    def remove_bulk(self, n: int) -> float:
        """Delete the ``n`` newest jobs (their job keys, REGISTER_TXN per transaction)."""
        t0 = time.time()
        names, self.jobs = self.jobs[-n:], self.jobs[:-n]
        keys, store = self.cluster.keys, self.cluster.store
        for i in range(0, n, REGISTER_TXN):
            store.txn([], [st.delete(keys.job(name)) for name in names[i:i + REGISTER_TXN]])
        return time.time() - t0

    def add_one_by_one(self, n: int, parallel: int, on_added) -> float:
        """The issue's trial: ``etcdcron add`` per job (a process each), ``parallel`` at a time."""
        t0 = time.time()
        o = self.opts
        extra = ["--starting-deadline", str(o.starting_deadline)] if o.starting_deadline else []
        builtin_args = ["burn", "--arg", f"ms={o.burn_ms}"] if o.burn_ms else ["ledger"]

        def add(i: int) -> None:
            name = f"j{i:05d}"
            r = self.cluster.cli("add", "* * * * * *", *builtin_args, "--name", name,
                                 "--arg", f"path={self.cluster.ledger}", *extra)
            if r.returncode != 0:
                raise RuntimeError(f"etcdcron add failed: {r.stderr[-300:]}")
            on_added(name)

        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(add, range(len(self.jobs), len(self.jobs) + n)))
        return time.time() - t0

    def stop(self) -> dict[str, int]:
        codes = self.cluster.stop_nodes(STOP_WAIT, lambda nid, p: log(f"node {nid} ignored SIGTERM; killed"))
        self.cluster.close()
        self.etcd.stop()
        return codes


# --- sampling -------------------------------------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)')


def scrape(url: str, timeout: float = 2.0) -> dict[str, float] | None:
    """A Prometheus text page as {"name{labels}": value}; None when it did not answer in time."""
    try:
        text = urllib.request.urlopen(url, timeout=timeout).read().decode()
    except OSError:
        return None
    out = {}
    for line in text.splitlines():
        if line and line[0] != "#" and (m := _SAMPLE.match(line)):
            try:
                out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
            except ValueError:
                pass
    return out


def node_view(raw: dict[str, float] | None) -> dict | None:
    if raw is None:
        return None
    outcomes: Counter = Counter()
    for k, v in raw.items():
        if k.startswith("etcdcron_firings_total{"):
            outcomes[re.search(r'outcome="([^"]*)"', k).group(1)] += v
    return {"queue": raw.get("etcdcron_worker_queue_depth", 0.0), "running": raw.get("etcdcron_runs_running", 0.0),
            "watch": raw.get("etcdcron_watch_events_total", 0.0), "leader": raw.get("etcdcron_leader", 0.0),
            "rss": raw.get("process_resident_memory_bytes", 0.0), "outcomes": dict(outcomes),
            "claim_n": raw.get('etcdcron_txn_duration_seconds_count{op="claim"}', 0.0),
            "claim_s": raw.get('etcdcron_txn_duration_seconds_sum{op="claim"}', 0.0),
            "complete_n": raw.get('etcdcron_txn_duration_seconds_count{op="complete"}', 0.0),
            "complete_s": raw.get('etcdcron_txn_duration_seconds_sum{op="complete"}', 0.0)}


def etcd_view(raw: dict[str, float] | None) -> dict | None:
    if raw is None:
        return None
    txn = sum(v for k, v in raw.items() if k.startswith("grpc_server_handled_total{") and 'grpc_method="Txn"' in k)
    return {"txn": txn, "puts": raw.get("etcd_mvcc_put_total", 0.0), "deletes": raw.get("etcd_mvcc_delete_total", 0.0),
            "db": raw.get("etcd_mvcc_db_total_size_in_bytes", 0.0)}


class Sampler(threading.Thread):
    """Once a second (at mid-second, between the every-second bursts): every node's /metrics, etcd's
    /metrics, and the CPU seconds of every process."""

    def __init__(self, bench: Bench) -> None:
        super().__init__(name="sampler", daemon=True)
        self.bench, self.samples, self.stop_ev = bench, [], threading.Event()
        self.pool = ThreadPoolExecutor(len(bench.ports) + 1)

    def run(self) -> None:
        b = self.bench
        urls = {nid: f"http://127.0.0.1:{port}/metrics" for nid, port in b.ports.items()}
        urls["etcd"] = b.etcd.members[0].endpoint + "/metrics"
        while not self.stop_ev.is_set():
            t = time.time()
            nxt = math.floor(t) + 1.5 if t - math.floor(t) > 0.5 else math.floor(t) + 0.5
            if self.stop_ev.wait(nxt - t):
                return
            cpu = {k: cpu_seconds(p) for k, p in b.pids.items()}
            futs = {k: self.pool.submit(scrape, u, 2.5) for k, u in urls.items()}
            raw = {k: f.result() for k, f in futs.items()}
            self.samples.append({"t": nxt, "cpu": cpu, "jobs": len(b.jobs),
                                 "nodes": {k: node_view(v) for k, v in raw.items() if k != "etcd"},
                                 "etcd": etcd_view(raw["etcd"])})

    def stop(self) -> None:
        self.stop_ev.set()
        self.join(5)
        self.pool.shutdown(wait=False)


# --- profiling a node during overload ---------------------------------------------------------------


def pyspy() -> str | None:
    exe = Path(sys.executable).parent / "py-spy"
    return str(exe) if exe.exists() else shutil.which("py-spy")


class Profiler:
    """py-spy, non-blocking: ``record`` of one node for a few seconds (raw collapsed stacks), and
    ``dump`` of every node's threads at chosen moments."""

    def __init__(self, work: Path) -> None:
        self.exe, self.dir = pyspy(), work / "profile"
        self.dir.mkdir(exist_ok=True)
        self.procs: list[subprocess.Popen] = []
        self.dumps: list[tuple[str, float, str, str]] = []  # (label, t, node, text)
        self.records: list[tuple[str, str, Path]] = []

    def record(self, label: str, nid: str, pid: int, seconds: int) -> None:
        if not self.exe:
            return
        out = self.dir / f"{label}-{nid}.txt"
        self.procs.append(subprocess.Popen(
            [self.exe, "record", "--nonblocking", "--threads", "-r", "50", "-d", str(seconds), "-f", "raw",
             "-o", str(out), "--pid", str(pid)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        self.records.append((label, nid, out))

    def dump(self, label: str, pids: dict[str, int]) -> None:
        if not self.exe:
            return
        for nid, pid in pids.items():
            r = subprocess.run([self.exe, "dump", "--nonblocking", "--pid", str(pid)], capture_output=True, text=True,
                               timeout=30)
            self.dumps.append((label, time.time(), nid, r.stdout))
            (self.dir / f"dump-{label}-{nid}.txt").write_text(r.stdout + r.stderr)

    def wait(self) -> None:
        for p in self.procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def summarize_record(path: Path, top: int = 8) -> dict:
    """Collapsed stacks (``thread (tid): name;frame;…;leaf count``) -> samples per thread, and for the
    worker threads the share of each task path (the etcdcron frames under the pool's loop, e.g.
    ``fire_batch > _claim_batch > _skip > _record > record > txn``): what the pool spends its time on."""
    by_thread: Counter = Counter()
    paths: Counter = Counter()
    total = 0
    if not path.exists():
        return {"total": 0}
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        n = int(n)
        frames = stack.split(";")
        thread = re.sub(r"-\d+$", "-N", frames[0].split(": ", 1)[-1].strip())  # worker-3 -> worker-N
        total += n
        by_thread[thread] += n
        if thread == "worker-N":
            own = [f.split(" (")[0] for f in frames[1:] if "etcdcron/" in f and "workers.py" not in f]
            paths[" > ".join(own[:6]) or "(idle in the pool)"] += n
    return {"total": total, "threads": by_thread.most_common(), "worker_total": by_thread["worker-N"],
            "worker_paths": paths.most_common(top)}


def summarize_dumps(dumps: list[tuple[str, float, str, str]]) -> dict:
    """Per dump label: how many threads (of all nodes) were where, by thread kind, py-spy's active/idle
    flag, and the etcdcron frames of the stack (outermost first, the pool's own loop left out)."""
    out: dict[str, Counter] = defaultdict(Counter)
    for label, _, nid, text in dumps:
        for block in re.split(r"\n(?=Thread )", text):
            head, *frames = block.strip().splitlines() or [""]
            m = re.search(r'"([^"]+)"', head)
            if not m:
                continue
            thread = re.sub(r"-\d+$", "-N", m.group(1))
            state = "idle" if "(idle)" in head else "active"
            own = [f.strip().split(" (")[0] for f in reversed(frames) if "etcdcron/" in f and "workers.py" not in f]
            where = " > ".join(own[-7:]) or (frames[0].strip().split(" (")[0] if frames else "?")
            out[label][f"{thread} [{state}] {where}"] += 1
    return {k: v.most_common(12) for k, v in out.items()}


# --- analysis -------------------------------------------------------------------------------------


@dataclass
class Second:
    t: int  # wall second
    started: int = 0
    on_time: int = 0
    late: int = 0
    lags: list[float] = field(default_factory=list, repr=False)
    shed: float = 0.0  # firings recorded as not run, this second (all nodes)
    shed_by: dict = field(default_factory=dict)  # outcome -> firings this second
    queue: dict = field(default_factory=dict)  # node -> worker-pool queue depth
    cpu: dict = field(default_factory=dict)  # process -> % of a core
    watch: dict = field(default_factory=dict)  # node -> watch events/s
    claim_ms: dict = field(default_factory=dict)  # node -> mean claim round trip (ms)
    txn: float | None = None  # etcd Txn RPCs/s
    keys: float | None = None  # etcd key changes (puts + deletes)/s
    jobs: int = 0  # jobs registered (offered firings/s)

    def lag(self, p: float) -> float:
        return pct(sorted(self.lags), p)


def per_second(lines, samples: list[dict], t0: int, t1: int) -> list[Second]:
    first: dict[tuple[str, int], float] = {}
    for ln in lines:
        k = (ln.job, ln.slot)
        if k not in first or ln.at < first[k]:
            first[k] = ln.at
    secs = {t: Second(t) for t in range(t0, t1)}
    for (_, slot), at in first.items():
        s = secs.get(int(at))
        if s is None:
            continue
        lag = at - slot
        s.started += 1
        s.lags.append(lag)
        if lag <= ON_TIME:
            s.on_time += 1
        else:
            s.late += 1
    for a, b in zip(samples, samples[1:]):
        s = secs.get(int(b["t"]))
        if s is None:
            continue
        dt = b["t"] - a["t"]
        s.jobs = b["jobs"]
        for k in b["cpu"]:
            if a["cpu"].get(k) is not None and b["cpu"].get(k) is not None:
                s.cpu[k] = 100.0 * (b["cpu"][k] - a["cpu"][k]) / dt
        for nid, nb in b["nodes"].items():
            na = a["nodes"].get(nid)
            if nb is None:
                continue
            s.queue[nid] = nb["queue"]
            if na is None:
                continue
            s.watch[nid] = (nb["watch"] - na["watch"]) / dt
            for o in nb["outcomes"]:
                if o in NOT_RUN and (d := nb["outcomes"][o] - na["outcomes"].get(o, 0)):
                    s.shed += d
                    s.shed_by[o] = s.shed_by.get(o, 0) + d
            if nb["claim_n"] > na["claim_n"]:
                s.claim_ms[nid] = 1000 * (nb["claim_s"] - na["claim_s"]) / (nb["claim_n"] - na["claim_n"])
        if a["etcd"] and b["etcd"]:
            s.txn = (b["etcd"]["txn"] - a["etcd"]["txn"]) / dt
            s.keys = (b["etcd"]["puts"] + b["etcd"]["deletes"] - a["etcd"]["puts"] - a["etcd"]["deletes"]) / dt
    return [secs[t] for t in sorted(secs)]


def window(secs: list[Second], a: float, b: float) -> list[Second]:
    """The whole seconds inside [a, b)."""
    return [s for s in secs if a <= s.t and s.t + 1 <= b]


def phase_stats(secs: list[Second]) -> dict:
    lags = sorted(v for s in secs for v in s.lags)
    n = max(1, len(secs))
    return {"seconds": len(secs), "offered": sum(s.jobs for s in secs) / n, "started": sum(s.started for s in secs) / n,
            "goodput": sum(s.on_time for s in secs) / n, "late": sum(s.late for s in secs) / n,
            "shed": sum(s.shed for s in secs) / n, "p50": pct(lags, 50), "p99": pct(lags, 99),
            "max": lags[-1] if lags else float("nan"),
            "queue_max": max((sum(s.queue.values()) for s in secs), default=0),
            "txn": _mean([s.txn for s in secs if s.txn is not None]),
            "shed_by": {o: round(sum(s.shed_by.get(o, 0) for s in secs) / n, 1)
                        for o in sorted({o for s in secs for o in s.shed_by})},
            "cpu": {k: round(_mean([s.cpu[k] for s in secs if k in s.cpu]), 1)
                    for k in sorted({k for s in secs for k in s.cpu})}}


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def recovered_after(secs: list[Second], t_end: float) -> float | None:
    """Seconds from ``t_end`` until lag p99 stays under 1 s for every later measured second (a second
    with no run started while jobs are registered counts as not recovered); None if it never does."""
    after = [s for s in secs if s.t >= math.floor(t_end)]
    ok_from = None
    for s in after:
        good = s.started > 0 and s.lag(99) < ON_TIME
        if good and ok_from is None:
            ok_from = s.t
        elif not good:
            ok_from = None
    return None if ok_from is None else max(0.0, ok_from - t_end)


# --- the runs -------------------------------------------------------------------------------------


def find_capacity(opts, tmp: Path) -> tuple[float, list[dict]]:
    """A ramp on its own cluster: add ``--ramp-step`` jobs every ``--ramp-hold`` s; a step's on-time
    runs/s is measured over its last 3 whole seconds; stop at the first step where fewer than 90 % of
    the firings started within 1 s (or p99 > 1 s). C = the most on-time runs/s of any step."""
    b = Bench(tmp / "ramp", opts)
    steps: list[dict] = []
    try:
        b.start()
        log(f"ramp: {opts.nodes} nodes up")
        n = 0
        while n < opts.ramp_max:
            b.add_bulk(opts.ramp_step)
            n += opts.ramp_step
            t_reg = time.time()
            time.sleep(max(0.0, math.floor(t_reg) + opts.ramp_hold + 1 - time.time()))
            a = math.floor(time.time()) - 3
            secs = per_second(read_ledger(b.cluster.ledger), [], a, a + 3)
            got = sum(s.on_time for s in secs) / 3
            lags = sorted(v for s in secs for v in s.lags)
            p99 = pct(lags, 99)
            steps.append({"jobs": n, "on_time": got, "p99": p99})
            log(f"ramp: {n} jobs -> {got:.0f} on-time runs/s, p99 {p99:.2f} s")
            if got < 0.9 * n or not p99 < ON_TIME:
                break
    finally:
        b.stop()
    return max((s["on_time"] for s in steps), default=0.0), steps


def run(opts, tmp: Path, capacity: float) -> dict:
    b = Bench(tmp / "run", opts)
    sampler = profiler = None
    marks: dict[str, float] = {}
    notes: dict = {}
    try:
        b.start()
        notes["etcd_version"] = b.cluster.store.status()["version"]
        log(f"{opts.nodes} nodes up (workers {opts.workers}); etcd {notes['etcd_version']} at {b.etcd.endpoints}")
        profiler = Profiler(b.work) if opts.profile else None
        sampler = Sampler(b)
        sampler.start()
        if opts.trial == "add":
            marks["start"] = time.time()
            done = []

            def added(name: str) -> None:
                b.jobs.append(name)
                done.append(name)
                if len(done) == int(0.8 * opts.add_jobs) and profiler:  # late in the adds: the collapse
                    threading.Thread(target=_profile, args=(profiler, b, "adding"), daemon=True).start()

            log(f"adding {opts.add_jobs} jobs one by one with `etcdcron add`, {opts.add_parallel} at a time")
            notes["add_seconds"] = round(b.add_one_by_one(opts.add_jobs, opts.add_parallel, added), 1)
            marks["adds_end"] = time.time()
            log(f"adds done in {notes['add_seconds']} s; watching {opts.recovery} s")
            if profiler:
                threading.Timer(5.0, lambda: profiler.dump("after", _node_pids(b))).start()
            time.sleep(opts.recovery)
            marks["end"] = time.time()
        else:
            low, high = round(opts.low * capacity), round(opts.high * capacity)
            notes["jobs"] = {"low": low, "high": high}
            marks["start"] = time.time()
            notes["register_low_s"] = round(b.add_bulk(low), 2)
            log(f"{low} jobs registered in {notes['register_low_s']} s; warm-up {opts.warmup} s, steady {opts.steady} s")
            time.sleep(opts.warmup)
            marks["steady"] = time.time()
            time.sleep(opts.steady)
            marks["overload"] = time.time()
            notes["register_high_s"] = round(b.add_bulk(high - low), 2)
            log(f"overload: {high - low} more jobs registered in {notes['register_high_s']} s ({high} in all); "
                f"{opts.overload} s")
            if profiler:
                threading.Timer(max(1.0, opts.overload - 12.0),
                                lambda: _profile(profiler, b, "overload")).start()
            time.sleep(max(0.0, marks["overload"] + opts.overload - time.time()))
            marks["recovery"] = time.time()
            notes["remove_s"] = round(b.remove_bulk(high - low), 2)
            log(f"recovery: {high - low} jobs removed in {notes['remove_s']} s; {opts.recovery} s")
            if profiler:
                threading.Timer(5.0, lambda: profiler.dump("recovery+5s", _node_pids(b))).start()
            time.sleep(opts.recovery)
            marks["end"] = time.time()
        time.sleep(1.5)  # the last second's runs and samples
    finally:
        if sampler:
            sampler.stop()
        if profiler:
            profiler.wait()
        notes["exit_codes"] = b.stop()
        notes["loadavg"] = open("/proc/loadavg").read().split()[:3]
    lines = read_ledger(b.cluster.ledger)
    secs = per_second(lines, sampler.samples, math.floor(marks["start"]), math.ceil(marks["end"]))
    dup = Counter((ln.job, ln.slot) for ln in lines)
    notes["duplicates"] = sum(1 for v in dup.values() if v > 1)
    notes["events"] = node_events(b.work, list(b.cluster.procs))
    if profiler:
        notes["profile"] = {f"{label} {nid}": summarize_record(path) for label, nid, path in profiler.records}
        notes["dumps"] = summarize_dumps(profiler.dumps)
    notes["workdir"] = str(b.work)
    return {"marks": marks, "secs": secs, "notes": notes, "capacity": capacity}


def _node_pids(b: Bench) -> dict[str, int]:
    return {n: p.pid for n, p in b.cluster.procs.items()}


def _profile(profiler: Profiler, b: Bench, label: str) -> None:
    """A 10 s record of node n1, and a dump of every node's threads at its start and its end."""
    pids = _node_pids(b)
    nid = sorted(pids)[0]
    profiler.record(label, nid, pids[nid], 10)
    profiler.dump(f"{label}-a", pids)
    time.sleep(9)
    profiler.dump(f"{label}-b", pids)


def node_events(work: Path, nodes: list[str]) -> dict[str, dict[str, int]]:
    """How often each node logged each event (warnings and the firing.* kinds)."""
    out = {}
    for nid in nodes:
        c: Counter = Counter()
        path = work / f"{nid}.log"
        if path.exists():
            for raw in path.read_text(errors="replace").splitlines():
                try:
                    rec = json.loads(raw)
                except ValueError:
                    continue
                ev = rec.get("event", "?")
                c[ev] += int(rec.get("firings", 1)) if ev == "firings.missed" else 1
        out[nid] = dict(c.most_common())
    return out


# --- report ---------------------------------------------------------------------------------------


def summarize(res: dict, opts) -> dict:
    m, secs, c = res["marks"], res["secs"], res["capacity"]
    out: dict = {"capacity": c}
    if opts.trial == "add":
        phases = {"adding": (m["start"], m["adds_end"]), "after": (m["adds_end"], m["end"])}
        end_of_load = m["adds_end"]
    else:
        phases = {"steady": (m["steady"], m["overload"]), "overload": (m["overload"], m["recovery"]),
                  "recovery": (m["recovery"], m["end"])}
        end_of_load = m["recovery"]
    for name, (a, b) in phases.items():
        out[name] = phase_stats(window(secs, a, b))
    if "overload" in out:
        ov = out["overload"]
        out["goodput_ratio"] = ov["goodput"] / c if c else float("nan")
    out["recovered_s"] = recovered_after(secs, end_of_load)
    out["watch_s"] = round(m["end"] - end_of_load, 1)
    return out


def fmt(v: float, nd: int = 0) -> str:
    if v is None or v != v:
        return "-"
    return f"{v:,.{nd}f}"


def report_text(res: dict, summ: dict, opts) -> str:
    rows = [f"{'phase':<9} {'s':>3} {'offered/s':>9} {'started/s':>9} {'on time/s':>9} {'late/s':>7} "
            f"{'shed/s':>7} {'lag p50':>8} {'p99':>8} {'max':>8} {'queue max':>9} {'Txn/s':>7}"]
    for name in ("steady", "overload", "recovery", "adding", "after"):
        if name in summ:
            p = summ[name]
            rows.append(f"{name:<9} {p['seconds']:>3} {fmt(p['offered']):>9} {fmt(p['started']):>9} "
                        f"{fmt(p['goodput']):>9} {fmt(p['late']):>7} {fmt(p['shed']):>7} {fmt(p['p50'], 2):>8} "
                        f"{fmt(p['p99'], 2):>8} {fmt(p['max'], 2):>8} {fmt(p['queue_max']):>9} {fmt(p['txn']):>7}")
    for name in ("steady", "overload", "recovery", "adding", "after"):
        if name in summ:
            p = summ[name]
            rows.append(f"  {name}: CPU % of a core {p['cpu']}; not run by outcome /s {p['shed_by'] or '-'}")
    rec = summ["recovered_s"]
    rows.append(f"capacity C = {fmt(summ['capacity']) if summ['capacity'] else 'not measured'} runs/s; "
                + (f"goodput during overload = {fmt(summ['overload']['goodput'])}/s = "
                   f"{100 * summ['goodput_ratio']:.0f} % of C; max lag during overload {fmt(summ['overload']['max'], 1)} s; "
                   if "overload" in summ else "")
                + (f"back on time (p99 < 1 s) {rec:.1f} s after the load ended" if rec is not None
                   else f"NOT back on time within the {summ['watch_s']} s watched after the load ended"))
    rows.append(f"duplicates (same job and slot started twice): {res['notes']['duplicates']}")
    return "\n".join(rows)


def plot(res: dict, summ: dict, opts, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    secs, m = res["secs"], res["marks"]
    t0 = m.get("steady", m["start"])
    x = [s.t + 0.5 - t0 for s in secs]
    fig, (ax1, ax2, ax3) = plt.subplots(3, 1, figsize=(10, 8.5), sharex=True,
                                        gridspec_kw={"height_ratios": [3, 2.2, 1.4]})
    ax1.step(x, [s.jobs for s in secs], where="mid", color="0.6", ls="--", lw=1, label="offered (jobs registered)")
    ax1.plot(x, [s.started for s in secs], color="tab:blue", lw=1.2, label="runs started")
    ax1.plot(x, [s.on_time for s in secs], color="tab:green", lw=1.8, label="on time (lag ≤ 1 s): goodput")
    ax1.plot(x, [s.shed for s in secs], color="tab:red", lw=1.2, label="recorded not run (missed, skipped…)")
    c = res["capacity"]
    if c:
        ax1.axhline(c, color="k", ls=":", lw=1, label=f"capacity C = {c:,.0f}/s")
        ax1.axhline(0.9 * c, color="k", ls=":", lw=0.6, alpha=0.5)
    ax1.set_ylabel("firings / s")
    ax1.legend(loc="upper left", fontsize=8, ncol=2)
    ax2.plot(x, [s.lag(50) for s in secs], color="tab:blue", lw=1.2, label="lag p50")
    ax2.plot(x, [s.lag(99) for s in secs], color="tab:orange", lw=1.2, label="lag p99")
    ax2.plot(x, [max(s.lags) if s.lags else float("nan") for s in secs], color="tab:red", lw=0.8, alpha=0.6,
             label="lag max")
    ax2.axhline(ON_TIME, color="k", ls=":", lw=1)
    ax2.set_yscale("log")
    ax2.set_ylabel("lag of runs started\nthat second (s)")
    ax2.legend(loc="upper left", fontsize=8)
    nodes = sorted({n for s in secs for n in s.queue})
    for n in nodes:
        ax3.plot(x, [s.queue.get(n, float("nan")) for s in secs], lw=1, label=f"{n} worker-pool queue")
    ax3.set_ylabel("tasks queued")
    tw = ax3.twinx()
    tw.plot(x, [s.txn if s.txn is not None else float("nan") for s in secs], color="0.35", lw=1, ls="--",
            label="etcd Txn/s (right)")
    tw.set_ylabel("etcd Txn/s")
    tw.legend(loc="upper right", fontsize=8)
    ax3.set_xlabel(f"seconds since the {'steady phase' if 'steady' in m else 'start'}")
    ax3.legend(loc="upper left", fontsize=8, ncol=3)
    spans = ([("steady 0.5 C", "steady", "overload", "tab:green"), ("overload 2 C", "overload", "recovery", "tab:red"),
              ("recovery 0.5 C", "recovery", "end", "tab:blue")] if "steady" in m else
             [("adding jobs one by one", "start", "adds_end", "tab:red"), ("after the adds", "adds_end", "end", "tab:blue")])
    for label, a, b, col in spans:
        for ax in (ax1, ax2, ax3):
            ax.axvspan(m[a] - t0, m[b] - t0, color=col, alpha=0.06)
        ax1.text((m[a] + m[b]) / 2 - t0, 1.01, label, transform=ax1.get_xaxis_transform(), ha="center", fontsize=8)
    rec = summ["recovered_s"]
    title = ("etcdcron under overload: " + (f"goodput {100 * summ['goodput_ratio']:.0f} % of C during overload, "
                                            if "goodput_ratio" in summ else "")
             + (f"on time again {rec:.0f} s after" if rec is not None else f"not on time {summ['watch_s']:.0f} s after"))
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def markdown(res: dict, summ: dict, opts, command: str, code: str, mach: dict, png: Path | None,
             ramp: list[dict] | None) -> str:
    n = res["notes"]
    w: list[str] = []
    w.append("## Overload (bench/overload.py)\n")
    w.append(f"- Run: {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; `{command}`; code: {code}")
    w.append(f"- Machine: {mach['nproc']} CPUs, Python {mach['python']}, etcd {mach['etcd']}; load average "
             f"{' '.join(n.get('loadavg', []))} at the end (shared machine: figures vary)")
    job = f"`burn` ({opts.burn_ms:g} ms of CPU after the ledger line)" if opts.burn_ms else "`ledger`"
    w.append(f"- {opts.nodes} nodes (`--workers {opts.workers}`), one etcd; every job `* * * * * *` running {job}, "
             f"starting deadline {opts.starting_deadline or 'default (60 s)'}")
    steps = ", ".join(f"{s['jobs']} jobs: {s['on_time']:.0f}/s" for s in ramp or [])
    how = (f"measured by a ramp ({steps})" if ramp
           else "given (`--capacity`)" if opts.capacity else "not measured")
    w.append(f"- Capacity C = {summ['capacity']:,.0f} runs/s, {how}")
    if opts.trial == "add":
        w.append(f"- Trial: {opts.add_jobs} jobs added one by one with `etcdcron add`, {opts.add_parallel} at a time "
                 f"(took {n.get('add_seconds')} s), then {opts.recovery} s watched")
    else:
        j = n["jobs"]
        w.append(f"- Phases: {j['low']} jobs (0.5 C), {opts.steady} s after a {opts.warmup} s warm-up; "
                 f"+{j['high'] - j['low']} jobs registered in bulk in {n['register_high_s']} s ({j['high']}, 2 C) "
                 f"for {opts.overload} s; those removed in {n['remove_s']} s, {opts.recovery} s of recovery")
    w.append("- On time = started within 1 s of its instant; goodput = on-time runs per second; lag = start - "
             "instant, of the runs started in each second; *not run* = firings recorded missed/skipped/lost/… "
             "(the nodes' `etcdcron_firings_total`)\n")
    if png is not None:
        rel = os.path.relpath(png, ROOT / "docs") if str(png).startswith(str(ROOT)) else str(png)
        w.append(f"![runs per second and lag over time]({rel})\n")
    w.append("| phase | seconds | offered/s | started/s | on time/s | late/s | not run/s | lag p50 (s) | p99 (s) | "
             "max (s) | max worker queue (all nodes) | etcd Txn/s |")
    w.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in ("steady", "overload", "recovery", "adding", "after"):
        if name in summ:
            p = summ[name]
            w.append(f"| {name} | {p['seconds']} | {fmt(p['offered'])} | {fmt(p['started'])} | {fmt(p['goodput'])} | "
                     f"{fmt(p['late'])} | {fmt(p['shed'])} | {fmt(p['p50'], 2)} | {fmt(p['p99'], 2)} | "
                     f"{fmt(p['max'], 2)} | {fmt(p['queue_max'])} | {fmt(p['txn'])} |")
    w.append("")
    rec = summ["recovered_s"]
    goals = []
    if "goodput_ratio" in summ:
        r = summ["goodput_ratio"]
        goals.append(f"goodput during overload ≥ 90 % of C: **{'met' if r >= 0.9 else 'not met'}** "
                     f"({100 * r:.0f} %)")
        goals.append(f"lag bounded: max lag during overload {fmt(summ['overload']['max'], 1)} s")
    goals.append(f"back on time within 10 s after the overload: **{'met' if rec is not None and rec <= 10 else 'not met'}** ("
                 + (f"{rec:.1f} s" if rec is not None else f"not within the {summ['watch_s']} s watched") + ")")
    goals.append(f"duplicates: {n['duplicates']}")
    w.extend(f"- {g}" for g in goals)
    w.append("")
    for name in ("steady", "overload", "recovery", "adding", "after"):
        if name in summ:
            p = summ[name]
            cpu = ", ".join(f"{k} {v:.0f}" for k, v in p["cpu"].items())
            shed = ", ".join(f"{k} {v:g}" for k, v in p["shed_by"].items()) or "none"
            w.append(f"- {name}: CPU (% of one core) {cpu}; not run per second by outcome: {shed}")
    for k, v in n.get("profile", {}).items():
        if v.get("worker_total"):
            w.append(f"- py-spy record of node {k.split()[-1]} ({k.split()[0]}, 10 s, threads not idle): worker "
                     f"threads {100 * v['worker_total'] / v['total']:.0f} % of the samples; of theirs:")
            w.extend(f"    - {100 * c / v['worker_total']:.0f} % `{f}`" for f, c in v["worker_paths"][:5])
    w.append("")
    return "\n".join(w)


def write_section(path: Path, body: str) -> None:
    """Replace the text between the overload markers (appended at the end when absent: after the
    hand-kept interpretation of firing_lag.py, which keeps everything from there on)."""
    text = path.read_text() if path.exists() else ""
    block = f"{BEGIN}\n{body}\n{END}"
    if BEGIN in text and END in text:
        a, b = text.index(BEGIN), text.index(END) + len(END)
        text = text[:a] + block + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)


# --- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--workers", type=int, default=16, help="serve --workers (16: the default a new user gets)")
    ap.add_argument("--burn-ms", type=float, default=2.0, help="CPU ms per run (builtin burn); 0: the plain ledger job")
    ap.add_argument("--starting-deadline", type=float, default=0.0, help="jobs' --starting-deadline (0: the default)")
    ap.add_argument("--capacity", type=float, default=0.0, help="C in runs/s (default: measured first by a ramp)")
    ap.add_argument("--ramp-step", type=int, default=100, help="jobs added per ramp step")
    ap.add_argument("--ramp-hold", type=float, default=4.0, help="seconds per ramp step")
    ap.add_argument("--ramp-max", type=int, default=3000)
    ap.add_argument("--low", type=float, default=0.5, help="steady and recovery load, times C")
    ap.add_argument("--high", type=float, default=2.0, help="overload, times C")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--steady", type=float, default=20.0)
    ap.add_argument("--overload", type=float, default=35.0)
    ap.add_argument("--recovery", type=float, default=20.0)
    ap.add_argument("--trial", choices=("bulk", "add"), default="bulk",
                    help="add: the issue's trial, jobs added one by one with `etcdcron add` (slow: minutes)")
    ap.add_argument("--add-jobs", type=int, default=1000)
    ap.add_argument("--add-parallel", type=int, default=8)
    ap.add_argument("--no-profile", dest="profile", action="store_false",
                    help="no py-spy record/dump of the nodes during the overload")
    ap.add_argument("--png", default="docs/img/overload.png", help="plot here ('' for none)")
    ap.add_argument("--out", default="docs/benchmarks.md", help="write the overload section here ('' for none)")
    ap.add_argument("--json", dest="json_out", default="", help="per-second figures and notes as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (node logs, ledger, py-spy output)")
    opts = ap.parse_args(argv)
    command = "python bench/overload.py" + "".join(f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:]))
    tmp = Path(tempfile.mkdtemp(prefix="etcdcron-overload-"))
    code = describe_work_tree()
    log(f"measuring {code}; temp dir {tmp}")
    started = time.time()
    ramp = None
    try:
        if opts.capacity or opts.trial == "add":
            capacity = opts.capacity
        else:
            capacity, ramp = find_capacity(opts, tmp)
            log(f"capacity C = {capacity:.0f} runs/s")
        res = run(opts, tmp, capacity)
    finally:
        if not opts.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            log(f"kept {tmp}")
    summ = summarize(res, opts)
    print(f"\ncommand: {command}  ({time.time() - started:.0f} s)")
    print(report_text(res, summ, opts))
    n = res["notes"]
    print("\nnode events:", json.dumps(n["events"]))
    for k, v in n.get("profile", {}).items():
        print(f"\npy-spy record {k} (10 s, 50 Hz, threads not idle): {v.get('total', 0)} samples")
        for th, c in v.get("threads", [])[:8]:
            print(f"  thread {th:<22} {100 * c / max(1, v['total']):5.1f} %")
        print("  worker threads, by task path:")
        for f, c in v.get("worker_paths", []):
            print(f"    {100 * c / max(1, v['worker_total']):5.1f} %  {f}")
    for label, rows in n.get("dumps", {}).items():
        print(f"\npy-spy dump {label} (threads of all nodes: kind [py-spy state] etcdcron frames, outermost first):")
        for what, c in rows:
            print(f"  {c:3d}  {what}")
    png = None
    if opts.png:
        png = Path(opts.png) if Path(opts.png).is_absolute() else ROOT / opts.png
        plot(res, summ, opts, png)
        print(f"\nwrote {png}")
    if opts.out:
        out = Path(opts.out) if Path(opts.out).is_absolute() else ROOT / opts.out
        mach = machine(res["notes"].get("etcd_version"))
        write_section(out, markdown(res, summ, opts, command, code, mach, png, ramp))
        print(f"wrote {out}")
    if opts.json_out:
        Path(opts.json_out).write_text(json.dumps({
            "summary": summ, "marks": res["marks"], "notes": n,
            "seconds": [{**{k: v for k, v in s.__dict__.items() if k != "lags"}, "p50": s.lag(50), "p99": s.lag(99),
                         "max": max(s.lags) if s.lags else None} for s in res["secs"]]}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
