"""The etcd adapter against a real etcd: transactions, leases, the supervised watch, error mapping."""

from __future__ import annotations

import threading

import pytest

from etcdcron import store as st
from etcdcron.errors import StoreError, StoreUnavailable
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


def _spy_ranges(store, after_first=None, refuse=None):
    """Record every Range the store answers as (limit, revision, keys returned); call ``after_first()``
    once, right after the first answer; ``refuse(request)`` may raise instead of sending a Range."""
    ranges: list[tuple[int, int, int]] = []
    orig = store._call

    def spy(stub_cls, method, request, timeout=None):
        if method == "Range" and refuse is not None:
            refuse(request)
        resp = orig(stub_cls, method, request, timeout)
        if method == "Range" and not request.count_only:
            ranges.append((request.limit, request.revision, len(resp.kvs)))
            if len(ranges) == 1 and after_first is not None:
                after_first()
        return resp
    store._call = spy
    return ranges


def _fill(store, prefix, n, value=lambda i: f"v{i}"):
    return store.txn([], [st.put(f"{prefix}/k{i:02d}", value(i)) for i in range(n)]).revision


def test_get_prefix_paginates_one_consistent_snapshot(store, prefix):
    """get_prefix reads page after page at the first page's revision: all keys, in key order, and
    nothing written after the first page was read (an update, a new key, a delete) shows."""
    written = _fill(store, prefix, 10)
    changed = []

    def write_between_pages():
        changed.append(store.txn([], [st.put(prefix + "/k00", "new"), st.put(prefix + "/k05", "new"),
                                      st.put(prefix + "/k99", "new"), st.delete(prefix + "/k08")]).revision)
    ranges = _spy_ranges(store, write_between_pages)
    kvs, rev = store.get_prefix(prefix + "/", page=3)
    assert [kv.key for kv in kvs] == [f"{prefix}/k{i:02d}" for i in range(10)]
    assert [kv.value for kv in kvs] == [f"v{i}".encode() for i in range(10)]
    assert written <= rev < changed[0]
    assert len(ranges) >= 4 and all(r[0] <= 3 for r in ranges), ranges
    assert all(r[1] == rev for r in ranges[1:]), f"later pages not read at the first page's revision: {ranges}"
    once, _ = store.get_prefix(prefix + "/", revision=rev, page=100)
    assert kvs == once
    now, _ = store.get_prefix(prefix + "/", page=3)
    assert [kv.key.rsplit("/", 1)[1] for kv in now] == [f"k{i:02d}" for i in range(10) if i != 8] + ["k99"]


def test_get_prefix_reads_a_large_prefix_in_a_bounded_number_of_pages(store, prefix):
    """After the first page, the rest comes in about PAGES answers, not one per ``page`` keys: etcd
    walks a page's whole remaining range to count it, so many small pages cost it quadratic time."""
    n = 1000
    for first in range(0, n, 100):
        store.txn([], [st.put(f"{prefix}/m/{i:04d}", "v") for i in range(first, first + 100)])
    ranges = _spy_ranges(store)
    kvs, _ = store.get_prefix(prefix + "/", page=10)
    assert [kv.key for kv in kvs] == [f"{prefix}/m/{i:04d}" for i in range(n)]
    assert ranges[0][2] == 10 and len(ranges) <= 1 + st.PAGES + 1, ranges
    assert all(r[1] == ranges[1][1] for r in ranges[1:]), ranges


def test_get_prefix_limit_and_keys_only_across_pages(store, prefix):
    """A caller's ``limit`` is "at most that many" whatever the page size; keys_only leaves values empty."""
    _fill(store, prefix, 10)
    kvs, _ = store.get_prefix(prefix + "/", limit=7, page=3)
    assert [kv.key for kv in kvs] == [f"{prefix}/k{i:02d}" for i in range(7)]
    kvs, _ = store.get_prefix(prefix + "/", limit=2, page=3)
    assert len(kvs) == 2
    kvs, _ = store.get_prefix(prefix + "/", keys_only=True, page=4)
    assert len(kvs) == 10 and all(kv.value == b"" for kv in kvs)


def test_get_prefix_restarts_when_compacted_between_pages(store, prefix):
    """If etcd compacts past the snapshot's revision between two pages, the listing starts over at a
    new revision and is again one consistent snapshot."""
    _fill(store, prefix, 10)
    compacted = []

    def compact_between_pages():
        store.put(prefix + "/k99", "late")
        head = store.put(prefix + "/k00", "late")
        store.compact(head)
        compacted.append(head)
    _spy_ranges(store, compact_between_pages)
    kvs, rev = store.get_prefix(prefix + "/", page=3)
    assert rev >= compacted[0]
    assert [kv.key.rsplit("/", 1)[1] for kv in kvs] == [f"k{i:02d}" for i in range(10)] + ["k99"]
    assert kvs[0].value == b"late" and kvs[-1].value == b"late"


def test_get_prefix_shrinks_a_page_too_large_for_grpc(store, prefix):
    """A page refused as too large (RESOURCE_EXHAUSTED) is asked again with fewer keys."""
    _fill(store, prefix, 10)

    def refuse(request):
        if request.limit == 0 or request.limit > 2:
            raise StoreError("etcd error RESOURCE_EXHAUSTED: grpc: received message larger than max")
    _spy_ranges(store, refuse=refuse)
    kvs, _ = store.get_prefix(prefix + "/", page=8)
    assert [kv.key for kv in kvs] == [f"{prefix}/k{i:02d}" for i in range(10)]


def test_get_prefix_larger_than_grpc_message_limit(store, prefix):
    """A prefix holding ~72 MB (over gRPC's 64 MiB message limit) lists completely."""
    n, value = 17_500, "x" * 4096
    try:
        for first in range(0, n, 100):
            store.txn([], [st.put(f"{prefix}/c/{i:06d}", value) for i in range(first, min(first + 100, n))])
        kvs, rev = store.get_prefix(prefix + "/")
        assert len(kvs) == n and rev > 0
        assert kvs[0].key == f"{prefix}/c/000000" and kvs[-1].key == f"{prefix}/c/{n - 1:06d}"
        assert all(len(kv.value) == 4096 for kv in kvs)
    finally:
        store.delete(prefix + "/", prefix=True)
