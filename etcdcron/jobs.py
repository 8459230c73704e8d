"""Job specs: what a job is, validated once at the edge and stored as JSON under ``jobs/<name>``."""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib.metadata import entry_points
from typing import Any, Callable
from urllib.parse import urlparse

from .errors import InvalidJobName, InvalidSpec
from .schedule import Schedule, parse_schedule

NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
KINDS = ("shell", "http", "builtin")
CONCURRENCY = ("forbid", "allow", "replace")
ON_NODE_LOSS = ("rerun", "skip")
CATCHUP = ("latest", "all", "none")
LEVELS = (1, 2, 3)
BUILTIN_GROUP = "etcdcron.jobs"
DEFAULT_STARTING_DEADLINE = 60.0


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid job name, else raise InvalidJobName."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidJobName(f"bad job name {name!r}: must match [a-z0-9][a-z0-9._-]{{0,62}}")
    return name


def builtin_jobs() -> dict[str, Any]:
    """The builtin jobs installed under the entry-point group ``etcdcron.jobs``, by name."""
    return {ep.name: ep for ep in entry_points(group=BUILTIN_GROUP)}


_LOADED: dict[str, Callable[..., Any]] = {}


def load_builtin(name: str) -> Callable[..., Any]:
    """Import the callable registered as builtin ``name`` (once per process: the lookup costs a
    scan of every installed package's metadata)."""
    fn = _LOADED.get(name)
    if fn is None:
        eps = builtin_jobs()
        if name not in eps:
            raise InvalidSpec(f"unknown builtin job {name!r} (installed: {', '.join(sorted(eps)) or 'none'})")
        fn = _LOADED[name] = eps[name].load()
    return fn


@dataclass(frozen=True, slots=True)
class JobSpec:
    """One job. Construct through :func:`make_spec` (validating) or :meth:`from_json` (trusted)."""

    name: str
    schedule: str
    kind: str
    target: str
    tz: str = "UTC"
    level: int = 2
    concurrency: str = "forbid"
    timeout: float | None = None
    retries: int = 0
    starting_deadline: float = DEFAULT_STARTING_DEADLINE
    jitter: float = 0.0
    on_node_loss: str = "rerun"
    args: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)  # shell jobs: the job's own environment variables
    catchup: str = "latest"  # after downtime: run the newest missed firing, all of them, or none
    catchup_cap: int = 20  # at most this many replays per job after one outage
    retry_delay: float = 1.0  # first retry backoff, doubled each retry, with jitter
    start_at: float | None = None  # no firing before this instant (Unix seconds)
    end_at: float | None = None  # no firing after it
    max_runs: int | None = None  # no claim after this many
    paused: bool = False
    # Firings at or before this instant are not due: set on add and on resume, so a new or resumed
    # job neither catches up nor is reported as having missed what came before it.
    active_since: float = 0.0

    @property
    def parsed(self) -> Schedule:
        return _parsed(self.schedule, self.tz)

    def next_after(self, ts: float) -> float | None:
        """The first firing instant after ``ts`` inside [start_at, end_at], or None if there is none."""
        if self.start_at is not None and ts < self.start_at:
            ts = self.start_at - 1
        t = _next_after(self.schedule, self.tz, ts)
        if self.end_at is not None and t > self.end_at:
            return None
        return t

    def fires_at(self, slot: int) -> bool:
        """Is ``slot`` one of the job's firings (and after its ``active_since``)?"""
        return slot > self.active_since and self.next_after(slot - 1) == slot

    def firings(self, start: float, end: float, limit: int = 10_000) -> list[int]:
        """Firing instants (Unix seconds) in (start, end], inside [start_at, end_at], ascending."""
        if self.start_at is not None:
            start = max(start, self.start_at - 1)
        if self.end_at is not None:
            end = min(end, self.end_at)
        if end <= start:
            return []
        return [int(t.timestamp()) for t in self.parsed.firings(_dt(start), _dt(end), limit=limit)]

    def to_json(self) -> bytes:
        """The stored form: every field, except those holding "nothing" (None, an empty map, false, 0)
        when that is their default, which :meth:`from_json` (this one and every earlier one) reads
        back as that default. A node lists every job at start-up: 30% fewer bytes than writing them
        all. Settings with a real default (tz, level, concurrency, deadlines, ...) are always written,
        so a later change of a default never changes a stored job."""
        out = {}
        for name in _NAMES:
            value = getattr(self, name)
            if name not in _OMITTABLE or value != _OMITTABLE[name] or value.__class__ is not _OMITTABLE[name].__class__:
                out[name] = value
        return _dumps(out).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> "JobSpec":
        """A stored spec (trusted: validated when written). A node holds every job of the cluster and
        reads them all at start-up, so this is built for speed and for sharing: the repeated short
        strings are interned, equal floats and equal ``args``/``env`` are one object, and the fields
        are set straight into the slots. Unknown keys are ignored; a missing one takes its default,
        a missing required one raises TypeError (as ``JobSpec(**data)`` would)."""
        data = _loads(raw.decode() if raw.__class__ is bytes else raw)
        if data.__class__ is not dict:
            raise TypeError(f"a job spec is a JSON object, not {type(data).__name__}")
        get, intern, floats = data.get, sys.intern, _SHARED_FLOATS
        spec = _new(cls)
        # the sharing inlined: a node reads a million specs of 23 fields at start-up, and a call per
        # field was half of this method's time
        for name, default, how, put in _SLOTS:
            value = get(name, _MISSING)
            if value is _MISSING:
                if default is _REQUIRED:
                    raise TypeError(f"stored job spec without {name!r}")
                value = default
            elif how is _STR:
                if value.__class__ is str and len(value) < 64:
                    value = intern(value)
            elif how is _FLOAT:
                if value.__class__ is float:
                    value = floats.get(value) or _share_float(value)
            elif how is _MAP:
                value = _share_map(value)
            put(spec, value)
        return spec

    def replace(self, **changes: Any) -> "JobSpec":
        return dataclasses.replace(self, **changes)


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


