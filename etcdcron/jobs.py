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
        return json.dumps(dataclasses.asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> "JobSpec":
        data = json.loads(raw)
        # a node holds every job: share the repeated small strings and the empty args
        kw = {k: (sys.intern(v) if isinstance(v, str) and len(v) < 64 else v) for k, v in data.items() if k in _FIELDS}
        if not kw.get("args"):
            kw["args"] = _NO_ARGS
        if not kw.get("env"):  # also a spec stored before jobs had an env
            kw["env"] = _NO_ARGS
        return cls(**kw)

    def replace(self, **changes: Any) -> "JobSpec":
        return dataclasses.replace(self, **changes)


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


_FIELDS = frozenset(f.name for f in dataclasses.fields(JobSpec))
_NO_ARGS: dict[str, str] = {}  # shared; specs never mutate their args nor their env

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
