#!/usr/bin/env python
"""Failover gap: how long after SIGKILL of a node its firings run again elsewhere.

    python bench/failover.py [--jobs 30] [--rounds 5] [--nodes 3] [--ttl 3] [--out docs/scale.md]

A real etcd (one member, temp dir, loopback), ``--nodes`` ``cli.py serve`` processes (both started
with ``etcdcron.testing``), ``--jobs`` jobs ``* * * * * *`` running the builtin ``ledger``
(``--concurrency allow``), which appends {job, slot, node, fence, attempt, start} per run to a
shared file. Each round SIGKILLs one node (a
different victim each round, at a different offset inside the second), waits, restarts it under the
same node id and lets the cluster settle before the next round.

For a round, the *victim's firings* are those the victim owned at the kill: rank 0 of the rendezvous
order (``claims.rank``, the package's own function) over the live nodes, for slots from
``kill - claim_ahead`` (the victim may have claimed them ahead and died) to ``kill + ttl + 2``.
Reported per round:

- lag of the victim's firings (start - slot): the worst one is *the failover gap* (goal: <= ttl + 1 s);
- late / late until: the victim's firings that started more than 0.25 s after their slot (they
  waited for a takeover), and the slot of the last of them - the kill instant (how long the dead
  node stayed in the owner set, i.e. until its lease expired);
- the longest interval between two consecutive run starts of any one job across the kill
  (normally 1 s; goal: <= ttl + 2 s, i.e. one normal second plus the allowed gap);
- the victim's firings that never ran, duplicates (a (job, slot) run twice), recoveries (attempt > 1).

Only loopback traffic; every process started here is stopped here, by its PID.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from firing_lag import CODE, ROOT, STOP_WAIT, describe_work_tree, log, machine, pct, sleep_until  # noqa: E402

sys.path.insert(0, str(CODE))

from etcdcron.nodes import wait_for  # noqa: E402

LATE = 0.25  # a firing later than this waited for a takeover (rank 1 checks at slot + 0.4 s)
CLAIM_AHEAD = 0.2  # NodeConfig.claim_ahead (read from the package below when present)
TAKEOVER = 0.4


def log_sigkill(nid: str, p: subprocess.Popen) -> None:
    """``Cluster.stop_nodes``'s ``on_kill``: say which node ignored SIGTERM."""
    log(f"node {nid} (pid {p.pid}) ignored SIGTERM for {STOP_WAIT:g}s: SIGKILL")


def analyse_round(lines: list, jobs: list[str], nodes: list[str], victim: str, t_kill: float,
                  ttl: float, rank, t_gone: float = float("nan")) -> dict:
    lo_slot = math.ceil(t_kill - CLAIM_AHEAD)  # the victim may already hold claims for these
    hi_slot = math.floor(t_kill + ttl + 2)  # after its lease expires the owner set no longer has it
    first_start: dict[tuple[str, int], float] = {}
    runs: Counter = Counter()
    attempts: dict[tuple[str, int], int] = {}
    by_job: dict[str, list[float]] = defaultdict(list)
    for ln in lines:
        ident = (ln.job, ln.slot)
        by_job[ln.job].append(ln.at)
        if lo_slot - 1 <= ident[1] <= hi_slot + 5:
            runs[ident] += 1
            attempts[ident] = max(attempts.get(ident, 1), ln.attempt)
            first_start[ident] = min(first_start.get(ident, ln.at), ln.at)
    owned = [(j, s) for s in range(lo_slot, hi_slot + 1) for j in jobs if rank(f"{j}|{s}", nodes)[0] == victim]
    lags, missing = [], 0
    for ident in owned:
        if ident in first_start:
            lags.append(first_start[ident] - ident[1])
        else:
            missing += 1
    early = [ident for ident in owned if ident in first_start and first_start[ident] < ident[1]]
    # how long the victim stays in the owner set: the last of its firings that had to wait for a takeover
    late = [i for i in owned if i in first_start and first_start[i] - i[1] > LATE]
    late_until = max((i[1] - t_kill for i in late), default=float("nan"))
    # longest interval between consecutive starts of one job, over intervals that span the kill
    gap, gap_job = 0.0, None
    for j in jobs:
        starts = sorted(by_job[j])
        for a, b in zip(starts, starts[1:]):
            if a <= t_kill + ttl + 2 and b >= t_kill and b - a > gap:
                gap, gap_job = b - a, j
    slow = sorted(((first_start[i] - i[1], i) for i in owned if i in first_start), reverse=True)[:3]
    return {
        "victim": victim, "kill_offset": round(t_kill - math.floor(t_kill), 2), "owned": len(owned),
        "ran": len(lags), "missing": missing, "early": len(early),
        "duplicates": sum(1 for i in owned if runs[i] > 1),
        "recovered_runs": sum(1 for i in owned if attempts.get(i, 1) > 1),
        "max_lag": max(lags, default=float("nan")), "p50_lag": pct(sorted(lags), 50),
        "late_over_1s": sum(1 for v in lags if v > 1.0),
        "late_until": late_until, "late": len(late), "lease_gone": t_gone - t_kill,
        "recovery_after_expiry": max((first_start[i] - t_gone for i in owned if attempts.get(i, 1) > 1 and i in first_start),
                                     default=float("nan")), "max_gap": gap, "gap_job": gap_job,
        "slowest": [{"job": i[0], "slot_minus_kill": round(i[1] - t_kill, 2), "lag": round(v, 2),
                     "attempt": attempts.get(i, 1)} for v, i in slow],
    }


