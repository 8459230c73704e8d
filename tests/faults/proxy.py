"""A loopback TCP proxy that can cut a node from etcd.

``blackhole()`` stops forwarding: bytes already sent sit unread, new connections are accepted and
held, nothing is answered and nothing is closed (what a dropped route looks like to the node).
``reset()`` closes every current connection at once (RST), as a restarted middlebox would.
``hold_responses()`` is the one-way cut: requests still reach etcd (and take effect) while their
answers are held, so the node cannot know whether a write committed. ``restore()`` forwards both
ways again, connecting the held connections upstream and delivering what was held.
"""

from __future__ import annotations

import select
import socket
import struct
import threading


class TcpProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.upstream = (host, upstream_port)
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._answers = threading.Event()  # upstream -> client flows
        self._answers.set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket | None]] = []
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept_loop, name="proxy-accept", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def blackhole(self) -> None:
        self._open.clear()

    def hold_responses(self) -> None:
        self._answers.clear()

    def restore(self) -> None:
        self._answers.set()
        self._open.set()

    def reset(self) -> None:
        """Abort every current connection (both sides see a reset)."""
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for pair in pairs:
            for s in pair:
                if s is not None:
                    _abort(s)

    def close(self) -> None:
        self._stop.set()
        self._open.set()
        self.reset()
        self._listener.close()
        self._thread.join(timeout=5)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                r, _, _ = select.select([self._listener], [], [], 0.2)
                if not r:
                    continue
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(client,), name="proxy-conn", daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            self._pairs.append((client, None))
        self._open.wait()  # a connection made during a blackhole is held, unanswered
        if self._stop.is_set():
            _abort(client)
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            _abort(client)
            return
        with self._lock:
            if (client, None) not in self._pairs:  # reset while we were connecting
                _abort(client)
                _abort(upstream)
                return
            self._pairs.remove((client, None))
            self._pairs.append((client, upstream))
        self._pump(client, upstream)

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peer = {a: b, b: a}
        try:
            while not self._stop.is_set():
                if not self._open.is_set():
                    self._open.wait(0.2)  # hold: read nothing, forward nothing, close nothing
                    continue
                r, _, _ = select.select([a, b] if self._answers.is_set() else [a], [], [], 0.2)
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        raise OSError("closed")
                    # blackholed between select and recv: hold the bytes until restored (a TCP
                    # stream cannot lose bytes in the middle without breaking its framing)
                    while not (self._open.is_set() and (s is a or self._answers.is_set())):
                        if self._stop.wait(0.05):
                            return
                    peer[s].sendall(data)
        except (OSError, ValueError):
            pass
        finally:
            with self._lock:
                if (a, b) in self._pairs:
                    self._pairs.remove((a, b))
            _abort(a)
            _abort(b)


def _abort(s: socket.socket) -> None:
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass
