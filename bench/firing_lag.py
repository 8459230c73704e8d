#!/usr/bin/env python
"""Firing lag: etcdcron (N node processes on one etcd) against APScheduler 3 (one process).

    python bench/firing_lag.py [--rates 100,1000] [--nodes 3[,6]] [--seconds 20] [--warmup 5] [--out docs/benchmarks.md]

*Firing lag* = actual start of a run - its scheduled instant. For a rate R we register R jobs that
each fire every second (``* * * * * *``), so R firings are due at the top of every second.

etcdcron: a real etcd (one member, temp data dir, free loopback ports), ``--nodes`` processes
of ``cli.py serve`` (both started with ``etcdcron.testing``), R jobs running the builtin ``ledger`` job, which appends one JSON line per run
({job, slot, node, fence, attempt, start}) to a shared file. Lag = start - slot.

APScheduler 3: one process (this script re-run with a hidden flag), a ``BackgroundScheduler``, R
jobs with ``CronTrigger(second="*")``, a thread pool, coalesce off, a generous misfire grace. Each
run calls the very same ``ledger`` function, with the scheduled run time that APScheduler handed to
its executor for *that* run (a ``_do_submit_job`` hook), so a run that is late by more than a second
is still charged to the instant it was scheduled for.

Both measure ``start`` with ``time.time()`` inside the same function on the same machine. The two
systems run one after the other, never at the same time. After a warm-up, a window of
``--seconds`` whole-second slots is measured; firings of the window that have not started
``--drain`` seconds after the window's end count as not executed.

Cost per firing (issue 11): over the window's measured span (from half a second before its first
slot to half a second before the slot after its last: the quiet middle of a second, so each slot's
claims, made ahead, and its completions fall inside) the CPU seconds of every process (/proc, the
APScheduler child its own rusage) and, each node serving /metrics (``serve --http``), its
``etcdcron_watch_events_total`` and claim/completion round trips, scraped at both ends, plus etcd's
own /metrics. Divided by the *cluster firings* of the window (distinct firings of its slots that
ran) they give CPU per firing cluster-wide including etcd, beside APScheduler's, and each node's
watch events and CPU per cluster firing and per run of its own. ``--nodes 3,6`` runs the etcdcron
side once per node count at the same rate, so a node's cost can be seen to fall (or not) as nodes
are added.

Only loopback traffic; every process started here is stopped here, by its PID.
"""

from __future__ import annotations

import argparse
import importlib
import json
import math
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor as _Pool
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# The etcdcron code under test: the work tree, or a revision exported by --rev (children inherit it).
CODE = Path(os.environ.get("ETCDCRON_BENCH_CODE") or ROOT)
sys.path.insert(0, str(CODE))

# This process's etcdcron (the harness: etcdcron.testing, the admin client) is CODE's, imported now:
# --rev later exports another revision for the nodes to run, and the harness stays this one.
importlib.import_module("etcdcron")

CLK_TCK = os.sysconf("SC_CLK_TCK")
STOP_WAIT = 15.0  # seconds a node gets to stop after SIGTERM before it is killed


# --- measurements -------------------------------------------------------------------------------


