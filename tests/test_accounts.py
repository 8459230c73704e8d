"""Accounts in etcd: argon2id password hashes, API tokens stored by hash only, roles, and the
`etcdcron accounts` commands (bad input refused with one line, nothing stored changed)."""

from __future__ import annotations

import json
import subprocess

import pytest

from etcdcron.accounts import Accounts, Role, digest
from etcdcron.errors import AccountExists, AccountNotFound, InvalidInput
from etcdcron.testing import cli_command


@pytest.fixture
def accounts(store, keys) -> Accounts:
    return Accounts(store, keys)


def _cli(etcd, prefix, *args, stdin: str | None = None):
    env = {"ETCDCRON_ETCD": etcd, "ETCDCRON_PREFIX": prefix, "PATH": "/usr/bin:/bin"}
    return subprocess.run([*cli_command(), *args], env=env, input=stdin, capture_output=True, text=True, timeout=60)


def test_roles_are_ordered():
    """admin allows what operator allows, which allows what viewer allows; not the other way."""
    assert Role.ADMIN.allows(Role.OPERATOR) and Role.OPERATOR.allows(Role.VIEWER) and Role.VIEWER.allows(Role.VIEWER)
    assert not Role.VIEWER.allows(Role.OPERATOR) and not Role.OPERATOR.allows(Role.ADMIN)


def test_password_is_stored_as_argon2id_only(accounts, store, keys):
    """The stored account holds an argon2id hash, never the password; the right password checks, a wrong one not."""
    accounts.create("alice", "operator", "correct horse battery")
    raw = store.get(keys.account("alice")).value.decode()
    assert "correct horse battery" not in raw
    assert json.loads(raw)["hash"].startswith("$argon2id$")
    assert accounts.check_password("alice", "correct horse battery").role is Role.OPERATOR
    assert accounts.check_password("alice", "correct horse batterY") is None
    assert accounts.check_password("nobody", "correct horse battery") is None


def test_bad_input_is_refused_and_writes_nothing(accounts, store, keys):
    """A bad name, role or password, or an existing name, is refused and nothing under the prefix changes."""
    accounts.create("bob", "viewer", "a long enough password")
    before = store.get_prefix(keys.root)[1]
    for name, role, pw in [("Bad Name", "viewer", "a long enough password"), ("carol", "root", "a long enough password"),
                           ("carol", "viewer", "short"), ("carol", "viewer", "two\nlines password")]:
        with pytest.raises(InvalidInput):
            accounts.create(name, role, pw)
    with pytest.raises(AccountExists):
        accounts.create("bob", "admin", "another long password")
    assert accounts.get("bob").role is Role.VIEWER
    assert store.get_prefix(keys.root)[1] == before


def test_token_is_shown_once_and_stored_by_hash(accounts, store, keys):
    """A token resolves to its account; etcd holds its SHA-256 and not the token; removing the account revokes it."""
    accounts.create("dave", "admin", "a long enough password")
    token = accounts.new_token("dave")
    assert accounts.by_token(token).name == "dave"
    kvs, _ = store.get_prefix(keys.tokens)
    assert [kv.key for kv in kvs] == [keys.token(digest(token))]
    assert all(token not in kv.value.decode() for kv in kvs)
    assert accounts.by_token(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    accounts.remove("dave")
    assert accounts.by_token(token) is None
    assert store.get_prefix(keys.tokens)[0] == []
    with pytest.raises(AccountNotFound):
        accounts.new_token("dave")


def test_password_change_moves_generation(accounts):
    """passwd bumps the generation (ending browser sessions) and only the new password checks."""
    a = accounts.create("erin", "viewer", "first password here")
    b = accounts.set_password("erin", "second password here")
    assert b.generation == a.generation + 1
    assert accounts.check_password("erin", "first password here") is None
    assert accounts.check_password("erin", "second password here").generation == b.generation
    with pytest.raises(AccountNotFound):
        accounts.set_password("nobody", "second password here")


def test_cli_accounts_lifecycle(etcd, prefix, tmp_path):
    """create (password file), ls, token, passwd (stdin), rm through the real CLI; --json answers what changed."""
    pw = tmp_path / "pw"
    pw.write_text("an admin password\n")
    r = _cli(etcd, prefix, "accounts", "create", "root1", "--role", "admin", "--password-file", str(pw), "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["role"] == "admin"
    r = _cli(etcd, prefix, "accounts", "ls", "--json")
    assert [a["name"] for a in json.loads(r.stdout)] == ["root1"]
    r = _cli(etcd, prefix, "accounts", "token", "root1")
    assert r.returncode == 0 and r.stdout.strip().startswith("ecr_")
    r = _cli(etcd, prefix, "accounts", "passwd", "root1", "--password-file", "-", stdin="a new admin password\n")
    assert r.returncode == 0, r.stderr
    r = _cli(etcd, prefix, "accounts", "rm", "root1")
    assert r.returncode == 0 and "removed account root1" in r.stdout
    assert json.loads(_cli(etcd, prefix, "accounts", "ls", "--json").stdout) == []


@pytest.mark.parametrize("args, message", [
    (["accounts", "create", "BAD", "--role", "admin", "--password-file", "PW"], "bad account name"),
    (["accounts", "create", "ok", "--role", "root", "--password-file", "PW"], "root"),
    (["accounts", "create", "ok", "--role", "admin", "--password-file", "SHORT"], "at least 10 characters"),
    (["accounts", "create", "ok", "--role", "admin"], "--password-file"),
    (["accounts", "create", "ok", "--role", "admin", "--password-file", "/nonexistent"], "cannot read --password-file"),
    (["accounts", "rm", "ghost"], "no account named 'ghost'"),
    (["accounts", "token", "ghost"], "no account named 'ghost'"),
])
def test_cli_bad_input_one_line_exit_2(etcd, prefix, tmp_path, store, keys, args, message):
    """Each bad account command prints one error line naming the fault, exits 2 and changes nothing in etcd."""
    (tmp_path / "pw").write_text("a good password\n")
    (tmp_path / "short").write_text("short\n")
    args = [str(tmp_path / "pw") if a == "PW" else str(tmp_path / "short") if a == "SHORT" else a for a in args]
    before = store.get_prefix(keys.root)[1]
    r = _cli(etcd, prefix, *args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert len(r.stderr.strip().splitlines()) == 1 and message in r.stderr, r.stderr
    assert store.get_prefix(keys.root)[1] == before
