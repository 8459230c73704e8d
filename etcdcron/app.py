"""The app layer of ``etcdcron serve``: configuration, logging, embedded etcd, signals, shutdown."""

from __future__ import annotations

import signal
import threading
from dataclasses import dataclass

import structlog

from .daemon import Node, NodeConfig
from .embedded import EmbeddedEtcd, data_home, free_port
from .errors import StoreUnavailable
from .keys import Keys
from .store import EtcdStore

log = structlog.get_logger("etcdcron.app")

DEFAULT_ETCD = "http://127.0.0.1:2379"


@dataclass
class ServeOptions:
    etcd: str | None
    prefix: str
    node: NodeConfig
    skew: float = 0.0


def connect(etcd: str | None, embed: bool = False) -> tuple[EtcdStore, EmbeddedEtcd | None]:
    """Open the store; with no endpoint given and none answering, start an embedded etcd if ``embed``."""
    store = EtcdStore(etcd or DEFAULT_ETCD)
    try:
        store.status()
        return store, None
    except StoreUnavailable:
        if etcd is not None or not embed:
            store.close()
            raise
    store.close()
    data = data_home() / "etcd"
    log.warning("etcd.embedded", reason=f"no etcd answered at {DEFAULT_ETCD}", data_dir=str(data),
                endpoint=DEFAULT_ETCD)
    embedded = EmbeddedEtcd(data, client_port=2379, peer_port=free_port(), log_path=data_home() / "etcd.log").start()
    return EtcdStore(embedded.endpoint), embedded


def serve(opts: ServeOptions) -> int:
    from .clock import SystemClock

    store, embedded = connect(opts.etcd, embed=True)
    stop = threading.Event()
    history = None
    if opts.node.mongo:
        from .history import MongoHistory

        history = MongoHistory(opts.node.mongo)
    node = Node(store, Keys(opts.prefix), opts.node, clock=SystemClock(opts.skew), history=history, on_drain=stop.set)
    received: list[str] = []

    def on_signal(signum, _frame):
        received.append(signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        node.start()
        # A timed wait: a signal that lands on another thread is then still seen by the main one.
        while not stop.wait(0.5):
            pass
        log.info("node.signal", signal=received[0] if received else "drain")
        node.stop()
    finally:
        store.close()
        if embedded is not None:
            embedded.stop()
            log.info("etcd.embedded_stopped")
    return 0