def run(opts, work: Path) -> tuple[list[dict], dict]:
    from etcdcron.claims import rank
    from etcdcron.testing import Cluster, EtcdCluster, read_ledger

    global CLAIM_AHEAD, TAKEOVER
    try:
        from etcdcron.daemon import NodeConfig
        CLAIM_AHEAD, TAKEOVER = NodeConfig("x").claim_ahead, NodeConfig("x").takeover
    except Exception:  # noqa: BLE001 - older trees
        pass
    prefix = "/bench-failover"
    etcd = EtcdCluster(work / "etcd", size=1).start()
    cluster = None
    kills: list[tuple[str, float, list[str]]] = []
    node_args = {"ttl": opts.ttl, "grace": 5}
    workers = ("--workers", "32")
    try:
        cluster = Cluster(etcd.endpoints, prefix, work, code=CODE)
        store, keys, procs = cluster.store, cluster.keys, cluster.procs
        version = store.status()["version"]
        ids = cluster.start_nodes([f"b{i + 1}" for i in range(opts.nodes)], workers, timeout=30, **node_args)
        jobs = [f"f{i:03d}" for i in range(opts.jobs)]
        for j in jobs:
            cluster.admin.put_job(cluster.ledger_spec(j, "* * * * * *", concurrency="allow", active_since=time.time()))
        log(f"{len(ids)} nodes, {len(jobs)} jobs every second; warm-up {opts.warmup:g}s")
        time.sleep(opts.warmup)
        offsets = [0.9, 0.5, 0.1, 0.85, 0.3, 0.95, 0.7][: opts.rounds] + [0.5] * max(0, opts.rounds - 7)
        for r in range(opts.rounds):
            victim = ids[r % len(ids)]
            nodes_before = sorted(cluster.live())
            base = math.floor(time.time()) + 1
            sleep_until(base + offsets[r])
            p = procs[victim]
            t_kill = time.time()
            os.kill(p.pid, signal.SIGKILL)
            p.wait()
            # when etcd expires the victim's lease: its nodes/<id> key goes (polled every 20 ms)
            t_gone = float("nan")
            while time.time() < t_kill + opts.ttl + 5:
                if store.get(keys.node(victim)) is None:
                    t_gone = time.time()
                    break
                time.sleep(0.02)
            kills.append((victim, t_kill, nodes_before, t_gone))
            log(f"round {r + 1}: SIGKILL {victim} (pid {p.pid}) at +{t_kill - math.floor(t_kill):.2f}s of the second; "
                f"lease gone {t_gone - t_kill:.2f}s later")
            time.sleep(max(0.0, t_kill + opts.ttl + 5 - time.time()))
            cluster.start(victim, *workers, **node_args)
            if not wait_for(lambda: victim in cluster.live(), 30):
                raise RuntimeError(f"{victim} did not come back; logs in {work}")
            time.sleep(opts.settle)
        time.sleep(2)
    finally:
        codes = cluster.stop_nodes(STOP_WAIT, log_sigkill) if cluster is not None else {}
        if cluster is not None:
            cluster.close()
        etcd.stop()
    lines = read_ledger(cluster.ledger)
    rounds = [analyse_round(lines, jobs, nodes, v, t, opts.ttl, rank, gone) for v, t, nodes, gone in kills]
    # duplicates over the whole run (any job, any slot), as a sanity check of exactly-once
    c = Counter((ln.job, ln.slot) for ln in lines)
    notes = {"etcd": version, "exit_codes": codes, "runs": len(lines),
             "duplicates_all": sum(1 for v in c.values() if v > 1)}
    return rounds, notes


