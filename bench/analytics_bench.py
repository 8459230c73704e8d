#!/usr/bin/env python
"""Analytics throughput: collector ingest rate, rollup rate, and rollup cost of day 30 against day 1.

    python bench/analytics_bench.py [--events 100000] [--batch 500] [--senders 8] [--import-events 100000]
                                    [--days 30] [--daily-events 10000] [--dau 2000] [--mongo URI] [--rev REV]

MongoDB: a SecantusDB server (``secantusd-py``) started here as a separate process on a free
loopback port with a temp data dir, unless ``--mongo`` names another server. Every process started
here is stopped here, by its PID.

1. **Ingest.** ``etcdcron collect`` runs as its own process (uvicorn); ``--senders`` concurrent
   clients (httpx, asyncio) post signed ``/v1/events`` batches of ``--batch`` events until
   ``--events`` are sent. Rate = events accepted (stored) / wall time from first send to last answer.
2. **Import.** ``analytics import`` (its function, in this process) of an NDJSON file of
   ``--import-events`` events of 30 past days: both passes (check, then store) and a rerun that finds
   everything stored; the rate beside the collector's ingest rate of step 1, the baseline.
3. **Rollup.** ``--days`` days of ``--daily-events`` events each, from exactly ``--dau`` devices a day
   (a fixed share of them returning from earlier days, the rest new, so history grows every day while
   the daily volume stays the same). Day d is inserted, then ``rollup`` runs as the day-d+1 firing at
   03:00 local, which finalises day d and touches nothing else. Rate = events / rollup time; the
   figure to watch is the rollup time of the last day over the first (goal <= 1.2). Each run is
   split into its steps (event aggregation, device reads, device_day writes, devices writes), and
   the slope of the per-day time over days 2..N shows whether it grows with history. The days carry
   channels, platforms, versions, userIds and custom events, and the issue-12 parts of each rollup
   (breakdowns, registered users, custom sums, and the one read of the day's raw events feeding them)
   are reported as their median share of the rollup's time. With ``--rev``, the rollup of that git
   revision runs over the same days (the baseline before issue 12: ``--rev 7325d4d``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from etcdcron.analytics import days as dd  # noqa: E402
from etcdcron.analytics import jobs  # noqa: E402
from etcdcron.analytics.embedded import EmbeddedMongo  # noqa: E402
from etcdcron.analytics.events import App, Event, batch_sign  # noqa: E402
from etcdcron.analytics.store import AnalyticsStore  # noqa: E402
from etcdcron import log as logsetup  # noqa: E402
from etcdcron.embedded import free_port  # noqa: E402
from etcdcron.executor import RunContext  # noqa: E402


def ingest(uri: str, tmp: Path, n_events: int, batch: int, senders: int) -> dict:
    store = AnalyticsStore(uri)
    app = store.create_app(App.new("bench-ingest", "Europe/Berlin"))
    port = free_port()
    log = open(tmp / "collect.log", "wb")
    proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "collect", "--mongo", uri, "--port", str(port),
                             "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=0.5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                raise SystemExit(f"collector did not start: {(tmp / 'collect.log').read_text()[-500:]}")
            time.sleep(0.1)
        now = time.time()
        rnd = random.Random(1)
        bodies = []
        for start in range(0, n_events, batch):
            events = [{"id": f"b{i}", "type": "open" if i % 2 else "usage", "deviceId": f"dev{rnd.randrange(20_000)}",
                       "ts": round(now - rnd.uniform(0, 3000), 3), "channel": "googleplay", "platform": "android",
                       "version": "2.5.0", **({} if i % 2 else {"seconds": round(rnd.uniform(1, 600), 3)})}
                      for i in range(start, min(n_events, start + batch))]
            body = json.dumps({"events": events}).encode()
            bodies.append((f"/v1/events?appId={app.id}&sign={batch_sign(body, app.key)}", body))

        async def run() -> tuple[int, float]:
            queue = list(reversed(bodies))
            stored = 0
            async with httpx.AsyncClient(base_url=base, timeout=60, limits=httpx.Limits(max_connections=senders)) as client:
                async def sender() -> None:
                    nonlocal stored
                    while queue:
                        url, body = queue.pop()
                        r = await client.post(url, content=body, headers={"content-type": "application/json"})
                        r.raise_for_status()
                        stored += r.json()["stored"]
                t0 = time.perf_counter()
                await asyncio.gather(*(sender() for _ in range(senders)))
                return stored, time.perf_counter() - t0

        stored, took = asyncio.run(run())
        assert store.count_events(app.id) == stored == n_events, "not every event was stored"
        return {"events": stored, "seconds": round(took, 2), "events_per_s": round(stored / took),
                "batch": batch, "senders": senders}
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()
        store.close()


STEPS = {"day_events": "events", "device_totals": "events", "by_ids": "reads", "fenced_set": "writes"}
# The issue 12 parts of a rollup, timed as wholes (their reads and writes are also in the steps above).
PARTS = {"breakdowns": "breakdowns", "custom_rows": "custom", "_users_day": "users", "summarize": "summarize"}


_patched: set[str] = set()


def _timed(steps: dict[str, float]) -> None:
    """Charge the time of the rollup's store calls to its steps (reads and writes by collection)."""
    if _patched:
        return
    _patched.add("done")
    for name, part in PARTS.items():
        inner = getattr(jobs, name)

        def timed(*a, _inner=inner, _part=part, **k):
            t0 = time.perf_counter()
            try:
                return _inner(*a, **k)
            finally:
                steps[f"part:{_part}"] += time.perf_counter() - t0

        setattr(jobs, name, timed)
    for name, step in STEPS.items():
        inner = getattr(AnalyticsStore, name)

        def wrapper(self, *a, _inner=inner, _step=step, **k):
            t0 = time.perf_counter()
            try:
                return _inner(self, *a, **k)
            finally:
                key = f"{_step}:{a[0]}" if _step in ("writes", "reads") else _step
                steps[key] += time.perf_counter() - t0

        setattr(AnalyticsStore, name, wrapper)


