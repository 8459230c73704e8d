"""The collector over HTTP (uvicorn on a loopback port, real MongoDB): accepted events are stored once;
every refused input answers 4xx with a reason and stores nothing."""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlencode

import threading

import httpx
import pytest
import uvicorn

from etcdcron.analytics.collector import BatchWriter, create_app
from etcdcron.analytics.events import MAX_BATCH_BYTES, App, batch_sign, goa_sign
from etcdcron.analytics.store import AnalyticsStore
from etcdcron.embedded import free_port


@pytest.fixture(scope="module")
def served(mongo_server):
    """The collector served by uvicorn in a thread of this process, on a database of this module."""
    store = AnalyticsStore(mongo_server.database_uri())
    apps = (store.create_app(App.new("kolkata", "Asia/Kolkata")), store.create_app(App.new("other", "UTC")))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(store), host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "collector did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}", store, apps
    server.should_exit = True
    thread.join(10)
    store.close()


@pytest.fixture
def client(served):
    """An HTTP client of the collector; the module's database starts each test without events."""
    url, store, _ = served
    store.db.events.delete_many({})
    with httpx.Client(base_url=url, timeout=10) as c:
        yield c


@pytest.fixture
def astore(served):
    return served[1]


@pytest.fixture
def app_kolkata(served):
    return served[2][0]


@pytest.fixture
def other(served):
    return served[2][1]


def goa_query(app: App, **over) -> str:
    params = {"appId": app.id, "deviceId": "dev-1", "channel": "googleplay", "platform": "android", "version": "2.4.1",
              "userId": "u-7", "timestamp": str(int(time.time()) - 60)}
    params.update({k: v for k, v in over.items() if k != "sign"})
    params = {k: v for k, v in params.items() if v is not None}
    params["sign"] = over.get("sign") or goa_sign(params, app.key)
    return urlencode(params)


def batch(app: App, events: list[dict], key: str | None = None, raw: bytes | None = None) -> tuple[str, bytes]:
    body = raw if raw is not None else json.dumps({"events": events}).encode()
    return f"/v1/events?{urlencode({'appId': app.id, 'sign': batch_sign(body, key or app.key)})}", body


def ev(i: int, **over) -> dict:
    e = {"id": f"e{i}", "type": "open", "deviceId": f"d{i % 3}", "ts": time.time() - 30, "channel": "appstore",
         "platform": "ios", "version": "2.5.0"}
    e.update(over)
    return {k: v for k, v in e.items() if v is not None}


def test_open_app_and_usage_time_are_stored(client, astore, app_kolkata):
    """Signed GoAnalytics requests are stored with their local day; the unsigned userId is kept."""
    r = client.post(f"/i/user/open_app?{goa_query(app_kolkata)}")
    assert r.status_code == 200 and r.json()["stored"] == 1
    r = client.post(f"/i/usage/time?{goa_query(app_kolkata, deviceId='dev-2')}", json={"seconds": 12.3456})
    assert r.status_code == 200 and r.json()["stored"] == 1
    docs = {d["type"]: d for d in astore.db.events.find()}
    assert docs["usage"]["sec"] == 12.346 and docs["usage"]["dev"] == "dev-2" and docs["open"]["uid"] == "u-7"
    assert docs["open"]["day"] == time.strftime("%Y-%m-%d", time.gmtime(time.time() - 60 + 19800))
    assert (docs["open"]["ch"], docs["open"]["pf"], docs["open"]["ver"]) == ("googleplay", "android", "2.4.1")


def test_a_resent_event_is_stored_once(client, astore, app_kolkata):
    """The same GoAnalytics request twice, a batch resent, an id twice in one batch: each event stored once."""
    q = goa_query(app_kolkata)
    assert client.post(f"/i/user/open_app?{q}").json()["stored"] == 1
    assert client.post(f"/i/user/open_app?{q}").json() == {"ok": True, "stored": 0, "duplicates": 1}
    url, body = batch(app_kolkata, [ev(1), ev(2), ev(1), ev(3, type="usage", seconds=5)])
    assert client.post(url, content=body).json() == {"ok": True, "accepted": 4, "stored": 3, "duplicates": 1}
    assert client.post(url, content=body).json() == {"ok": True, "accepted": 4, "stored": 0, "duplicates": 4}
    assert astore.count_events(app_kolkata.id) == 4


def test_changing_the_unsigned_user_id_keeps_the_signature_valid(client, app_kolkata):
    """userId is not part of the signature."""
    q = goa_query(app_kolkata).replace("userId=u-7", "userId=someone-else")
    assert client.post(f"/i/user/open_app?{q}").status_code == 200


