"""The ``etcdcron`` command line: parse arguments, call the app layer, map errors to exit codes.

Exit codes: 0 ok, 1 etcd unavailable or another runtime error, 2 bad input (nothing was written).
Every error is one line on stderr; no traceback reaches the user.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import sys
import time
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Optional

import typer

from etcdcron.admin import Admin
from etcdcron.errors import EtcdCronError, InvalidInput, InvalidSpec, JobNotFound
from etcdcron.jobs import DEFAULT_STARTING_DEADLINE, make_spec, parse_args, parse_instant
from etcdcron.keys import Keys
from etcdcron import log as logsetup

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="etcdcron: a cron daemon for a fleet; exactly one run per firing, coordinated through etcd.")

Etcd = Annotated[Optional[str], typer.Option("--etcd", envvar="ETCDCRON_ETCD", help="etcd endpoints URL[,URL…] (default http://127.0.0.1:2379)")]
Prefix = Annotated[str, typer.Option("--prefix", envvar="ETCDCRON_PREFIX", help="key prefix in etcd")]
Json = Annotated[bool, typer.Option("--json", help="machine-readable output")]


class Concurrency(str, Enum):
    forbid = "forbid"
    allow = "allow"
    replace = "replace"


class NodeLoss(str, Enum):
    rerun = "rerun"
    skip = "skip"


class Catchup(str, Enum):
    latest = "latest"
    all = "all"
    none = "none"


def _admin(etcd: str | None, prefix: str) -> Admin:
    from etcdcron.app import connect

    store, _ = connect(etcd, embed=False)
    return Admin(store, Keys(prefix))


def _out(data, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def _ts(t: float | None) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if t else "-"


@app.command()
def serve(
    etcd: Etcd = None,
    prefix: Prefix = "/etcdcron",
    node_id: Annotated[Optional[str], typer.Option("--node-id", envvar="ETCDCRON_NODE_ID", help="node id (default: host name)")] = None,
    ttl: Annotated[int, typer.Option("--ttl", min=2, max=60, help="node lease TTL, seconds")] = 3,
    levels: Annotated[str, typer.Option("--levels", help="priority levels this node serves")] = "1,2,3",
    workers: Annotated[int, typer.Option("--workers", min=1, max=1024, help="concurrent runs")] = 16,
    grace: Annotated[float, typer.Option("--grace", min=0, help="SIGTERM: seconds running jobs may finish")] = 30.0,
    mongo: Annotated[Optional[str], typer.Option("--mongo", envvar="ETCDCRON_MONGO", help="MongoDB URI for run history")] = None,
    log_level: Annotated[str, typer.Option("--log-level", envvar="ETCDCRON_LOG_LEVEL")] = "info",
    max_skew: Annotated[float, typer.Option("--max-skew", min=0.5, help="refuse to execute when this node's clock is off etcd's by more, seconds")] = 2.0,
    clock_skew: Annotated[float, typer.Option("--clock-skew", hidden=True, help="testing: offset this node's wall clock")] = 0.0,
) -> None:
    """Run one node until SIGTERM or SIGINT."""
    from etcdcron.app import ServeOptions
    from etcdcron.app import serve as run
    from etcdcron.daemon import NodeConfig

    try:
        lv = tuple(sorted({int(x) for x in levels.split(",") if x.strip()}))
    except ValueError:
        raise InvalidSpec(f"bad --levels {levels!r}: must be a list like 1,2,3") from None
    if not lv or any(x not in (1, 2, 3) for x in lv):
        raise InvalidSpec(f"bad --levels {levels!r}: levels are 1, 2 and 3")
    nid = node_id or socket.gethostname()
    from etcdcron.jobs import check_name
    try:
        check_name(nid)
    except InvalidInput:
        raise InvalidSpec(f"bad --node-id {nid!r}: must match [a-z0-9][a-z0-9._-]{{0,62}}") from None
    logsetup.configure(log_level)
    raise typer.Exit(run(ServeOptions(etcd, prefix, NodeConfig(nid, lv, ttl, workers, grace=grace, max_skew=max_skew, mongo=mongo), skew=clock_skew)))


@app.command()
def add(
    schedule: Annotated[str, typer.Argument(help='cron expression, "@every 5m", "@hourly", …')],
    builtin: Annotated[Optional[str], typer.Argument(help="builtin job to run (entry point etcdcron.jobs)")] = None,
    name: Annotated[Optional[str], typer.Option("--name")] = None,
    shell: Annotated[Optional[str], typer.Option("--shell", help="shell command")] = None,
    http: Annotated[Optional[str], typer.Option("--http", help="URL to POST to")] = None,
    tz: Annotated[str, typer.Option("--tz", help="IANA time zone")] = "UTC",
    level: Annotated[int, typer.Option("--level", help="1 critical, 2 transactional, 3 best effort")] = 2,
    concurrency: Annotated[Concurrency, typer.Option("--concurrency")] = Concurrency.forbid,
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="seconds")] = None,
    retries: Annotated[int, typer.Option("--retries")] = 0,
    starting_deadline: Annotated[float, typer.Option("--starting-deadline", help="seconds")] = DEFAULT_STARTING_DEADLINE,
    jitter: Annotated[float, typer.Option("--jitter", help="seconds")] = 0.0,
    on_node_loss: Annotated[NodeLoss, typer.Option("--on-node-loss")] = NodeLoss.rerun,
    arg: Annotated[list[str], typer.Option("--arg", help="KEY=VALUE for the job")] = [],
    catchup: Annotated[Catchup, typer.Option("--catchup", help="after downtime: newest missed firing, all, or none")] = Catchup.latest,
    catchup_cap: Annotated[int, typer.Option("--catchup-cap", help="at most this many replays after one outage")] = 20,
    retry_delay: Annotated[float, typer.Option("--retry-delay", help="first retry backoff, seconds (doubles, jittered)")] = 1.0,
    start_at: Annotated[Optional[str], typer.Option("--start-at", help="no firing before (ISO-8601 or Unix seconds)")] = None,
    end_at: Annotated[Optional[str], typer.Option("--end-at", help="no firing after")] = None,
    max_runs: Annotated[Optional[int], typer.Option("--max-runs", help="stop after this many runs")] = None,
    etcd: Etcd = None, prefix: Prefix = "/etcdcron", as_json: Json = False,
) -> None:
    """Create or replace a job."""
    spec = make_spec(name, schedule, builtin=builtin, shell=shell, http=http, tz=tz, level=level,
                     concurrency=concurrency.value, timeout=timeout, retries=retries,
                     starting_deadline=starting_deadline, jitter=jitter, on_node_loss=on_node_loss.value,
                     args=parse_args(arg), active_since=time.time(), catchup=catchup.value,
                     catchup_cap=catchup_cap, retry_delay=retry_delay,
                     start_at=parse_instant(start_at, "--start-at") if start_at else None,
                     end_at=parse_instant(end_at, "--end-at") if end_at else None, max_runs=max_runs)
    spec, created = _admin(etcd, prefix).put_job(spec)
    _out({"job": spec.name, "created": created}, as_json, f"{'added' if created else 'replaced'} job {spec.name}")


@app.command("ls")
def ls(etcd: Etcd = None, prefix: Prefix = "/etcdcron", as_json: Json = False) -> None:
    """List jobs."""
    jobs = _admin(etcd, prefix).jobs()
    rows = [f"{'NAME':<24} {'SCHEDULE':<20} {'TZ':<16} {'LVL':<3} {'STATE':<7} TARGET"]
    for j in jobs:
        rows.append(f"{j.name:<24} {j.schedule:<20} {j.tz:<16} {j.level:<3} {'paused' if j.paused else 'active':<7} {j.kind}:{j.target}")
    _out([dataclasses.asdict(j) for j in jobs], as_json, "\n".join(rows))


@app.command()
def show(name: str, etcd: Etcd = None, prefix: Prefix = "/etcdcron", as_json: Json = False) -> None:
    """Show one job's spec."""
    spec = _admin(etcd, prefix).get_job(name)
    data = dataclasses.asdict(spec)
    _out(data, as_json, "\n".join(f"{k}: {v}" for k, v in data.items()))


