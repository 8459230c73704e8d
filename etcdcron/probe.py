"""The node's probe and metrics server (``serve --http HOST:PORT``): ``/healthz``, ``/readyz``, ``/metrics``.

A small WSGI app on wsgiref's server with a thread per request, as prometheus_client's own
``start_wsgi_server``: no web framework in the node. ``/metrics`` is prometheus_client's WSGI app
over the process's registry. ``/healthz`` and ``/readyz`` ask two settable callables, each returning
``(ok, reason)``; the answer is 200 or 503 with the reason as one line of text/plain.

The server starts before etcd is reached, so that probes answer while the node waits for it: the
app layer first sets ``ready`` to say why the node is not ready (``waiting(reason)``), then, once
the node exists, points both callables at :meth:`Node.health` and :meth:`Node.readiness`::

    probe = start_probe(opts.http, metrics.registry)   # inert when addr is None
    probe.waiting("connecting to etcd")
    ...
    probe.health, probe.ready = node.health, node.readiness
    ...
    probe.close()
"""

from __future__ import annotations

import socket
import threading
from socketserver import ThreadingMixIn
from typing import Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog
from prometheus_client import CollectorRegistry, make_wsgi_app

from .errors import EtcdCronError, InvalidInput

log = structlog.get_logger("etcdcron.probe")

Check = Callable[[], "tuple[bool, str]"]


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scraper never holds the process at exit
    allow_reuse_address = True


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        pass  # a probe every few seconds is not worth a log line


def split_addr(addr: str) -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); ``:PORT`` listens on every address, ``[::1]:PORT`` is IPv6."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise InvalidInput(f"bad --http {addr!r}: want HOST:PORT")
    return host.strip("[]"), int(port)


class Probe:
    """The probe server at ``addr`` (None: serves nothing, and every method still works)."""

    def __init__(self, addr: str | None, registry: CollectorRegistry | None) -> None:
        self.addr = addr
        # liveness while there is no node yet: waiting for etcd is not a reason to be restarted
        self.health: Check = lambda: (True, "starting")
        self.ready: Check = lambda: (False, "starting")
        self._metrics = make_wsgi_app(registry) if registry is not None else None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def waiting(self, reason: str) -> None:
        """Not ready, for ``reason`` (one line), until told otherwise."""
        self.ready = lambda: (False, reason)

    @property
    def port(self) -> int | None:
        return self._server.server_port if self._server else None

    def start(self) -> "Probe":
        if self.addr is None:
            return self
        host, port = split_addr(self.addr)
        try:
            family = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]

            class Server(_Server):
                address_family = family

            self._server = make_server(host, port, self._app, Server, handler_class=_Quiet)
        except OSError as exc:
            raise EtcdCronError(f"cannot serve --http {self.addr}: {exc.strerror or exc}") from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="probe", daemon=True)
        self._thread.start()
        log.info("probe.listening", addr=self.addr, port=self.port, paths="/healthz /readyz /metrics")
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # --- the WSGI app
    def _app(self, environ: dict, start_response) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/healthz":
            return self._answer(self.health, start_response)
        if path == "/readyz":
            return self._answer(self.ready, start_response)
        if path == "/metrics" and self._metrics is not None:
            return self._metrics(environ, start_response)
        return _text(start_response, "404 Not Found", "not found: /healthz, /readyz, /metrics")

    @staticmethod
    def _answer(check: Check, start_response) -> Iterable[bytes]:
        try:
            ok, reason = check()
        except Exception as exc:  # noqa: BLE001 - a probe that cannot tell is a failing probe
            ok, reason = False, f"check failed: {exc!r}"[:300]
        return _text(start_response, "200 OK" if ok else "503 Service Unavailable", reason)


def _text(start_response, status: str, body: str) -> list[bytes]:
    data = (body.splitlines()[0] if body else "").encode() + b"\n"
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(data))),
                            ("Cache-Control", "no-store")])
    return [data]


def start_probe(addr: str | None, registry: CollectorRegistry | None) -> Probe:
    """Serve the probes and ``registry``'s metrics on ``addr`` (``serve --http``) until :meth:`Probe.close`;
    with ``addr`` None, a probe that serves nothing. A port that cannot be bound is an EtcdCronError."""
    return Probe(addr, registry).start()