def _slope(ys: list[float]) -> float:
    if len(ys) < 2:
        return 0.0
    xs = range(len(ys))
    mx, my = sum(xs) / len(ys), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


CHANNELS = ("appstore", "googleplay", "huawei", "xiaomi", "apk-web", "testflight")
VERSIONS = ("2.3.0", "2.4.0", "2.4.1", "2.5.0", "2.6.0")


STEP_TIMES: dict[str, float] = defaultdict(float)


def old_jobs(rev: str):
    """``analytics/jobs.py`` of git revision ``rev``, loaded beside today's package (its relative
    imports resolve to today's modules: the old algorithm with today's helpers)."""
    import importlib.util  # noqa: PLC0415

    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:analytics/jobs.py"], capture_output=True, text=True,
                            check=True).stdout
    spec = importlib.util.spec_from_loader("etcdcron.analytics._bench_old_jobs", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "etcdcron.analytics"
    exec(compile(source, f"{rev}:analytics/jobs.py", "exec"), module.__dict__)  # noqa: S102 - our own file
    return module


def rollup(uri: str, n_days: int, daily: int, dau: int, mod=jobs, name: str = "bench-rollup") -> dict:
    steps = STEP_TIMES
    _timed(steps)
    store = AnalyticsStore(uri)
    app = store.create_app(App.new(name, "America/Sao_Paulo"))
    app = store.update_app(app.id, {"counters": {"coins": {"type": "sum", "slots": []},
                                                 "taps": {"type": "slot", "slots": ["a", "b", "c"]},
                                                 "buys": {"type": "cpv", "slots": []}}})
    rnd = random.Random(2)
    first = dd.shift(dd.day_of(time.time(), app.tz), -n_days - 1)
    population: list[str] = []
    per_device = daily // dau
    times: list[float] = []
    split: list[dict[str, float]] = []
    for k, day in enumerate(dd.span(first, dd.shift(first, n_days - 1))):
        back = min(len(population), int(dau * 0.6))
        active = rnd.sample(population, back) + [f"d{len(population) + i}" for i in range(dau - back)]
        population += active[back:]
        start, end = dd.start_of(day, app.tz), dd.end_of(day, app.tz)
        docs = []
        for dev in active:
            for j in range(per_device):
                ts = rnd.uniform(start, end - 1)
                h = int(dev[1:])
                ev = Event(id=f"{day}-{dev}-{j}", type="open" if j % 2 == 0 else "usage", dev=dev, ts=ts,
                           sec=0.0 if j % 2 == 0 else round(rnd.uniform(1, 900), 3), ch=CHANNELS[h % len(CHANNELS)],
                           pf="ios" if h % 9 < 4 else "android", ver=VERSIONS[(h + k) // 7 % len(VERSIONS)],
                           uid=f"u{h}" if h % 5 < 2 else None)
                docs.append(ev.doc(app))
            if h % 3 == 0:  # a third of the devices send one custom event a day
                name = ("coins", "taps", "buys")[h % 9 // 3]
                ev = Event(id=f"{day}-{dev}-c", type="custom", dev=dev, ts=rnd.uniform(start, end - 1), name=name,
                           amt=1 + h % 4, slot="abc"[h % 3] if name == "taps" else "", ch=CHANNELS[h % len(CHANNELS)],
                           pf="ios" if h % 9 < 4 else "android", ver=VERSIONS[(h + k) // 7 % len(VERSIONS)])
                docs.append(ev.doc(app))
        for i in range(0, len(docs), 5000):
            store.insert_events(docs[i:i + 5000])
        now = dd.end_of(day, app.tz) + 3 * 3600
        steps.clear()
        t0 = time.perf_counter()
        out = mod.rollup(RunContext("rollup", int(now), "bench", 1000 + k, 1, {"app": app.id}, uri))
        times.append(time.perf_counter() - t0)
        split.append({k: round(v, 3) for k, v in sorted(steps.items()) if v >= 0.0005})
        assert out["apps"][app.name]["days"] == [day], out
        print(f"  day {k + 1:>2} {day}: {len(docs)} events, {len(active)} devices ({back} returning), "
              f"history {len(population)} devices, rollup {times[-1]:.3f} s", file=sys.stderr, flush=True)
    total = store.count_events(app.id)
    store.close()
    return {"days": n_days, "events_per_day": round(total / n_days), "dau": dau, "devices_total": len(population),
            "rollup_s_day1": round(times[0], 3), f"rollup_s_day{n_days}": round(times[-1], 3),
            "ratio_last_over_first": round(times[-1] / times[0], 2),
            "ratio_median_last5_over_first5": round(statistics.median(times[-5:]) / statistics.median(times[:5]), 2),
            f"ratio_day{n_days}_over_day2": round(times[-1] / times[1], 2),
            "slope_days2_to_last_pct_per_day": round(100 * _slope(times[1:]) / statistics.mean(times[1:]), 2),
            "events_per_s": round(total / sum(times)), "steps_day1": split[0], f"steps_day{n_days}": split[-1],
            "issue12_parts_share_of_rollup_median": _shares(split, times),
            "per_day_s": [round(t, 3) for t in times]}


def import_rate(uri: str, tmp: Path, n_events: int) -> dict:
    """``analytics import`` of an NDJSON file of ``n_events`` over 30 past days, then the same file
    again (everything already there), through the command's own function."""
    from etcdcron.analytics.importer import import_file  # noqa: PLC0415

    store = AnalyticsStore(uri)
    app = store.create_app(App.new("bench-import", "Asia/Shanghai"))
    rnd = random.Random(3)
    now = time.time()
    path = tmp / "history.ndjson"
    with open(path, "w") as f:
        for i in range(n_events):
            h = rnd.randrange(20_000)
            row = {"id": f"h{i}", "type": "open" if i % 2 else "usage", "deviceId": f"dev{h}",
                   "ts": round(now - 86_400 - rnd.uniform(0, 30 * 86_400), 3), "channel": CHANNELS[h % len(CHANNELS)],
                   "platform": "ios" if h % 9 < 4 else "android", "version": VERSIONS[h % len(VERSIONS)]}
            if i % 2 == 0:
                row["seconds"] = round(rnd.uniform(1, 600), 3)
            if h % 5 < 2:
                row["userId"] = f"u{h}"
            f.write(json.dumps(row) + "\n")
    out = {"events": n_events, "file_mb": round(path.stat().st_size / 2**20, 1)}
    for run in ("first", "rerun"):
        t0 = time.perf_counter()
        summary = import_file(store, app, path, "ndjson", now=now)
        took = time.perf_counter() - t0
        assert summary["stored"] == (n_events if run == "first" else 0), summary
        out[f"{run}_s"] = round(took, 2)
        out[f"{run}_events_per_s"] = round(n_events / took)
    store.close()
    return out


def _shares(split: list[dict[str, float]], times: list[float]) -> dict[str, float]:
    """Median over days of each issue-12 part's share of the day's rollup time: the breakdowns (their
    computation and their writes), registered users (reads and writes), custom sums, and the day's
    one read and reduction of raw events that feeds them all."""
    parts = {"breakdowns": ("part:breakdowns", "writes:breakdowns"), "users": ("part:users",),
             "custom": ("part:custom", "writes:custom"), "events_read": ("events",), "summarize": ("part:summarize",)}
    return {name: round(statistics.median(sum(s.get(k, 0.0) for k in keys) / t for s, t in zip(split, times)), 3)
            for name, keys in parts.items()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--senders", type=int, default=8)
    ap.add_argument("--import-events", type=int, default=100_000)
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--daily-events", type=int, default=10_000)
    ap.add_argument("--dau", type=int, default=2_000)
    ap.add_argument("--mongo", default=os.environ.get("BENCH_MONGO"))
    ap.add_argument("--rev", help="also run the rollup of this git revision's analytics/jobs.py on the same days "
                                  "(e.g. 7325d4d, before issue 12's metrics)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (server and collector logs)")
    opts = ap.parse_args()
    logsetup.configure("warning")
    tmp = Path(tempfile.mkdtemp(prefix="analytics-bench-"))
    server = None
    base = opts.mongo
    if not base:
        server = EmbeddedMongo(tmp / "mongo", log_path=tmp / "mongo.log").start()
        base = server.uri
    try:
        print(f"ingest: {opts.events} events in batches of {opts.batch}, {opts.senders} senders", file=sys.stderr)
        result = {"ingest": ingest(f"{base}/bench_ingest", tmp, opts.events, opts.batch, opts.senders)}
        print(f"import: {opts.import_events} events from an NDJSON file", file=sys.stderr)
        result["import"] = import_rate(f"{base}/bench_import", tmp, opts.import_events)
        result["import"]["over_collector_ingest"] = round(result["import"]["first_events_per_s"]
                                                          / result["ingest"]["events_per_s"], 2)
        print(f"rollup: {opts.days} days of {opts.daily_events} events from {opts.dau} devices", file=sys.stderr)
        result["rollup"] = rollup(f"{base}/bench_rollup", opts.days, opts.daily_events, opts.dau)
        if opts.rev:
            print(f"rollup of {opts.rev}: the same days", file=sys.stderr)
            before = rollup(f"{base}/bench_rollup_old", opts.days, opts.daily_events, opts.dau, old_jobs(opts.rev), "bench-old")
            result[f"rollup_{opts.rev}"] = {k: v for k, v in before.items() if not k.startswith("issue12")}
            result["rollup_time_over_rev"] = round(sum(result["rollup"]["per_day_s"]) / sum(before["per_day_s"]), 2)
        result["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                             "mongo": "SecantusDB (secantusd-py) on loopback" if server else base}
        print(json.dumps(result, indent=2))
    finally:
        if server:
            server.stop()
        if opts.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