@app.command()
def rm(name: str, etcd: Etcd = None, prefix: Prefix = "/etcdcron") -> None:
    """Remove a job."""
    _admin(etcd, prefix).remove(name)
    typer.echo(f"removed job {name}")


@app.command()
def pause(name: str, etcd: Etcd = None, prefix: Prefix = "/etcdcron") -> None:
    """Start no new run of a job."""
    _admin(etcd, prefix).set_paused(name, True)
    typer.echo(f"paused job {name}")


@app.command()
def resume(name: str, etcd: Etcd = None, prefix: Prefix = "/etcdcron") -> None:
    """Resume a paused job (from now on; what it skipped while paused is not caught up)."""
    _admin(etcd, prefix).set_paused(name, False)
    typer.echo(f"resumed job {name}")


@app.command("next")
def next_(name: str, n: Annotated[int, typer.Option("-n", min=1, max=1000)] = 5,
          etcd: Etcd = None, prefix: Prefix = "/etcdcron", as_json: Json = False) -> None:
    """The next N firings, in the job's zone and in UTC."""
    pairs = _admin(etcd, prefix).next_firings(name, n)
    data = [{"local": loc.isoformat(), "utc": utc.strftime("%Y-%m-%dT%H:%M:%SZ")} for loc, utc in pairs]
    _out(data, as_json, "\n".join(f"{d['local']}  {d['utc']}" for d in data))