_FIELDS = frozenset(f.name for f in dataclasses.fields(JobSpec))
_NAMES = tuple(f.name for f in dataclasses.fields(JobSpec))
_NO_ARGS: dict[str, str] = {}  # shared; specs never mutate their args nor their env
_dumps = json.JSONEncoder(sort_keys=True, separators=(",", ":")).encode
_loads = json.JSONDecoder().decode
_new = object.__new__
_REQUIRED, _MISSING = object(), object()
_STR, _FLOAT, _MAP, _ASIS = "str", "float", "map", "as is"  # how from_json shares a field's values
# the fields to_json leaves out when they hold their default "nothing"
_OMITTABLE = {f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()
              for f in dataclasses.fields(JobSpec)
              if f.name != "active_since" and (f.default in (None, False, 0) or f.default_factory is dict)}

# Values shared between the specs of a node (bounded: a table that fills up starts over, and the
# values already shared stay shared). Floats: a fleet's specs repeat their defaults and, added in one
# apply, their active_since; 24 bytes each otherwise, four per spec.
_SHARED_FLOATS: dict[float, float] = {}
_SHARED_MAPS: dict[tuple, dict[str, str]] = {}
_SHARED_MAX = 1 << 16


def _share_float(v: float) -> float:
    if len(_SHARED_FLOATS) >= _SHARED_MAX:
        _SHARED_FLOATS.clear()
    got = _SHARED_FLOATS.setdefault(v, v)
    return got if got or v else v  # 0.0 and -0.0 are equal keys: keep the sign as stored


def _share_value(v: Any) -> Any:
    c = v.__class__
    if c is str:
        return sys.intern(v) if len(v) < 64 else v
    if c is float:
        return _SHARED_FLOATS.get(v) or _share_float(v)
    return v


def _share_map(v: Any) -> Any:
    """``args`` and ``env``: empty (or absent, or null) is the one shared empty dict; equal small
    ones are one dict (a fleet's jobs often pass the same arguments)."""
    if not v:
        return _NO_ARGS
    if v.__class__ is not dict or len(v) > 8 or any(x.__class__ is not str for x in v.values()):
        return v  # (1, 1.0 and True are equal keys: only maps of strings are shared)
    try:
        key = tuple(v.items())
        got = _SHARED_MAPS.get(key)
    except TypeError:  # an unhashable value: not ours to share
        return v
    if got is None:
        if len(_SHARED_MAPS) >= _SHARED_MAX:
            _SHARED_MAPS.clear()
        got = _SHARED_MAPS[key] = {sys.intern(k) if k.__class__ is str else k: _share_value(x) for k, x in v.items()}
    return got


