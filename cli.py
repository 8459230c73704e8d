"""The ``etcdcron`` command line: parse arguments, call the app layer, map errors to exit codes.

Exit codes: 0 ok, 1 etcd unavailable or another runtime error, 2 bad input (nothing was written);
``trigger --wait`` exits 1 when the run did not succeed, and 124 when its --timeout passed first.
Every error is one line on stderr; no traceback reaches the user.

Settings (etcd endpoints and credentials, MongoDB, the serve and collect options) are not declared
command by command: ``@configured(GROUP)`` gives a command the flags of a group of
:data:`etcdcron.config.SETTINGS` plus ``--config``, and hands it the resolved :class:`Config` as
``cfg`` (defaults < config file < environment < flags). A new etcd command is
``@configured("etcd")`` and opens the store with ``_admin(cfg)``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from datetime import datetime, timezone
from enum import Enum
from typing import Annotated, Optional

import typer

from etcdcron import __version__
from etcdcron import log as logsetup
from etcdcron.admin import Admin, schedule_firings
from etcdcron.cliopts import configured
from etcdcron.config import Config
from etcdcron.errors import EtcdCronError, InvalidInput, NotFound
from etcdcron.jobs import DEFAULT_STARTING_DEADLINE, make_spec, parse_args, parse_env, parse_instant, read_env_file
from etcdcron.keys import Keys

app = typer.Typer(add_completion=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="etcdcron: a cron daemon for a fleet; exactly one run per firing, coordinated through etcd.")

Json = Annotated[bool, typer.Option("--json", help="machine-readable output")]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"etcdcron {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[Optional[bool], typer.Option("--version", is_eager=True, callback=_version,
                                                          help="print the version and exit")] = None) -> None:
    """etcdcron: a cron daemon for a fleet; exactly one run per firing, coordinated through etcd."""


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


def _admin(cfg: Config) -> Admin:
    from etcdcron.app import open_store

    return Admin(open_store(cfg), Keys(cfg["etcd.prefix"]))


def _out(data, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def _ts(t: float | None) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ") if t else "-"


@app.command()
@configured("serve")
def serve(
    cfg: Config,
    clock_skew: Annotated[float, typer.Option("--clock-skew", hidden=True, help="testing: offset this node's wall clock")] = 0.0,
) -> None:
    """Run one node until SIGTERM or SIGINT."""
    from etcdcron.app import ServeOptions
    from etcdcron.app import serve as run

    logsetup.configure(cfg["log.level"])
    raise typer.Exit(run(ServeOptions.of(cfg, skew=clock_skew)))


@app.command()
@configured("etcd")
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
    env: Annotated[list[str], typer.Option("--env", metavar="NAME=VALUE", help="NAME=VALUE in a shell job's environment (repeatable)")] = [],
    env_file: Annotated[Optional[str], typer.Option("--env-file", metavar="FILE", help="NAME=VALUE lines for the environment (# comments; --env wins)")] = None,
    catchup: Annotated[Catchup, typer.Option("--catchup", help="after downtime: newest missed firing, all, or none")] = Catchup.latest,
    catchup_cap: Annotated[int, typer.Option("--catchup-cap", help="at most this many replays after one outage")] = 20,
    retry_delay: Annotated[float, typer.Option("--retry-delay", help="first retry backoff, seconds (doubles, jittered)")] = 1.0,
    start_at: Annotated[Optional[str], typer.Option("--start-at", help="no firing before (ISO-8601 or Unix seconds)")] = None,
    end_at: Annotated[Optional[str], typer.Option("--end-at", help="no firing after")] = None,
    max_runs: Annotated[Optional[int], typer.Option("--max-runs", help="stop after this many runs")] = None,
    as_json: Json = False, cfg: Config = None,
) -> None:
    """Create or replace a job."""
    spec = make_spec(name, schedule, builtin=builtin, shell=shell, http=http, tz=tz, level=level,
                     concurrency=concurrency.value, timeout=timeout, retries=retries,
                     starting_deadline=starting_deadline, jitter=jitter, on_node_loss=on_node_loss.value,
                     args=parse_args(arg), env={**(read_env_file(env_file) if env_file else {}), **parse_env(env)},
                     active_since=time.time(), catchup=catchup.value,
                     catchup_cap=catchup_cap, retry_delay=retry_delay,
                     start_at=parse_instant(start_at, "--start-at") if start_at else None,
                     end_at=parse_instant(end_at, "--end-at") if end_at else None, max_runs=max_runs)
    spec, created = _admin(cfg).put_job(spec)
    _out({"job": spec.name, "created": created}, as_json, f"{'added' if created else 'replaced'} job {spec.name}")


@app.command("ls")
@configured("etcd")
def ls(as_json: Json = False, cfg: Config = None) -> None:
    """List jobs with their next firing and last outcome (the rows of GET /api/v1/jobs)."""
    jobs = _admin(cfg).job_rows()
    rows = [f"{'NAME':<24} {'SCHEDULE':<20} {'TZ':<16} {'LVL':<3} {'STATE':<7} {'NEXT (UTC)':<21} {'LAST':<10} TARGET"]
    for j in jobs:
        rows.append(f"{j['name']:<24} {j['schedule']:<20} {j['tz']:<16} {j['level']:<3} {'paused' if j['paused'] else 'active':<7} "
                    f"{(j['next'] or {}).get('utc', '-'):<21} {(j['last'] or {}).get('state', '-'):<10} {j['kind']}:{j['target']}")
    _out(jobs, as_json, "\n".join(rows))


@app.command()
@configured("etcd")
def show(name: str, as_json: Json = False, cfg: Config = None) -> None:
    """Show one job's spec."""
    spec = _admin(cfg).get_job(name)
    data = dataclasses.asdict(spec)
    _out(data, as_json, "\n".join(f"{k}: {v}" for k, v in data.items()))


