#!/usr/bin/env python
"""Bulk registration: 1,000 jobs through ``etcdcron apply`` against ``etcdcron add`` one by one, on running nodes.

    python bench/bulk_register.py [--jobs 1000] [--adds 200] [--parallel 8] [--load 100] [--out docs/scale.md]

A real etcd (one member, temp dir, loopback) and 3 ``cli.py serve`` nodes running ``--load`` jobs
``* * * * * *`` with the builtin ``ledger`` (one JSON line per run, no process per run) as background
load. Then, measured as a user would, from ``Popen`` to exit of the CLI:

1. a *quiet* window of ``--quiet`` seconds: nothing registered, the load's firing lag and misses;
2. **bulk**: one ``etcdcron apply FILE`` of a YAML file naming ``--jobs`` new jobs;
3. **one by one**: ``--adds`` new jobs through as many ``etcdcron add`` processes, ``--parallel`` at a
   time (the issue's trial ran 1,000 of them, 8 at a time; ``--adds`` caps it and the time for
   ``--jobs`` is extrapolated linearly from the rate measured).

The new jobs are builtin ``noop`` jobs with a daily schedule ``M H * * *`` outside the current and next
UTC hour, so they do not fire while we measure: what is measured is the registration and its effect on
the running nodes (the watch events, the view, the timer), not the firing load the new jobs would add
once due (``bench/firing_lag.py`` measures that). ``--new-schedule`` registers another schedule.

*Stall*: for every firing of the background jobs whose slot falls in a window (the registration, from
its first second to 3 s after the CLI exited, when the nodes have taken in the new jobs), the lag =
the run's start - its slot (first start of each firing, from the ledger); *missed* = firings of the
window with no ledger line 5 s after it. The same figures for the quiet window before it.

Only loopback traffic; every process started here is stopped here, by its PID.
"""

from __future__ import annotations

import argparse
import math
import shlex
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from failover import log_sigkill, write_section  # noqa: E402
from firing_lag import CODE, ROOT, STOP_WAIT, cpu_seconds, describe_work_tree, log, machine, pct, sleep_until  # noqa: E402

GOAL_S = 5.0  # 1,000 jobs in <= 5 s through the bulk path
AFTER = 3.0  # seconds after the CLI exits that still count as the registration's window
DRAIN = 5.0  # seconds after a window to wait for its last runs' ledger lines


def daily_schedules(n: int) -> list[str]:
    """``n`` daily schedules spread over the minutes of the day outside this and the next UTC hour."""
    hour = datetime.now(timezone.utc).hour
    busy = {hour, (hour + 1) % 24}
    hm = [(h, m) for h in range(24) if h not in busy for m in range(60)]
    return [f"{m} {h} * * *" for h, m in (hm[i % len(hm)] for i in range(n))]


def lag_stats(lines, jobs: set[str], first: int, last: int) -> dict:
    """Lag of the first start of every (job, slot) with slot in [first, last]; firings without a line are missed."""
    start: dict[tuple[str, int], float] = {}
    for ln in lines:
        if ln.job in jobs and first <= ln.slot <= last:
            k = (ln.job, ln.slot)
            start[k] = min(start.get(k, math.inf), ln.at)
    lags = sorted((at - slot) * 1000.0 for (_, slot), at in start.items())
    expected = len(jobs) * (last - first + 1)
    return {"first": first, "last": last, "seconds": last - first + 1, "expected": expected, "ran": len(start),
            "missed": expected - len(start), "p50_ms": round(pct(lags, 50), 1), "p99_ms": round(pct(lags, 99), 1),
            "max_ms": round(lags[-1], 1) if lags else None}


def cpu_of(pids: dict[str, int]) -> dict[str, float | None]:
    return {k: cpu_seconds(p) for k, p in pids.items()}


def cpu_pct(c0: dict, c1: dict, seconds: float) -> dict[str, float]:
    return {k: round(100.0 * (c1[k] - c0[k]) / seconds, 1) for k in c0 if c0[k] is not None and c1.get(k) is not None}


