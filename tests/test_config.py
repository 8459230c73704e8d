"""The configuration model and the CLI's surface: precedence, `config show`, bad input, --version,
completion, --json on changes, and `serve` never starting a private etcd unless asked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from etcdcron import __version__, config
from etcdcron.embedded import free_port
from etcdcron.errors import InvalidInput
from etcdcron.nodes import wait_for
from etcdcron.store import reachable

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, env: dict | None = None, **kw) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("ETCDCRON_")}
    return subprocess.run([sys.executable, str(ROOT / "cli.py"), *args], env={**base, **(env or {})},
                          capture_output=True, text=True, timeout=60, **kw)


def shown(r: subprocess.CompletedProcess) -> dict[str, dict]:
    assert r.returncode == 0, r.stderr
    return {row["key"]: row for row in json.loads(r.stdout)["settings"]}


def test_defaults_file_env_flags_in_that_order(tmp_path):
    """Each layer overrides the one below, and `config show` names the source of every value."""
    f = tmp_path / "etcdcron.toml"
    f.write_text('[serve]\nttl = 5\nworkers = 4\nlevels = [1, 2]\n[etcd]\nprefix = "/from-file"\n')
    rows = shown(cli("config", "show", "--json", "--config", str(f), "--workers", "9",
                     env={"ETCDCRON_TTL": "7", "ETCDCRON_WORKERS": "8"}))
    assert rows["serve.grace"] == {**rows["serve.grace"], "value": 30.0, "source": "default"}
    assert rows["etcd.prefix"]["value"] == "/from-file" and rows["etcd.prefix"]["source"] == f"file {f}"
    assert rows["serve.levels"]["value"] == [1, 2]
    assert rows["serve.ttl"]["value"] == 7 and rows["serve.ttl"]["source"] == "env ETCDCRON_TTL"
    assert rows["serve.workers"]["value"] == 9 and rows["serve.workers"]["source"] == "flag --workers"


def test_config_file_from_environment(tmp_path):
    """ETCDCRON_CONFIG names the file when --config does not."""
    f = tmp_path / "c.toml"
    f.write_text('[etcd]\nendpoints = "http://10.0.0.1:2379"\n')
    rows = shown(cli("config", "show", "--json", env={"ETCDCRON_CONFIG": str(f)}))
    assert rows["etcd.endpoints"]["value"] == "http://10.0.0.1:2379"


def test_default_file_is_read_only_when_present(tmp_path, monkeypatch):
    """/etc/etcdcron/etcdcron.toml is read when it exists and silently absent otherwise."""
    monkeypatch.setattr(config, "DEFAULT_FILE", tmp_path / "missing.toml")
    assert config.resolve(environ={}).file is None
    present = tmp_path / "etcdcron.toml"
    present.write_text("[serve]\nttl = 9\n")
    monkeypatch.setattr(config, "DEFAULT_FILE", present)
    cfg = config.resolve(environ={})
    assert cfg["serve.ttl"] == 9 and cfg.sources["serve.ttl"] == f"file {present}"


def test_secrets_are_masked(tmp_path):
    """A MongoDB password never appears in `config show`; the etcd password is only ever a file path."""
    pw = tmp_path / "pw"
    pw.write_text("s3cret-etcd\n")
    r = cli("config", "show", "--json", "--etcd-password-file", str(pw),
            env={"ETCDCRON_MONGO": "mongodb://app:s3cret-mongo@db:27017/x"})
    assert "s3cret" not in r.stdout
    rows = shown(r)
    assert rows["mongo.uri"]["value"] == "mongodb://app:****@db:27017/x"
    assert rows["etcd.password_file"]["value"] == str(pw)
    assert "s3cret" not in cli("config", "show", env={"ETCDCRON_MONGO": "mongodb://app:s3cret-mongo@db/x"}).stdout


@pytest.mark.parametrize("content, needle", [
    ("[serve\nttl = 3\n", "config file"),
    ("[serve]\nttl = 3\nfrobnicate = 1\n", "'serve.frobnicate'"),
    ("[nosuch]\nx = 1\n", "'nosuch.x'"),
    ("ttl = 3\n", "'ttl'"),
    ('[serve]\nttl = "soon"\n', "serve.ttl"),
    ("[serve]\nlevels = [4]\n", "serve.levels"),
    ('[serve]\nallow_kinds = ["shell", "rpc"]\n', "serve.allow_kinds"),
    ('[serve]\nhttp = "nowhere"\n', "serve.http"),
])
def test_bad_file_is_one_line_exit_2(tmp_path, content, needle):
    """A file that does not parse, an unknown key or a bad value: one line naming it, exit 2."""
    f = tmp_path / "bad.toml"
    f.write_text(content)
    r = cli("config", "show", "--config", str(f))
    assert r.returncode == 2 and r.stdout == ""
    assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, r.stderr


@pytest.mark.parametrize("args, env, needle", [
    (["--config", "/nonexistent/etcdcron.toml"], {}, "/nonexistent/etcdcron.toml"),
    ([], {"ETCDCRON_TTL": "1"}, "env ETCDCRON_TTL"),
    (["--workers", "lots"], {}, "flag --workers"),
    (["--pass-env", "NOT A NAME"], {}, "serve.pass_env"),
    (["--node-id", "Bad Id"], {}, "serve.node_id"),
])
def test_bad_setting_is_one_line_exit_2(args, env, needle):
    """A missing named file, or a bad value from the environment or a flag: one line naming the source, exit 2."""
    r = cli("config", "show", *args, env=env)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr, r.stderr


def test_resolve_unit_precedence_and_errors():
    """resolve() itself: flags win, empty environment values are unset, errors are InvalidInput."""
    cfg = config.resolve({"serve.ttl": "4"}, environ={"ETCDCRON_TTL": "9", "ETCDCRON_GRACE": ""})
    assert cfg["serve.ttl"] == 4 and cfg["serve.grace"] == 30.0
    assert cfg["serve.pass_env"] == () and cfg["serve.allow_kinds"] == ("builtin", "http", "shell")
    assert config.resolve({"serve.pass_env": ["A", "B"]}, environ={})["serve.pass_env"] == ("A", "B")
    assert config.resolve(environ={"ETCDCRON_PASS_ENV": "A,B"})["serve.pass_env"] == ("A", "B")
    with pytest.raises(InvalidInput, match="serve.max_skew"):
        config.resolve({"serve.max_skew": "0.1"}, environ={})


def test_version():
    """--version prints the package's version."""
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"etcdcron {__version__}"


