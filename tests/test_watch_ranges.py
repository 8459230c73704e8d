"""A watch that leaves out sub-prefixes (several watchers on one stream) and batched reads, against a
real etcd."""

from __future__ import annotations

import threading

import pytest

from etcdcron import store as st
from etcdcron.errors import StoreCompacted
from etcdcron.nodes import wait_for
from etcdcron.store import EtcdStore, etcdrpc
from etcdcron.watch import Watch, ranges


class Seen:
    """The events a watch delivered, as (kind, key, mod_revision), with a condition to wait on."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, int]] = []
        self.calls = 0
        self.cond = threading.Condition()

    def on_events(self, events, revision) -> None:
        with self.cond:
            self.calls += 1
            self.events.extend((e.kind, e.kv.key, e.kv.mod_revision) for e in events)
            self.cond.notify_all()

    def wait_keys(self, keys, timeout: float = 10) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: set(keys) <= {k for _, k, _ in self.events}, timeout)

    def wait_count(self, n: int, timeout: float = 10) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: len(self.events) >= n, timeout)


def _excluding(prefix: str) -> tuple[str, tuple[str, str]]:
    p = prefix + "/"
    return p, (p + "claims/", p + "running/")


def test_ranges_cover_the_prefix_less_the_excluded():
    """The watched ranges are the prefix's gaps between the excluded sub-prefixes, in key order."""
    assert ranges("/p/") == [(b"/p/", b"/p0")]
    assert ranges("/p/", ("/p/running/", "/p/claims/")) == [
        (b"/p/", b"/p/claims/"), (b"/p/claims0", b"/p/running/"), (b"/p/running0", b"/p0")]
    # an exclusion at the start, one inside another, two that touch: no empty or overlapping range
    assert ranges("/p/", ("/p/", )) == []
    assert ranges("/p/", ("/p/a/", "/p/a/b/", "/p/a0")) == [(b"/p/", b"/p/a/"), (b"/p/a1", b"/p0")]
    assert ranges("", ("/b/",)) == [(b"", b"/b/"), (b"/b0", b"\0")]  # the whole keyspace, less /b/
    with pytest.raises(ValueError):
        ranges("/p/", ("/q/",))
    with pytest.raises(ValueError):
        Watch(None, "/p/", 1, print, int, "test", ("/p/",))  # nothing left to watch


def test_watch_leaves_out_excluded_prefixes(store, prefix):
    """Keys under an excluded prefix never arrive; every other key under the prefix does, whether it
    sorts before, between or after the exclusions or sits on their boundaries; keys outside the
    prefix do not."""
    p, exclude = _excluding(prefix)
    seen = Seen()
    w = store.watch(p, store.put(prefix + "/start", "s") + 1, seen.on_events, lambda: 0, exclude=exclude)
    try:
        assert len(w.watchers) == 3
        # first the keys that must not arrive: a watcher that covered one would deliver it before
        # the later keys of its own range, which the wait below waits for
        hidden = [p + "claims/", p + "claims/a/1", p + "running/", p + "running/x", prefix, prefix + "0"]
        for k in hidden:
            store.put(k, "no")
        shown = [p, p + "a", p + "claims", p + "claims.x", p + "claims0", p + "claims0/x", p + "jobs/j",
                 p + "running", p + "running.x", p + "running0", p + "zzz"]
        for k in shown:
            store.put(k, "yes")
        store.delete(p + "claims/a/1")
        store.delete(p + "jobs/j")
        assert seen.wait_keys(shown)
        with seen.cond:
            assert seen.cond.wait_for(lambda: ("delete", p + "jobs/j") in {(e[0], e[1]) for e in seen.events}, 10)
        assert wait_for(lambda: w.live, 10)
    finally:
        w.stop()
    keys = [k for _, k, _ in seen.events]
    assert not set(hidden) & set(keys), [k for k in keys if k in hidden]
    assert sorted(keys) == sorted(shown + [p + "jobs/j"]), "an event missing or delivered twice"


