"""Cost of computing the next firing: etcdcron's Schedule.next_after against croniter and cronsim.

    .venv/bin/python bench/schedule_bench.py [--calls 20000] [--rev REV]

For each schedule it times successive ``next_after`` calls (each from the previous firing, as a node
does) in microseconds per call, beside croniter's ``get_next`` on naive wall time (what our rule is
built on, with no DST handling) and cronsim's iterator (Debian's DST rule, pure Python), all in the
same run. ``--rev REV`` also times ``etcdcron/schedule.py`` of a git revision (e.g. the one before
the DST rule, 1cf6d9e), loaded from ``git show``. It also times the first call in a zone and year
(the offset-change scan, cached afterwards). Ratios hold between machines; absolute times do not.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

from croniter import croniter
from cronsim import CronSim

from etcdcron import schedule as current

UTC = timezone.utc
CASES = [
    ("* * * * * *", "UTC"),
    ("*/5 * * * * *", "Europe/Berlin"),
    ("0 * * * *", "America/New_York"),
    ("*/20 0-3 * * 0", "Australia/Sydney"),
    ("30 2 * * *", "Europe/Berlin"),
    ("0 9 * * 1-5", "Asia/Tokyo"),
]
START = datetime(2026, 3, 1, tzinfo=UTC)


def per_call(fn, calls: int) -> float:
    t0 = time.perf_counter()
    fn(calls)
    return (time.perf_counter() - t0) / calls * 1e6


def ours(module, expr: str, tz: str):
    schedule = module.parse_schedule(expr, tz)

    def run(calls: int) -> None:
        t = START
        for _ in range(calls):
            t = schedule.next_after(t)
    return run


def with_croniter(expr: str, tz: str):
    fields = expr.split()
    text = " ".join(fields[1:] + fields[:1]) if len(fields) == 6 else expr  # seconds last

    def run(calls: int) -> None:
        it = croniter(text, START.astimezone(ZoneInfo(tz)).replace(tzinfo=None))
        for _ in range(calls):
            it.get_next(datetime)
    return run


def with_cronsim(expr: str, tz: str):
    def run(calls: int) -> None:
        it = CronSim(expr, START.astimezone(ZoneInfo(tz)))
        for _ in range(calls):
            next(it)
    return run


def load_rev(rev: str):
    text = subprocess.run(["git", "show", f"{rev}:etcdcron/schedule.py"], check=True, capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parent.parent).stdout
    path = Path(tempfile.mkdtemp()) / "schedule_rev.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("schedule_rev", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["schedule_rev"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=20_000)
    ap.add_argument("--rev", help="also time etcdcron/schedule.py of this git revision")
    a = ap.parse_args()
    old = load_rev(a.rev) if a.rev else None
    head = f"{'schedule':<20} {'zone':<18} {'etcdcron':>9}" + (f" {a.rev[:9]:>9}" if old else "") \
        + f" {'croniter':>9} {'cronsim':>9}   (us per next firing)"
    print(head)
    for expr, tz in CASES:
        row = [per_call(ours(current, expr, tz), a.calls)]
        if old:
            row.append(per_call(ours(old, expr, tz), a.calls))
        row += [per_call(with_croniter(expr, tz), a.calls), per_call(with_cronsim(expr, tz), a.calls)]
        print(f"{expr:<20} {tz:<18} " + " ".join(f"{v:9.1f}" for v in row))
    # the first call in a zone and year scans that year for offset changes (then cached)
    zones = ["Europe/Paris", "America/Chicago", "Australia/Adelaide", "Asia/Tehran", "America/Santiago"]
    t0 = time.perf_counter()
    for tz in zones:
        current.parse_schedule("0 * * * *", tz).next_after(datetime(2031, 6, 1, tzinfo=UTC))
    first = (time.perf_counter() - t0) / len(zones) * 1e3
    print(f"first interval call in a new zone and year (the scan): {first:.2f} ms; "
          f"~{first * 420 / 1000:.1f} s for every IANA zone once")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
