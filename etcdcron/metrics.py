"""Prometheus metrics: a node's (``etcdcron_*``) and the collector's (``etcdcron_collector_*``).

Each process has its own :class:`~prometheus_client.CollectorRegistry`, owned by one object the
app layer creates and hands to what it instruments (:class:`Metrics` to the Node, the claims and
the store; :class:`CollectorMetrics` to the collector), never the library's global registry: tests
run several nodes in one interpreter, and a benchmark's Node counts nothing (:meth:`Metrics.off`).

Why the instruments look as they do (docs/metrics.md lists them):

* no per-job label: a cluster with 100k jobs would export 100k series per metric;
* labelled children are bound once, here; the hot paths (a claim or a completion per firing, at
  thousands a second) only call ``inc``/``observe`` on a child they already hold;
* what can be read when scraped (leader, lease time left, runs, queue depth, readiness) is a
  function gauge: it costs nothing between scrapes.
"""

from __future__ import annotations

import contextlib

from typing import TYPE_CHECKING, Any, Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import GCCollector, PlatformCollector, ProcessCollector, disable_created_metrics

from . import __version__
from .states import State

if TYPE_CHECKING:
    from .daemon import Node

# Firing lag is milliseconds when all is well; seconds mean the node is behind.
LAG_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
# One etcd round trip: a millisecond on a LAN, up to the store's timeout during an election.
TXN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000)
OUTCOMES = tuple(s.value for s in State if s is not State.RUNNING)
LEVELS = (1, 2, 3)
ETCD_ERRORS = ("unavailable", "compacted", "lease_lost", "other")


class _Off:
    """An instrument that records nothing (every method of a metric and of its children)."""

    def labels(self, *_: Any, **__: Any) -> "_Off":
        return self

    def inc(self, *_: Any) -> None:
        pass

    observe = set = set_function = dec = inc

    def time(self) -> contextlib.nullcontext:
        return contextlib.nullcontext()


_OFF = _Off()


def _registered(registry: CollectorRegistry | None) -> Callable[..., Any]:
    """A factory of instruments in ``registry``; of ones that record nothing when None."""
    if registry is None:
        return lambda kind, *args, **kw: _OFF
    return lambda kind, *args, **kw: kind(*args, registry=registry, **kw)


def _process(registry: CollectorRegistry) -> None:
    """The standard process_*, python_gc_* and python_info series (memory, CPU, open files)."""
    # No *_created series beside every counter and histogram: they double the series and nobody
    # graphs them (a process-wide switch of prometheus_client; this process exports only ours).
    disable_created_metrics()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)


class Metrics:
    """A node's metrics, in ``registry`` (a new one when not given). ``Metrics.off()`` records
    nothing: the default of a Node, Claims or store made without metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        _process(self.registry)
        self._build(self.registry)

    @classmethod
    def off(cls) -> "Metrics":
        m = cls.__new__(cls)
        m.registry = None
        m._build(None)
        return m

    @property
    def enabled(self) -> bool:
        return self.registry is not None

    def _build(self, registry: CollectorRegistry | None) -> None:
        make = _registered(registry)
        self._firings = make(Counter, "etcdcron_firings_total", "Firings whose outcome this node recorded, by "
                             "outcome (the record's state) and job level", ["outcome", "level"])
        self._firing = {(o, lvl): self._firings.labels(o, str(lvl)) for o in OUTCOMES for lvl in LEVELS}
        self.lag = make(Histogram, "etcdcron_firing_lag_seconds", "Start of a scheduled run minus its planned "
                        "start (the scheduled instant plus the job's jitter)", buckets=LAG_BUCKETS)
        txn = make(Histogram, "etcdcron_txn_duration_seconds", "etcd round trips of claim and completion "
                   "transactions (one per batch), including those that failed", ["op"], buckets=TXN_BUCKETS)
        self.claim_txn, self.complete_txn = txn.labels("claim"), txn.labels("complete")
        errors = make(Counter, "etcdcron_etcd_errors_total", "etcd errors seen by this node, by kind "
                      "(unavailable, compacted, lease_lost, other)", ["kind"])
        self._errors = {kind: errors.labels(kind) for kind in ETCD_ERRORS}
        self.watch_events = make(Counter, "etcdcron_watch_events_total", "Events received on the node's watch")
        self.relists = make(Counter, "etcdcron_relists_total", "Re-lists of the view (the watch's revision was "
                            "compacted or the watch was cancelled)")
        self._lease_left = make(Gauge, "etcdcron_lease_seconds_left", "Seconds until the node's lease may "
                                "expire, by its local monotonic deadline (0: no valid lease)")
        self._leader = make(Gauge, "etcdcron_leader", "1 while this node does the leader's chores, else 0")
        self._running = make(Gauge, "etcdcron_runs_running", "Runs in progress on this node")
        self._queue = make(Gauge, "etcdcron_worker_queue_depth", "Tasks waiting for a worker thread")
        self._claim_queue = make(Gauge, "etcdcron_claim_queue_depth", "Claim batches waiting for a claimer thread")
        self._ready = make(Gauge, "etcdcron_ready", "1 while /readyz answers 200, else 0")
        self._info = make(Gauge, "etcdcron_node_info", "Always 1; the node's id and version", ["node", "version"])

    # --- the hot paths: one dict lookup and one child's inc/observe
    def firing(self, outcome: str, level: int) -> None:
        child = self._firing.get((outcome, level))
        if child is None:  # a state or level of a newer version: rare, and still a closed set
            child = self._firing[(outcome, level)] = self._firings.labels(str(outcome), str(level))
        child.inc()

    def etcd_error(self, kind: str) -> None:
        self._errors.get(kind, self._errors["other"]).inc()

    # --- read when scraped
    def bind(self, node: "Node") -> None:
        """Read the node's gauges from ``node`` at each scrape."""
        if self.registry is None:
            return
        session, clock = node.session, node.clock
        self._lease_left.set_function(lambda: max(0.0, session.deadline - clock.monotonic()) if session.valid() else 0.0)
        self._leader.set_function(lambda: 1.0 if node.leader.leading else 0.0)
        self._running.set_function(node.runs_running)
        self._queue.set_function(node.pool.pending)
        self._claim_queue.set_function(node.claimer.pending)
        self._ready.set_function(lambda: 1.0 if node.readiness()[0] else 0.0)
        self._info.labels(node.node_id, __version__).set(1)


