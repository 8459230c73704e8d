"""A bounded pool of daemon worker threads.

Why not :class:`concurrent.futures.ThreadPoolExecutor`: its threads are joined when the interpreter
exits, so a node whose grace has ended would still wait for a builtin job that cannot be killed.
A stopping node has already stopped and recorded its runs (see :meth:`etcdcron.daemon.Node.stop`);
whatever a worker still does after that must not hold the process.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable


class Workers:
    def __init__(self, size: int, name: str = "worker") -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = [threading.Thread(target=self._loop, name=f"{name}-{i}", daemon=True) for i in range(size)]
        self._closed = False
        for t in self._threads:
            t.start()

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        fut: Future = Future()
        if self._closed:
            fut.cancel()
            fut.set_running_or_notify_cancel()
            return fut
        self._queue.put((fut, fn, args))
        return fut

    def pending(self) -> int:
        """Tasks queued and not yet taken by a worker (approximate, as any queue size)."""
        return self._queue.qsize()

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            fut, fn, args = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits on the future
                fut.set_exception(exc)

    def shutdown(self) -> None:
        """Take no more work and cancel what is queued; running work goes on (daemon threads)."""
        self._closed = True
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        for _ in self._threads:
            self._queue.put(None)
