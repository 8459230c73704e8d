"""`etcdcron collect` for operators: /metrics and /readyz scraped from a real collector process (real MongoDB)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from etcdcron.analytics.events import App, batch_sign
from etcdcron.analytics.store import AnalyticsStore
from etcdcron.embedded import free_port
from etcdcron.nodes import wait_for
from etcdcron.testing import cli_command

from ..mongo import MongoServer


class Collector:
    """``etcdcron collect --mongo URI --port P`` as a process; stopped by PID in :meth:`stop`."""

    def __init__(self, mongo: str, tmp: Path) -> None:
        self.port, self.log = free_port(), tmp / "collect.log"
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen([*cli_command(), "collect", "--mongo", mongo, "--port", str(self.port)],
                                         stdout=out, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=10)
        assert wait_for(self._up, 20, step=0.1), self.log.read_text()[-2000:]

    def _up(self) -> bool:
        try:
            return self.http.get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def metrics(self) -> dict[tuple[str, tuple], float]:
        r = self.http.get("/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain"), r.text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(r.text) for s in fam.samples}

    def stop(self) -> int:
        self.http.close()
        self.proc.terminate()
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def value(samples: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


def post_batch(c: Collector, app: App, ids: list[str], key: str | None = None) -> httpx.Response:
    body = json.dumps({"events": [{"id": i, "type": "open", "deviceId": "d1", "ts": time.time() - 30} for i in ids]}).encode()
    return c.http.post(f"/v1/events?{urlencode({'appId': app.id, 'sign': batch_sign(body, key or app.key)})}",
                       content=body)


def test_metrics_count_requests_and_stored_events(mongo_uri, astore, tmp_path):
    """Accepted, duplicate and refused requests move the request, stored-event, batch-size and insert-latency metrics."""
    app = astore.create_app(App.new("scraped", "UTC"))
    c = Collector(mongo_uri, tmp_path)
    try:
        assert post_batch(c, app, ["a", "b", "c"]).status_code == 200
        r = post_batch(c, app, ["c", "d"])  # c again: a duplicate
        assert r.status_code == 200 and r.json()["stored"] == 1 and r.json()["duplicates"] == 1
        assert post_batch(c, app, ["e"], key="wrong").status_code == 401
        assert c.http.get("/wp-login.php").status_code == 404
        m = c.metrics()
        assert value(m, "etcdcron_collector_requests_total", route="/v1/events", status="200") == 2
        assert value(m, "etcdcron_collector_requests_total", route="/v1/events", status="401") == 1
        assert value(m, "etcdcron_collector_requests_total", route="other", status="404") == 1
        assert value(m, "etcdcron_collector_events_stored_total") == 4
        assert value(m, "etcdcron_collector_events_duplicate_total") == 1
        assert value(m, "etcdcron_collector_insert_batch_size_count") == 2
        assert value(m, "etcdcron_collector_insert_batch_size_sum") == 5
        assert value(m, "etcdcron_collector_insert_duration_seconds_count") == 2
        assert value(m, "etcdcron_collector_insert_errors_total") == 0
        assert astore.db.events.count_documents({"app": app.id}) == 4
        assert c.http.get("/readyz").status_code == 200
        assert value(c.metrics(), "etcdcron_collector_requests_total", route="/readyz", status="200") == 1
    finally:
        assert c.stop() == 0, c.log.read_text()[-2000:]


@pytest.fixture
def own_mongo(tmp_path):
    """A MongoDB server of this test alone, so that the test can stop it."""
    server = MongoServer(tmp_path / "mongo").start()
    yield server
    server.stop()


def test_readyz_fails_while_mongodb_is_unreachable(own_mongo, tmp_path):
    """Stopping MongoDB turns /readyz to 503 naming it, within about a second; /healthz and /metrics still answer 200."""
    uri = own_mongo.database_uri()
    with AnalyticsStore(uri) as store:
        app = store.create_app(App.new("outage", "UTC"))
    c = Collector(uri, tmp_path)
    try:
        assert c.http.get("/readyz").status_code == 200
        assert post_batch(c, app, ["before"]).status_code == 200  # the app is cached: the next insert is tried
        own_mongo.stop()
        started = time.monotonic()
        r = c.http.get("/readyz")
        assert r.status_code == 503 and "MongoDB unreachable" in r.json()["error"], r.text
        assert time.monotonic() - started < 4, "a readiness probe must answer within its timeout"
        assert c.http.get("/healthz").status_code == 200, "liveness does not depend on MongoDB"
        assert post_batch(c, app, ["x"]).status_code == 503
        m = c.metrics()
        assert value(m, "etcdcron_collector_insert_errors_total") == 1
        assert value(m, "etcdcron_collector_requests_total", route="/readyz", status="503") == 1
    finally:
        assert c.stop() == 0, c.log.read_text()[-2000:]