def _slots() -> tuple:
    """(field, default or _REQUIRED, how its values are shared, the slot's setter) for every field."""
    hints = {"str": _STR, "float": _FLOAT, "float | None": _FLOAT, "dict[str, str]": _MAP}
    out = []
    for f in dataclasses.fields(JobSpec):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = _NO_ARGS  # args, env
        else:
            default = _REQUIRED
        out.append((f.name, default, hints.get(str(f.type), _ASIS), JobSpec.__dict__[f.name].__set__))
    return tuple(out)


_SLOTS = _slots()

_NEXT_CACHE: dict[tuple[str, str, float], float] = {}


def _next_after(expr: str, tz: str, ts: float) -> float:
    """Memoised: a fleet of jobs on the same schedule asks the same question every firing."""
    key = (expr, tz, ts)
    t = _NEXT_CACHE.get(key)
    if t is None:
        if len(_NEXT_CACHE) > 50_000:
            _NEXT_CACHE.clear()
        t = _NEXT_CACHE[key] = _parsed(expr, tz).next_after(_dt(ts)).timestamp()
    return t


_SCHEDULE_CACHE: dict[tuple[str, str], Schedule] = {}


def _parsed(expr: str, tz: str) -> Schedule:
    key = (expr, tz)
    sched = _SCHEDULE_CACHE.get(key)
    if sched is None:
        sched = _SCHEDULE_CACHE[key] = parse_schedule(expr, tz)
    return sched


def _positive(name: str, value: float | None, allow_zero: bool = False) -> None:
    if value is None:
        return
    if not isinstance(value, (int, float)) or value != value or value < 0 or (value == 0 and not allow_zero):
        raise InvalidSpec(f"bad {name} {value!r}: must be a {'non-negative' if allow_zero else 'positive'} number of seconds")


def make_spec(
    name: str | None,
    schedule: str,
    *,
    builtin: str | None = None,
    shell: str | None = None,
    http: str | None = None,
    tz: str = "UTC",
    level: int = 2,
    concurrency: str = "forbid",
    timeout: float | None = None,
    retries: int = 0,
    starting_deadline: float = DEFAULT_STARTING_DEADLINE,
    jitter: float = 0.0,
    on_node_loss: str = "rerun",
    args: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    active_since: float = 0.0,
    catchup: str = "latest",
    catchup_cap: int = 20,
    retry_delay: float = 1.0,
    start_at: float | None = None,
    end_at: float | None = None,
    max_runs: int | None = None,
) -> JobSpec:
    """Validate user input and build a spec; every refusal is one line naming the bad part."""
    given = [k for k, v in (("builtin", builtin), ("--shell", shell), ("--http", http)) if v]
    if len(given) != 1:
        raise InvalidSpec("give exactly one of BUILTIN, --shell CMD or --http URL" + (f" (got {', '.join(given)})" if given else ""))
    if builtin:
        kind, target = "builtin", builtin
        load_builtin(builtin)
    elif shell:
        kind, target = "shell", shell
    else:
        kind, target = "http", str(http)
        url = urlparse(target)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise InvalidSpec(f"bad --http URL {target!r}: must be http:// or https:// with a host")
    if name is None:
        if kind != "builtin":
            raise InvalidSpec("--name is required for --shell and --http jobs")
        name = builtin
    check_name(name)
    _parsed(schedule.strip(), tz)
    if level not in LEVELS:
        raise InvalidSpec(f"bad --level {level!r}: must be 1, 2 or 3")
    if concurrency not in CONCURRENCY:
        raise InvalidSpec(f"bad --concurrency {concurrency!r}: must be one of {', '.join(CONCURRENCY)}")
    if on_node_loss not in ON_NODE_LOSS:
        raise InvalidSpec(f"bad --on-node-loss {on_node_loss!r}: must be rerun or skip")
    _positive("--timeout", timeout)
    _positive("--starting-deadline", starting_deadline)
    _positive("--jitter", jitter, allow_zero=True)
    if not isinstance(retries, int) or retries < 0 or retries > 100:
        raise InvalidSpec(f"bad --retries {retries!r}: must be an integer from 0 to 100")
    if catchup not in CATCHUP:
        raise InvalidSpec(f"bad --catchup {catchup!r}: must be latest, all or none")
    if not isinstance(catchup_cap, int) or not 1 <= catchup_cap <= 1000:
        raise InvalidSpec(f"bad --catchup-cap {catchup_cap!r}: must be an integer from 1 to 1000")
    _positive("--retry-delay", retry_delay)
    if max_runs is not None and (not isinstance(max_runs, int) or max_runs < 1):
        raise InvalidSpec(f"bad --max-runs {max_runs!r}: must be a positive integer")
    if start_at is not None and end_at is not None and end_at < start_at:
        raise InvalidSpec("bad --end-at: it is before --start-at")
    if env and kind != "shell":
        raise InvalidSpec(f"bad --env: only --shell jobs have an environment (this is a {kind} job)")
    env = check_env(env or {})
    return JobSpec(
        name=name, schedule=schedule.strip(), kind=kind, target=target, tz=tz, level=level,
        concurrency=concurrency, timeout=timeout, retries=retries,
        starting_deadline=float(starting_deadline), jitter=float(jitter), on_node_loss=on_node_loss,
        args=dict(args or {}), env=env, active_since=active_since, catchup=catchup, catchup_cap=catchup_cap,
        retry_delay=float(retry_delay), start_at=start_at, end_at=end_at, max_runs=max_runs,
    )