@app.command()
def history(name: Annotated[Optional[str], typer.Argument()] = None,
            limit: Annotated[int, typer.Option("--limit", min=1)] = 20,
            mongo: Annotated[Optional[str], typer.Option("--mongo", envvar="ETCDCRON_MONGO", help="read the full history from MongoDB")] = None,
            etcd: Etcd = None, prefix: Prefix = "/etcdcron", as_json: Json = False) -> None:
    """Firings and what became of them: the recent window from etcd, or all of it from MongoDB (--mongo)."""
    if name:
        from etcdcron.jobs import check_name
        check_name(name)
    if mongo:
        from etcdcron.history import MongoHistory
        rows = MongoHistory(mongo).read(name, limit)
    else:
        rows = [{**c.data, "job": c.job, "slot": c.slot, "state": c.state, "node": c.node, "fence": c.fence,
                 "attempt": c.attempt} for c in _admin(etcd, prefix).history(name, limit)]
    data = [{"job": r["job"], "slot": _ts(r["slot"]), "state": r.get("state"), "node": r.get("node"),
             "fence": r.get("fence") or 0, "attempt": r.get("attempt", 0), "started": r.get("started"),
             "ended": r.get("ended"), "exit_code": r.get("exit_code"), "output": r.get("output"),
             "reason": r.get("reason") or r.get("killed_by")} for r in rows]
    rows = [f"{'JOB':<24} {'SLOT':<21} {'STATE':<10} {'NODE':<16} {'FENCE':>8} {'TRY':>3} EXIT"]
    rows += [f"{d['job']:<24} {d['slot']:<21} {d['state']:<10} {str(d['node'] or '-'):<16} {d['fence']:>8} "
             f"{d['attempt']:>3} {'' if d['exit_code'] is None else d['exit_code']}" for d in data]
    _out(data, as_json, "\n".join(rows))


nodes_app = typer.Typer(help="Live nodes, and which one leads; `nodes drain ID` takes one out.")
app.add_typer(nodes_app, name="nodes")


@nodes_app.callback(invoke_without_command=True)
def nodes(ctx: typer.Context, etcd: Etcd = None, prefix: Prefix = "/etcdcron", as_json: Json = False) -> None:
    """Live nodes, and which one leads."""
    if ctx.invoked_subcommand is not None:
        return
    found, _leader = _admin(etcd, prefix).nodes()
    rows = [f"{'NODE':<24} {'LEVELS':<7} {'HOST':<20} {'PID':>7}  ROLE"]
    rows += [f"{n['id']:<24} {','.join(map(str, n.get('levels', []))):<7} {n.get('host', ''):<20} {n.get('pid', 0):>7}  "
             f"{'leader' if n['leader'] else 'skewed' if n.get('skewed') else 'member'}" for n in found]
    _out(found, as_json, "\n".join(rows))


@nodes_app.command("drain")
def nodes_drain(node_id: str, etcd: Etcd = None, prefix: Prefix = "/etcdcron") -> None:
    """Stop a node claiming; it finishes its runs and leaves."""
    _admin(etcd, prefix).drain(node_id)
    typer.echo(f"draining node {node_id}")


