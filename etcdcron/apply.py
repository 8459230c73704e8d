"""Jobs as code: job files in (``etcdcron apply``), the current jobs out in the same format (``export``).

    jobs:                           # YAML; in TOML, [[jobs]] tables with the same keys
      - name: backup
        schedule: "0 3 * * *"
        shell: /usr/local/bin/backup  # or builtin: NAME, or http: URL: exactly one
        retries: 2
        args: {days: "7"}

The keys are the options of ``etcdcron add`` with underscores. ``start_at``/``end_at`` are ISO-8601
or Unix seconds. ``paused`` counts only when a file gives it: a job paused with ``etcdcron pause``
stays paused through an apply of a file that says nothing about it.

Every file is read and every job validated before etcd is touched, so one bad job refuses the whole
input with one line naming the file, the job and the field. This module is pure; reading etcd,
diffing against it and the conditional writes are :meth:`etcdcron.admin.Admin.apply`'s.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import math
import re
import sys
import tomllib
from dataclasses import dataclass
from datetime import date, datetime, timezone
from enum import StrEnum
from typing import Any, Callable, Iterable, Mapping, Sequence

import yaml

from .errors import InvalidInput, InvalidSpec
from .jobs import JobSpec, make_spec, parse_instant

FORMATS = ("yaml", "toml")

# Fields of a stored spec that are state, not configuration: never compared, never exported.
# (``paused`` is configuration only when a file gives it; see the module docstring.)
RUNTIME = frozenset({"active_since"})
KIND_KEYS = ("builtin", "shell", "http")
INSTANTS = frozenset({"start_at", "end_at"})

_MAKE_SPEC = inspect.signature(make_spec).parameters
# libyaml's loader when PyYAML has it: the same safe types, ~10x faster (a 1,000-job file: 0.05 s, not 0.5 s)
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class Action(StrEnum):
    """What ``apply`` does to one job."""

    CREATE = "create"
    """The files name a job etcd does not hold."""
    REPLACE = "replace"
    """etcd holds the job with another configuration (or ``apply`` does not manage it yet)."""
    UNCHANGED = "unchanged"
    """etcd holds the job exactly as the files describe it, managed by ``apply``."""
    PRUNE = "prune"
    """``--prune``: a job ``apply`` manages that the files no longer name."""


@dataclass(frozen=True)
class Entry:
    """One validated job of a file."""

    spec: JobSpec  # active_since and paused are set when it is written
    source: str  # the file it came from
    paused: bool | None = None  # None: the file does not say


@dataclass(frozen=True)
class Change:
    """One line of the diff: a job and what apply does to it; for REPLACE, (key, old, new) per changed key."""

    name: str
    action: Action
    fields: tuple[tuple[str, Any, Any], ...] = ()


# --- reading files ---------------------------------------------------------------------------------

def _q(value: Any) -> str:
    """A user value, quoted for a one-line message."""
    if isinstance(value, str):
        return "'" + "".join(c if c.isprintable() else repr(c)[1:-1] for c in value) + "'"
    return json.dumps(value, default=str, ensure_ascii=False)


def _type(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a table", type(None): "null"}.get(type(value), type(value).__name__)


def _text(key: str, v: Any) -> str:
    if not isinstance(v, str):
        raise InvalidSpec(f"bad {key} {_q(v)}: must be a string, not {_type(v)}")
    if key in KIND_KEYS and not v.strip():
        raise InvalidSpec(f"bad {key} {_q(v)}: must not be empty")
    return v


def _int(key: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise InvalidSpec(f"bad {key} {_q(v)}: must be an integer, not {_type(v)}")
    return v


def _number(key: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        raise InvalidSpec(f"bad {key} {_q(v)}: must be a number of seconds")
    return v


def _bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise InvalidSpec(f"bad {key} {_q(v)}: must be true or false")
    return v


def _map(key: str, v: Any) -> dict[str, str]:
    if not isinstance(v, dict):
        raise InvalidSpec(f"bad {key} {_q(v)}: must be a table of KEY = \"VALUE\", not {_type(v)}")
    out = {}
    for k, x in v.items():
        # numbers are taken as their text (days: 7); anything else is most likely a mistake
        if not isinstance(k, str) or not k or isinstance(x, bool) or not isinstance(x, (str, int, float)):
            raise InvalidSpec(f"bad {key} entry {_q(k)}: {_q(x)}: keys and values must be strings")
        out[k] = x if isinstance(x, str) else str(x)
    return out


def _instant(key: str, v: Any) -> float:
    if isinstance(v, datetime):  # YAML and TOML read an unquoted timestamp as a datetime
        t = (v if v.tzinfo else v.replace(tzinfo=timezone.utc)).timestamp()
    elif isinstance(v, date):
        t = datetime(v.year, v.month, v.day, tzinfo=timezone.utc).timestamp()
    elif isinstance(v, str):
        t = parse_instant(v, key)
    elif isinstance(v, (int, float)) and not isinstance(v, bool):
        t = float(v)
    else:
        raise InvalidSpec(f"bad {key} {_q(v)}: must be ISO-8601 (2026-11-27T15:00:00Z) or Unix seconds")
    if not math.isfinite(t):
        raise InvalidSpec(f"bad {key} {_q(v)}: must be ISO-8601 (2026-11-27T15:00:00Z) or Unix seconds")
    return t


_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    "name": _text, "schedule": _text, "builtin": _text, "shell": _text, "http": _text, "tz": _text,
    "level": _int, "concurrency": _text, "timeout": _number, "retries": _int, "starting_deadline": _number,
    "jitter": _number, "on_node_loss": _text, "args": _map, "env": _map, "catchup": _text, "catchup_cap": _int,
    "retry_delay": _number, "start_at": _instant, "end_at": _instant, "max_runs": _int, "paused": _bool,
}
# The keys a file may use: the options make_spec takes (env once jobs have one), and paused.
FILE_KEYS = tuple(k for k in _CHECKS if k in _MAKE_SPEC or k == "paused")
# make_spec words its refusals for the command line (--starting-deadline); a file says starting_deadline
_FLAG = re.compile(r"--(" + "|".join(sorted((k.replace("_", "-") for k in FILE_KEYS), key=len, reverse=True)) + r")\b")


def _file_terms(message: str) -> str:
    return _FLAG.sub(lambda m: m.group(1).replace("-", "_"), message)


def entry(raw: Any, source: str, index: int) -> Entry:
    """Validate the ``index``-th (1-based) job of ``source``; refusals name the file, the job and the key."""
    name = raw.get("name", raw.get("builtin")) if isinstance(raw, dict) else None
    label = f"job {json.dumps(name, ensure_ascii=False)}" if isinstance(name, str) and name else f"job #{index}"

    def refuse(message: str, cls: type[InvalidInput] = InvalidSpec) -> InvalidInput:
        return cls(f"{source}: {label}: {message}")

    if not isinstance(raw, dict):
        raise refuse(f"must be a table of job keys, not {_type(raw)}")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in FILE_KEYS:
            close = difflib.get_close_matches(str(key), FILE_KEYS, n=1)
            raise refuse(f"unknown key {_q(key)}" + (f" (did you mean '{close[0]}'?)" if close else ""))
        if value is None:  # YAML's null: as if the key were left out
            continue
        try:
            values[key] = _CHECKS[key](key, value)
        except InvalidInput as exc:
            raise refuse(str(exc), type(exc)) from None
    given = [k for k in KIND_KEYS if k in values]
    if len(given) != 1:
        raise refuse("give exactly one of builtin, shell or http" + (f" (got {', '.join(given)})" if given else ""))
    if "schedule" not in values:
        raise refuse("schedule is missing")
    if "name" not in values and given[0] != "builtin":
        raise refuse(f"name is missing (required for {given[0]} jobs)")
    paused = values.pop("paused", None)
    try:
        spec = make_spec(values.pop("name", None), values.pop("schedule"), **values)
    except InvalidInput as exc:
        raise refuse(_file_terms(str(exc)), type(exc)) from None
    return Entry(spec, source, paused)


def format_of(path: str, fmt: str | None = None) -> str:
    """The format to read ``path`` in: ``fmt`` if given, else by its extension; YAML (which reads JSON too) otherwise."""
    if fmt:
        return fmt
    return "toml" if path.lower().endswith(".toml") else "yaml"


def parse(text: str, source: str, fmt: str) -> list[Any]:
    """The raw job tables of one file's text (a YAML list, or ``jobs`` = a list in YAML or TOML)."""
    try:
        doc = tomllib.loads(text) if fmt == "toml" else yaml.load(text, Loader=_YAML_LOADER)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidSpec(f"{source}: bad TOML: {str(exc).splitlines()[0]}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or (str(exc).splitlines() or ["unreadable"])[0]
        raise InvalidSpec(f"{source}: {where}bad YAML: {problem}") from None
    if doc is None:  # an empty file names no job (with --prune: remove every managed job)
        return []
    if isinstance(doc, dict):
        extra = [k for k in doc if k != "jobs"]
        if extra:
            raise InvalidSpec(f"{source}: unknown top-level key {_q(extra[0])}: a jobs file holds 'jobs' only")
        doc = doc.get("jobs") or []
    if not isinstance(doc, list):
        raise InvalidSpec(f"{source}: 'jobs' must be a list of job tables, not {_type(doc)}")
    return doc


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except OSError as exc:
        raise InvalidSpec(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InvalidSpec(f"{path}: cannot read: not UTF-8 text") from None


def load(paths: Sequence[str], fmt: str | None = None) -> list[Entry]:
    """Read and validate every job of every file (``-``: standard input); refuse the whole input at
    the first bad job, unknown key or name given twice."""
    if fmt is not None and fmt not in FORMATS:
        raise InvalidSpec(f"bad --format {fmt!r}: must be yaml or toml")
    entries: list[Entry] = []
    seen: dict[str, str] = {}
    for path in paths:
        source = "<stdin>" if path == "-" else path
        for index, raw in enumerate(parse(_read(path), source, format_of(path, fmt)), 1):
            e = entry(raw, source, index)
            name = e.spec.name
            if name in seen:
                raise InvalidSpec(f"{source}: job {json.dumps(name)}: named twice (also in {seen[name]})")
            seen[name] = source
            entries.append(e)
    return entries


# --- diff ------------------------------------------------------------------------------------------

def _default(key: str) -> Any:
    if key == "paused":
        return False
    d = _MAKE_SPEC[key].default if key in _MAKE_SPEC else None
    return None if d is inspect.Parameter.empty else d


def fields_of(spec: JobSpec, *, full: bool = True) -> dict[str, Any]:
    """A spec in file terms: name, schedule, its kind key, then the other keys in spec order; with
    ``full=False`` without the keys at their defaults (an empty map is a default too)."""
    out: dict[str, Any] = {"name": spec.name, "schedule": spec.schedule, spec.kind: spec.target}
    for f in dataclasses.fields(spec):
        key = f.name
        if key in out or key in RUNTIME or key in ("kind", "target"):
            continue
        value = getattr(spec, key)
        if not full and (value == _default(key) or (isinstance(value, dict) and not value)):
            continue
        out[key] = dict(value) if isinstance(value, dict) else value
    return out


def changed(old: JobSpec, new: Entry, managed: bool) -> tuple[tuple[str, Any, Any], ...]:
    """The keys whose value differs, (key, old, new); ``paused`` only when the file gives it, and
    ``managed`` when apply would take over a job it does not manage yet."""
    a, b = fields_of(old), fields_of(new.spec)
    a.pop("paused", None), b.pop("paused", None)
    out = [(k, a.get(k), b.get(k)) for k in dict.fromkeys([*a, *b]) if a.get(k) != b.get(k)]
    if new.paused is not None and new.paused != old.paused:
        out.append(("paused", old.paused, new.paused))
    if not managed:
        out.append(("managed", False, True))
    return tuple(out)


def diff(entries: Iterable[Entry], stored: Mapping[str, JobSpec], managed: Iterable[str], prune: bool) -> list[Change]:
    """What apply does: the files' jobs in their order, then (``prune``) the managed jobs they no
    longer name, by name. Jobs not managed by apply (``etcdcron add``) are never pruned."""
    managed = set(managed)
    out, named = [], set()
    for e in entries:
        named.add(e.spec.name)
        old = stored.get(e.spec.name)
        if old is None:
            out.append(Change(e.spec.name, Action.CREATE))
            continue
        fields = changed(old, e, e.spec.name in managed)
        out.append(Change(e.spec.name, Action.REPLACE, fields) if fields else Change(e.spec.name, Action.UNCHANGED))
    if prune:
        out += [Change(n, Action.PRUNE) for n in sorted(managed - named) if n in stored]
    return out


# --- reporting -------------------------------------------------------------------------------------

def _show(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key in INSTANTS:
        return _instant_text(value)
    return json.dumps(value, ensure_ascii=False, sort_keys=True) if isinstance(value, (str, dict, bool)) else str(value)


def _instant_text(t: float) -> Any:
    """Whole seconds as ISO-8601 UTC (what a person writes); a fraction as Unix seconds, exactly."""
    if float(t).is_integer():
        return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return t


def describe(changes: Sequence[Change], dry_run: bool) -> str:
    """The diff, one line a job (``+`` create, ``~`` replace with old → new, ``-`` prune), and the counts."""
    lines = []
    for c in changes:
        if c.action is Action.CREATE:
            lines.append(f"+ {c.name}")
        elif c.action is Action.REPLACE:
            lines.append(f"~ {c.name}: " + ", ".join(f"{k} {_show(k, o)} → {_show(k, n)}" for k, o, n in c.fields))
        elif c.action is Action.PRUNE:
            lines.append(f"- {c.name}")
    n = {a: sum(1 for c in changes if c.action is a) for a in Action}
    if dry_run:
        lines.append(f"dry run, nothing written: {n[Action.CREATE]} to create, {n[Action.REPLACE]} to replace, "
                     f"{n[Action.UNCHANGED]} unchanged, {n[Action.PRUNE]} to prune")
    else:
        lines.append(f"{n[Action.CREATE]} created, {n[Action.REPLACE]} replaced, {n[Action.UNCHANGED]} unchanged, "
                     f"{n[Action.PRUNE]} pruned")
    return "\n".join(lines)


def result(changes: Sequence[Change], dry_run: bool) -> dict:
    """``--json``: the names by what happened to them, and the changed keys of each replaced job."""
    def names(a: Action) -> list[str]:
        return [c.name for c in changes if c.action is a]

    return {"created": names(Action.CREATE), "replaced": names(Action.REPLACE), "unchanged": names(Action.UNCHANGED),
            "pruned": names(Action.PRUNE),
            "changes": {c.name: {k: [o, n] for k, o, n in c.fields} for c in changes if c.action is Action.REPLACE},
            "dry_run": dry_run}


# --- export ----------------------------------------------------------------------------------------

def exported(spec: JobSpec) -> dict[str, Any]:
    """A spec as a jobs file writes it: keys at their defaults left out; ``paused`` only when true."""
    out = fields_of(spec, full=False)
    for key in INSTANTS & out.keys():
        out[key] = _instant_text(out[key])
    return out


def dump(specs: Iterable[JobSpec], fmt: str = "yaml") -> str:
    """The jobs as a jobs file that ``apply`` reads back to exactly these specs."""
    if fmt not in FORMATS:
        raise InvalidSpec(f"bad --format {fmt!r}: must be yaml or toml")
    jobs = [exported(s) for s in specs]
    if fmt == "yaml":
        return yaml.safe_dump({"jobs": jobs}, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000)
    if not jobs:
        return "jobs = []\n"
    return "\n".join("[[jobs]]\n" + "".join(f"{k} = {_toml(v)}\n" for k, v in job.items()) for job in jobs)


def _toml(value: Any) -> str:
    """One TOML value (tomllib reads, nothing in the standard library writes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml(str(k))} = {_toml(v)}" for k, v in value.items()) + " }" if value else "{}"
    # JSON's string escapes are TOML's, except DEL, which TOML wants escaped too
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")
