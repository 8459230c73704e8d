"""The configuration model: every setting of every command, resolved once.

    defaults  <  config file (TOML)  <  environment (ETCDCRON_*)  <  command-line flags

The file is ``--config FILE``, else ``$ETCDCRON_CONFIG``, else ``/etc/etcdcron/etcdcron.toml`` when
it exists. Its tables are the settings' sections::

    [etcd]
    endpoints = "https://etcd-0:2379,https://etcd-1:2379"
    ca = "/etc/etcdcron/tls/ca.crt"
    [serve]
    levels = [1, 2]
    http = "0.0.0.0:9180"

Each :class:`Setting` has one file key, one environment name and one flag; :func:`resolve` returns a
:class:`Config` that knows every value's source, which ``etcdcron config show`` prints with secrets
masked. A bad file, key or value is an :class:`~etcdcron.errors.InvalidInput` naming it (exit 2).
Environment variables under ``ETCDCRON_`` that are no setting are ignored: a job's own environment
(``ETCDCRON_JOB``, ``ETCDCRON_SLOT``…) reaches the ``etcdcron`` commands it runs.
"""

from __future__ import annotations

import os
import re
import socket
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from .errors import InvalidInput

DEFAULT_FILE = Path("/etc/etcdcron/etcdcron.toml")
KINDS = ("builtin", "http", "shell")


def _text(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise ValueError("must be a non-empty string")
    return v.strip()


def _int(lo: int, hi: int) -> Callable[[Any], int]:
    def conv(v: Any) -> int:
        if isinstance(v, bool):
            raise ValueError("must be an integer")
        try:
            n = int(v)
        except (TypeError, ValueError):
            raise ValueError("must be an integer") from None
        if isinstance(v, float) and v != n:
            raise ValueError("must be an integer")
        if not lo <= n <= hi:
            raise ValueError(f"must be between {lo} and {hi}")
        return n
    return conv


def _float(lo: float) -> Callable[[Any], float]:
    def conv(v: Any) -> float:
        if isinstance(v, bool):
            raise ValueError("must be a number")
        try:
            x = float(v)
        except (TypeError, ValueError):
            raise ValueError("must be a number") from None
        if not x >= lo:
            raise ValueError(f"must be at least {lo:g}")
        return x
    return conv


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def _names(v: Any) -> tuple[str, ...]:
    """A list: a TOML array, or a comma-separated string (environment, flags)."""
    items = v if isinstance(v, (list, tuple)) else str(v).split(",")
    out = []
    for item in items:
        if not isinstance(item, (str, int)) or isinstance(item, bool):
            raise ValueError("must be a list of names")
        s = str(item).strip()
        if s:
            out.append(s)
    return tuple(out)


def _levels(v: Any) -> tuple[int, ...]:
    try:
        levels = tuple(sorted({int(x) for x in _names(v)}))
    except ValueError:
        raise ValueError("must be a list like 1,2,3") from None
    if not levels or any(x not in (1, 2, 3) for x in levels):
        raise ValueError("levels are 1, 2 and 3")
    return levels


def _kinds(v: Any) -> tuple[str, ...]:
    kinds = _names(v)
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise ValueError(f"job kinds are {', '.join(KINDS)}")
    return tuple(sorted(set(kinds)))


def _env_names(v: Any) -> tuple[str, ...]:
    names = _names(v)
    for n in names:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n):
            raise ValueError(f"{n!r} is not an environment variable name")
    return names


def _addr(v: Any) -> str:
    """``host:port`` (``:port`` listens on every address)."""
    s = _text(v)
    host, sep, port = s.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be HOST:PORT")
    return s


def _node_id(v: Any) -> str:
    from .jobs import check_name

    s = _text(v)
    try:
        check_name(s)
    except InvalidInput:
        raise ValueError("must match [a-z0-9][a-z0-9._-]{0,62}") from None
    return s


def _log_level(v: Any) -> str:
    s = _text(v).lower()
    if s not in ("debug", "info", "warning", "error"):
        raise ValueError("must be debug, info, warning or error")
    return s


@dataclass(frozen=True)
class Setting:
    """One setting: ``key`` is ``section.name`` in the file; ``env`` and ``flag`` are its other names."""

    key: str
    env: str
    flag: str
    default: Any
    convert: Callable[[Any], Any]
    help: str
    secret: bool = False  # shown masked by `config show`
    multiple: bool = False  # the flag may be repeated (--pass-env A --pass-env B)
    is_flag: bool = False  # a boolean switch (--embedded)

    @property
    def param(self) -> str:
        """The Python parameter name of the flag."""
        return self.flag.lstrip("-").replace("-", "_")