@app.command()
@configured("etcd")
def rm(name: str, as_json: Json = False, cfg: Config = None) -> None:
    """Remove a job."""
    _admin(cfg).remove(name)
    _out({"job": name, "removed": True}, as_json, f"removed job {name}")


class FileFormat(str, Enum):
    yaml = "yaml"
    toml = "toml"


@app.command()
@configured("etcd")
def apply(files: Annotated[list[str], typer.Argument(metavar="FILE", help="jobs files, YAML or TOML (by extension; - reads standard input)")],
          prune: Annotated[bool, typer.Option("--prune", help="remove jobs applied before that the files no longer name")] = False,
          dry_run: Annotated[bool, typer.Option("--dry-run", help="print what would change; write nothing")] = False,
          fmt: Annotated[Optional[FileFormat], typer.Option("--format", help="read every file as this format")] = None,
          as_json: Json = False, cfg: Config = None) -> None:
    """Create and replace the jobs the files describe (all validated first); a second apply changes nothing."""
    from etcdcron import apply as jobfiles

    entries = jobfiles.load(files, fmt.value if fmt else None)
    if prune and not entries and not dry_run:
        raise InvalidInput("apply --prune of files that name no job would remove every applied job: "
                           "refused (remove jobs with `etcdcron rm`, or check the files)")
    changes = _admin(cfg).apply(entries, prune=prune, dry_run=dry_run)
    _out(jobfiles.result(changes, dry_run), as_json, jobfiles.describe(changes, dry_run))


@app.command()
@configured("etcd")
def export(fmt: Annotated[FileFormat, typer.Option("--format")] = FileFormat.yaml,
           output: Annotated[Optional[str], typer.Option("--output", "-o", metavar="FILE", help="write to FILE instead of standard output")] = None,
           cfg: Config = None) -> None:
    """Write the current jobs as a jobs file (`etcdcron apply` of it changes nothing)."""
    text = _admin(cfg).export(fmt.value)
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        # written whole or not at all: a half-written jobs file applied later would drop jobs
        tmp = f"{output}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, output)
    except OSError as exc:
        raise InvalidInput(f"bad --output {output!r}: {exc.strerror or exc}") from None