def test_shell_completion():
    """Completion is typer's: the script is offered and completing a command name works."""
    # typer finds the shell from the parent process: run the command from bash.
    r = subprocess.run(["bash", "-c", f"'{sys.executable}' '{ROOT / 'cli.py'}' --show-completion; true"],
                       capture_output=True, text=True, timeout=60)
    assert "_etcdcron_completion" in r.stdout, r.stderr
    r = cli(env={"_ETCDCRON_COMPLETE": "complete_bash", "COMP_WORDS": "etcdcron pau", "COMP_CWORD": "1"})
    assert r.stdout.split() == ["pause"]


def test_changes_answer_in_json(etcd, prefix, store):
    """Every command that changes something says what changed under --json."""
    env = {"ETCDCRON_ETCD": etcd, "ETCDCRON_PREFIX": prefix}

    def j(*args: str) -> dict:
        r = cli(*args, "--json", env=env)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    assert j("add", "@every 1h", "--name", "j1", "--shell", "true") == {"job": "j1", "created": True}
    assert j("pause", "j1") == {"job": "j1", "paused": True}
    assert j("resume", "j1") == {"job": "j1", "paused": False}
    assert j("trigger", "j1")["job"] == "j1"
    assert j("kill", "j1") == {"job": "j1", "killing": 0}
    assert j("degrade", "3") == {"degraded": [3], "killed_running": False}
    assert j("restore", "3") == {"degraded": []}
    assert j("rm", "j1") == {"job": "j1", "removed": True}


def test_serve_never_starts_a_private_etcd(tmp_path):
    """Without --embedded, an unreachable etcd is waited for (logged, retried), never replaced; SIGTERM ends the wait."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "cli.py"), "serve", "--etcd", endpoint, "--node-id", "lonely"],
                                env={**{k: v for k, v in os.environ.items() if not k.startswith("ETCDCRON_")},
                                     "XDG_DATA_HOME": str(tmp_path / "data")},
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        assert wait_for(lambda: log.read_text().count("etcd.unreachable") >= 2, 30, step=0.1), log.read_text()
        assert proc.poll() is None
        assert not reachable(endpoint)
        assert not (tmp_path / "data").exists()
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
    assert code == 0


def test_embedded_needs_a_loopback_endpoint():
    """--embedded with a remote or several endpoints is refused: it would not be the etcd the others use."""
    r = cli("serve", "--embedded", "--etcd", "http://10.1.2.3:2379")
    assert r.returncode == 2 and "--embedded" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_secrets_in_uri_query_and_empty_user_are_masked():
    """A password in a URI's query string, or after an empty user name, is masked too."""
    uri = "mongodb://u:pw1@h/db?tlsCertificateKeyFilePassword=pw2&authSource=admin"
    masked = config.mask(config.BY_KEY["mongo.uri"], uri)
    assert "pw1" not in masked and "pw2" not in masked and "authSource=admin" in masked
    assert "pw3" not in config.mask(config.BY_KEY["mongo.uri"], "mongodb://:pw3@h/db")


def test_prune_of_an_empty_input_is_refused(etcd, prefix, store, tmp_path):
    """`apply --prune` of files naming no job (an empty stdin, an empty ConfigMap) removes nothing: exit 2."""
    env = {"ETCDCRON_ETCD": etcd, "ETCDCRON_PREFIX": prefix}
    jobs = tmp_path / "jobs.yaml"
    jobs.write_text('jobs:\n  - {name: keep, schedule: "@hourly", builtin: noop}\n')
    assert cli("apply", str(jobs), env=env).returncode == 0
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    r = cli("apply", "--prune", str(empty), env=env)
    assert r.returncode == 2 and "refused" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    from etcdcron.keys import Keys

    assert store.get(Keys(prefix).job("keep")) is not None