def run(opts, work: Path) -> dict:
    from etcdcron.testing import Cluster, EtcdCluster

    etcd = EtcdCluster(work / "etcd", size=1).start()
    member = etcd.members[0]
    cluster = None
    R: dict = {}
    try:
        cluster = Cluster(etcd.endpoints, "/bench-bulk", work, code=CODE, store_timeout=30)
        store, admin = cluster.store, cluster.admin
        R["etcd_version"] = store.status()["version"]
        load = [f"load{i:03d}" for i in range(opts.load)]
        tmpl = cluster.ledger_spec("load-template", "* * * * * *", concurrency="allow", active_since=time.time())
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda j: admin.put_job(tmpl.replace(name=j)), load))
        ids = cluster.start_nodes(["b1", "b2", "b3"], ("--workers", "32"), ttl=None, grace=5, timeout=60)
        pids = {nid: cluster.procs[nid].pid for nid in ids} | {"etcd": member.proc.pid}
        log(f"{len(ids)} nodes up, {opts.load} background jobs every second; warm-up {opts.warmup:g} s")
        loadset = set(load)

        # 1. quiet window
        q_first = math.ceil(time.time() + opts.warmup)
        q_last = q_first + opts.quiet - 1
        sleep_until(q_first)
        c0 = cpu_of(pids)
        sleep_until(q_last + 1)
        R["quiet_cpu"] = cpu_pct(c0, cpu_of(pids), opts.quiet)
        log(f"quiet window {q_first}..{q_last} done")

        # 2. bulk: one apply of a file naming --jobs new jobs
        schedules = [opts.new_schedule] * opts.jobs if opts.new_schedule else daily_schedules(opts.jobs)
        jobs_file = work / "jobs.yaml"
        jobs_file.write_text(yaml.safe_dump({"jobs": [{"name": f"bulk{i:05d}", "schedule": schedules[i], "builtin": "noop"}
                                                      for i in range(opts.jobs)]}, sort_keys=False))
        sleep_until(math.ceil(time.time()) + 0.3)  # start inside a second, so the window's first slot is known
        c0, t0 = cpu_of(pids), time.time()
        cp = cluster.cli("apply", str(jobs_file), "--json", timeout=600)
        t1 = time.time()
        R["apply_s"] = round(t1 - t0, 3)
        if cp.returncode != 0:
            raise RuntimeError(f"apply failed ({cp.returncode}): {cp.stderr.strip()[-500:]}")
        b_first, b_last = math.floor(t0), math.ceil(t1 + AFTER)
        sleep_until(b_last + 1)
        R["apply_cpu"] = cpu_pct(c0, cpu_of(pids), b_last + 1 - t0)
        R["applied"] = store.count_prefix(cluster.keys.jobs) - opts.load
        log(f"apply of {opts.jobs} jobs: {R['apply_s']:.2f} s ({R['applied']} in etcd)")

        # 3. one by one: --adds `etcdcron add` processes, --parallel at a time
        names = [f"add{i:05d}" for i in range(opts.adds)]
        add_scheds = [opts.new_schedule] * opts.adds if opts.new_schedule else daily_schedules(opts.adds)
        failures: list[str] = []

        def add(i: int) -> None:
            r = cluster.cli("add", add_scheds[i], "noop", "--name", names[i], timeout=120)
            if r.returncode != 0:
                failures.append(r.stderr.strip()[-200:])
        sleep_until(math.ceil(time.time()) + 0.3)
        c0, t0 = cpu_of(pids), time.time()
        with ThreadPoolExecutor(opts.parallel) as pool:
            list(pool.map(add, range(opts.adds)))
        t1 = time.time()
        R["adds_s"] = round(t1 - t0, 2)
        R["add_failures"] = failures[:5]
        a_first, a_last = math.floor(t0), math.ceil(t1 + AFTER)
        sleep_until(a_last + 1)
        R["adds_cpu"] = cpu_pct(c0, cpu_of(pids), a_last + 1 - t0)
        log(f"{opts.adds} adds ({opts.parallel} at a time): {R['adds_s']:.1f} s, {len(failures)} failed")

        time.sleep(DRAIN)
        lines = cluster.lines()
        R["quiet"] = lag_stats(lines, loadset, q_first, q_last)
        R["bulk"] = lag_stats(lines, loadset, b_first, b_last)
        R["adds"] = lag_stats(lines, loadset, a_first, a_last)
        R["duplicates"] = sum(1 for _ in lines) - len({(ln.job, ln.slot, ln.attempt) for ln in lines})
    finally:
        R["exit_codes"] = cluster.stop_nodes(STOP_WAIT, log_sigkill) if cluster is not None else {}
        if cluster is not None:
            cluster.close()
        etcd.stop()
    return R


