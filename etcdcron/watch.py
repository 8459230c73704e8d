"""The supervised watch of the etcd adapter: one stream of a prefix that resumes after any error,
re-lists when its revision is compacted, and carries the store's auth token. Started by
:meth:`etcdcron.store.EtcdStore.watch`; like the store, it is the only other place that speaks gRPC.
"""

from __future__ import annotations

import queue
import threading

import structlog

from .errors import StoreCompacted, StoreError, StorePermissionDenied, StoreUnavailable
# grpc through the store: it sets grpc's verbosity before grpc is first imported.
from .store import EtcdStore, Event, _b, _kv, etcdrpc, grpc, prefix_end

log = structlog.get_logger("etcdcron.store")

DENIED_RETRY = 30.0  # seconds between watch retries while etcd keeps denying the prefix to our user


class Watch:
    """A watch that survives: it resumes from the last seen ``mod_revision + 1`` after any stream
    error, and when etcd says that revision is compacted (or cancels the watch) it calls
    ``on_reset()``, which re-lists and returns the revision to continue from.

    ``on_events(events, revision)`` is called with all events of one response, in order, from the
    watch thread; it must not block for long.
    """

    def __init__(self, store: EtcdStore, prefix: str, start_revision: int, on_events, on_reset, name: str) -> None:
        self.store = store
        self.prefix = prefix
        self.next_revision = start_revision
        self.on_events = on_events
        self.on_reset = on_reset
        self.name = name
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._requests: queue.Queue | None = None
        self._call = None
        self.resets = 0
        self.live = False  # a stream is open and answering: the view follows etcd

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
                self.next_revision = self.on_reset() + 1
                self.resets += 1
                log.info("watch.relisted", watch=self.name, reason=why, resume_from=self.next_revision)
                return
            except Exception as exc:  # noqa: BLE001
                log.warning("watch.relist_failed", watch=self.name, error=str(exc)[:200])
                self._stop.wait(0.5)

    def _stream_once(self) -> None:
        q: queue.Queue = queue.Queue()
        self._requests = q
        create = etcdrpc.WatchCreateRequest(
            key=_b(self.prefix), range_end=prefix_end(self.prefix), start_revision=self.next_revision,
            progress_notify=True,
        )
        q.put(etcdrpc.WatchRequest(create_request=create))
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
                self.live = True
                if resp.events:
                    events = [Event("put" if ev.type == 0 else "delete", _kv(ev.kv)) for ev in resp.events]
                    self.next_revision = events[-1].kv.mod_revision + 1
                    self.on_events(events, resp.header.revision)
                elif resp.header.revision >= self.next_revision and not resp.created:
                    # progress notification: nothing under the prefix changed up to this revision
                    self.next_revision = resp.header.revision + 1
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