def fmt(v: float, nd: int = 2) -> str:
    return "-" if v != v else f"{v:.{nd}f}"


def table(rounds: list[dict]) -> str:
    head = (f"{'round':>5} {'victim':>6} {'kill@':>6} {'owned':>6} {'ran':>5} {'missing':>7} {'dups':>5} "
            f"{'recov':>5} {'p50 lag':>8} {'max lag':>8} {'late':>5} {'late until':>10} {'max gap':>8} {'lease gone':>10} {'recov after':>11}")
    rows = [head, "-" * len(head)]
    for i, r in enumerate(rounds, 1):
        rows.append(f"{i:>5} {r['victim']:>6} {r['kill_offset']:>6.2f} {r['owned']:>6} {r['ran']:>5} {r['missing']:>7} "
                    f"{r['duplicates']:>5} {r['recovered_runs']:>5} {fmt(r['p50_lag']):>8} {fmt(r['max_lag']):>8} "
                    f"{r['late']:>5} {fmt(r['late_until']):>10} {fmt(r['max_gap']):>8} "
                    f"{fmt(r['lease_gone']):>10} {fmt(r['recovery_after_expiry']):>11}")
    return "\n".join(rows)


def summary(rounds: list[dict], ttl: float) -> dict:
    gaps = sorted(r["max_lag"] for r in rounds)
    rec = sorted(r["late_until"] for r in rounds)
    ivs = sorted(r["max_gap"] for r in rounds)
    return {"gap_p50": pct(gaps, 50), "gap_max": gaps[-1], "rec_p50": pct(rec, 50), "rec_max": rec[-1],
            "interval_p50": pct(ivs, 50), "interval_max": ivs[-1],
            "missing": sum(r["missing"] for r in rounds), "dups": sum(r["duplicates"] for r in rounds),
            "early": sum(r["early"] for r in rounds), "goal": ttl + 1.0}


BEGIN, END = "<!-- failover:begin (written by bench/failover.py) -->", "<!-- failover:end -->"