@app.command()
def trigger(name: str, etcd: Etcd = None, prefix: Prefix = "/etcdcron") -> None:
    """Run a job now, once (through a claim like any firing)."""
    at = _admin(etcd, prefix).trigger(name)
    typer.echo(f"triggered job {name} at {_ts(at)}")


@app.command()
def kill(name: str, etcd: Etcd = None, prefix: Prefix = "/etcdcron") -> None:
    """Stop the job's running runs now, child processes included."""
    n = _admin(etcd, prefix).kill(name)
    typer.echo(f"killing {n} running run(s) of job {name}")


@app.command()
def degrade(level: Annotated[int, typer.Argument(help="stop starting jobs of this level and above")],
            kill_running: Annotated[bool, typer.Option("--kill", help="also stop their running processes")] = False,
            etcd: Etcd = None, prefix: Prefix = "/etcdcron") -> None:
    """Drain a priority level and those above it (1 critical, 2 transactional, 3 best effort)."""
    levels = _admin(etcd, prefix).degrade(level, kill_running)
    typer.echo(f"degraded levels {','.join(map(str, levels))}{' (running jobs killed)' if kill_running else ''}")


@app.command()
def restore(level: Annotated[int, typer.Argument(help="restart jobs of this level and above")],
            etcd: Etcd = None, prefix: Prefix = "/etcdcron") -> None:
    """End a degradation."""
    levels = _admin(etcd, prefix).restore(level)
    typer.echo(f"degraded levels now: {','.join(map(str, levels)) or 'none'}")


@app.command()
def backfill(name: str,
             start: Annotated[str, typer.Option("--from", help="ISO-8601 or Unix seconds")],
             end: Annotated[str, typer.Option("--to", help="ISO-8601 or Unix seconds")],
             etcd: Etcd = None, prefix: Prefix = "/etcdcron", as_json: Json = False) -> None:
    """Run each firing of a past range once; a second backfill of the same range runs nothing."""
    res = _admin(etcd, prefix).backfill(name, parse_instant(start, "--from"), parse_instant(end, "--to"))
    _out(res, as_json, f"backfill of {name}: {res['firings']} firing(s) handed to the nodes, "
                       f"{res['already']} already backfilled")


@app.command()
def status(etcd: Etcd = None, prefix: Prefix = "/etcdcron", as_json: Json = False) -> None:
    """Cluster summary."""
    s = _admin(etcd, prefix).status()
    states = ", ".join(f"{k} {v}" for k, v in sorted(s["claims_by_state"].items())) or "none"
    text = (f"etcd {s['etcd']['version']} at revision {s['etcd']['revision']}, db {s['etcd']['db_size']} bytes\n"
            f"nodes {s['nodes']}, leader {s['leader'] or '-'}\n"
            f"jobs {s['jobs']} ({s['paused']} paused), running {s['running']}\n"
            f"recent firings: {states}")
    _out(s, as_json, text)


def _register_analytics() -> None:
    """The analytics commands (collect, apps, analytics) live with the analytics package."""
    from etcdcron.analytics.cli import register

    register(app)


_register_analytics()


def main(argv: list[str] | None = None) -> int:
    """Entry point: every error is one line on stderr and an exit code, never a traceback."""
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="etcdcron", standalone_mode=False)
        return 0
    except (InvalidInput, JobNotFound) as exc:
        typer.echo(f"error: {exc}", err=True)
        return 2
    except EtcdCronError as exc:
        typer.echo(f"error: {exc}", err=True)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        # click's exceptions (typer may vendor its own click, so they are matched by shape, not class)
        kind = type(exc).__name__
        if kind == "Exit":
            return int(getattr(exc, "exit_code", 0))
        if kind == "Abort":
            typer.echo("aborted", err=True)
            return 130
        if hasattr(exc, "format_message"):
            message = exc.format_message().strip().splitlines()
            typer.echo(f"error: {message[0] if message else kind}", err=True)
            return 2
        if os.environ.get("ETCDCRON_DEBUG"):
            raise
        typer.echo(f"error: unexpected {kind}: {str(exc).splitlines()[0] if str(exc) else ''} (ETCDCRON_DEBUG=1 shows the traceback)", err=True)
        return 1


def run() -> None:
    sys.exit(main())


if __name__ == "__main__":
    run()
