"""Console and API accounts, kept in etcd under the prefix (see :mod:`etcdcron.keys`).

A password is stored as an argon2id hash (argon2-cffi's defaults: memory-hard, salted, its
parameters in the encoded hash, so a later change of parameters still verifies old hashes). An API
token is 32 random bytes shown once; etcd holds only its SHA-256, which is enough for a secret of
that entropy and lets a request find its token with one key read. ``generation`` moves on every
password change: a browser session remembers the generation it logged in under and ends when it
moves, and when the account is removed.

Anyone who may write under the prefix may also make an admin account here; that is no new power,
since the same write access already runs commands on every node (README, "Security").
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from dataclasses import dataclass
from enum import StrEnum

import argon2

from . import store as st
from .errors import AccountExists, AccountNotFound, InvalidInput
from .jobs import NAME_RE
from .keys import Keys
from .store import EtcdStore

MIN_PASSWORD = 10
MAX_PASSWORD = 1024
TOKEN_PREFIX = "ecr_"

_hasher = argon2.PasswordHasher()  # argon2id, RFC 9106's low-memory profile (64 MiB, 3 passes)
# verified against when the account does not exist, so a wrong name costs what a wrong password does
_DUMMY = _hasher.hash(secrets.token_hex(16))


class Role(StrEnum):
    """What an account may do; each role may do all that the roles before it may."""

    VIEWER = "viewer"
    """Reads jobs, runs, nodes, the cluster and analytics."""
    OPERATOR = "operator"
    """Also pauses, resumes, triggers and kills jobs, drains nodes, degrades and restores levels."""
    ADMIN = "admin"
    """Also creates and deletes jobs, apps and accounts."""

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def allows(self, need: "Role") -> bool:
        return self.rank >= need.rank


def role_of(value: str | Role) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise InvalidInput(f"bad role {value!r}: must be viewer, operator or admin") from None


def check_account_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise InvalidInput(f"bad account name {name!r}: must match [a-z0-9][a-z0-9._-]{{0,62}}")
    return name


def check_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise InvalidInput(f"bad password: at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD or "\n" in password or "\r" in password:
        raise InvalidInput(f"bad password: at most {MAX_PASSWORD} characters, on one line")
    return password


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Account:
    """An account as the console and the API see it (never its hash)."""

    name: str
    role: Role
    created: float
    generation: int  # moves on each password change: sessions of an older generation end

    def public(self) -> dict:
        return {"name": self.name, "role": self.role.value, "created": self.created}


def _account(raw: bytes) -> tuple[Account, str]:
    d = json.loads(raw)
    return Account(d["name"], Role(d["role"]), d.get("created", 0.0), d.get("generation", 0)), d["hash"]


class Accounts:
    """The accounts under one prefix."""

    def __init__(self, store: EtcdStore, keys: Keys) -> None:
        self.store, self.keys = store, keys

    def _doc(self, account: Account, hashed: str) -> str:
        return json.dumps({"name": account.name, "role": account.role.value, "hash": hashed,
                           "created": account.created, "generation": account.generation})

    def create(self, name: str, role: Role | str, password: str) -> Account:
        """A new account; refuses a bad name, role or password, and a name that exists (nothing written)."""
        check_account_name(name)
        account = Account(name, role_of(role), time.time(), 0)
        hashed = _hasher.hash(check_password(password))
        key = self.keys.account(name)
        if not self.store.txn([st.version(key, "==", 0)], [st.put(key, self._doc(account, hashed))]).succeeded:
            raise AccountExists(f"account {name!r} exists already (accounts passwd changes its password)")
        return account

    def _read(self, name: str):
        check_account_name(name)
        return self.store.get(self.keys.account(name))

    def get(self, name: str) -> Account | None:
        try:
            kv = self._read(name)
        except InvalidInput:
            return None
        return _account(kv.value)[0] if kv else None

    def list(self) -> list[Account]:
        kvs, _ = self.store.get_prefix(self.keys.accounts)
        return sorted((_account(kv.value)[0] for kv in kvs), key=lambda a: a.name)

    def remove(self, name: str) -> None:
        """Remove the account and its API tokens in one transaction; its sessions end with it."""
        kv = self._read(name)
        if kv is None:
            raise AccountNotFound(f"no account named {name!r}")
        tokens, _ = self.store.get_prefix(self.keys.tokens)
        ops = [st.delete(kv.key)] + [st.delete(t.key) for t in tokens if json.loads(t.value).get("account") == name]
        self.store.txn([], ops)

    def set_password(self, name: str, password: str) -> Account:
        """A new password; the account's browser sessions end (its API tokens stay valid)."""
        check_password(password)
        while True:
            kv = self._read(name)
            if kv is None:
                raise AccountNotFound(f"no account named {name!r}")
            old, _ = _account(kv.value)
            new = Account(old.name, old.role, old.created, old.generation + 1)
            key = self.keys.account(name)
            res = self.store.txn([st.mod_rev(key, "==", kv.mod_revision)], [st.put(key, self._doc(new, _hasher.hash(password)))])
            if res.succeeded:
                return new

    def new_token(self, name: str) -> str:
        """A new API token for the account, returned once; etcd keeps only its SHA-256."""
        owner = self.get(name)
        if owner is None:
            raise AccountNotFound(f"no account named {name!r}")
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        d = digest(token)
        # the account must still exist when the token is written; the token names the account's
        # creation, so it never passes to a later account of the same name
        doc = {"account": name, "account_created": owner.created, "created": time.time(), "id": d[:8]}
        res = self.store.txn([st.version(self.keys.account(name), ">", 0)], [st.put(self.keys.token(d), json.dumps(doc))])
        if not res.succeeded:
            raise AccountNotFound(f"no account named {name!r}")
        return token

    def check_password(self, name: str, password: str) -> Account | None:
        """The account when the password is its own; None otherwise (a missing account costs the same)."""
        kv = None
        try:
            kv = self._read(name)
        except InvalidInput:
            pass
        account, hashed = _account(kv.value) if kv else (None, _DUMMY)
        try:
            _hasher.verify(hashed, password)
        except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
            return None
        return account

    def by_token(self, token: str) -> Account | None:
        """The account an API token belongs to, or None for an unknown or revoked token."""
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        kv = self.store.get(self.keys.token(digest(token)))
        if kv is None:
            return None
        doc = json.loads(kv.value)
        account = self.get(doc.get("account", ""))
        # a token of a removed account whose name was created again is not the new account's
        if account is None or doc.get("account_created") != account.created:
            return None
        return account
