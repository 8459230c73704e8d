"""The app layer of ``etcdcron serve``: configuration, logging, embedded etcd (only when asked), waiting
for etcd, signals, shutdown."""

from __future__ import annotations

import random
import signal
import threading
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlparse

import structlog

from .config import Config
from .daemon import Node, NodeConfig
from .embedded import EmbeddedEtcd, data_home, free_port
from .errors import InvalidInput, StoreUnavailable
from .keys import Keys
from .metrics import Metrics
from .probe import Probe, start_probe
from .store import EtcdStore

log = structlog.get_logger("etcdcron.app")

DEFAULT_ETCD = "http://127.0.0.1:2379"
# A missing etcd is waited for, never replaced: retries back off from 0.5 s to 10 s.
RETRY_FIRST, RETRY_MAX = 0.5, 10.0


@dataclass
class ServeOptions:
    cfg: Config
    node: NodeConfig
    skew: float = 0.0
    http: str | None = None  # HOST:PORT of /healthz, /readyz and /metrics; None: not served

    @classmethod
    def of(cls, cfg: Config, skew: float = 0.0) -> "ServeOptions":
        node = NodeConfig(cfg.node_id(), cfg["serve.levels"], cfg["serve.ttl"], cfg["serve.workers"],
                          grace=cfg["serve.grace"], max_skew=cfg["serve.max_skew"], mongo=cfg["mongo.uri"],
                          allow_kinds=frozenset(cfg["serve.allow_kinds"]), pass_env=tuple(cfg["serve.pass_env"]),
                          http_allow=tuple(cfg["serve.http_allow"]))
        return cls(cfg, node, skew, http=cfg["serve.http"])


def open_store(cfg: Config, timeout: float = 3.0) -> EtcdStore:
    """The etcd client the settings describe (endpoints, TLS files, user and password file)."""
    return EtcdStore.from_settings(cfg["etcd.endpoints"], ca=cfg["etcd.ca"], cert=cfg["etcd.cert"], key=cfg["etcd.key"],
                                   user=cfg["etcd.user"], password_file=cfg["etcd.password_file"], timeout=timeout)


def start_embedded(cfg: Config) -> EmbeddedEtcd:
    """``serve --embedded``: a single-member etcd on this machine, at the one loopback endpoint configured."""
    endpoints = [e.strip() for e in cfg["etcd.endpoints"].split(",") if e.strip()]
    url = urlparse(endpoints[0] if endpoints and "://" in endpoints[0] else "http://" + (endpoints or [""])[0])
    if len(endpoints) != 1 or url.scheme != "http" or url.hostname not in ("127.0.0.1", "localhost"):
        raise InvalidInput(f"--embedded starts etcd on this machine: etcd.endpoints must be one http://127.0.0.1:PORT "
                           f"endpoint, not {cfg['etcd.endpoints']!r}")
    port = url.port or 2379
    data = data_home() / "etcd"
    log.warning("etcd.embedded", data_dir=str(data), endpoint=f"http://127.0.0.1:{port}",
                note="a single-member etcd on this machine; other nodes must use this endpoint, not --embedded")
    return EmbeddedEtcd(data, client_port=port, peer_port=free_port(), log_path=data_home() / "etcd.log").start()


def wait_for_etcd(cfg: Config, stop: threading.Event, on_wait: Callable[[str], None] = lambda reason: None) -> EtcdStore | None:
    """Connect, retrying an unreachable etcd with backoff until it answers or ``stop`` is set (then None).
    Any other store error (TLS, credentials, permissions) is not transient and is raised."""
    delay, attempt = RETRY_FIRST, 0
    while True:
        store = open_store(cfg)
        try:
            store.status()
            if attempt:
                log.info("etcd.reachable", endpoints=cfg["etcd.endpoints"], attempts=attempt + 1)
            return store
        except StoreUnavailable as exc:
            store.close()
            attempt += 1
            reason = f"etcd unreachable at {cfg['etcd.endpoints']}: {exc}"
            on_wait(reason)
            log.warning("etcd.unreachable", endpoints=cfg["etcd.endpoints"], attempt=attempt, retry_in=round(delay, 2),
                        error=str(exc))
        except BaseException:
            store.close()
            raise
        if stop.wait(delay * random.uniform(0.8, 1.2)):
            return None
        delay = min(delay * 2, RETRY_MAX)


def serve(opts: ServeOptions) -> int:
    from .clock import SystemClock

    stop = threading.Event()
    received: list[str] = []

    def on_signal(signum, _frame):
        received.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    # The probes answer from the start: not ready (and why) while etcd is waited for.
    metrics = Metrics() if opts.http else Metrics.off()
    probe = start_probe(opts.http, metrics.registry)
    probe.waiting("connecting to etcd")
    embedded = None
    try:
        embedded = start_embedded(opts.cfg) if opts.cfg["serve.embedded"] else None
        store = wait_for_etcd(opts.cfg, stop, on_wait=probe.waiting)
        if store is None or stop.is_set():
            if store is not None:
                store.close()
            log.info("node.signal", signal=received[0] if received else "stop", connected=False)
            return 0
        from . import reaper  # as PID 1 (a container), orphans of jobs are ours to wait for: see reaper.py
        reaper.start()
        return _run(store, opts, stop, received, SystemClock(opts.skew), metrics, probe)
    finally:
        probe.close()
        if embedded is not None:
            embedded.stop()
            log.info("etcd.embedded_stopped")


def _run(store: EtcdStore, opts: ServeOptions, stop: threading.Event, received: list[str], clock,
         metrics: Metrics, probe: Probe) -> int:
    history = None
    if opts.node.mongo:
        from .history import MongoHistory

        history = MongoHistory(opts.node.mongo)
    node = Node(store, Keys(opts.cfg["etcd.prefix"]), opts.node, clock=clock, history=history, on_drain=stop.set,
                metrics=metrics)
    probe.health, probe.ready = node.health, node.readiness
    try:
        try:
            node.start()
        except BaseException:
            node.session.close(revoke=True)  # the lease start() took goes now, not a TTL later
            raise
        # A timed wait: a signal that lands on another thread is then still seen by the main one.
        while not stop.wait(0.5):
            pass
        log.info("node.signal", signal=received[0] if received else "drain")
        node.stop()
    finally:
        store.close()
    return 0