def test_watch_with_exclusions_loses_and_repeats_nothing_when_the_stream_breaks(store, prefix):
    """Several watchers on one stream each resume from their own last event: breaking the stream right
    after each of the first responses of a catch-up (the watchers' events come in no order across
    watchers), then again while live, neither loses nor repeats an event of any watcher."""
    p, exclude = _excluding(prefix)
    start = store.put(prefix + "/start", "s") + 1
    wanted = []
    for i in range(30):
        for k in (f"{p}a{i % 3}", f"{p}claims/{i}", f"{p}m{i % 3}", f"{p}running/{i}", f"{p}z{i % 3}"):
            rev = store.put(k, str(i))
            if "/claims/" not in k and "/running/" not in k:
                wanted.append(("put", k, rev))
    seen = Seen()
    breaks = []

    def on_events(events, revision):
        seen.on_events(events, revision)
        if len(breaks) < 3 and w._call is not None:
            breaks.append(len(seen.events))
            w._call.cancel()  # as a network failure would, right after this response
    w = Watch(store, p, start, on_events, lambda: 0, "test", exclude)
    w.start()
    try:
        assert seen.wait_count(len(wanted)), (len(seen.events), len(wanted))
        assert len(breaks) == 3
        assert wait_for(lambda: w.live, 10)
        w._call.cancel()
        for i in range(3):
            for k in (f"{p}a{i}", f"{p}claims/x", f"{p}m{i}", f"{p}z{i}"):
                rev = store.put(k, "late")
                if "/claims/" not in k:
                    wanted.append(("put", k, rev))
        assert seen.wait_count(len(wanted)), (len(seen.events), len(wanted))
    finally:
        w.stop()
    assert len(seen.events) == len(set(seen.events)), "an event delivered twice"
    assert sorted(seen.events, key=lambda e: e[2]) == wanted
    for first in ("a", "m", "z"):  # each watcher's events in revision order
        revs = [r for _, k, r in seen.events if k.startswith(p + first)]
        assert revs == sorted(revs)


def test_watch_with_exclusions_relists_after_compaction(store, prefix):
    """When the watchers' start revision is compacted, on_reset re-lists once and every watcher
    continues after its revision: later changes in every range arrive, earlier ones are not replayed."""
    p, exclude = _excluding(prefix)
    rev0 = store.put(p + "a", "old")
    store.put(p + "m", "old")
    store.compact(store.put(p + "z", "old"))
    seen = Seen()
    resets = []
    relisted = threading.Event()

    def on_reset():
        kvs, rev = store.get_prefix(p)
        resets.append(rev)
        relisted.set()
        return rev
    w = store.watch(p, rev0, seen.on_events, on_reset, exclude=exclude)
    try:
        assert relisted.wait(10)
        for k in (p + "claims/x", p + "a", p + "m", p + "running/x", p + "z"):
            store.put(k, "new")
        assert seen.wait_keys([p + "a", p + "m", p + "z"])
    finally:
        w.stop()
    assert len(resets) == 1
    assert all(rev > resets[0] for _, _, rev in seen.events), "an event from before the re-list was replayed"
    assert sorted(k for _, k, _ in seen.events) == [p + "a", p + "m", p + "z"]


def _raft_index(store: EtcdStore) -> int:
    return store._call(etcdrpc.MaintenanceStub, "Status", etcdrpc.StatusRequest()).raftIndex


def _spy_txns(store, after_first=None):
    """Record every Txn the store sends, with the revision it was answered at (None: refused); call
    ``after_first()`` once, right after the first answer."""
    sent = []
    orig = store._call

    def spy(stub_cls, method, request, timeout=None):
        if method != "Txn":
            return orig(stub_cls, method, request, timeout)
        sent.append((request, None))
        resp = orig(stub_cls, method, request, timeout)
        sent[-1] = (request, resp.header.revision)
        if len(sent) == 1 and after_first is not None:
            after_first()
        return resp
    store._call = spy
    return sent


