"""Command-line commands of the analytics package, mounted on the `etcdcron` app by :func:`register`:
``collect``, ``apps create|ls``, ``analytics seed|report``. Like the rest of the CLI, they parse,
call, print; errors are etcdcron errors that the main CLI turns into one line and an exit code.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer

from etcdcron.cliopts import configured
from etcdcron.config import Config

from .errors import InvalidApp

Json = Annotated[bool, typer.Option("--json", help="machine-readable output")]
AppRef = Annotated[str, typer.Option("--app", help="app id or name")]


def _store(mongo: str | None):
    from .store import DEFAULT_URI, AnalyticsStore  # noqa: PLC0415 - keep `etcdcron --help` light

    store = AnalyticsStore(mongo or DEFAULT_URI, timeout=3.0)
    store.ping()
    return store


def _out(data, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(data, indent=2, default=str) if as_json else text)


def register(app: typer.Typer) -> None:
    """Add `collect`, `apps …` and `analytics …` to the etcdcron command line."""
    apps = typer.Typer(help="Register and list analytics apps.", no_args_is_help=True)
    analytics = typer.Typer(help="Synthetic data and reports of the analytics workload.", no_args_is_help=True)
    app.add_typer(apps, name="apps")
    app.add_typer(analytics, name="analytics")
    from .appcmds import register_apps  # noqa: PLC0415
    from .importer import register_import  # noqa: PLC0415

    register_apps(apps)
    register_import(analytics)

    @app.command()
    @configured("collect")
    def collect(cfg: Config = None) -> None:
        """Run the event collector (GoAnalytics client API and /v1/events batches) until SIGTERM."""
        from etcdcron import log as logsetup  # noqa: PLC0415

        try:
            from .collector import Limits, serve  # noqa: PLC0415
        except ImportError as exc:
            from etcdcron.errors import EtcdCronError  # noqa: PLC0415

            raise EtcdCronError(f"collect needs the collector's web stack ({exc.name}): "
                                "pip install 'etcdcron[collector]'") from None
        from .embedded import resolve  # noqa: PLC0415

        logsetup.configure(cfg["log.level"])
        uri, embedded = resolve(cfg["mongo.uri"], embed=True)
        try:
            serve(uri, cfg["collect.host"], cfg["collect.port"], Limits.from_config(cfg),
                  usage_compat=not cfg["collect.signed_usage_only"])
        finally:
            if embedded is not None:
                embedded.stop()

    @apps.command("create")
    @configured("mongo")
    def apps_create(
        name: Annotated[str, typer.Argument(help="app name, [a-z0-9][a-z0-9._-]{0,62}")],
        tz: Annotated[str, typer.Option("--tz", help="IANA zone in which the app's days are counted")] = "UTC",
        grace: Annotated[float, typer.Option("--grace", help="seconds after a day's end that its late events are still taken")] = 7200.0,
        as_json: Json = False, cfg: Config = None,
    ) -> None:
        """Register an app; prints its id and its key (for the client signatures)."""
        from .events import App  # noqa: PLC0415

        new = App.new(name, tz, grace)  # validates before anything is written
        with _store(cfg["mongo.uri"]) as store:
            created = store.create_app(new)
        _out(created.doc() | {"id": created.id}, as_json,
             f"created app {created.name}\nid:  {created.id}\nkey: {created.key}\ntz:  {created.tz}")

    @apps.command("ls")
    @configured("mongo")
    def apps_ls(as_json: Json = False, cfg: Config = None) -> None:
        """List apps (without their keys)."""
        with _store(cfg["mongo.uri"]) as store:
            found = store.apps()
        rows = [f"{'ID':<18}{'NAME':<24}{'TZ':<24}GRACE"] + [f"{a.id:<18}{a.name:<24}{a.tz:<24}{a.grace:g}" for a in found]
        _out([{"id": a.id, "name": a.name, "tz": a.tz, "grace": a.grace} for a in found], as_json, "\n".join(rows))

    @analytics.command("seed")
    @configured("mongo")
    def seed_cmd(
        app_ref: AppRef,
        devices: Annotated[int, typer.Option("--devices", min=1, help="devices arriving over the period")] = 1000,
        days: Annotated[int, typer.Option("--days", min=1, max=400, help="days of history, ending yesterday")] = 30,
        seed: Annotated[int, typer.Option("--seed", help="random seed")] = 1,
        as_json: Json = False, cfg: Config = None,
    ) -> None:
        """Write realistic synthetic events for an app through the collector's insert path."""
        from .seed import seed as run_seed  # noqa: PLC0415

        with _store(cfg["mongo.uri"]) as store:
            target = store.app(app_ref)
            with typer.progressbar(length=days, label=f"seeding {target.name}", file=sys.stderr) as bar:
                summary = run_seed(store, target, devices, days, seed, progress=bar.update)
        _out(summary, as_json, f"seeded {summary['events']} events of {summary['devices']} devices, "
                               f"{summary['first']} to {summary['last']} ({target.tz})")

    @analytics.command("rebuild")
    @configured("mongo")
    def rebuild_cmd(
        app_ref: AppRef,
        since: Annotated[str | None, typer.Option("--from", help="first day to rebuild, YYYY-MM-DD (default: the app's first day)")] = None,
        as_json: Json = False, cfg: Config = None,
    ) -> None:
        """Ask the next rollup to build the app's days again from a day (and the jobs after it to follow)."""
        from . import days as dd  # noqa: PLC0415

        if since is not None:
            try:
                dd.to_date(since)
            except (ValueError, TypeError):
                raise InvalidApp(f"bad --from {since!r}: must be a day, YYYY-MM-DD") from None
        with _store(cfg["mongo.uri"]) as store:
            target = store.app(app_ref)
            purged = store.purged_before(target.id)
            if since is not None and purged and since < purged:
                raise InvalidApp(f"bad --from {since}: the raw events of app {target.name!r} before {purged} were purged, "
                                 f"so those days cannot be built again (rebuild from {purged} or later)")
            day = since or store.first_event_day(target.id)
            if day is None:
                raise InvalidApp(f"app {target.name!r} has no events: nothing to rebuild")
            day = max(day, purged or day)
            store.mark_rebuild(target.id, day)
        _out({"app": target.name, "from": day}, as_json,
             f"the next rollup of {target.name} rebuilds its days from {day}; the jobs after it follow")

    @analytics.command("report")
    @configured("mongo")
    def report_cmd(
        app_ref: AppRef,
        days: Annotated[int, typer.Option("--days", min=1, max=400, help="how many recent days")] = 14,
        by: Annotated[str | None, typer.Option("--by", help="also break launches, DAU and new devices down by "
                                                               "channel, platform or version")] = None,
        as_json: Json = False, cfg: Config = None,
    ) -> None:
        """Daily metrics, usage, registered users, retention, custom counters and the trend of an app."""
        from .report import BY, collect as gather, render  # noqa: PLC0415

        if by is not None and by not in BY:
            raise InvalidApp(f"bad --by {by!r}: must be channel, platform or version")
        with _store(cfg["mongo.uri"]) as store:
            data = gather(store, store.app(app_ref), days, by=by)
        _out(data, as_json, render(data))
