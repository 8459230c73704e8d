"""`apps show|set|rotate-key` and `apps counter add|ls|rm`: an app's settings and keys after
`apps create` (issue 12). Like the rest of the CLI they parse, call the store, print; every refusal is
an ``InvalidApp`` (one line, exit 2) raised before anything is written.

Keys are printed once, by `rotate-key`, on stdout, and never logged: the log events name the app only.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Annotated, Optional

import typer

from etcdcron.cliopts import configured
from etcdcron.config import Config

from .cli import Json, _out, _store

MAX_OVERLAP = 30 * 86_400.0  # a previous key outliving a month is a second key, not an overlap
DEFAULT_OVERLAP = "24h"
_UNITS = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
_DURATION = re.compile(r"(?:(?P<d>\d+(?:\.\d+)?)d)?(?:(?P<h>\d+(?:\.\d+)?)h)?(?:(?P<m>\d+(?:\.\d+)?)m)?(?:(?P<s>\d+(?:\.\d+)?)s)?")
# Where app documents keep the counters that `counter rm` removed: their name may not come back
# with another type, which would re-read the stored events of the old counter under a new meaning.
RETIRED = "retired_counters"

AppName = Annotated[str, typer.Argument(help="app id or name")]


def parse_overlap(text: str) -> float:
    """'24h', '90m', '1d12h', '0' -> seconds, 0 to :data:`MAX_OVERLAP`. A bare number other than 0 is
    refused: '24' could mean hours as well as seconds."""
    from .errors import InvalidApp  # noqa: PLC0415

    raw = text.strip()
    if re.fullmatch(r"0+(?:\.0*)?", raw):
        return 0.0
    match = _DURATION.fullmatch(raw)
    if not raw or match is None or not any(match.groupdict().values()):
        raise InvalidApp(f"bad --overlap {text[:40]!r}: expected a duration such as 24h, 90m, 7d, 1d12h or 0")
    seconds = sum(float(n) * _UNITS[unit] for unit, n in match.groupdict().items() if n)
    if seconds > MAX_OVERLAP:
        raise InvalidApp(f"bad --overlap {text[:40]!r}: at most 30d (the old key would live on as a second key)")
    return seconds


def _ago(seconds: float) -> str:
    for unit, size in (("d", 86_400), ("h", 3_600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _show_text(app) -> str:
    from .days import utc_iso  # noqa: PLC0415

    counters = ", ".join(f"{c.name} ({c.type}{': ' + ', '.join(c.slots) if c.slots else ''})" for c in app.counters)
    if not app.old_key:
        old = "none"
    else:
        old = f"{'accepted until' if app.old_key_until > time.time() else 'expired at'} {utc_iso(app.old_key_until)}"
    return "\n".join([f"app {app.name}", f"id:       {app.id}", f"tz:       {app.tz}", f"grace:    {app.grace:g} s",
                      f"top:      {app.top}", f"counters: {counters or 'none'}", f"old key:  {old}"])


def _reopened_day(app, grace: float, now: float) -> str | None:
    """The first day a raised grace opens again, if any day so reopened may have been final already."""
    from . import days as dd  # noqa: PLC0415

    day = dd.day_of(now - grace, app.tz)
    while not dd.accepts(day, app.tz, grace, now):  # a DST transition at midnight; at most once or twice
        day = dd.shift(day, 1)
    return day if day <= dd.last_closed(now, app.tz) else None


def register_apps(apps: typer.Typer) -> None:
    """Add the app-settings commands to the `apps` group."""
    counter = typer.Typer(help="Declare, list and remove an app's custom counters.", no_args_is_help=True)
    apps.add_typer(counter, name="counter")

    @apps.command("show")
    @configured("mongo")
    def apps_show(name: AppName, as_json: Json = False, cfg: Config = None) -> None:
        """An app's settings (never its keys)."""
        with _store(cfg["mongo.uri"]) as store:
            app = store.app(name)
        _out(app.public(), as_json, _show_text(app))

    @apps.command("set")
    @configured("mongo")
    def apps_set(
        name: AppName,
        grace: Annotated[Optional[float], typer.Option("--grace", help="seconds after a day's end that its late events are still taken")] = None,
        top: Annotated[Optional[int], typer.Option("--top", help="breakdown values kept per dimension and day")] = None,
        tz: Annotated[Optional[str], typer.Option("--tz", help="refused (counted days would be split or merged): create a new app instead")] = None,
        as_json: Json = False, cfg: Config = None,
    ) -> None:
        """Change an app's safe settings (grace, top); prints the settings as stored."""
        import structlog  # noqa: PLC0415

        from .days import zone  # noqa: PLC0415
        from .errors import InvalidApp  # noqa: PLC0415
        from .events import check_grace, check_top  # noqa: PLC0415

        if grace is None and top is None and tz is None:
            raise InvalidApp("apps set: nothing to change: give --grace S and/or --top N")
        fields: dict = {}
        if grace is not None:
            fields["grace"] = check_grace(grace)
        if top is not None:
            fields["top"] = check_top(top)
        if tz is not None:
            zone(tz)  # a name that is no zone at all is said as such
        with _store(cfg["mongo.uri"]) as store:
            app = store.app(name)
            if tz is not None and tz != app.tz:
                raise InvalidApp(f"apps set cannot change --tz ({app.tz} to {tz}): the days already counted in {app.tz} "
                                 f"would be split or merged with the new zone's; create a new app instead "
                                 f"(apps create NAME --tz {tz})")
            now = time.time()
            # A raised grace reopens days the rollup may have made final: ask it to roll them up again,
            # or their late events would be stored and never counted.
            again = _reopened_day(app, fields["grace"], now) if fields.get("grace", app.grace) > app.grace else None
            updated = store.update_app(app.id, fields) if fields else app
            if again is not None:
                store.mark_rebuild(app.id, again)
        if fields:
            structlog.get_logger("analytics.apps").info("app.settings_changed", app=updated.name, **fields, rebuild_from=again)
        note = f"\nthe next rollup rolls days from {again} on up again: the new grace reopens them" if again else ""
        _out(updated.public() | {"rebuild_from": again}, as_json, _show_text(updated) + note)

    @apps.command("rotate-key")
    @configured("mongo")
    def apps_rotate_key(
        name: AppName,
        overlap: Annotated[str, typer.Option("--overlap", help="how long the current key keeps working "
                                                               "(s/m/h/d, at most 30d; 0: it stops now)")] = DEFAULT_OVERLAP,
        as_json: Json = False, cfg: Config = None,
    ) -> None:
        """Give an app a new key; the current one keeps working for --overlap. Prints the new key once."""
        import structlog  # noqa: PLC0415

        from .days import utc_iso  # noqa: PLC0415

        seconds = parse_overlap(overlap)
        with _store(cfg["mongo.uri"]) as store:
            app, rev = store.app_with_rev(name)
            now = time.time()
            # One previous key at a time: a rotation during an overlap ends the older key's overlap now.
            dropped = app.old_key_until if app.old_key and app.old_key_until > now else None
            new_key = secrets.token_hex(16)
            if seconds:
                updated = store.update_app(app.id, {"key": new_key, "old_key": app.key, "old_key_until": now + seconds}, rev=rev)
            else:
                updated = store.update_app(app.id, {"key": new_key}, unset=("old_key", "old_key_until"), rev=rev)
        structlog.get_logger("analytics.apps").info("app.key_rotated", app=updated.name, id=updated.id, overlap_s=seconds,
                                                    old_key_until=updated.old_key_until if updated.old_key else None,
                                                    earlier_key_dropped=dropped is not None)
        until = utc_iso(updated.old_key_until) if updated.old_key else None
        lines = [f"new key of {updated.name}: {new_key}",
                 f"the previous key is accepted until {until} ({_ago(seconds)})" if until else "the previous key stopped working now"]
        if dropped is not None:
            lines.append(f"the key before it (accepted until {utc_iso(dropped)}) stopped working now: one previous key at a time")
        _out({"id": updated.id, "name": updated.name, "key": new_key, "old_key_until": updated.old_key_until if until else None,
              "earlier_key_dropped": dropped is not None}, as_json, "\n".join(lines))

    @counter.command("add")
    @configured("mongo")
    def counter_add(
        app_name: AppName,
        counter_name: Annotated[str, typer.Argument(metavar="NAME", help="counter name, [a-z][a-z0-9_]{0,31}")],
        kind: Annotated[str, typer.Option("--type", help="sum | slot | cpv (per channel, platform, version)")],
        slots: Annotated[Optional[str], typer.Option("--slots", help="the slots of a type slot counter: a,b,c")] = None,
        as_json: Json = False, cfg: Config = None,
    ) -> None:
        """Declare a custom counter: clients may then send `type: "custom"` events of that name."""
        import structlog  # noqa: PLC0415

        from .errors import InvalidApp  # noqa: PLC0415
        from .events import MAX_COUNTERS, Counter  # noqa: PLC0415

        new = Counter.new(counter_name, kind, [s.strip() for s in slots.split(",")] if slots else ())
        with _store(cfg["mongo.uri"]) as store:
            app, rev = store.app_with_rev(app_name)
            have = app.counter(new.name)
            if have is not None:
                raise InvalidApp(f"counter {new.name!r} of app {app.name} is declared already (type {have.type}); "
                                 f"a counter's meaning does not change: pick another name")
            if len(app.counters) >= MAX_COUNTERS:
                raise InvalidApp(f"app {app.name} has {len(app.counters)} counters already (limit {MAX_COUNTERS})")
            retired = ((store.one("apps", app.id) or {}).get(RETIRED) or {}).get(new.name)
            if retired is not None and (retired["type"], list(retired.get("slots") or ())) != (new.type, list(new.slots)):
                raise InvalidApp(f"counter {new.name!r} of app {app.name} was removed with type {retired['type']}"
                                 f"{' and slots ' + ','.join(retired['slots']) if retired.get('slots') else ''}: its stored events "
                                 f"keep that meaning, so it comes back only with it; pick another name")
            updated = store.update_app(app.id, {f"counters.{new.name}": new.doc()},
                                       unset=(f"{RETIRED}.{new.name}",) if retired is not None else (), rev=rev)
        structlog.get_logger("analytics.apps").info("app.counter_added", app=updated.name, counter=new.name, type=new.type)
        _out({"name": new.name, **new.doc()}, as_json,
             f"declared counter {new.name} ({new.type}{': ' + ', '.join(new.slots) if new.slots else ''}) of app {updated.name}")

    @counter.command("ls")
    @configured("mongo")
    def counter_ls(app_name: AppName, as_json: Json = False, cfg: Config = None) -> None:
        """An app's declared counters."""
        with _store(cfg["mongo.uri"]) as store:
            app = store.app(app_name)
        rows = [f"{'NAME':<34}{'TYPE':<6}SLOTS"] + [f"{c.name:<34}{c.type:<6}{','.join(c.slots)}" for c in app.counters]
        _out([{"name": c.name, **c.doc()} for c in app.counters], as_json, "\n".join(rows))

    @counter.command("rm")
    @configured("mongo")
    def counter_rm(
        app_name: AppName,
        counter_name: Annotated[str, typer.Argument(metavar="NAME", help="a declared counter")],
        as_json: Json = False, cfg: Config = None,
    ) -> None:
        """Stop taking a counter's events. What was stored stays: its raw events (until purge) and its
        daily sums; a new counter of that name must have the same type and slots."""
        import structlog  # noqa: PLC0415

        from .errors import InvalidApp  # noqa: PLC0415

        with _store(cfg["mongo.uri"]) as store:
            app, rev = store.app_with_rev(app_name)
            have = app.counter(counter_name)
            if have is None:
                raise InvalidApp(f"app {app.name} has no counter {counter_name[:40]!r}")
            updated = store.update_app(app.id, {f"{RETIRED}.{have.name}": have.doc() | {"removed": time.time()}},
                                       unset=(f"counters.{have.name}",), rev=rev)
        structlog.get_logger("analytics.apps").info("app.counter_removed", app=updated.name, counter=have.name)
        _out({"removed": have.name, "app": updated.name}, as_json,
             f"removed counter {have.name} of app {updated.name}: new events of it are refused; its stored events "
             f"and daily sums stay")