@app.command()
@configured("etcd")
def pause(name: str, as_json: Json = False, cfg: Config = None) -> None:
    """Start no new run of a job."""
    _admin(cfg).set_paused(name, True)
    _out({"job": name, "paused": True}, as_json, f"paused job {name}")


@app.command()
@configured("etcd")
def resume(name: str, as_json: Json = False, cfg: Config = None) -> None:
    """Resume a paused job (from now on; what it skipped while paused is not caught up)."""
    _admin(cfg).set_paused(name, False)
    _out({"job": name, "paused": False}, as_json, f"resumed job {name}")


@app.command("next")
@configured("etcd")
def next_(name: Annotated[Optional[str], typer.Argument(help="a saved job (or give --schedule)")] = None,
          n: Annotated[int, typer.Option("-n", min=1, max=1000)] = 5,
          start: Annotated[Optional[str], typer.Option(
              "--from", help="firings after this instant: ISO-8601 (without an offset: UTC) or Unix seconds; default now")] = None,
          schedule: Annotated[Optional[str], typer.Option(
              "--schedule", help="a schedule not saved yet, instead of NAME (needs no etcd)")] = None,
          tz: Annotated[Optional[str], typer.Option("--tz", help="the zone of --schedule (default UTC)")] = None,
          as_json: Json = False, cfg: Config = None) -> None:
    """The next N firings, in the job's zone and in UTC, with a note on each one a DST change touches."""
    if (name is None) == (schedule is None):
        raise InvalidInput("give a job NAME or --schedule EXPR (one of them)")
    if tz is not None and schedule is None:
        raise InvalidInput("--tz goes with --schedule: a saved job has its own zone")
    after = None if start is None else parse_instant(start, "--from")
    if schedule is not None:
        rows = schedule_firings(schedule, "UTC" if tz is None else tz, n, after)
    else:
        rows = _admin(cfg).next_firings(name, n, after)
    _out(rows, as_json, "\n".join(f"{r['local']}  {r['utc']}" + (f"  {r['note']}" if r["note"] else "")
                                  for r in rows))


@app.command()
@configured("history")
def history(name: Annotated[Optional[str], typer.Argument()] = None,
            limit: Annotated[int, typer.Option("--limit", min=1)] = 20,
            state: Annotated[Optional[str], typer.Option("--state", help="only these states, comma-separated")] = None,
            node: Annotated[Optional[str], typer.Option("--node", help="only runs of this node")] = None,
            since: Annotated[Optional[str], typer.Option("--since", help="slots at or after (ISO-8601 or Unix seconds)")] = None,
            until: Annotated[Optional[str], typer.Option("--until", help="slots at or before")] = None,
            cursor: Annotated[Optional[str], typer.Option("--cursor", help="the next page: the cursor the previous one printed")] = None,
            as_json: Json = False, cfg: Config = None) -> None:
    """Firings and what became of them: the recent window from etcd, and with --mongo the archive too."""
    from etcdcron.history import MongoHistory, RunQuery, query_runs

    q = RunQuery.of(name, state, node, since, until, limit, cursor)  # validated before etcd is touched
    page = query_runs(_admin(cfg), q, MongoHistory(cfg["mongo.uri"]) if cfg["mongo.uri"] else None)
    data = [r | {"slot": r["slot_utc"]} for r in page.runs]
    rows = [f"{'JOB':<24} {'SLOT':<21} {'STATE':<10} {'NODE':<16} {'FENCE':>8} {'TRY':>3} EXIT"]
    rows += [f"{d['job']:<24} {d['slot']:<21} {d['state']:<10} {str(d['node'] or '-'):<16} {d['fence']:>8} "
             f"{d['attempt']:>3} {'' if d['exit_code'] is None else d['exit_code']}" for d in data]
    if page.next_cursor:
        rows.append(f"more: --cursor {page.next_cursor}")
    _out(data, as_json, "\n".join(rows))