def test_get_many_and_exists_many_read_in_read_only_transactions(store, prefix):
    """get_many and exists_many answer each key in order (None / False where missing) over more keys
    than one Txn may hold: Txns of at most 128 Range ops and nothing else, the later ones at the
    first one's revision, and no raft entry written."""
    keys = [f"{prefix}/k{i:03d}" for i in range(300)]
    present = [k for i, k in enumerate(keys) if i % 3]
    for first in range(0, len(present), 100):
        store.txn([], [st.put(k, k[-3:]) for k in present[first:first + 100]])
    before = _raft_index(store)
    sent = _spy_txns(store)
    kvs = store.get_many(keys)
    exists = store.exists_many(keys)
    assert _raft_index(store) == before, "a batched read went through raft"
    assert [kv.value.decode() if kv else None for kv in kvs] == [k[-3:] if i % 3 else None for i, k in enumerate(keys)]
    assert [kv.key for kv in kvs if kv] == present
    assert exists == [bool(i % 3) for i in range(300)]
    assert len(sent) == 6 and all(len(req.success) <= st.TXN_OPS for req, _ in sent)
    for req, _ in sent:
        assert not req.compare and not req.failure
        assert all(op.WhichOneof("request") == "request_range" for op in req.success)
    for batch in (sent[:3], sent[3:]):
        assert [r.request_range.revision for r in batch[0][0].success] == [0] * st.TXN_OPS
        assert all(op.request_range.revision == batch[0][1] for req, _ in batch[1:] for op in req.success)
    assert all(op.request_range.count_only for req, _ in sent[3:] for op in req.success)
    store.put(keys[0], "new")
    assert _raft_index(store) > before  # the check above can fail: a write does move it
    assert store.get_many([]) == [] and store.exists_many([]) == []


def test_get_many_at_a_revision_and_across_a_compaction(store, prefix):
    """get_many reads at the revision asked (refused once compacted); a compaction between two of
    its Txns starts the reading over, so the answer is still one snapshot."""
    keys = [f"{prefix}/k{i:03d}" for i in range(200)]
    old = store.txn([], [st.put(k, "old") for k in keys[:100]]).revision
    store.txn([], [st.put(k, "new") for k in keys[:100]])
    assert {kv.value for kv in store.get_many(keys[:100], revision=old)} == {b"old"}
    assert store.exists_many(keys[:100], revision=old - 1) == [False] * 100

    def write_and_compact():
        store.put(keys[0], "newer")
        store.compact(store.put(keys[199], "newer"))
    sent = _spy_txns(store, write_and_compact)
    kvs = store.get_many(keys)
    assert kvs[0].value == b"newer" and kvs[199].value == b"newer", "not one snapshot after the restart"
    assert [kv is None for kv in kvs[100:199]] == [True] * 99
    assert [rev is None for _, rev in sent] == [False, True, False, False]  # refused, then read again
    with pytest.raises(StoreCompacted):
        store.get_many(keys, revision=old)


@pytest.mark.parametrize("ticked", [True, False])
def test_leader_ticks_keep_quiet_ranges_from_relisting_after_a_break(store, prefix, ticked):
    """A node's watch leaves out claims/ and running/, so its other ranges may see no change for
    long; after a compaction and a stream break, a watcher resuming from before the compaction makes
    the node re-list everything. The leader's tick puts a key in every range (Keys.ticks): each
    watcher's revision moves past the busy range's writes, and a break after a compaction resumes
    without a re-list. Without the tick, the same break re-lists (what the tick is for)."""
    from types import SimpleNamespace

    from etcdcron.clock import SystemClock
    from etcdcron.keys import Keys
    from etcdcron.leader import LeaderChores
    keys = Keys(prefix)
    seen, resets = Seen(), []

    def on_reset():
        resets.append(store.get_prefix(keys.root)[1])
        return resets[-1]
    w = store.watch(keys.root, store.put(keys.job("x"), "{}") + 1, seen.on_events, on_reset,
                    exclude=(keys.claims(), keys.runnings))
    try:
        assert wait_for(lambda: w.live, 10)
        for i in range(20):  # firings: only the left-out ranges change
            store.put(keys.claim("j", i), "{}")
        if ticked:
            LeaderChores.tick(SimpleNamespace(node=SimpleNamespace(store=store, keys=keys, clock=SystemClock())))
            assert seen.wait_keys(keys.ticks)
        store.compact(store.put(keys.claim("j", 99), "{}"))
        w._call.cancel()  # a break: etcd restarted, a network blip
        store.put(keys.job("y"), "{}")
        # resumed: y arrives as an event; re-listed: the listing holds it (it may precede the listing)
        assert wait_for(lambda: resets or keys.job("y") in {k for _, k, _ in seen.events}, 10)
    finally:
        w.stop()
    assert len(resets) == (0 if ticked else 1)
    assert not any("/claims/" in k for _, k, _ in seen.events)
