"""The etcd adapter against a real etcd: transactions, leases, the supervised watch, error mapping."""

from __future__ import annotations

import threading

import pytest

from etcdcron import store as st
from etcdcron.errors import StoreUnavailable
from etcdcron.store import EtcdStore, parse_endpoints, prefix_end


def test_prefix_end_and_endpoint_parsing():
    """Prefix range ends and endpoint lists parse as etcd expects."""
    assert prefix_end("/a/") == b"/a0"
    assert prefix_end(b"a\xff") == b"b"
    assert parse_endpoints("http://h1:2379, h2:2380,https://h3") == ["h1:2379", "h2:2380", "h3:2379"]


def test_txn_compare_and_swap_has_one_winner(store, prefix):
    """Two creates of the same key by Version == 0: the first wins, the second sees the value."""
    k = prefix + "/x"
    first = store.txn([st.version(k, "==", 0)], [st.put(k, "a")], [st.get(k)])
    second = store.txn([st.version(k, "==", 0)], [st.put(k, "b")], [st.get(k)])
    assert first.succeeded and not second.succeeded
    assert second.ranges[0][0].value == b"a" and second.ranges[0][0].mod_revision == first.revision


def test_lease_keepalive_reports_loss(store, prefix):
    """keepalive returns the TTL while the lease lives and <= 0 once it is revoked; its keys go with it."""
    lease = store.grant(5)
    store.put(prefix + "/leased", "v", lease=lease)
    assert store.keepalive(lease) > 0
    store.revoke(lease)
    assert store.keepalive(lease) <= 0
    assert store.get(prefix + "/leased") is None


def test_unreachable_endpoint_maps_to_store_unavailable():
    """A dead endpoint raises our StoreUnavailable, not a grpc error."""
    s = EtcdStore("http://127.0.0.1:1", timeout=0.3)
    with pytest.raises(StoreUnavailable):
        s.get("/k")
    s.close()


def test_failover_to_second_endpoint(etcd, prefix):
    """With a dead first endpoint, a retried call reaches the live second one."""
    s = EtcdStore(f"http://127.0.0.1:1,{etcd}", timeout=0.5)
    with pytest.raises(StoreUnavailable):
        s.put(prefix + "/f", "1")
    assert s.put(prefix + "/f", "1") > 0
    s.close()


def test_watch_relists_after_compaction_and_loses_nothing(store, prefix):
    """A watch asked to resume from a compacted revision re-lists and then sees every later change."""
    rev0 = store.put(prefix + "/a", "1")
    for i in range(5):
        store.put(prefix + "/a", str(i))
    store.compact(store.put(prefix + "/b", "x"))
    seen: list[str] = []
    resets = []
    got, relisted = threading.Event(), threading.Event()

    def on_events(events, revision):
        seen.extend(f"{e.kind}:{e.kv.key.rsplit('/', 1)[1]}={e.kv.value.decode()}" for e in events)
        if any(e.kv.key.endswith("/c") for e in events):
            got.set()

    def on_reset():
        kvs, rev = store.get_prefix(prefix + "/")
        resets.append(sorted(kv.key.rsplit("/", 1)[1] for kv in kvs))
        relisted.set()
        return rev

    w = store.watch(prefix + "/", rev0, on_events, on_reset)
    try:
        assert relisted.wait(10)
        store.put(prefix + "/c", "new")
        assert got.wait(10), seen
    finally:
        w.stop()
    assert resets and resets[0] == ["a", "b"]
    assert seen[-1] == "put:c=new"
    assert not any(s.startswith("put:a=") for s in seen), "events from before the re-list were replayed"


def test_watch_resumes_after_stream_error(store, prefix):
    """After its stream breaks, the watch resumes from the last revision + 1: no event lost, none twice."""
    got = []
    cond = threading.Condition()

    def on_events(events, revision):
        with cond:
            got.extend(e.kv.value.decode() for e in events)
            cond.notify_all()

    w = store.watch(prefix + "/", store.put(prefix + "/start", "s") + 1, on_events, lambda: 0)
    try:
        store.put(prefix + "/k", "1")
        with cond:
            assert cond.wait_for(lambda: got == ["1"], 10)
        w._call.cancel()  # break the stream as a network failure would
        store.put(prefix + "/k", "2")
        store.put(prefix + "/k", "3")
        with cond:
            assert cond.wait_for(lambda: len(got) >= 3, 10), got
    finally:
        w.stop()
    assert got == ["1", "2", "3"]