nodes_app = typer.Typer(help="Live nodes, and which one leads; `nodes drain ID` takes one out.")
app.add_typer(nodes_app, name="nodes")


@nodes_app.callback(invoke_without_command=True)
@configured("etcd")
def nodes(ctx: typer.Context, as_json: Json = False, cfg: Config = None) -> None:
    """Live nodes, and which one leads."""
    if ctx.invoked_subcommand is not None:
        return
    found, _leader = _admin(cfg).nodes()
    rows = [f"{'NODE':<24} {'LEVELS':<7} {'HOST':<20} {'PID':>7} {'LEASE':>6} {'RUNS':>5}  ROLE"]
    rows += [f"{n['id']:<24} {','.join(map(str, n.get('levels', []))):<7} {n.get('host', ''):<20} {n.get('pid', 0):>7} "
             f"{'-' if n['lease_ttl'] is None else str(n['lease_ttl']) + 's':>6} {len(n['running']):>5}  "
             f"{'leader' if n['leader'] else 'skewed' if n.get('skewed') else 'member'}{' (draining)' if n['draining'] else ''}"
             for n in found]
    _out(found, as_json, "\n".join(rows))


@nodes_app.command("drain")
@configured("etcd")
def nodes_drain(node_id: str, as_json: Json = False, cfg: Config = None) -> None:
    """Stop a node claiming; it finishes its runs and leaves."""
    _admin(cfg).drain(node_id)
    _out({"node": node_id, "draining": True}, as_json, f"draining node {node_id}")


WAIT_TIMED_OUT = 124  # trigger --wait: --timeout passed before the outcome (as GNU timeout(1) exits)


@app.command()
@configured("etcd")
def trigger(name: str,
            wait: Annotated[bool, typer.Option("--wait", help="wait for this firing's outcome and exit with it: 0 succeeded, "
                                                          f"1 otherwise, {WAIT_TIMED_OUT} if --timeout passes first")] = False,
            timeout: Annotated[Optional[float], typer.Option("--timeout", metavar="S", help="with --wait: stop waiting after "
                                                             "S seconds (the run goes on)")] = None,
            as_json: Json = False, cfg: Config = None) -> None:
    """Run a job now, once (through a claim like any firing); --wait for its outcome."""
    if timeout is not None and not wait:
        raise InvalidInput("--timeout goes with --wait")
    if timeout is not None and not (0 < timeout < float("inf")):
        raise InvalidInput(f"bad --timeout {timeout}: seconds, more than 0")
    adm = _admin(cfg)
    t = adm.request_trigger(name)
    triggered = {"job": name, "triggered": _ts(t.at), "slot_epoch": int(t.at)}
    if not wait:
        _out(triggered, as_json, f"triggered job {name} at {_ts(t.at)}")
        return
    if not as_json:
        typer.echo(f"triggered job {name} at {_ts(t.at)}, waiting for its outcome")
    out = adm.wait_trigger(t, timeout, notify=lambda text: typer.echo(f"warning: {text}", err=True))
    data = triggered | (out.run or {"state": None}) | {"final": out.final, "note": out.note}
    if as_json:
        typer.echo(json.dumps(data, indent=2, default=str))
    if not out.final:
        typer.echo(f"error: {out.note}", err=True)
        raise typer.Exit(WAIT_TIMED_OUT)
    if not as_json:
        typer.echo(out.note)
    raise typer.Exit(0 if out.succeeded else 1)


@app.command()
@configured("etcd")
def kill(name: str, as_json: Json = False, cfg: Config = None) -> None:
    """Stop the job's running runs now, child processes included."""
    n = _admin(cfg).kill(name)
    _out({"job": name, "killing": n}, as_json, f"killing {n} running run(s) of job {name}")