def markdown(rounds, notes, s, opts, command, mach, started, elapsed, code) -> str:
    out = []
    w = out.append
    w(BEGIN)
    w("## Failover after SIGKILL (`bench/failover.py`)\n")
    w(f"- Run: {datetime.fromtimestamp(started, timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}, took {elapsed:.0f} s; "
      f"command: `{command}`")
    w(f"- Machine: {mach['nproc']} CPUs ({mach['cpu']}), {mach['mem_gb']} GB RAM, {mach['os']}, Python {mach['python']}, "
      f"etcd {notes['etcd']} (single member, embedded, loopback); load average {mach['loadavg']} at start "
      f"(shared machine)")
    w(f"- Code: {code}")
    w(f"- Load: {opts.nodes} `etcdcron serve --ttl {opts.ttl:g} --workers 32` processes, {opts.jobs} jobs "
      f"`* * * * * *` running `ledger` with `--concurrency allow`. {opts.rounds} rounds: SIGKILL one node "
      f"(victims in turn, at different offsets inside the second), wait {opts.ttl + 5:g} s, restart it, settle "
      f"{opts.settle:g} s.")
    w(f"- *Victim's firings*: rank 0 of the rendezvous order over the live nodes (the package's `claims.rank`) for "
      f"slots from kill - claim_ahead ({CLAIM_AHEAD:g} s) to kill + TTL + 2 s. *lag* = run start - slot; "
      f"*late* = victim firings that started more than {LATE:g} s after their slot (they waited for a takeover); "
      f"*late until* = slot of the last of them - kill instant, i.e. how long the dead node stayed in the owner set; "
      f"*max gap* = the longest interval between consecutive run starts of one job across the kill (1.0 when "
      f"nothing is late); *lease gone* = when the victim's `nodes/<id>` key (on its lease) disappeared from etcd, "
      f"polled every 20 ms; *recovered runs started* = the latest start of a recovered (attempt > 1) victim firing "
      f"after that instant.\n")
    w("| round | victim | kill at (s into the second) | victim's firings | ran | never ran | duplicates | "
      "recovered (attempt > 1) | p50 lag (s) | max lag = failover gap (s) | late (> 0.25 s) | late until (s after kill) | "
      "longest interval between runs of a job (s) | lease gone (s after kill) | recovered runs started (s after the lease went) |")
    w("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for i, r in enumerate(rounds, 1):
        w(f"| {i} | {r['victim']} | {r['kill_offset']:.2f} | {r['owned']} | {r['ran']} | {r['missing']} | "
          f"{r['duplicates']} | {r['recovered_runs']} | {fmt(r['p50_lag'])} | {fmt(r['max_lag'])} | "
          f"{r['late']} | {fmt(r['late_until'])} | {fmt(r['max_gap'])} | {fmt(r['lease_gone'])} | "
          f"{fmt(r['recovery_after_expiry'])} |")
    w("")
    w(f"Slowest victim firings per round (job, slot - kill, lag, attempt): " + "; ".join(
        f"round {i}: " + ", ".join(f"{x['job']} {x['slot_minus_kill']:+.2f}s lag {x['lag']:.2f}s a{x['attempt']}"
                                   for x in r["slowest"]) for i, r in enumerate(rounds, 1)) + "\n")
    met = s["gap_max"] <= s["goal"] and s["missing"] == 0
    never = "" if s["missing"] == 0 else f", {s['missing']} firings never ran"
    w(f"**Summary over {len(rounds)} kills**: failover gap (worst lag of the victim's firings) p50 "
      f"{fmt(s['gap_p50'])} s, max {fmt(s['gap_max'])} s; the dead node's firings waited for a takeover until "
      f"p50 {fmt(s['rec_p50'])} s / max {fmt(s['rec_max'])} s after the kill; longest interval between runs of one "
      f"job p50 {fmt(s['interval_p50'])} s / max {fmt(s['interval_max'])} s. Never ran: {s['missing']}; "
      f"duplicates among the victim's firings: {s['dups']} (whole run: {notes['duplicates_all']} of "
      f"{notes['runs']} runs); started early: {s['early']}. Node exit codes at the end: {notes['exit_codes']}.\n")
    w(f"Goal \"SIGKILL: others take over within TTL + 1 s = {s['goal']:g} s\": **{'met' if met else 'not met'}** "
      f"(worst gap {fmt(s['gap_max'])} s{never}).\n")
    w(END)
    return "\n".join(out)


def write_section(path: Path, begin: str, end: str, text: str, skeleton_after: str = "") -> None:
    """Replace the text between the markers; keep everything else (hand-written interpretation)."""
    old = path.read_text() if path.exists() else "# Scale and failover\n\n"
    i, j = old.find(begin), old.find(end)
    if i >= 0 and j > i:
        new = old[:i] + text + old[j + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n" + skeleton_after
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--nodes", type=int, default=3)
    ap.add_argument("--ttl", type=float, default=3)
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--settle", type=float, default=4.0, help="seconds after the victim is back before the next kill")
    ap.add_argument("--out", default="docs/scale.md", help="markdown report ('' for none)")
    ap.add_argument("--json", dest="json_out", default="")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (node logs, ledger)")
    opts = ap.parse_args(argv)
    opts.ttl = int(opts.ttl) if float(opts.ttl).is_integer() else opts.ttl
    command = "python bench/failover.py" + "".join(f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:]))
    tmp = Path(tempfile.mkdtemp(prefix="etcdcron-failover-"))
    code = describe_work_tree()
    started = time.time()
    try:
        rounds, notes = run(opts, tmp)
    finally:
        if opts.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.time() - started
    s = summary(rounds, opts.ttl)
    mach = machine(notes["etcd"])
    print(f"\nmachine: {mach['nproc']} CPUs, Python {mach['python']}, etcd {notes['etcd']}; command: {command} ({elapsed:.0f} s)\n")
    print(table(rounds))
    print(f"\nfailover gap p50 {fmt(s['gap_p50'])} s, max {fmt(s['gap_max'])} s (goal <= {s['goal']:g} s: "
          f"{'met' if s['gap_max'] <= s['goal'] and s['missing'] == 0 else 'NOT met'}); late until p50 "
          f"{fmt(s['rec_p50'])} / max {fmt(s['rec_max'])} s; missing {s['missing']}, duplicates {s['dups']} "
          f"(whole run {notes['duplicates_all']}), early {s['early']}")
    for i, r in enumerate(rounds, 1):
        print(f"  round {i} slowest: {r['slowest']}")
    if opts.out:
        out = Path(opts.out)
        if not out.is_absolute():
            out = ROOT / out
        write_section(out, BEGIN, END, markdown(rounds, notes, s, opts, command, mach, started, elapsed, code),
                      "\n### Failover: interpretation\n\n_Not written yet._\n")
        print(f"wrote {out}")
    if opts.json_out:
        Path(opts.json_out).write_text(json.dumps({"rounds": rounds, "notes": notes, "summary": s}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