def summary(R: dict, opts) -> dict:
    per_add = R["adds_s"] / max(1, opts.adds)
    return {"apply_s": R["apply_s"], "apply_rate": opts.jobs / R["apply_s"],
            "adds_rate": opts.adds / R["adds_s"], "adds_for_jobs_s": per_add * opts.jobs,
            "speedup": per_add * opts.jobs / R["apply_s"]}


def table(R: dict, opts) -> str:
    s = summary(R, opts)
    rows = [f"bulk: etcdcron apply of {opts.jobs:,} jobs: {R['apply_s']:.2f} s = {s['apply_rate']:,.0f} jobs/s "
            f"(goal <= {GOAL_S:g} s: {'met' if R['apply_s'] <= GOAL_S else 'NOT met'})",
            f"one by one: {opts.adds} etcdcron add ({opts.parallel} at a time): {R['adds_s']:.1f} s = "
            f"{s['adds_rate']:.1f} jobs/s -> {opts.jobs:,} would take ~{s['adds_for_jobs_s']:.0f} s "
            f"({s['speedup']:.0f}x the bulk path)",
            f"{'window':<28} {'seconds':>7} {'firings':>8} {'missed':>6} {'lag p50 ms':>10} {'p99 ms':>8} {'max ms':>8}  CPU %"]
    for key, what, cpu in (("quiet", "quiet (nothing registered)", "quiet_cpu"), ("bulk", "apply", "apply_cpu"),
                           ("adds", f"{opts.adds} adds", "adds_cpu")):
        w = R[key]
        rows.append(f"{what:<28} {w['seconds']:>7} {w['expected']:>8} {w['missed']:>6} {w['p50_ms']:>10.1f} "
                    f"{w['p99_ms']:>8.1f} {w['max_ms'] or 0:>8.1f}  {R[cpu]}")
    rows.append(f"duplicate ledger lines: {R['duplicates']}; add failures: {R['add_failures'] or 0}; exit codes {R['exit_codes']}")
    return "\n".join(rows)


BEGIN, END = "<!-- bulk:begin (written by bench/bulk_register.py) -->", "<!-- bulk:end -->"


