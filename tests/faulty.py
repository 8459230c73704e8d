"""A real etcd store whose transactions can be made to fail or stall on cue, for tests of the firing
path: *before* sending (nothing committed, as when etcd is unavailable) or *after* (committed, and the
answer lost, as when the leader dies with the reply in flight)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

from etcdcron.errors import StoreUnavailable
from etcdcron.store import EtcdStore


def put_keys(ops) -> list[str]:
    """The keys a list of RequestOps puts (nested transactions included)."""
    out = []
    for op in ops:
        kind = op.WhichOneof("request")
        if kind == "request_put":
            out.append(op.request_put.key.decode())
        elif kind == "request_txn":
            out += put_keys(op.request_txn.success)
    return out


@dataclass
class Rule:
    """When ``match(keys put)`` holds: run ``action`` (if any), then fail ``when`` (before|after|never)."""

    match: Callable[[list[str]], bool]
    when: str = "before"
    times: int = 1
    action: Callable[[list[str]], None] | None = None
    hits: list[list[str]] = field(default_factory=list)
    fired: threading.Event = field(default_factory=threading.Event)


def claims_running(keys: list[str]) -> bool:
    """A claim or a recovery: it puts a running key."""
    return any("/running/" in k for k in keys)


class FaultyStore(EtcdStore):
    def __init__(self, endpoint: str) -> None:
        super().__init__(endpoint)
        self.rules: list[Rule] = []
        self._rules_lock = threading.Lock()

    def arm(self, match: Callable[[list[str]], bool], when: str = "before", times: int = 1,
            action: Callable[[list[str]], None] | None = None) -> Rule:
        rule = Rule(match, when, times, action)
        with self._rules_lock:
            self.rules.append(rule)
        return rule

    def _rule(self, keys: list[str]) -> Rule | None:
        with self._rules_lock:
            for rule in self.rules:
                if rule.times > 0 and rule.match(keys):
                    rule.times -= 1
                    rule.hits.append(keys)
                    return rule
        return None

    def _guarded(self, keys: list[str], send):
        rule = self._rule(keys)
        if rule is None:
            return send()
        if rule.action:
            rule.action(keys)
        try:
            if rule.when == "before":
                raise StoreUnavailable("injected: etcd unavailable, nothing sent")
            result = send()
            if rule.when == "after":
                raise StoreUnavailable("injected: the answer was lost")
            return result
        finally:
            rule.fired.set()

    def txn(self, compare, success=(), failure=()):
        success = list(success)
        return self._guarded(put_keys(success), lambda: super(FaultyStore, self).txn(compare, success, failure))

    def txn_batch(self, txns):
        txns = [(list(c), list(ok), list(ko)) for c, ok, ko in txns]
        keys = [k for _, ok, _ in txns for k in put_keys(ok)]
        return self._guarded(keys, lambda: super(FaultyStore, self).txn_batch(txns))