COLLECTOR_ROUTES = ("/i/user/open_app", "/i/usage/time", "/v1/events", "/healthz", "/readyz", "/metrics")


class CollectorMetrics:
    """The collector's metrics, in ``registry`` (a new one when not given)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = CollectorRegistry() if registry is None else registry
        _process(self.registry)
        r = self.registry
        self._requests = Counter("etcdcron_collector_requests_total", "HTTP requests answered, by route "
                                 "(other: any path not served) and status code", ["route", "status"], registry=r)
        self._request: dict[tuple[str, int], Any] = {}
        self.events_stored = Counter("etcdcron_collector_events_stored_total", "Events inserted into MongoDB",
                                     registry=r)
        self.events_duplicate = Counter("etcdcron_collector_events_duplicate_total", "Events not stored again: "
                                        "their event id was stored before", registry=r)
        self.batch_size = Histogram("etcdcron_collector_insert_batch_size", "Events per insert into MongoDB "
                                    "(requests that arrive together share one)", buckets=BATCH_BUCKETS, registry=r)
        self.insert_seconds = Histogram("etcdcron_collector_insert_duration_seconds", "Duration of one insert "
                                        "into MongoDB", buckets=TXN_BUCKETS, registry=r)
        self.insert_errors = Counter("etcdcron_collector_insert_errors_total", "Inserts that failed (the "
                                     "requests waiting on them answered 503)", registry=r)
        # Refusals are counted here instead of logged one line each: a flood of bad requests must
        # neither fill the log nor cost a write per request (the log gets one summary line a minute).
        self._refusals = Counter("etcdcron_collector_refused_total", "Requests refused with a 4xx, by route and "
                                 "status (413 size, 404 unknown app, 401 signature, 400 shape, 422 timestamp, "
                                 "429 rate limit)", ["route", "status"], registry=r)
        self._refused: dict[tuple[str, int], Any] = {}
        limited = Counter("etcdcron_collector_rate_limited_total", "Requests refused with 429, by the token "
                          "bucket that was empty (app or client address)", ["scope"], registry=r)
        self.rate_limited = {scope: limited.labels(scope) for scope in ("app", "client")}
        self.app_lookups = Counter("etcdcron_collector_app_lookups_total", "App ids looked up in MongoDB (cache "
                                   "misses: an app's first request, every 30 s after, and unknown ids once "
                                   "a second at most)", registry=r)

    def request(self, path: str, status: int) -> None:
        route = path if path in COLLECTOR_ROUTES else "other"  # a scanner's paths must not become series
        child = self._request.get((route, status))
        if child is None:
            child = self._request[(route, status)] = self._requests.labels(route, str(status))
        child.inc()

    def refused(self, path: str, status: int) -> None:
        route = path if path in COLLECTOR_ROUTES else "other"
        child = self._refused.get((route, status))
        if child is None:
            child = self._refused[(route, status)] = self._refusals.labels(route, str(status))
        child.inc()