def markdown(R: dict, opts, command: str, mach: dict, started: float, elapsed: float, code: str) -> str:
    s = summary(R, opts)
    out = [BEGIN, f"## Registering {opts.jobs:,} jobs on running nodes: `apply` against `add` (`bench/bulk_register.py`)\n"]
    w = out.append
    w(f"- Run: {datetime.fromtimestamp(started, timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, took {elapsed:.0f} s; "
      f"command: `{command}`")
    w(f"- Machine: {mach['nproc']} CPUs ({mach['cpu']}), {mach['mem_gb']} GB RAM, {mach['os']}, Python {mach['python']}, "
      f"etcd {R['etcd_version']} (single member, embedded, loopback); load average {mach['loadavg']} at start (shared machine)")
    w(f"- Code: {code}")
    w(f"- Cluster: 3 `cli.py serve --workers 32` nodes running {opts.load} jobs `* * * * * *` (builtin `ledger`, "
      f"`--concurrency allow`) as background load. New jobs: builtin `noop`, "
      + (f"schedule `{opts.new_schedule}`" if opts.new_schedule else "daily schedules `M H * * *` outside the current and next "
         "UTC hour (they do not fire while measured: the registration is measured, not the new jobs' firings)")
      + ". Times are wall clock from `Popen` to exit of the CLI process(es), as a user sees them.")
    w(f"- Stall: lag = run start - slot of every background firing whose slot is in the window (first start of each, "
      f"from the ledger); missed = no run {DRAIN:g} s after the window; the registration window runs from its first "
      f"second to {AFTER:g} s after the CLI exited.\n")
    w("| path | jobs | wall time (s) | jobs/s |")
    w("|---|---:|---:|---:|")
    w(f"| **`etcdcron apply FILE`** (one process, one YAML file) | {opts.jobs:,} | **{R['apply_s']:.2f}** | {s['apply_rate']:,.0f} |")
    w(f"| `etcdcron add` × {opts.adds}, {opts.parallel} at a time | {opts.adds:,} | {R['adds_s']:.1f} | {s['adds_rate']:.1f} |")
    if opts.adds != opts.jobs:
        w(f"| `etcdcron add` × {opts.jobs:,} (extrapolated from the {opts.adds}) | {opts.jobs:,} | ~{s['adds_for_jobs_s']:.0f} | "
          f"{s['adds_rate']:.1f} |")
    w("")
    w("| background load during | window (s) | firings | missed | lag p50 (ms) | lag p99 (ms) | max (ms) | CPU, % of a core |")
    w("|---|---:|---:|---:|---:|---:|---:|---|")
    for key, what, cpu in (("quiet", "a quiet window before (nothing registered)", "quiet_cpu"),
                           ("bulk", f"`apply` of {opts.jobs:,}", "apply_cpu"),
                           ("adds", f"{opts.adds} `add`s", "adds_cpu")):
        x = R[key]
        w(f"| {what} | {x['seconds']} | {x['expected']:,} | {x['missed']} | {x['p50_ms']:.0f} | {x['p99_ms']:.0f} | "
          f"{x['max_ms'] or 0:.0f} | {', '.join(f'{k} {v}' for k, v in R[cpu].items())} |")
    w("")
    ok = R["apply_s"] <= GOAL_S
    w(f"Goal \"1,000 jobs in <= 5 s through a bulk path\": **{'met' if ok else 'not met'}** "
      f"({opts.jobs:,} jobs in {R['apply_s']:.2f} s, ~{s['speedup']:.0f}× faster than `add` one by one). "
      f"Duplicate runs of the background jobs in the whole run: {R['duplicates']}.\n")
    w(END)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=1000, help="jobs registered by the one apply")
    ap.add_argument("--adds", type=int, default=200, help="jobs registered by as many `etcdcron add` processes")
    ap.add_argument("--parallel", type=int, default=8, help="`add` processes at a time")
    ap.add_argument("--load", type=int, default=100, help="background jobs firing every second")
    ap.add_argument("--quiet", type=int, default=10, help="seconds of the quiet window")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--new-schedule", default="", help="schedule of the new jobs (default: daily, not due while measured)")
    ap.add_argument("--out", default="docs/scale.md", help="markdown report ('' for none)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (node logs, ledger, etcd data)")
    opts = ap.parse_args(argv)
    command = "python bench/bulk_register.py" + "".join(f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:]))
    tmp = Path(tempfile.mkdtemp(prefix="etcdcron-bulk-"))
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
    print(table(R, opts))
    if opts.out:
        out = Path(opts.out)
        if not out.is_absolute():
            out = ROOT / out
        write_section(out, BEGIN, END, markdown(R, opts, command, mach, started, elapsed, code),
                      "\n### Bulk registration: interpretation\n\n_Not written yet._\n")
        print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