def _refusals(app: App, other: App) -> list:
    now = time.time()
    big = [ev(i) for i in range(1001)]
    return [
        # GoAnalytics API
        ("unknown app", "open", goa_query(app, appId="0000000000000000"), b"", 404, "unknown app"),
        ("no appId", "open", goa_query(app, appId=None), b"", 404, "unknown app"),
        ("bad signature", "open", goa_query(app, sign="0" * 32), b"", 401, "bad signature"),
        ("other app's key", "open", goa_query(app, sign=goa_query(other).split("sign=")[1]), b"", 401, "bad signature"),
        ("tampered device", "open", goa_query(app).replace("deviceId=dev-1", "deviceId=dev-9"), b"", 401, "bad signature"),
        ("no signature", "open", goa_query(app).split("&sign=")[0], b"", 401, "bad signature"),
        ("timestamp not a number", "open", goa_query(app, timestamp="soon"), b"", 400, "timestamp"),
        ("timestamp in ms", "open", goa_query(app, timestamp=str(int(now * 1000))), b"", 400, "Unix seconds"),
        ("future", "open", goa_query(app, timestamp=str(int(now) + 3600)), b"", 422, "future"),
        ("too old", "open", goa_query(app, timestamp=str(int(now) - 3 * 86400)), b"", 422, "too old"),
        ("usage not json", "usage", goa_query(app), b"{seconds: 1", 400, "not JSON"),
        ("usage without seconds", "usage", goa_query(app), b'{"secs": 1}', 400, "seconds"),
        ("negative seconds", "usage", goa_query(app), b'{"seconds": -1}', 400, "seconds"),
        ("NaN seconds", "usage", goa_query(app), b'{"seconds": NaN}', 400, "seconds"),
        ("boolean seconds", "usage", goa_query(app), b'{"seconds": true}', 400, "seconds"),
        ("oversized body", "usage", goa_query(app), b'{"seconds": 1, "pad": "' + b"x" * 5000 + b'"}', 413, "too large"),
        # batches
        ("batch: bad signature", "batch", *batch(app, [ev(1)], key=other.key), 401, "bad signature"),
        ("batch: unknown app", "batch", batch(app, [ev(1)])[0].replace(app.id, "ffffffffffffffff"), batch(app, [ev(1)])[1], 404, "unknown app"),
        ("batch: not json", "batch", *batch(app, [], raw=b"[1,"), 400, "not JSON"),
        ("batch: no events", "batch", *batch(app, []), 400, "at least one event"),
        ("batch: no id", "batch", *batch(app, [ev(1), ev(2, id=None)]), 400, "event 1: bad id"),
        ("batch: bad type", "batch", *batch(app, [ev(1, type="crash")]), 400, "bad type"),
        ("batch: open with seconds", "batch", *batch(app, [ev(1, seconds=3)]), 400, "no seconds"),
        ("batch: usage without seconds", "batch", *batch(app, [ev(1, type="usage")]), 400, "seconds"),
        ("batch: ts a string", "batch", *batch(app, [ev(1, ts="yesterday")]), 400, "bad ts"),
        ("batch: one event too old", "batch", *batch(app, [ev(1), ev(2, ts=now - 5 * 86400)]), 422, "event 1: timestamp"),
        ("batch: one event in the future", "batch", *batch(app, [ev(1), ev(2, ts=now + 7200)]), 422, "event 1: timestamp"),
        ("batch: too many events", "batch", *batch(app, big), 413, "1001 events"),
        ("batch: oversized body", "batch", *batch(app, [], raw=b" " * (MAX_BATCH_BYTES + 1)), 413, "too large"),
    ]


CASES = [c[0] for c in _refusals(App("x" * 16, "x", "UTC", "k" * 32), App("y" * 16, "y", "UTC", "j" * 32))]


@pytest.mark.parametrize("case", CASES)
def test_refused_input_stores_nothing(client, astore, app_kolkata, other, case):
    """Each refused request answers its 4xx status and a reason, and no event is stored."""
    name, kind, target, body, status, reason = next(c for c in _refusals(app_kolkata, other) if c[0] == case)
    path = {"open": "/i/user/open_app?", "usage": "/i/usage/time?", "batch": ""}[kind]
    r = client.post(path + target, content=body)
    assert r.status_code == status, r.text
    assert reason in r.json()["error"]
    assert astore.db.events.count_documents({}) == 0


def test_health(client):
    """GET /healthz answers ok."""
    assert client.get("/healthz").json() == {"ok": True}


def test_concurrent_requests_are_written_in_batches():
    """Requests arriving while an insert runs are written together in the next insert, each told its own result."""
    inserts: list[int] = []

    def insert(docs):
        time.sleep(0.02)
        inserts.append(len(docs))
        return {i for i, d in enumerate(docs) if d["_id"].endswith("dup")}

    async def main():
        writer = BatchWriter(insert)
        task = asyncio.create_task(writer.run())
        results = await asyncio.gather(*(writer.submit([{"_id": f"r{i}"}, {"_id": f"r{i}-dup"}]) for i in range(50)))
        await writer.close()
        await task
        return results

    results = asyncio.run(main())
    assert results == [(1, 1)] * 50
    assert sum(inserts) == 100 and len(inserts) < 10