_ETCD = (
    Setting("etcd.endpoints", "ETCDCRON_ETCD", "--etcd", "http://127.0.0.1:2379", _text,
            "etcd endpoints URL[,URL…]; https:// uses TLS"),
    Setting("etcd.prefix", "ETCDCRON_PREFIX", "--prefix", "/etcdcron", _text, "key prefix in etcd"),
    Setting("etcd.ca", "ETCDCRON_ETCD_CA", "--etcd-ca", None, _text, "CA bundle that signed etcd's server certificate"),
    Setting("etcd.cert", "ETCDCRON_ETCD_CERT", "--etcd-cert", None, _text, "client certificate (mTLS)"),
    Setting("etcd.key", "ETCDCRON_ETCD_KEY", "--etcd-key", None, _text, "client certificate's private key", secret=True),
    Setting("etcd.user", "ETCDCRON_ETCD_USER", "--etcd-user", None, _text, "etcd user (auth)"),
    Setting("etcd.password_file", "ETCDCRON_ETCD_PASSWORD_FILE", "--etcd-password-file", None, _text,
            "file holding the etcd user's password (never the password itself)"),
)
_MONGO = Setting("mongo.uri", "ETCDCRON_MONGO", "--mongo", None, _text, "MongoDB URI (run history, analytics)", secret=True)
_LOG = Setting("log.level", "ETCDCRON_LOG_LEVEL", "--log-level", "info", _log_level, "debug, info, warning or error")
_SERVE = (
    Setting("serve.node_id", "ETCDCRON_NODE_ID", "--node-id", None, _node_id, "node id (default: host name)"),
    Setting("serve.ttl", "ETCDCRON_TTL", "--ttl", 3, _int(2, 60), "node lease TTL, seconds"),
    Setting("serve.levels", "ETCDCRON_LEVELS", "--levels", (1, 2, 3), _levels, "priority levels this node serves, e.g. 1,2"),
    Setting("serve.workers", "ETCDCRON_WORKERS", "--workers", 16, _int(1, 1024), "concurrent runs"),
    Setting("serve.grace", "ETCDCRON_GRACE", "--grace", 30.0, _float(0), "SIGTERM: seconds running jobs may finish"),
    Setting("serve.max_skew", "ETCDCRON_MAX_SKEW", "--max-skew", 2.0, _float(0.5),
            "refuse to execute when this node's clock is off etcd's by more, seconds"),
    Setting("serve.http", "ETCDCRON_HTTP", "--http", None, _addr, "serve /healthz, /readyz and /metrics on HOST:PORT"),
    Setting("serve.allow_kinds", "ETCDCRON_ALLOW_KINDS", "--allow-kinds", KINDS, _kinds,
            "job kinds this node runs (builtin,http,shell); others are recorded refused"),
    Setting("serve.pass_env", "ETCDCRON_PASS_ENV", "--pass-env", (), _env_names,
            "daemon environment variable that shell jobs may see (repeatable)", multiple=True),
    Setting("serve.http_allow", "ETCDCRON_HTTP_ALLOW", "--http-allow", (), _names,
            "hosts HTTP jobs may call (repeatable; default any)", multiple=True),
    Setting("serve.embedded", "ETCDCRON_EMBEDDED", "--embedded", False, _bool,
            "start a single-member etcd on this machine (a trial or a one-machine install)", is_flag=True),
)
_COLLECT = (
    Setting("collect.host", "ETCDCRON_COLLECT_HOST", "--host", "127.0.0.1", _text, "address to listen on"),
    Setting("collect.port", "ETCDCRON_COLLECT_PORT", "--port", 8080, _int(1, 65535), "port to listen on"),
    Setting("collect.app_rate", "ETCDCRON_COLLECT_APP_RATE", "--app-rate", 1000.0, _float(0),
            "requests per second each app may send (token bucket; 0: no limit)"),
    Setting("collect.app_burst", "ETCDCRON_COLLECT_APP_BURST", "--app-burst", 2000, _int(1, 10_000_000),
            "requests an app may send at once above its rate"),
    Setting("collect.client_rate", "ETCDCRON_COLLECT_CLIENT_RATE", "--client-rate", 50.0, _float(0),
            "requests per second each client address (IPv6: each /64) may send (0: no limit)"),
    Setting("collect.client_burst", "ETCDCRON_COLLECT_CLIENT_BURST", "--client-burst", 200, _int(1, 10_000_000),
            "requests a client address may send at once above its rate"),
    Setting("collect.signed_usage_only", "ETCDCRON_COLLECT_SIGNED_USAGE_ONLY", "--signed-usage-only", False, _bool,
            "refuse /i/usage/time with seconds in the unsigned body (GoAnalytics clients); take only the signed form",
            is_flag=True),
)