def pct(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list (p in 0..100)."""
    if not sorted_values:
        return float("nan")
    k = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[k - 1]


@dataclass
class Result:
    system: str
    rate: int
    first: int  # first slot of the window
    last: int  # last slot of the window (inclusive)
    expected: int = 0
    executed: int = 0  # distinct (job, slot) of the window that started
    runs: int = 0  # runs of window slots (duplicates included)
    duplicates: int = 0  # (job, slot) started more than once
    lags_ms: list[float] = field(default_factory=list, repr=False)
    late_over_1s: int = 0
    retried: int = 0  # runs with attempt > 1 (recoveries)
    # p50 lag (ms) of the window's first slot and of its last slot that has runs (and which slot that is)
    trend: tuple[float, float, int] = (float("nan"), float("nan"), 0)
    throughput: float = 0.0  # runs (any slot) started per second of the window
    per_node: dict[str, int] = field(default_factory=dict)
    cpu: dict[str, float] = field(default_factory=dict)  # process -> % of one core over the window
    notes: dict = field(default_factory=dict)
    nodes: int = 1  # processes of the system (etcdcron: serve nodes, etcd not counted)
    cpu_s: dict[str, float] = field(default_factory=dict)  # process -> CPU seconds over the measured span
    span_s: float = 0.0  # length of the measured span (seconds of wall time)
    scraped: dict[str, dict[str, float]] = field(default_factory=dict)  # node -> its /metrics deltas over the span

    @property
    def label(self) -> str:
        return f"{self.system} ×{self.nodes}" if self.system == "etcdcron" else self.system

    def cost(self) -> dict:
        """Per-firing figures: CPU (ms) cluster-wide and per process, watch events per node."""
        n = max(1, self.executed)
        procs = {k: v for k, v in self.cpu_s.items() if k != "etcd"}
        per_node = {}
        for nid, cs in procs.items():
            own = self.per_node.get(nid, 0)
            m = self.scraped.get(nid, {})
            watch = m.get("watch_events")
            per_node[nid] = {
                "cpu_pct": self.cpu.get(nid), "own_runs": own,
                "cpu_ms_per_firing": 1000.0 * cs / n,
                "cpu_ms_per_own_run": 1000.0 * cs / own if own else None,
                "watch_events": watch,
                "watch_per_firing": watch / n if watch is not None else None,
                "watch_per_own_run": watch / own if watch is not None and own else None,
                "claim_txn": m.get("claim_txn"), "complete_txn": m.get("complete_txn"),
            }

        def mean(key: str):
            xs = [v[key] for v in per_node.values() if v[key] is not None]
            return sum(xs) / len(xs) if xs else None

        def most(key: str):
            xs = [v[key] for v in per_node.values() if v[key] is not None]
            return max(xs) if xs else None

        total = sum(self.cpu_s.values())
        ew = self.notes.get("etcd_window", {})
        changes = ew.get("etcd_mvcc_put_total", 0) + ew.get("etcd_mvcc_delete_total", 0)
        return {
            "firings": self.executed, "cpu_s_total": total,
            "cpu_ms_per_firing": 1000.0 * total / n if self.cpu_s else None,
            "cpu_ms_per_scheduled": 1000.0 * total / self.expected if self.cpu_s and self.expected else None,
            "etcd_cpu_ms_per_firing": 1000.0 * self.cpu_s["etcd"] / n if "etcd" in self.cpu_s else None,
            "firings_per_core_s": n / total if total else None,
            "txn_per_firing": ew["grpc_server_handled_total_txn"] / n if ew.get("grpc_server_handled_total_txn") else None,
            "key_changes_per_firing": changes / n if changes else None,
            "node_mean": {k: mean(k) for k in ("cpu_pct", "cpu_ms_per_firing", "cpu_ms_per_own_run",
                                               "watch_per_firing", "watch_per_own_run")},
            "node_max": {k: most(k) for k in ("cpu_pct", "cpu_ms_per_firing", "watch_per_firing")},
            "per_node": per_node,
        }

    def summary(self) -> dict:
        s = sorted(self.lags_ms)
        return {"p50": pct(s, 50), "p99": pct(s, 99), "max": s[-1] if s else float("nan"),
                "mean": sum(s) / len(s) if s else float("nan")}


def score(res: Result, lines: list, jobs: list[str]) -> Result:
    """Fill ``res`` from ledger lines (``etcdcron.testing.Line``): lag of every run whose slot lies in the window."""
    wanted = set(jobs)
    seen: Counter = Counter()
    first_start: dict[tuple[str, int], float] = {}
    per_node: Counter = Counter()
    started_in_window = 0
    for ln in lines:
        slot = ln.slot
        if res.first <= ln.at < res.last + 1:
            started_in_window += 1
        if not (res.first <= slot <= res.last) or ln.job not in wanted:
            continue
        ident = (ln.job, slot)
        seen[ident] += 1
        res.runs += 1
        res.retried += ln.attempt > 1
        per_node[ln.node] += 1
        if ident not in first_start or ln.at < first_start[ident]:
            first_start[ident] = ln.at
    res.expected = len(jobs) * (res.last - res.first + 1)
    res.executed = len(seen)
    res.duplicates = sum(1 for n in seen.values() if n > 1)
    res.lags_ms = [(start - slot) * 1000.0 for (_, slot), start in first_start.items()]
    res.late_over_1s = sum(1 for v in res.lags_ms if v > 1000.0)
    res.per_node = dict(sorted(per_node.items()))
    res.throughput = started_in_window / (res.last - res.first + 1)

    def p50_of(slot: int) -> float:
        return pct(sorted((s - slot) * 1000.0 for (_, sl), s in first_start.items() if sl == slot), 50)

    ran = {sl for (_, sl) in first_start}
    last_ran = max(ran) if ran else res.last
    res.trend = (p50_of(res.first), p50_of(last_ran), last_ran - res.first + 1)
    return res


def trend_text(r: Result) -> str:
    text = f"{_ms(r.trend[0])} -> {_ms(r.trend[1])}"
    n = r.last - r.first + 1
    return text if r.trend[2] == n else f"{text} (slot {r.trend[2]}/{n}: no later slot ran)"


def cpu_seconds(pid: int) -> float | None:
    """user+system CPU seconds of a process (and its reaped children are not counted)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK
    except (OSError, IndexError, ValueError):
        return None


def etcd_metrics(endpoint: str) -> dict[str, float]:
    """The counters we want from etcd's Prometheus endpoint (loopback)."""
    wanted = ('grpc_server_handled_total{grpc_code="OK",grpc_method="Txn"', "etcd_disk_wal_fsync_duration_seconds_sum",
              "etcd_disk_wal_fsync_duration_seconds_count", "etcd_mvcc_txn_total", "etcd_server_proposals_committed_total",
              "etcd_mvcc_put_total", "etcd_mvcc_delete_total")
    out: dict[str, float] = {}
    try:
        text = urllib.request.urlopen(endpoint + "/metrics", timeout=5).read().decode()
    except OSError:
        return out
    for line in text.splitlines():
        for w in wanted:
            if line.startswith(w):
                out[w.split("{")[0] + ("_txn" if "{" in w else "")] = float(line.rsplit(" ", 1)[1])
    return out


# A node's counters read at both ends of the span: (name in the report, Prometheus series).
NODE_SERIES = (("watch_events", "etcdcron_watch_events_total"), ("relists", "etcdcron_relists_total"),
               ("claim_txn", 'etcdcron_txn_duration_seconds_count{op="claim"}'),
               ("complete_txn", 'etcdcron_txn_duration_seconds_count{op="complete"}'))


def node_metrics(url: str, timeout: float = 3.0) -> dict[str, float] | None:
    """A node's counters (NODE_SERIES) from its Prometheus text page; None when it did not answer."""
    try:
        text = urllib.request.urlopen(url, timeout=timeout).read().decode()
    except OSError:
        return None
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("etcdcron_"):
            series, _, value = line.rpartition(" ")
            for name, want in NODE_SERIES:
                if series == want:
                    out[name] = float(value)
    return out


def snapshot(pids: dict[str, int], urls: dict[str, str], etcd_endpoint: str, pool: _Pool) -> tuple:
    """CPU seconds of every process, every node's counters and etcd's, read at (nearly) one instant."""
    futs = {k: pool.submit(node_metrics, u) for k, u in urls.items()}
    fut_etcd = pool.submit(etcd_metrics, etcd_endpoint)
    cpu, t = {k: cpu_seconds(v) for k, v in pids.items()}, time.monotonic()
    return cpu, t, {k: f.result() for k, f in futs.items()}, fut_etcd.result()


def sleep_until(t: float) -> None:
    while (d := t - time.time()) > 0:
        time.sleep(min(d, 0.5))


def window_after(t: float, warmup: float, seconds: int) -> tuple[int, int]:
    first = math.ceil(t + warmup)
    return first, first + seconds - 1


def wait_drained(path: Path, first: int, last: int, expected: int, drain: float) -> None:
    """After the window: wait until every firing of it has a ledger line, or ``drain`` seconds.

    Tails the builtin ledger's JSON lines itself rather than with ``etcdcron.testing``: it also runs in
    the APScheduler child, whose ``etcdcron`` is the code under test (with ``--rev`` a revision that
    may predate ``etcdcron.testing``)."""
    sleep_until(last + 1.0)
    end = time.time() + drain
    offset, got = 0, set()
    while True:
        if path.exists():
            with open(path, "rb") as f:
                f.seek(offset)
                chunk = f.read()
            cut = chunk.rfind(b"\n") + 1
            offset += cut
            for raw in chunk[:cut].splitlines():
                try:
                    ln = json.loads(raw)
                except ValueError:
                    continue
                if first <= ln["slot"] <= last:
                    got.add((ln["job"], ln["slot"]))
        if len(got) >= expected or time.time() >= end:
            return
        time.sleep(0.25)


# --- etcdcron -------------------------------------------------------------------------------------


def parse_node_log(path: Path, first: int, last: int) -> dict:
    """What a node said: counts of each event, its own lag at the start of each run (the `lag_ms` of
    `firing.finished`), warnings, and its final counters."""
    events: Counter = Counter()
    dispatch: list[float] = []
    warnings: Counter = Counter()
    samples: dict[str, str] = {}
    final: dict = {}
    for raw in path.read_text(errors="replace").splitlines():
        try:
            rec = json.loads(raw)
        except ValueError:
            if raw.strip():
                events["<non-json line>"] += 1
                samples.setdefault("<non-json line>", raw[:300])
            continue
        ev = rec.get("event", "?")
        events[ev] += 1
        if ev == "firing.finished" and first <= rec.get("slot", -1) <= last:
            dispatch.append(float(rec.get("lag_ms", 0.0)))
        if rec.get("level") in ("warning", "error", "critical"):
            warnings[ev] += 1
            samples.setdefault(ev, json.dumps(rec)[:300])
        if ev == "node.stopped":
            final = {k: v for k, v in rec.items() if k not in ("event", "level", "timestamp")}
    dispatch.sort()
    return {"events": dict(events), "warnings": dict(warnings), "samples": samples, "stopped": final,
            "dispatch_ms": {"n": len(dispatch), "p50": pct(dispatch, 50), "p99": pct(dispatch, 99),
                            "max": dispatch[-1] if dispatch else float("nan")}}


def run_etcdcron(rate: int, n_nodes: int, opts, tmp: Path) -> Result:
    from etcdcron.embedded import free_port
    from etcdcron.testing import Cluster, EtcdCluster, read_ledger

    work = tmp / f"etcdcron-{rate}-{n_nodes}"
    work.mkdir(parents=True)
    prefix = f"/bench-{rate}-{n_nodes}"
    tag = f"[etcdcron {rate}/s, {n_nodes} nodes]"
    log(f"{tag} starting etcd")
    etcd = EtcdCluster(work / "etcd", size=1).start()
    cluster = None
    scraper = _Pool(n_nodes + 2)
    try:
        cluster = Cluster(etcd.endpoints, prefix, work, code=CODE)
        store, ledger, procs = cluster.store, cluster.ledger, cluster.procs
        etcd_version = store.status()["version"]
        ids = [f"b{i + 1}" for i in range(n_nodes)]
        urls: dict[str, str] = {}
        for nid in ids:  # each its own /metrics port (serve --http), scraped at both ends of the window
            http = ()
            if opts.scrape:
                port = free_port()
                urls[nid] = f"http://127.0.0.1:{port}/metrics"
                http = ("--http", f"127.0.0.1:{port}")
            cluster.start(nid, "--workers", str(opts.workers), *http, ttl=None, grace=5)
        deadline = time.time() + 30
        while set(ids) - cluster.live():
            if time.time() > deadline or any(p.poll() is not None for p in procs.values()):
                raise RuntimeError(f"{tag} nodes did not register; logs in {work}")
            time.sleep(0.2)
        log(f"{tag} {len(ids)} nodes up; registering {rate} jobs")

        jobs = [f"j{i:04d}" for i in range(1, rate + 1)]
        t_reg = time.time()

        def register(name: str) -> None:
            cluster.admin.put_job(cluster.ledger_spec(name, "* * * * * *", active_since=time.time()))

        with _Pool(8) as pool:
            list(pool.map(register, jobs))
        reg_seconds = time.time() - t_reg
        first, last = window_after(time.time(), opts.warmup, opts.seconds)
        res = Result("etcdcron", rate, first, last, nodes=n_nodes)
        log(f"{tag} jobs registered in {reg_seconds:.1f}s; warm-up, then window "
            f"{_hms(first)}..{_hms(last)} ({opts.seconds} slots)")

        member = etcd.members[0]
        pids = {**{nid: p.pid for nid, p in procs.items()}, "etcd": member.proc.pid}
        sleep_until(first - 0.5)
        cpu0, t0, n0, m0 = snapshot(pids, urls, member.endpoint, scraper)
        sleep_until(last + 0.5)
        cpu1, t1, n1, m1 = snapshot(pids, urls, member.endpoint, scraper)
        load = open("/proc/loadavg").read().split()[:3]
        wait_drained(ledger, first, last, rate * opts.seconds, opts.drain)
        res.span_s = t1 - t0
        for k in pids:
            if cpu0[k] is not None and cpu1[k] is not None:
                res.cpu_s[k] = cpu1[k] - cpu0[k]
                res.cpu[k] = round(100.0 * res.cpu_s[k] / res.span_s, 1)
        for nid in urls:
            if n0.get(nid) is not None and n1.get(nid) is not None:
                res.scraped[nid] = {k: n1[nid][k] - n0[nid].get(k, 0.0) for k in n1[nid]}
        claims_total = store.count_prefix(cluster.keys.claims())
        status = store.status()
    finally:
        scraper.shutdown(wait=False)
        stop_started = time.monotonic()
        ignored_sigterm = []

        def on_kill(nid: str, p: subprocess.Popen) -> None:
            log(f"{tag} node {nid} (pid {p.pid}) still running {STOP_WAIT:g}s after SIGTERM; "
                f"killing it (SIGKILL)")
            ignored_sigterm.append(nid)

        exit_codes = cluster.stop_nodes(STOP_WAIT, on_kill) if cluster is not None else {}
        stop_seconds = time.monotonic() - stop_started
        if cluster is not None:
            cluster.close()
        etcd.stop()

    score(res, read_ledger(ledger), jobs)
    nodes = {nid: parse_node_log(work / f"{nid}.log", first, last) for nid in procs}
    res.notes = {
        "etcd_version": etcd_version, "register_seconds": round(reg_seconds, 2),
        "stop_seconds": round(stop_seconds, 2), "loadavg": load, "nodes": nodes,
        "exit_codes": exit_codes, "ignored_sigterm": ignored_sigterm,
        "etcd_window": {k: round(m1[k] - m0.get(k, 0.0), 3) for k in m1},
        "claims_in_etcd_at_end": claims_total, "etcd_revision_at_end": status["revision"],
        "etcd_db_bytes": status["db_size"], "workdir": str(work),
    }
    return res


# --- APScheduler ----------------------------------------------------------------------------------


def run_apscheduler(rate: int, opts, tmp: Path) -> Result:
    """Run the APScheduler side in a fresh interpreter (this script with ``--apscheduler-child``)."""
    work = tmp / f"apscheduler-{rate}"
    work.mkdir(parents=True)
    ledger = work / "ledger.jsonl"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--apscheduler-child", str(rate),
           "--seconds", str(opts.seconds), "--warmup", str(opts.warmup), "--drain", str(opts.drain),
           "--aps-workers", str(opts.aps_workers), "--ledger", str(ledger)]
    log(f"[APScheduler {rate}/s] starting one process with {rate} jobs")
    env = dict(os.environ, ETCDCRON_BENCH_CODE=str(CODE), PYTHONPATH=str(CODE))
    with open(work / "child.log", "wb") as errf:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errf, text=True, cwd=str(ROOT), env=env)
    try:
        out, _ = proc.communicate(timeout=opts.warmup + opts.seconds + opts.drain + 120)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"APScheduler child timed out; log in {work / 'child.log'}")
    if proc.returncode != 0:
        raise RuntimeError(f"APScheduler child failed ({proc.returncode}): "
                           f"{(work / 'child.log').read_text(errors='replace')[-800:]}")
    from etcdcron.testing import read_ledger

    info = json.loads(out.strip().splitlines()[-1])
    res = Result("APScheduler", rate, info["first"], info["last"])
    score(res, read_ledger(ledger), info["jobs"])
    res.cpu = {"apscheduler": info["cpu_pct"]}
    if "cpu_s" in info:
        res.cpu_s, res.span_s = {"apscheduler": info["cpu_s"]}, info["span_s"]
    res.notes = {k: v for k, v in info.items() if k not in ("jobs", "first", "last", "cpu_pct", "cpu_s", "span_s")}
    res.notes["workdir"] = str(work)
    return res