def parse_instant(text: str, option: str) -> float:
    """An ISO-8601 instant (a zone offset or Z; naive means UTC) or Unix seconds -> Unix seconds."""
    try:
        seconds = float(text)
    except ValueError:
        try:
            t = datetime.fromisoformat(text.replace("Z", "+00:00"))
            seconds = (t if t.tzinfo else t.replace(tzinfo=timezone.utc)).timestamp()
        except (ValueError, OverflowError):
            raise InvalidSpec(f"bad {option} {text!r}: must be ISO-8601 (2026-11-27T15:00:00Z) or Unix seconds") from None
    try:  # nan, inf, 1e300, or an offset carrying 0001-01-01 off the calendar
        datetime.fromtimestamp(math.floor(seconds), timezone.utc)
    except (ValueError, OverflowError, OSError):
        raise InvalidSpec(f"bad {option} {text!r}: not a time between the years 1 and 9999") from None
    return seconds


def _pairs(pairs: list[str], option: str, form: str) -> dict[str, str]:
    """``["a=1", "b=x=y"]`` -> dict; refuses a pair without ``=`` or with an empty key."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidSpec(f"bad {option} {pair!r}: must be {form}")
        out[key] = value
    return out


def parse_args(pairs: list[str]) -> dict[str, str]:
    """``["days=7", "app=x"]`` -> dict (``--arg``)."""
    return _pairs(pairs, "--arg", "KEY=VALUE")


def check_env(env: dict[str, str]) -> dict[str, str]:
    """A job's own environment, checked: names ``[A-Za-z_][A-Za-z0-9_]*`` and not ``ETCDCRON_*`` (those
    are the contract's: a job cannot forge its fence), values strings without NUL (which no
    environment can hold)."""
    if not isinstance(env, dict):
        raise InvalidSpec("bad --env: must be NAME=VALUE pairs")
    out: dict[str, str] = {}
    for name, value in env.items():
        if not isinstance(name, str) or not ENV_NAME_RE.fullmatch(name):
            raise InvalidSpec(f"bad --env name {name!r}: must match [A-Za-z_][A-Za-z0-9_]*")
        if name.startswith("ETCDCRON_"):
            raise InvalidSpec(f"bad --env name {name!r}: ETCDCRON_* variables are set by etcdcron")
        if not isinstance(value, str) or "\0" in value:
            raise InvalidSpec(f"bad --env value of {name}: must be text without NUL characters")
        out[name] = value
    return out


def parse_env(pairs: list[str]) -> dict[str, str]:
    """``["A=1", "B=x=y"]`` -> dict (``--env``; names are checked by :func:`make_spec`)."""
    return _pairs(pairs, "--env", "NAME=VALUE")


def read_env_file(path: str) -> dict[str, str]:
    """A dotenv-like file: ``NAME=VALUE`` lines (an optional ``export`` before the name; a value in
    matching single or double quotes loses them, nothing else is unescaped); blank lines and lines
    starting with ``#`` are skipped. A bad line is refused naming the file and the line."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidSpec(f"bad --env-file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    out: dict[str, str] = {}
    for n, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        key, sep, value = text.removeprefix("export ").partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not ENV_NAME_RE.fullmatch(key):
            raise InvalidSpec(f"bad --env-file {path} line {n}: must be NAME=VALUE with NAME like [A-Za-z_][A-Za-z0-9_]*")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        try:
            out.update(check_env({key: value}))
        except InvalidSpec as exc:
            raise InvalidSpec(f"bad --env-file {path} line {n}: {str(exc).removeprefix('bad --env ')}") from None
    return out