@app.command()
@configured("etcd")
def degrade(level: Annotated[int, typer.Argument(help="stop starting jobs of this level and above")],
            kill_running: Annotated[bool, typer.Option("--kill", help="also stop their running processes")] = False,
            as_json: Json = False, cfg: Config = None) -> None:
    """Drain a priority level and those above it (1 critical, 2 transactional, 3 best effort)."""
    levels = _admin(cfg).degrade(level, kill_running)
    _out({"degraded": list(levels), "killed_running": kill_running}, as_json,
         f"degraded levels {','.join(map(str, levels))}{' (running jobs killed)' if kill_running else ''}")


@app.command()
@configured("etcd")
def restore(level: Annotated[int, typer.Argument(help="restart jobs of this level and above")],
            as_json: Json = False, cfg: Config = None) -> None:
    """End a degradation."""
    levels = _admin(cfg).restore(level)
    _out({"degraded": list(levels)}, as_json, f"degraded levels now: {','.join(map(str, levels)) or 'none'}")


@app.command()
@configured("etcd")
def backfill(name: str,
             start: Annotated[str, typer.Option("--from", help="ISO-8601 or Unix seconds")],
             end: Annotated[str, typer.Option("--to", help="ISO-8601 or Unix seconds")],
             as_json: Json = False, cfg: Config = None) -> None:
    """Run each firing of a past range once; a second backfill of the same range runs nothing."""
    res = _admin(cfg).backfill(name, parse_instant(start, "--from"), parse_instant(end, "--to"))
    _out(res, as_json, f"backfill of {name}: {res['firings']} firing(s) handed to the nodes, "
                       f"{res['already']} already backfilled")


@app.command()
@configured("etcd")
def status(as_json: Json = False, cfg: Config = None) -> None:
    """Cluster summary."""
    s = _admin(cfg).status()
    states = ", ".join(f"{k} {v}" for k, v in sorted(s["claims_by_state"].items())) or "none"
    text = (f"etcd {s['etcd']['version']} at revision {s['etcd']['revision']}, db {s['etcd']['db_size']} bytes\n"
            f"nodes {s['nodes']}, leader {s['leader'] or '-'}\n"
            f"jobs {s['jobs']} ({s['paused']} paused), running {s['running']}\n"
            f"recent firings: {states}\n"
            f"degraded levels: {','.join(map(str, s['degraded']['levels'])) or 'none'}"
            f"{' (running jobs killed)' if s['degraded']['kill'] and s['degraded']['levels'] else ''}")
    _out(s, as_json, text)


config_app = typer.Typer(help="The resolved configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")


@config_app.command("show")
@configured("all")
def config_show(as_json: Json = False, cfg: Config = None) -> None:
    """Every setting, its value and where it came from (default, file, env, flag); secrets masked."""
    rows = cfg.rows()
    text = [f"# config file: {cfg.file or 'none'}", f"{'KEY':<22} {'VALUE':<40} SOURCE"]
    text += [f"{r['key']:<22} {json.dumps(r['value']) if r['value'] is not None else '-':<40} {r['source']}" for r in rows]
    _out({"file": cfg.file, "settings": rows}, as_json, "\n".join(text))


@app.command()
@configured("web")
def web(cfg: Config = None) -> None:
    """Serve the web console and the JSON API (/api/v1) until SIGTERM; log in with an account (`accounts create`)."""
    try:
        from etcdcron.web import serve as run  # noqa: PLC0415
    except ImportError as exc:
        raise EtcdCronError(f"web needs the console's web stack ({exc.name}): pip install 'etcdcron[web]'") from None

    logsetup.configure(cfg["log.level"])
    raise typer.Exit(run(cfg))