def apscheduler_child(rate: int, opts) -> int:
    import apscheduler
    from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
    from apscheduler.executors.base import run_job
    from apscheduler.executors.pool import ThreadPoolExecutor
    from apscheduler.schedulers.background import BackgroundScheduler
    from apscheduler.triggers.cron import CronTrigger

    from etcdcron.builtins import ledger
    from etcdcron.executor import RunContext

    current = threading.local()

    class StampingExecutor(ThreadPoolExecutor):
        """APScheduler's pool executor, except that each run time is handed to the job function
        (through a thread-local), so its lag is measured against the instant it was scheduled for,
        also when one submission carries several run times (coalesce off, scheduler behind)."""

        def _do_submit_job(self, job, run_times):
            def callback(f):
                exc = f.exception()
                if exc:
                    self._run_job_error(job.id, exc, exc.__traceback__)
                else:
                    self._run_job_success(job.id, f.result())

            f = self._pool.submit(run_stamped, job, job._jobstore_alias, run_times, self._logger.name)
            f.add_done_callback(callback)

    def run_stamped(job, alias, run_times, logger_name):
        events = []
        for run_time in run_times:  # APScheduler's own run_job, one run time at a time
            current.run_time = run_time
            events += run_job(job, alias, [run_time], logger_name)
        return events

    path = opts.ledger

    def fire(name: str) -> None:
        slot = int(current.run_time.timestamp())
        ledger(RunContext(name, slot, "apscheduler", 0, 1, {"path": path}))

    dropped: Counter = Counter()

    def on_event(ev) -> None:
        dropped[{EVENT_JOB_MISSED: "missed", EVENT_JOB_MAX_INSTANCES: "max_instances",
                 EVENT_JOB_ERROR: "error"}.get(ev.code, str(ev.code))] += 1

    sched = BackgroundScheduler(
        executors={"default": StampingExecutor(opts.aps_workers)},
        job_defaults={"coalesce": False, "misfire_grace_time": 3600, "max_instances": 100},
        timezone=timezone.utc,
    )
    sched.add_listener(on_event, EVENT_JOB_MISSED | EVENT_JOB_MAX_INSTANCES | EVENT_JOB_ERROR)
    jobs = [f"j{i:04d}" for i in range(1, rate + 1)]
    for name in jobs:
        sched.add_job(fire, CronTrigger(second="*", timezone=timezone.utc), args=[name], id=name, name=name)
    sched.start()
    first, last = window_after(time.time(), opts.warmup, opts.seconds)
    sleep_until(first - 0.5)  # the same span as the etcdcron side's: the quiet middle of a second
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    sleep_until(last + 0.5)
    r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    wait_drained(Path(path), first, last, rate * opts.seconds, opts.drain)
    sched.shutdown(wait=False)
    cpu_s = r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime
    cpu = cpu_s / (t1 - t0) * 100.0
    print(json.dumps({"first": first, "last": last, "jobs": jobs, "cpu_pct": round(cpu, 1),
                      "cpu_s": cpu_s, "span_s": t1 - t0,
                      "apscheduler_version": apscheduler.__version__, "workers": opts.aps_workers,
                      "dropped_events": dict(dropped),
                      "loadavg": open("/proc/loadavg").read().split()[:3]}), flush=True)
    return 0