_WEB = (
    Setting("web.listen", "ETCDCRON_WEB_LISTEN", "--listen", "127.0.0.1:8080", _addr,
            "console and API address HOST:PORT (loopback by default)"),
    Setting("web.tls_cert", "ETCDCRON_WEB_TLS_CERT", "--tls-cert", None, _text, "serve HTTPS with this certificate (PEM)"),
    Setting("web.tls_key", "ETCDCRON_WEB_TLS_KEY", "--tls-key", None, _text, "the certificate's private key (PEM)", secret=True),
    Setting("web.session_idle", "ETCDCRON_WEB_SESSION_IDLE", "--session-idle", 1800.0, _float(10),
            "a browser session ends after this many idle seconds"),
    Setting("web.session_max", "ETCDCRON_WEB_SESSION_MAX", "--session-max", 43200.0, _float(10),
            "a browser session ends this many seconds after login, however active"),
)

SETTINGS: tuple[Setting, ...] = (*_ETCD, _MONGO, _LOG, *_SERVE, *_COLLECT, *_WEB)
BY_KEY: Mapping[str, Setting] = {s.key: s for s in SETTINGS}

# The settings each kind of command takes (beside --config).
GROUPS: Mapping[str, tuple[Setting, ...]] = {
    "etcd": _ETCD,
    "mongo": (_MONGO,),
    "history": (*_ETCD, _MONGO),
    "serve": (*_ETCD, _MONGO, _LOG, *_SERVE),
    "collect": (_MONGO, _LOG, *_COLLECT),
    "web": (*_ETCD, _MONGO, _LOG, *_WEB),
    "all": SETTINGS,
}


@dataclass(frozen=True)
class Config:
    """Resolved settings: ``config["serve.ttl"]``; ``sources[key]`` says where each value came from."""

    values: Mapping[str, Any]
    sources: Mapping[str, str]
    file: str | None

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def rows(self) -> list[dict[str, Any]]:
        """Every setting with its value (secrets masked) and source, for ``config show``."""
        return [{"key": s.key, "value": mask(s, self.values[s.key]), "source": self.sources[s.key],
                 "env": s.env, "flag": s.flag} for s in SETTINGS]

    def node_id(self) -> str:
        return self.values["serve.node_id"] or socket.gethostname()


def mask(setting: Setting, value: Any) -> Any:
    """A secret's value as shown: a URI keeps all but its password, a path is shown, anything else is ****."""
    if not setting.secret or value is None:
        return value
    if setting.key == "etcd.key":
        return value  # a path to the key, not the key
    text = str(value)
    if "://" not in text:
        return "****"
    text = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1****@", text)
    return re.sub(r"([?&][^=&]*(?:password|secret|token|key)[^=&]*=)[^&]*", r"\1****", text, flags=re.I)


def _file_path(explicit: str | None, environ: Mapping[str, str]) -> Path | None:
    """The config file: a named one must exist; the default one is read only when present."""
    if explicit:
        return Path(explicit)
    if environ.get("ETCDCRON_CONFIG"):
        return Path(environ["ETCDCRON_CONFIG"])
    return DEFAULT_FILE if DEFAULT_FILE.is_file() else None


def read_file(path: Path) -> dict[str, Any]:
    """The file's settings as ``{key: raw value}``; an unreadable file, bad TOML or unknown key is refused."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise InvalidInput(f"config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"config file {path}: {exc}") from None
    out: dict[str, Any] = {}
    for section, table in data.items():
        if not isinstance(table, dict):
            raise InvalidInput(f"config file {path}: unknown key {section!r} (settings sit in tables: "
                               f"{', '.join(sorted({k.split('.')[0] for k in BY_KEY}))})")
        for name, value in table.items():
            key = f"{section}.{name}"
            if key not in BY_KEY:
                raise InvalidInput(f"config file {path}: unknown key {key!r}")
            out[key] = value
    return out


def resolve(flags: Mapping[str, Any] | None = None, config_file: str | None = None,
            environ: Mapping[str, str] | None = None, settings: Iterable[Setting] = SETTINGS) -> Config:
    """Resolve ``settings`` from defaults, the file, the environment and ``flags`` ({key: value} of the
    flags given on the command line; None or absent = not given)."""
    environ = os.environ if environ is None else environ
    flags = flags or {}
    path = _file_path(config_file, environ)
    from_file = read_file(path) if path is not None else {}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for s in settings:
        value, source = s.default, "default"
        for raw, origin in ((from_file.get(s.key), f"file {path}"), (environ.get(s.env), f"env {s.env}"),
                            (flags.get(s.key), f"flag {s.flag}")):
            if raw is None or (origin.startswith("env") and raw == ""):
                continue
            try:
                value = s.convert(raw)
            except ValueError as exc:
                shown = mask(s, raw) if s.secret else raw
                raise InvalidInput(f"bad {s.key} {shown!r} from {origin}: {exc}") from None
            source = origin
        values[s.key], sources[s.key] = value, source
    return Config(values, sources, str(path) if path else None)
