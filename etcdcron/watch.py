"""The supervised watch of the etcd adapter: one stream over a prefix (less the sub-prefixes it is
told to leave out) that resumes after any error, re-lists when its revision is compacted, and carries
the store's auth token. Started by :meth:`etcdcron.store.EtcdStore.watch`; like the store, it is the
only other place that speaks gRPC.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass
from typing import Sequence

import structlog

from .errors import StoreCompacted, StoreError, StorePermissionDenied, StoreUnavailable
# grpc through the store: it sets grpc's verbosity before grpc is first imported.
from .store import EtcdStore, Event, _b, _kv, etcdrpc, grpc, prefix_end

log = structlog.get_logger("etcdcron.store")

DENIED_RETRY = 30.0  # seconds between watch retries while etcd keeps denying the prefix to our user


@dataclass
class Watcher:
    """One key range ``[key, end)`` of a watch, with its own next revision: etcd orders the events of
    one watcher, not those of several on a stream, so each resumes from what it has itself seen."""

    watch_id: int
    key: bytes
    end: bytes
    next_revision: int


def ranges(prefix: str, exclude: Sequence[str] = ()) -> list[tuple[bytes, bytes]]:
    """The key ranges ``[key, end)`` that cover ``prefix`` less every key under each of ``exclude``
    (sub-prefixes of ``prefix``), in key order; no empty range."""
    start, end = _b(prefix), prefix_end(prefix)
    out = []
    for ex in sorted(_b(e) for e in exclude):
        if not ex.startswith(_b(prefix)):
            raise ValueError(f"watch exclude {ex!r} is not under the prefix {prefix!r}")
        if start < ex:
            out.append((start, ex))
        start = max(start, prefix_end(ex))
    if start < end or end == b"\0":  # b"\0": to the end of the keyspace
        out.append((start, end))
    return out


def _create(w: Watcher) -> "etcdrpc.WatchRequest":
    create = etcdrpc.WatchCreateRequest(key=w.key, range_end=w.end, start_revision=w.next_revision,
                                        progress_notify=True)
    # pyetcd's rpc.proto predates WatchCreateRequest.watch_id (field 7, int64, etcd >= 3.4): merged in
    # encoded, protobuf keeps it as an unknown field and sends it. Our own ids: 0 asks etcd to choose.
    create.MergeFromString(b"\x38" + _varint(w.watch_id))
    return etcdrpc.WatchRequest(create_request=create)


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


class Watch:
    """A watch that survives: after any stream error each of its watchers resumes from its own last
    seen ``mod_revision + 1``; when etcd says one's revision is compacted (or cancels it) it calls
    ``on_reset()``, which re-lists and returns the revision every watcher continues from.

    It watches ``prefix`` less the keys under each of ``exclude``: one watcher per range between them
    (:func:`ranges`), all on one gRPC stream. ``on_events(events, revision)`` is called with the events
    of one response (one watcher's, in order) from the watch thread; it must not block for long.
    """

    def __init__(self, store: EtcdStore, prefix: str, start_revision: int, on_events, on_reset, name: str,
                 exclude: Sequence[str] = ()) -> None:
        self.store = store
        self.prefix = prefix
        self.watchers = [Watcher(i, key, end, start_revision)
                         for i, (key, end) in enumerate(ranges(prefix, exclude), start=1)]
        if not self.watchers:
            raise ValueError(f"watch of {prefix!r} excludes all of it: {exclude!r}")
        self.on_events = on_events
        self.on_reset = on_reset
        self.name = name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._requests: queue.Queue | None = None
        self._call = None
        self.resets = 0
        self.live = False  # every watcher is created and the stream answers: the view follows etcd

    @property
    def next_revision(self) -> int:
        """The oldest revision a watcher still waits for: everything before it has been seen."""
        return min(w.next_revision for w in self.watchers)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()
        if self._requests is not None:
            self._requests.put(None)
        self._thread.join(timeout=5)

    def _request_iter(self, q: queue.Queue):
        while True:
            item = q.get()
            if item is None:
                return
            yield item

    def _run(self) -> None:
        backoff, denied = 0.1, 0
        while not self._stop.is_set():
            try:
                self._stream_once()
                backoff = 0.1
            except StoreCompacted:
                self._reset("compacted")
            except Exception as exc:  # noqa: BLE001 - every failure of a stream is retried
                if self._stop.is_set():
                    return
                # A denial is first taken for an expired token (retried at once with a fresh one);
                # denied again, the role lacks the prefix: retry slowly rather than authenticate (a raft
                # write and a bcrypt) every two seconds on every node.
                denied = denied + 1 if isinstance(exc, StorePermissionDenied) else 0
                log.warning("watch.broken", watch=self.name, error=str(exc)[:200], resume_from=self.next_revision)
                self._stop.wait(DENIED_RETRY if denied > 1 else backoff)
                backoff = min(backoff * 2, 2.0)

    def _reset(self, why: str) -> None:
        while not self._stop.is_set():
            try:
                revision = self.on_reset() + 1
                for w in self.watchers:
                    w.next_revision = revision
                self.resets += 1
                log.info("watch.relisted", watch=self.name, reason=why, resume_from=revision)
                return
            except Exception as exc:  # noqa: BLE001
                log.warning("watch.relist_failed", watch=self.name, error=str(exc)[:200])
                self._stop.wait(0.5)

    def _stream_once(self) -> None:
        q: queue.Queue = queue.Queue()
        self._requests = q
        for w in self.watchers:
            q.put(_create(w))
        by_id = {w.watch_id: w for w in self.watchers}
        created: set[int] = set()
        md = self.store._md()
        stub = etcdrpc.WatchStub(self.store._chan())
        call = stub.Watch(self._request_iter(q), metadata=md)
        self._call = call
        try:
            for resp in call:
                if self._stop.is_set():
                    return
                if resp.compact_revision:
                    self.store.on_error("compacted")
                    raise StoreCompacted("watch revision compacted", resp.compact_revision)
                if resp.canceled:
                    if "compacted" in resp.cancel_reason:
                        self.store.on_error("compacted")
                        raise StoreCompacted(resp.cancel_reason)
                    if "permission denied" in resp.cancel_reason:
                        # etcd (3.5) says so for an expired token too: authenticate again before the
                        # retry; if the role really lacks the prefix, the retries say so in the log
                        self.store._forget_token(md)
                        raise StorePermissionDenied(f"etcd denied watch {self.prefix}*: permission denied for "
                                                    f"{self.store._who()}")
                    raise StoreError(f"watch canceled: {resp.cancel_reason}")
                w = by_id.get(resp.watch_id)
                if w is None:
                    raise StoreError(f"etcd answered for watch id {resp.watch_id}, not one of ours (etcd < 3.4?)")
                if resp.created:
                    created.add(w.watch_id)
                    self.live = len(created) == len(self.watchers)
                elif resp.events:
                    events = [Event("put" if ev.type == 0 else "delete", _kv(ev.kv)) for ev in resp.events]
                    w.next_revision = events[-1].kv.mod_revision + 1
                    self.on_events(events, resp.header.revision)
                elif resp.header.revision >= w.next_revision:
                    # progress notification: nothing in this watcher's range changed up to this revision
                    w.next_revision = resp.header.revision + 1
        except grpc.RpcError as exc:
            if self._stop.is_set():
                return
            self.store._stale_token(exc, md)
            raise self.store._map(exc, "Watch") from exc
        finally:
            self.live = False
            q.put(None)
            self._call = None
        if not self._stop.is_set():
            raise StoreUnavailable("watch stream ended")