# --- report ---------------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _hms(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%H:%M:%S")


def _ms(v: float) -> str:
    if v != v:
        return "-"
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.1f}"


LOADAVG_AT_START = open("/proc/loadavg").read().split()[:3] if os.path.exists("/proc/loadavg") else ["?"]


def machine(etcd_version: str | None) -> dict:
    model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import apscheduler
        aps = apscheduler.__version__
    except ImportError:
        aps = "not installed"
    return {"nproc": len(os.sched_getaffinity(0)), "cpu": model, "python": platform.python_version(),
            "os": f"{platform.system()} {platform.release()}", "etcd": etcd_version or "?", "apscheduler": aps,
            "loadavg": " ".join(LOADAVG_AT_START),
            "mem_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)}


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()


def use_revision(rev: str, tmp: Path) -> str:
    """Export ``rev`` of the repository (git archive) and make it the code under test."""
    global CODE
    sha = git("rev-parse", "--verify", f"{rev}^{{commit}}")
    dest = tmp / f"src-{sha[:10]}"
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", sha], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    CODE = dest
    os.environ["ETCDCRON_BENCH_CODE"] = str(dest)
    sys.path.insert(0, str(dest))
    return f"git revision `{sha[:12]}` ({git('log', '-1', '--format=%s', sha)[:80]}), exported with `git archive`"


def describe_work_tree() -> str:
    try:
        sha = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--", "etcdcron", "cli.py", "pyproject.toml")
    except (OSError, subprocess.CalledProcessError):
        return f"the work tree at {ROOT} (not a git checkout)"
    state = f"with uncommitted changes to {len(dirty.splitlines())} package files" if dirty else "clean"
    return f"the work tree at `{sha[:12]}`, {state}"


def table(results: list[Result]) -> str:
    head = (f"{'rate/s':>7}  {'system':<12} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  "
            f"{'executed/expected':>19} {'>1s late':>8} {'dups':>5} {'runs/s':>7}  "
            f"{'p50 first->last slot':>21}  share by node")
    rows = [head, "-" * len(head)]
    for r in results:
        s = r.summary()
        share = ", ".join(f"{n} {100.0 * c / max(1, r.runs):.0f}%" for n, c in r.per_node.items())
        trend = trend_text(r).split(" (")[0]
        rows.append(f"{r.rate:>7}  {r.label:<12} {_ms(s['p50']):>8} {_ms(s['p99']):>8} {_ms(s['max']):>8}  "
                    f"{f'{r.executed}/{r.expected}':>19} {r.late_over_1s:>8} {r.duplicates:>5} {r.throughput:>7.0f}  "
                    f"{trend:>21}  {share}")
    return "\n".join(rows)


def _f(v, fmt: str = ".2f", none: str = "-") -> str:
    return none if v is None or v != v else format(v, fmt)


def _ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


def baseline(results: list[Result], rate: int) -> Result | None:
    return next((r for r in results if r.rate == rate and r.system == "APScheduler"), None)


def cost_table(results: list[Result]) -> str:
    """Per-firing cost of every run, side by side (the console's second table)."""
    head = (f"{'rate/s':>7}  {'system':<12} {'CPU ms/firing':>13} {'vs APS':>7} {'etcd ms':>7} {'Txn/f':>6} "
            f"{'keys/f':>6}  {'node: watch/f':>13} {'CPU %':>6} {'ms/own run':>10} {'ms/firing':>9}")
    rows = [head, "-" * len(head)]
    for r in results:
        c, ap = r.cost(), baseline(results, r.rate)
        vs = _ratio(c["cpu_ms_per_firing"], ap.cost()["cpu_ms_per_firing"]) if ap and r is not ap else None
        m = c["node_mean"]
        node = (f"{_f(m['watch_per_firing']):>13} {_f(m['cpu_pct'], '.1f'):>6} {_f(m['cpu_ms_per_own_run'], '.3f'):>10} "
                f"{_f(m['cpu_ms_per_firing'], '.3f'):>9}") if r.system == "etcdcron" else ""
        rows.append(f"{r.rate:>7}  {r.label:<12} {_f(c['cpu_ms_per_firing'], '.3f'):>13} "
                    f"{_f(vs, '.1f') + 'x' if vs else '':>7} {_f(c['etcd_cpu_ms_per_firing'], '.3f'):>7} "
                    f"{_f(c['txn_per_firing'], '.3f'):>6} {_f(c['key_changes_per_firing']):>6}  {node}")
    return "\n".join(rows)


def scaling_rows(results: list[Result], rate: int) -> list[tuple[Result, dict]]:
    return [(r, r.cost()) for r in sorted((r for r in results if r.rate == rate and r.system == "etcdcron"),
                                          key=lambda r: r.nodes)]


SCALING_HEAD = ("nodes", "per-node watch events per firing", "per-node CPU %", "per-node CPU-ms per cluster firing",
                "per-node CPU-ms per own run", "cluster CPU incl. etcd per firing (ms)", "lag p99 (ms)",
                "executed / expected")


def scaling_cells(r: Result, c: dict) -> list[str]:
    m, x = c["node_mean"], c["node_max"]
    return [str(r.nodes), f"{_f(m['watch_per_firing'])} (max {_f(x['watch_per_firing'])})",
            f"{_f(m['cpu_pct'], '.1f')} (max {_f(x['cpu_pct'], '.1f')})",
            f"{_f(m['cpu_ms_per_firing'], '.3f')} (max {_f(x['cpu_ms_per_firing'], '.3f')})",
            _f(m["cpu_ms_per_own_run"], ".3f"), _f(c["cpu_ms_per_firing"], ".3f"), _ms(r.summary()["p99"]),
            f"{r.executed:,} / {r.expected:,}"]


def scaling_trend(rows: list[tuple[Result, dict]]) -> str:
    """How a node's cost moved from the fewest to the most nodes, against what its share predicts."""
    (a, ca), (b, cb) = rows[0], rows[-1]
    share = a.nodes / b.nodes
    parts = []
    for key, what in (("cpu_ms_per_firing", "CPU per cluster firing"), ("watch_per_firing", "watch events per firing")):
        va, vb = ca["node_mean"][key], cb["node_mean"][key]
        if va and vb is not None:
            parts.append(f"{what} x{vb / va:.2f}")
    return (f"from {a.nodes} to {b.nodes} nodes a node's {', '.join(parts) or 'cost: not measured'} "
            f"(its share of the firings x{share:.2f})")


def verdict(ours: Result, theirs: Result) -> str:
    a, b = ours.summary(), theirs.summary()
    complete = ours.executed == ours.expected and ours.duplicates == 0
    if a["p99"] <= b["p99"] and complete:
        return (f"**met**: etcdcron p99 {_ms(a['p99'])} ms <= APScheduler p99 {_ms(b['p99'])} ms, "
                f"with every firing run exactly once")
    why = []
    if a["p99"] > b["p99"]:
        why.append(f"etcdcron p99 {_ms(a['p99'])} ms > APScheduler p99 {_ms(b['p99'])} ms "
                   f"({a['p99'] / b['p99']:.1f}x)" if b["p99"] > 0 else "etcdcron p99 is higher")
    if ours.executed != ours.expected:
        why.append(f"etcdcron ran {ours.executed} of {ours.expected} firings in time")
    if ours.duplicates:
        why.append(f"{ours.duplicates} duplicate runs")
    return "**not met**: " + "; ".join(why)


CPU_GOAL = 2.0  # CPU per firing, cluster-wide incl. etcd, at most this many times APScheduler's
WATCH_GOAL = 1.0  # watch events per node per firing at 3 nodes
SUSTAINED_P99_MS = 1000.0


def cpu_verdict(ours: Result, theirs: Result) -> str:
    a, b = ours.cost()["cpu_ms_per_firing"], theirs.cost()["cpu_ms_per_firing"]
    if a is None or not b:
        return "not measured"
    met = "**met**" if a <= CPU_GOAL * b else "**not met**"
    return f"{met}: {a:.3f} ms against APScheduler's {b:.3f} ms ({a / b:.1f}x; goal <= {CPU_GOAL:g}x)"


def watch_verdict(r: Result) -> str:
    m, x = r.cost()["node_mean"]["watch_per_firing"], r.cost()["node_max"]["watch_per_firing"]
    if m is None:
        return "not measured (no node /metrics)"
    met = "**met**" if x <= WATCH_GOAL else "**not met**"
    return f"{met}: {m:.2f} per node on average, {x:.2f} at most (goal <= {WATCH_GOAL:g})"


def sustained_verdict(r: Result) -> str:
    """The sustained-rate check: every firing once, p99 < 1 s; and what one core-second buys."""
    p99 = r.summary()["p99"]
    missed = r.expected - r.executed
    ok = missed == 0 and r.duplicates == 0 and p99 < SUSTAINED_P99_MS
    c = r.cost()
    per_core = c["firings_per_core_s"]
    text = (f"{'**sustained**' if ok else '**not sustained**'} ({missed} missed, {r.duplicates} duplicates, "
            f"p99 {_ms(p99)} ms, goal 0 / 0 / < {SUSTAINED_P99_MS:,.0f} ms)")
    cores = sum(r.cpu.values()) / 100
    if per_core and ok:
        text += (f"; CPU per firing incl. etcd {c['cpu_ms_per_firing']:.3f} ms, i.e. {per_core:,.0f} firings per "
                 f"core-second (all {r.nodes} nodes and etcd used {cores:.2f} cores)")
    elif per_core:  # the firings that ran are not the work done: skipped/missed ones cost too
        text += (f"; no per-core figure (not sustained): all {r.nodes} nodes and etcd used {cores:.2f} cores, "
                 f"{c['cpu_ms_per_scheduled']:.3f} ms per scheduled firing, {c['cpu_ms_per_firing']:.3f} ms per "
                 f"firing that ran")
    return text


def summary_lines(results: list[Result], node_counts: list[int]) -> list[str]:
    """One line per rate and node count: the issue's goals, with the ratios to APScheduler."""
    out = []
    for rate in sorted({r.rate for r in results}):
        ap = baseline(results, rate)
        for r, c in scaling_rows(results, rate):
            head = f"{rate}/s" if len(node_counts) == 1 else f"{rate}/s, {r.nodes} nodes"
            if ap is not None:
                out.append(f"{head}: {verdict(r, ap).replace('**', '')}")
                out.append(f"{head}: CPU per firing incl. etcd {cpu_verdict(r, ap).replace('**', '')}")
            else:
                out.append(f"{head}: {sustained_verdict(r).replace('**', '')}")
            if r.nodes == 3:
                out.append(f"{head}: watch events per node per firing {watch_verdict(r).replace('**', '')}")
        rows = scaling_rows(results, rate)
        if len(rows) > 1:
            out.append(f"{rate}/s: {scaling_trend(rows)}")
    return out


def markdown(results: list[Result], opts, command: str, mach: dict, started: float, elapsed: float,
             code: str) -> str:
    out = []
    w = out.append
    node_counts = ", ".join(str(n) for n in opts.node_counts)
    w("# Benchmarks: firing lag\n")
    w("*Firing lag* = the moment a run actually starts - the instant it was scheduled for. "
      "Measured by `bench/firing_lag.py`; this page is written by that script (the interpretation "
      "section at the end is kept by hand, see below).\n")
    w("## Set-up\n")
    w(f"- Run: {datetime.fromtimestamp(started, timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, "
      f"took {elapsed:.0f} s")
    w(f"- Machine: {mach['nproc']} CPUs ({mach['cpu']}), {mach['mem_gb']} GB RAM, {mach['os']}; "
      f"shared with other work (load average {mach['loadavg']} when the run began), so figures vary "
      f"from run to run")
    w(f"- Python {mach['python']}, etcd {mach['etcd']} (single member, embedded, loopback), "
      f"APScheduler {mach['apscheduler']}")
    w(f"- Command: `{command}`")
    w(f"- etcdcron code measured: {code}")
    w(f"- Load: for a rate R, R jobs each firing every second (`* * * * * *`), so R firings fall due at "
      f"the top of every second. Warm-up {opts.warmup:g} s, then a window of {opts.seconds} whole-second "
      f"slots; a firing of the window that has not started {opts.drain:g} s after the window's end counts "
      f"as not executed. Lag percentiles are over the firings that did start: when firings are missing, "
      f"the percentiles flatter the system, read them with the executed column.")
    w(f"- etcdcron: {node_counts} `etcdcron serve` processes (`--workers {opts.workers}`, one run per node "
      f"count; *etcdcron ×N* is the run with N nodes) on one etcd, jobs run the builtin `ledger` job (one JSON "
      f"line per run with its slot, node, fence and `start = time.time()`), default logging (JSON lines, info)"
      + (", each node serving /metrics (`--http`)." if opts.scrape else "."))
    w(f"- APScheduler: one process, `BackgroundScheduler`, `CronTrigger(second='*')`, thread pool of "
      f"{opts.aps_workers}, `coalesce=False`, `misfire_grace_time=3600`, `max_instances=100`, "
      f"default in-memory job store. Each run calls the same `ledger` function; the scheduled time "
      f"of each run is taken from the run times APScheduler hands its executor (`_do_submit_job`), "
      f"so a run more than 1 s late is not mistaken for the next second's.")
    w("- The systems run one after the other (etcdcron first, then APScheduler), never at the same time.")
    w("- Cost: CPU seconds of every process (etcdcron nodes and etcd from /proc, APScheduler its own "
      "rusage) and every node's `etcdcron_watch_events_total` and claim/completion round trips (its "
      "/metrics) are read half a second before the window's first slot and half a second before the "
      "slot after its last (the quiet middle of a second: each slot's claims, made ahead, and its "
      "completions fall inside). *Per firing* divides by the window's cluster firings (distinct firings "
      "of its slots that ran, the executed column); *per own run* by the runs of those slots the node "
      "started. *CPU per firing incl. etcd* is all processes of the system together.\n")
    w("## Results\n")
    for rate in sorted({r.rate for r in results}):
        rs = sorted((r for r in results if r.rate == rate), key=lambda r: (r.system != "etcdcron", r.nodes))
        ap = baseline(results, rate)
        w(f"### {rate:,} firings per second\n")
        w("| | p50 lag (ms) | p99 lag (ms) | max lag (ms) | executed / expected | started > 1 s late | "
          "duplicates | runs started per s | p50 lag of first -> last slot (ms) | runs per node | "
          "CPU during window (% of one core) |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---|---|---|")
        for r in rs:
            s = r.summary()
            share = ", ".join(f"{n} {c} ({100.0 * c / max(1, r.runs):.0f}%)" for n, c in r.per_node.items())
            cpu = ", ".join(f"{k} {v:.0f}" for k, v in r.cpu.items())
            w(f"| {r.label} | {_ms(s['p50'])} | {_ms(s['p99'])} | {_ms(s['max'])} | "
              f"{r.executed:,} / {r.expected:,} | {r.late_over_1s:,} | {r.duplicates} | {r.throughput:,.0f} | "
              f"{trend_text(r)} | {share} | {cpu} |")
        w("")
        w("Cost per firing (means over the nodes):\n")
        w("| | CPU per firing, all processes incl. etcd (ms) | vs APScheduler | of which etcd (ms) | "
          "etcd Txn per firing | etcd key changes per firing | watch events per node per firing | "
          "node CPU (% of one core) | node CPU-ms per own run | node CPU-ms per cluster firing |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rs:
            c, m = r.cost(), r.cost()["node_mean"]
            vs = _ratio(c["cpu_ms_per_firing"], ap.cost()["cpu_ms_per_firing"]) if ap and r is not ap else None
            ec = r.system == "etcdcron"
            w(f"| {r.label} | {_f(c['cpu_ms_per_firing'], '.3f')} | {_f(vs, '.1f') + '×' if vs else ''} | "
              f"{_f(c['etcd_cpu_ms_per_firing'], '.3f')} | {_f(c['txn_per_firing'], '.3f')} | "
              f"{_f(c['key_changes_per_firing'])} | {_f(m['watch_per_firing']) if ec else ''} | "
              f"{_f(m['cpu_pct'], '.1f') if ec else ''} | {_f(m['cpu_ms_per_own_run'], '.3f') if ec else ''} | "
              f"{_f(m['cpu_ms_per_firing'], '.3f') if ec else ''} |")
        w("")
        for ec in (r for r in rs if r.system == "etcdcron"):
            w(f"etcdcron details ({ec.nodes} nodes):\n")
            cost = ec.cost()["per_node"]
            for nid, info in ec.notes.get("nodes", {}).items():
                d = info["dispatch_ms"]
                warn = ", ".join(f"{k} x{v}" for k, v in info["warnings"].items()) or "none"
                stats = ", ".join(f"{k} {v}" for k, v in info["stopped"].items() if k != "node") or "(no node.stopped line)"
                c = cost.get(nid)
                spent = ""
                if c is not None:
                    spent = (f"; CPU {_f(c['cpu_pct'], '.1f')} % of a core, {_f(c['cpu_ms_per_own_run'], '.3f')} ms "
                             f"per own run, {_f(c['cpu_ms_per_firing'], '.3f')} ms per cluster firing")
                    if c["watch_events"] is not None:
                        spent += (f"; watch events {c['watch_events']:,.0f} ({_f(c['watch_per_firing'])} per cluster "
                                  f"firing, {_f(c['watch_per_own_run'])} per own run); round trips: claim "
                                  f"{_f(c['claim_txn'], ',.0f')}, completion {_f(c['complete_txn'], ',.0f')}")
                w(f"- node {nid}: lag as the node logged it (`firing.finished` lag_ms, taken as the run "
                  f"starts): p50 {_ms(d['p50'])} / p99 {_ms(d['p99'])} / max {_ms(d['max'])} ms over {d['n']} "
                  f"runs{spent}; warnings: {warn}; counters at stop: {stats}")
            ew = ec.notes.get("etcd_window", {})
            txn = ew.get("grpc_server_handled_total_txn")
            if txn:
                fs_n = ew.get("etcd_disk_wal_fsync_duration_seconds_count", 0)
                fs_s = ew.get("etcd_disk_wal_fsync_duration_seconds_sum", 0)
                per = txn / max(1.0, ec.throughput * (ec.last - ec.first + 1))
                w(f"- etcd during the window: {txn:,.0f} Txn RPCs ({txn / (ec.last - ec.first + 1):,.0f}/s), "
                  f"{per:.3f} per run started in the window (claims of one instant share one transaction, "
                  f"completions are group-committed); {fs_n:,.0f} WAL fsyncs, "
                  f"{1000 * fs_s / max(1, fs_n):.2f} ms each on average")
            if ec.retried:
                w(f"- runs with attempt > 1 (recoveries): {ec.retried}")
            if ec.notes.get("ignored_sigterm"):
                w(f"- **nodes still running {STOP_WAIT:g} s after SIGTERM, killed**: "
                  f"{', '.join(ec.notes['ignored_sigterm'])}")
            w(f"- jobs registered in {ec.notes.get('register_seconds')} s; nodes stopped in "
              f"{ec.notes.get('stop_seconds')} s, exit codes {ec.notes.get('exit_codes')}; "
              f"load average at window end {' '.join(ec.notes.get('loadavg', []))}\n")
        if ap is not None:
            w(f"APScheduler details: dropped-run events {ap.notes.get('dropped_events') or 'none'}; "
              f"load average at window end {' '.join(ap.notes.get('loadavg', []))}\n")
        for ec in (r for r in rs if r.system == "etcdcron"):
            n = f" ({ec.nodes} nodes)" if len(opts.node_counts) > 1 else ""
            if ap is not None:
                w(f"Goal \"p99 no worse than APScheduler's\" at {rate:,}/s{n}: {verdict(ec, ap)}.\n")
                w(f"Goal \"CPU per firing, cluster-wide incl. etcd, <= {CPU_GOAL:g}x APScheduler's\" at "
                  f"{rate:,}/s{n}: {cpu_verdict(ec, ap)}.\n")
            else:
                w(f"Sustained {rate:,}/s{n} for {opts.seconds} s: {sustained_verdict(ec)}.\n")
            if ec.nodes == 3:
                w(f"Goal \"watch events per node per firing <= {WATCH_GOAL:g} at 3 nodes\" at {rate:,}/s: "
                  f"{watch_verdict(ec)}.\n")
    if len(opts.node_counts) > 1:
        w("### A node's cost as nodes are added (same cluster rate)\n")
        w("Per-node figures are means over the nodes (max in brackets); a node's share of the firings is "
          "1/N, so a node whose work follows its own share costs proportionally less per cluster firing "
          "with more nodes.\n")
        w("| rate | " + " | ".join(SCALING_HEAD) + " |")
        w("|---:|" + "---:|" * len(SCALING_HEAD))
        trends = []
        for rate in sorted({r.rate for r in results}):
            rows = scaling_rows(results, rate)
            for r, c in rows:
                w(f"| {rate:,}/s | " + " | ".join(scaling_cells(r, c)) + " |")
            if len(rows) > 1:
                trends.append(f"- {rate:,}/s: {scaling_trend(rows)}")
        w("")
        out.extend(trends)
        w("")
    w(INTERPRETATION_MARK)
    return "\n".join(out) + "\n"


def sustained_markdown(results: list[Result], opts, command: str, mach: dict, started: float, elapsed: float,
                       code: str) -> str:
    """A shorter section for ``--section``: a sustained-rate check kept beside the comparison."""
    out = [f"## Sustained rate (bench/firing_lag.py, section `{opts.section}`)\n",
           f"- Run: {datetime.fromtimestamp(started, timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, took {elapsed:.0f} s; "
           f"`{command}`; code: {code}",
           f"- Machine: {mach['nproc']} CPUs ({mach['cpu']}), Python {mach['python']}, etcd {mach['etcd']}; load "
           f"average {mach['loadavg']} when the run began (shared machine: figures vary)",
           f"- Every job `* * * * * *` running the builtin `ledger`; window {opts.seconds} s after a {opts.warmup:g} s "
           f"warm-up; sustained = 0 missed, 0 duplicates, p99 < {SUSTAINED_P99_MS:,.0f} ms. Firings per "
           f"core-second = cluster firings / CPU seconds of all processes (nodes and etcd): a machine with C "
           f"free cores should sustain about C times that, while the work stays CPU-bound and spread.\n",
           "| rate | system | p50 / p99 / max lag (ms) | executed / expected | duplicates | > 1 s late | "
           "CPU per firing incl. etcd (ms) | firings per core-second | cores used (nodes + etcd) | "
           "watch events per node per firing | verdict |",
           "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        s, c = r.summary(), r.cost()
        out.append(f"| {r.rate:,}/s | {r.label} | {_ms(s['p50'])} / {_ms(s['p99'])} / {_ms(s['max'])} | "
                   f"{r.executed:,} / {r.expected:,} | {r.duplicates} | {r.late_over_1s:,} | "
                   f"{_f(c['cpu_ms_per_firing'], '.3f')} | "
                   f"{_f(c['firings_per_core_s'], ',.0f') if r.executed == r.expected else '- (not sustained)'} | "
                   f"{sum(r.cpu.values()) / 100:.2f} | {_f(c['node_mean']['watch_per_firing'])} | "
                   f"{sustained_verdict(r).split(' (')[0]} |")
    return "\n".join(out) + "\n"


INTERPRETATION_MARK = "## Interpretation"


def write_doc(path: Path, generated: str) -> None:
    """Write the generated part; keep a hand-written interpretation already in the file."""
    kept = ""
    if path.exists():
        old = path.read_text()
        i = old.find(INTERPRETATION_MARK)
        if i >= 0:
            kept = old[i + len(INTERPRETATION_MARK):].lstrip("\n")
    if not kept:
        kept = "_Not written yet: read the tables above._\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(generated + "\n" + kept)


def write_section(path: Path, name: str, body: str) -> None:
    """Replace the text between this section's markers (appended at the end when absent: after the
    interpretation, which write_doc keeps, so a later full run keeps the section too)."""
    begin, end = f"<!-- firing_lag:{name}:begin -->", f"<!-- firing_lag:{name}:end -->"
    text = path.read_text() if path.exists() else ""
    block = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        a, b = text.index(begin), text.index(end) + len(end)
        text = text[:a] + block + text[b:]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


# --- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rates", default="100,1000", help="firings per second to test, comma-separated")
    ap.add_argument("--seconds", type=int, default=20, help="measured window, in whole-second slots")
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds between job registration and the window")
    ap.add_argument("--drain", type=float, default=5.0, help="seconds after the window that late runs still count")
    ap.add_argument("--nodes", default="3", help="etcdcron node processes; a comma-separated list (3,6) runs "
                                                 "the etcdcron side once per count at each rate")
    ap.add_argument("--workers", type=int, default=32, help="etcdcron serve --workers")
    ap.add_argument("--aps-workers", type=int, default=32, help="APScheduler thread pool size")
    ap.add_argument("--only", choices=("etcdcron", "apscheduler"), help="run one side only")
    ap.add_argument("--no-scrape", dest="scrape", action="store_false",
                    help="do not serve and scrape each node's /metrics (for a --rev without serve --http)")
    ap.add_argument("--rev", help="measure this git revision of etcdcron (exported to a temp dir) "
                                  "instead of the work tree")
    ap.add_argument("--out", default="docs/benchmarks.md", help="markdown report ('' for none)")
    ap.add_argument("--section", default="", help="write a short sustained-rate section between "
                    "<!-- firing_lag:NAME:begin/end --> markers of --out instead of the whole page")
    ap.add_argument("--json", dest="json_out", default="", help="also write the raw results as JSON here")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (node logs, ledgers)")
    ap.add_argument("--apscheduler-child", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--ledger", help=argparse.SUPPRESS)
    opts = ap.parse_args(argv)
    if opts.apscheduler_child:
        return apscheduler_child(opts.apscheduler_child, opts)

    rates = [int(x) for x in opts.rates.split(",") if x.strip()]
    opts.node_counts = [int(x) for x in str(opts.nodes).split(",") if x.strip()]
    command = "python bench/firing_lag.py" + "".join(f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:]))
    tmp = Path(tempfile.mkdtemp(prefix="etcdcron-bench-"))
    code = use_revision(opts.rev, tmp) if opts.rev else describe_work_tree()
    log(f"measuring {code}; load average {' '.join(LOADAVG_AT_START)}")
    started, results = time.time(), []
    etcd_version = None
    try:
        for rate in rates:
            if opts.only != "apscheduler":
                for n in opts.node_counts:
                    r = run_etcdcron(rate, n, opts, tmp)
                    etcd_version = r.notes.get("etcd_version")
                    results.append(r)
                    log(table([r]).splitlines()[-1])
                    time.sleep(1.0)  # let the machine settle between runs
            if opts.only != "etcdcron":
                r = run_apscheduler(rate, opts, tmp)
                results.append(r)
                log(table([r]).splitlines()[-1])
    finally:
        if opts.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.time() - started
    mach = machine(etcd_version)
    print(f"\nmachine: {mach['nproc']} CPUs, Python {mach['python']}, etcd {mach['etcd']}, APScheduler {mach['apscheduler']}; "
          f"load average {mach['loadavg']} at start, {' '.join(open('/proc/loadavg').read().split()[:3])} at end")
    print(f"command: {command}  ({elapsed:.0f} s)\n")
    print(table(results))
    print()
    print(cost_table(results))
    print()
    for line in summary_lines(results, opts.node_counts):
        print(line)
    if opts.out:
        out = Path(opts.out)
        if not out.is_absolute():
            out = ROOT / out
        if opts.section:
            write_section(out, opts.section, sustained_markdown(results, opts, command, mach, started, elapsed, code))
        else:
            write_doc(out, markdown(results, opts, command, mach, started, elapsed, code))
        print(f"\nwrote {out}")
    if opts.json_out:
        Path(opts.json_out).write_text(json.dumps(
            [{**{k: v for k, v in r.__dict__.items() if k != "lags_ms"}, "summary": r.summary(), "cost": r.cost()}
             for r in results], indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