accounts_app = typer.Typer(help="Console and API accounts: viewer reads, operator operates, admin also changes jobs, apps and accounts.",
                           no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")


class RoleName(str, Enum):
    viewer = "viewer"
    operator = "operator"
    admin = "admin"


PasswordFile = Annotated[Optional[str], typer.Option("--password-file", metavar="FILE",
                                                     help="read the password from FILE (- for standard input) instead of a prompt")]


def _accounts(cfg: Config):
    from etcdcron.accounts import Accounts  # noqa: PLC0415

    adm = _admin(cfg)
    return Accounts(adm.store, adm.keys)


def _password(path: str | None) -> str:
    """The password from a file (its first line) or a hidden prompt asked twice; checked before etcd is touched."""
    from etcdcron.accounts import check_password  # noqa: PLC0415

    if path is None:
        if not sys.stdin.isatty():
            raise InvalidInput("no terminal to ask for the password: give --password-file FILE (or - for stdin)")
        pw = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        try:
            text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
        except (OSError, UnicodeDecodeError) as exc:
            raise InvalidInput(f"cannot read --password-file {path}: {getattr(exc, 'strerror', None) or exc}") from None
        pw = text.splitlines()[0] if text.strip() else ""
    return check_password(pw)


@accounts_app.command("create")
@configured("etcd")
def accounts_create(name: str, role: Annotated[RoleName, typer.Option("--role", help="viewer, operator or admin")],
                    password_file: PasswordFile = None, as_json: Json = False, cfg: Config = None) -> None:
    """Create an account (the password is asked for twice, or read from --password-file)."""
    from etcdcron.accounts import check_account_name  # noqa: PLC0415

    check_account_name(name)
    acct = _accounts(cfg).create(name, role.value, _password(password_file))
    _out(acct.public(), as_json, f"created account {acct.name} ({acct.role.value})")


@accounts_app.command("ls")
@configured("etcd")
def accounts_ls(as_json: Json = False, cfg: Config = None) -> None:
    """List accounts and their roles."""
    found = _accounts(cfg).list()
    rows = [f"{'NAME':<24} {'ROLE':<9} CREATED"] + [f"{a.name:<24} {a.role.value:<9} {_ts(a.created)}" for a in found]
    _out([a.public() for a in found], as_json, "\n".join(rows))


@accounts_app.command("rm")
@configured("etcd")
def accounts_rm(name: str, as_json: Json = False, cfg: Config = None) -> None:
    """Remove an account, its API tokens and its browser sessions."""
    _accounts(cfg).remove(name)
    _out({"account": name, "removed": True}, as_json, f"removed account {name}")


@accounts_app.command("passwd")
@configured("etcd")
def accounts_passwd(name: str, password_file: PasswordFile = None, as_json: Json = False, cfg: Config = None) -> None:
    """Set an account's password; its browser sessions end."""
    from etcdcron.accounts import check_account_name  # noqa: PLC0415

    check_account_name(name)
    _accounts(cfg).set_password(name, _password(password_file))
    _out({"account": name, "password_changed": True}, as_json, f"changed the password of account {name}")


@accounts_app.command("token")
@configured("etcd")
def accounts_token(name: str, as_json: Json = False, cfg: Config = None) -> None:
    """Make a new API token for the account and print it (once: only its hash is kept)."""
    token = _accounts(cfg).new_token(name)
    _out({"account": name, "token": token}, as_json, token)


def _register_analytics() -> None:
    """The analytics commands (collect, apps, analytics) live with the analytics package."""
    from etcdcron.analytics.cli import register

    register(app)


_register_analytics()


def main(argv: list[str] | None = None) -> int:
    """Entry point: every error is one line on stderr and an exit code, never a traceback."""
    command = typer.main.get_command(app)
    # Warnings of the adapters go to stderr, so that --json output stays clean; serve and collect
    # configure their own level.
    logsetup.configure("warning")
    try:
        # a command's typer.Exit(code) comes back as the return value (standalone_mode=False)
        code = command.main(args=argv, prog_name="etcdcron", standalone_mode=False)
        return code if isinstance(code, int) and not isinstance(code, bool) else 0
    except (InvalidInput, NotFound) as exc:
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
