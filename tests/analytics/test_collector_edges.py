"""The collector's edges over HTTP (uvicorn on a loopback port, real MongoDB): text limits at n and n+1,
the signed usage form, deep JSON, rate limits, the unknown-app cache, refusals counted, key rotation and
custom events. Time is injected: a wall clock (timestamps, key overlaps) and a monotonic one (caches,
token buckets, log summaries) that the tests move by hand."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from urllib.parse import urlencode

import httpx
import pytest
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from structlog.testing import capture_logs

from etcdcron.analytics.collector import APP_TTL, MISS_TTL, AppCache, Limits, create_app
from etcdcron.analytics.errors import Refused
from etcdcron.analytics.events import MAX_JSON_DEPTH, App, batch_sign, goa_sign
from etcdcron.analytics.store import AnalyticsStore
from etcdcron.config import GROUPS, resolve
from etcdcron.embedded import free_port
from etcdcron.metrics import CollectorMetrics
from etcdcron.nodes import wait_for


class Clock:
    """A clock that moves only when the test says so."""

    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


@dataclass
class Served:
    """A running collector: its HTTP client, store and the two clocks the test moves."""

    http: httpx.Client
    store: AnalyticsStore
    wall: Clock
    mono: Clock

    def events(self) -> list[dict]:
        return list(self.store.db.events.find())

    def metrics(self) -> dict[tuple[str, tuple], float]:
        r = self.http.get("/metrics")
        assert r.status_code == 200, r.text
        return {(s.name, tuple(sorted(s.labels.items()))): s.value
                for fam in text_string_to_metric_families(r.text) for s in fam.samples}


def metric(samples: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


@pytest.fixture
def serve(astore):
    """Start a collector over this test's database: ``serve(limits=…, usage_compat=…)`` (limits off unless given)."""
    running = []

    def start(**kw) -> Served:
        wall, mono = Clock(time.time()), Clock(1000.0)
        kw.setdefault("limits", Limits.off())
        asgi = create_app(astore, clock=wall, monotonic=mono, metrics=CollectorMetrics(), **kw)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(asgi, host="127.0.0.1", port=port, log_level="warning", lifespan="on",
                                               proxy_headers=True, forwarded_allow_ips="127.0.0.1"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        assert wait_for(lambda: server.started or not thread.is_alive(), 10, step=0.01) and server.started
        served = Served(httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30), astore, wall, mono)
        running.append((server, thread, served))
        return served

    yield start
    for server, thread, served in running:
        served.http.close()
        server.should_exit = True
        thread.join(10)


def goa(app: App, now: float, key: str | None = None, **over: str | None) -> str:
    """A signed GoAnalytics query; ``seconds=…`` makes it the signed usage form."""
    params = {"appId": app.id, "deviceId": "dev-1", "channel": "googleplay", "platform": "android", "version": "2.4.1",
              "timestamp": str(int(now) - 60)}
    params.update(over)
    params = {k: v for k, v in params.items() if v is not None}
    params["sign"] = goa_sign(params, key or app.key)
    return urlencode(params)


def batch(app: App, events: list[dict] | None = None, key: str | None = None, raw: bytes | None = None) -> tuple[str, bytes]:
    body = raw if raw is not None else json.dumps({"events": events}).encode()
    return f"/v1/events?{urlencode({'appId': app.id, 'sign': batch_sign(body, key or app.key)})}", body


def ev(i: int, now: float, **over) -> dict:
    e = {"id": f"e{i}", "type": "open", "deviceId": f"d{i % 3}", "ts": now - 30, "channel": "appstore",
         "platform": "ios", "version": "2.5.0"}
    e.update(over)
    return {k: v for k, v in e.items() if v is not None}


# --- 1. text field limits, at n and n+1, on every route

LIMITS = {"deviceId": ("dev", 128), "userId": ("uid", 128), "channel": ("ch", 64), "platform": ("pf", 64),
          "version": ("ver", 64)}
CASES = [(route, field) for route in ("open", "usage", "batch") for field in LIMITS] + [("batch", "id")]


def _send(s: Served, app: App, route: str, field: str, value: str) -> httpx.Response:
    now = s.wall()
    if route == "batch":
        url, body = batch(app, [ev(1, now, **{field: value})])
        return s.http.post(url, content=body)
    path = "/i/user/open_app" if route == "open" else "/i/usage/time"
    over = {field: value, "seconds": "5" if route == "usage" else None}
    return s.http.post(f"{path}?{goa(app, now, **over)}")


@pytest.mark.parametrize("route,field", CASES)
def test_text_fields_are_taken_up_to_their_limit_and_refused_one_past_it(serve, astore, route, field):
    """deviceId and userId up to 128 characters, channel, platform, version and event id up to 64: n stored, n+1 refused (400), nothing stored."""
    s = serve()
    app = astore.create_app(App.new("limits", "UTC"))
    stored, limit = LIMITS.get(field, ("_id", 64))
    r = _send(s, app, route, field, "x" * limit)
    assert r.status_code == 200 and r.json()["stored"] == 1, r.text
    [doc] = s.events()
    assert doc[stored] == ("x" * limit if field != "id" else f"{app.id}:{'x' * limit}")
    r = _send(s, app, route, field, "y" * (limit + 1))
    assert r.status_code == 400 and f"bad {field}" in r.json()["error"], r.text
    assert len(s.events()) == 1


# --- 2. the signed usage form

def test_signed_usage_seconds_cannot_be_changed_by_a_replay(serve, astore):
    """With seconds in the signed query, a captured URL replayed with seconds=86400 (in the query, or moved to the body) is refused (401)."""
    s = serve()
    app = astore.create_app(App.new("usage", "UTC"))
    q = goa(app, s.wall(), seconds="12.5")
    r = s.http.post(f"/i/usage/time?{q}")
    assert r.status_code == 200 and r.json()["stored"] == 1, r.text
    assert [d["sec"] for d in s.events()] == [12.5]
    r = s.http.post(f"/i/usage/time?{q.replace('seconds=12.5', 'seconds=86400')}")
    assert r.status_code == 401 and r.json()["error"] == "bad signature"
    unsigned = q.replace("&seconds=12.5", "")
    assert unsigned != q
    r = s.http.post(f"/i/usage/time?{unsigned}", json={"seconds": 86400})
    assert r.status_code == 401
    assert [d["sec"] for d in s.events()] == [12.5]
    assert s.http.post(f"/i/usage/time?{q}").json() == {"ok": True, "stored": 0, "duplicates": 1}


def test_the_goanalytics_usage_form_still_works_and_its_weakness_is_real(serve, astore):
    """The GoAnalytics form (seconds in the body, six fields signed) is stored; its body is unsigned, so a replay with other seconds is stored too (documented)."""
    s = serve()
    app = astore.create_app(App.new("compat", "UTC"))
    q = goa(app, s.wall())
    assert s.http.post(f"/i/usage/time?{q}", json={"seconds": 7}).json()["stored"] == 1
    assert s.http.post(f"/i/usage/time?{q}", json={"seconds": 86400}).json()["stored"] == 1
    assert sorted(d["sec"] for d in s.events()) == [7, 86400]


def test_signed_usage_only_refuses_the_goanalytics_form(serve, astore):
    """With usage_compat off (--signed-usage-only), seconds in the body is refused (401); the signed form is stored."""
    s = serve(usage_compat=False)
    app = astore.create_app(App.new("strict", "UTC"))
    r = s.http.post(f"/i/usage/time?{goa(app, s.wall())}", json={"seconds": 7})
    assert r.status_code == 401 and "unsigned seconds" in r.json()["error"]
    assert s.events() == []
    assert s.http.post(f"/i/usage/time?{goa(app, s.wall(), seconds='7')}").json()["stored"] == 1


@pytest.mark.parametrize("seconds,body,reason", [
    ("86400.001", b"", "bad seconds"), ("-1", b"", "bad seconds"), ("1e3", b"", "bad seconds"),
    ("1.2345", b"", "bad seconds"), ("", b"", "bad seconds"), ("5", b'{"seconds": 5}', "send no body"),
])
def test_bad_signed_seconds_are_refused(serve, astore, seconds, body, reason):
    """The signed form's seconds is a decimal 0…86400 with at most 3 decimals, and comes without a body; else 400, nothing stored."""
    s = serve()
    app = astore.create_app(App.new("badsec", "UTC"))
    r = s.http.post(f"/i/usage/time?{goa(app, s.wall(), seconds=seconds)}", content=body)
    assert r.status_code == 400 and reason in r.json()["error"], r.text
    assert s.events() == []


def test_open_app_takes_no_seconds(serve, astore):
    """An open_app request carrying seconds is refused (400)."""
    s = serve()
    app = astore.create_app(App.new("openonly", "UTC"))
    r = s.http.post(f"/i/user/open_app?{goa(app, s.wall(), seconds='5')}")
    assert r.status_code == 400 and "no seconds" in r.json()["error"]
    assert s.events() == []


# --- 3. deep JSON

def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def test_a_signed_batch_nested_100k_levels_deep_is_refused_with_400(serve, astore):
    """A correctly signed batch nested 100,000 levels deep answers 400 (not a 500 RecursionError); nothing stored."""
    s = serve()
    app = astore.create_app(App.new("deep", "UTC"))
    url, body = batch(app, raw=b'{"events": ' + _nested(100_000) + b"}")
    r = s.http.post(url, content=body)
    assert r.status_code == 400 and f"nested deeper than {MAX_JSON_DEPTH}" in r.json()["error"], r.text
    assert s.events() == []


def test_json_depth_is_taken_at_the_limit_and_refused_one_past_it(serve, astore):
    """A batch nested exactly MAX_JSON_DEPTH levels is stored, one level more is refused; brackets inside strings (escaped quotes too) do not count."""
    s = serve()
    app = astore.create_app(App.new("depth", "UTC"))
    tricky = '\\"' + "[" * 100 + "{" * 100  # inside a string: no nesting at all
    for extra, status in ((MAX_JSON_DEPTH - 3, 200), (MAX_JSON_DEPTH - 2, 400)):  # 3 = {"events": [ {event} ]}
        e = json.dumps(ev(extra, s.wall(), note=tricky))[:-1].encode() + b', "x": ' + _nested(extra) + b"}"
        raw = b'{"events": [' + e + b"]}"
        assert json.loads(raw)["events"][0]["note"] == tricky
        r = s.http.post(batch(app, raw=raw)[0], content=raw)
        assert r.status_code == status, (extra, r.text)
    assert [d["_id"] for d in s.events()] == [f"{app.id}:e{MAX_JSON_DEPTH - 3}"]


def test_the_depth_check_is_linear_on_runs_of_escaped_quotes():
    """A 1 MiB body of escaped quotes in an unterminated string (what a signed malicious batch can be)
    is checked in one pass: well under 10 s here, where the check that cut strings out with a regular
    expression went quadratic and would have held the collector's event loop for most of an hour
    (found in review: a 60 KB body took 10.8 s). The bound is 100 times the time it takes."""
    import subprocess
    import sys

    code = ("from etcdcron.analytics.events import check_depth\n"
            "check_depth(b'{\"events\": [\"' + b'\\\\\"' * 500_000 + b'  ')")
    try:  # a process of its own: a regular expression holds the GIL, so a thread could not be timed out
        subprocess.run([sys.executable, "-c", code], check=True, timeout=10)
    except subprocess.TimeoutExpired:
        raise AssertionError("the depth check of a 1 MiB body did not finish within 10 s") from None


def test_a_deep_goanalytics_usage_body_is_refused_with_400(serve, astore):
    """A usage body of 4,000 nested arrays (under the 4 KiB cap) answers 400, not 500; nothing stored."""
    s = serve()
    app = astore.create_app(App.new("deepgoa", "UTC"))
    r = s.http.post(f"/i/usage/time?{goa(app, s.wall())}", content=_nested(2000))
    assert r.status_code == 400 and "nested deeper" in r.json()["error"], r.text
    assert s.events() == []


# --- 4. rate limits

def _open(s: Served, app: App, dev: str, client: str | None = None, key: str | None = None) -> httpx.Response:
    headers = {"X-Forwarded-For": client} if client else {}
    return s.http.post(f"/i/user/open_app?{goa(app, s.wall(), key=key, deviceId=dev)}", headers=headers)


def test_a_client_address_over_its_rate_gets_429_with_retry_after(serve, astore):
    """A client past its burst gets 429 with Retry-After (seconds until a token is back); other addresses are unaffected; nothing of a refused request is stored."""
    s = serve(limits=Limits(app_rate=0, client_rate=0.5, client_burst=3))
    app = astore.create_app(App.new("busy", "UTC"))
    assert [_open(s, app, f"a{i}", "10.0.0.1").status_code for i in range(3)] == [200] * 3
    r = _open(s, app, "a3", "10.0.0.1")
    assert r.status_code == 429 and r.headers["Retry-After"] == "2" and "client address" in r.json()["error"]
    assert _open(s, app, "b0", "10.0.0.2").status_code == 200
    assert sorted(d["dev"] for d in s.events()) == ["a0", "a1", "a2", "b0"]
    s.mono.advance(1.9)
    r = _open(s, app, "a4", "10.0.0.1")
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    s.mono.advance(0.1)
    assert _open(s, app, "a5", "10.0.0.1").status_code == 200
    assert "a3" not in {d["dev"] for d in s.events()} and "a4" not in {d["dev"] for d in s.events()}
    m = s.metrics()
    assert metric(m, "etcdcron_collector_rate_limited_total", scope="client") == 2
    assert metric(m, "etcdcron_collector_refused_total", route="/i/user/open_app", status="429") == 2


def test_ipv6_clients_share_a_bucket_per_64(serve, astore):
    """Two addresses of one IPv6 /64 share a client bucket; an address of another /64 has its own."""
    s = serve(limits=Limits(app_rate=0, client_rate=1, client_burst=1))
    app = astore.create_app(App.new("six", "UTC"))
    assert _open(s, app, "x1", "2001:db8::1").status_code == 200
    assert _open(s, app, "x2", "2001:db8::2").status_code == 429
    assert _open(s, app, "x3", "2001:db8:0:1::1").status_code == 200


def test_an_app_over_its_rate_gets_429_and_other_apps_do_not(serve, astore):
    """An app past its burst gets 429 with Retry-After on both routes; another app is served; badly signed requests spend none of the app's tokens."""
    s = serve(limits=Limits(app_rate=0.25, app_burst=2, client_rate=0))
    app, other = astore.create_app(App.new("loud", "UTC")), astore.create_app(App.new("quiet", "UTC"))
    assert [_open(s, app, f"l{i}", f"10.0.1.{i}").status_code for i in range(2)] == [200, 200]
    url, body = batch(app, [ev(9, s.wall())])
    r = s.http.post(url, content=body)
    assert r.status_code == 429 and r.headers["Retry-After"] == "4" and "this app" in r.json()["error"]
    assert _open(s, other, "q0").status_code == 200
    s.mono.advance(4)
    assert [_open(s, app, "bad", key="0" * 32).status_code for _ in range(3)] == [401] * 3
    assert _open(s, app, "l2").status_code == 200
    assert sorted(d["dev"] for d in s.events()) == ["l0", "l1", "l2", "q0"]
    assert metric(s.metrics(), "etcdcron_collector_rate_limited_total", scope="app") == 1


def test_rate_limits_can_be_turned_off(serve, astore):
    """With both rates 0, one client sends far past any burst and every request is stored."""
    s = serve(limits=Limits(app_rate=0, app_burst=1, client_rate=0, client_burst=1))
    app = astore.create_app(App.new("unlimited", "UTC"))
    assert {_open(s, app, f"u{i}").status_code for i in range(30)} == {200}
    assert len(s.events()) == 30


def test_rate_limit_settings_default_to_the_documented_values():
    """collect.app_rate/app_burst/client_rate/client_burst resolve to Limits() by default, and 0 from the environment turns a limit off."""
    cfg = resolve({}, environ={}, settings=GROUPS["collect"])
    assert Limits.from_config(cfg) == Limits(app_rate=1000.0, app_burst=2000, client_rate=50.0, client_burst=200)
    cfg = resolve({}, environ={"ETCDCRON_COLLECT_CLIENT_RATE": "0"}, settings=GROUPS["collect"])
    assert Limits.from_config(cfg).client_rate == 0.0
    assert cfg["collect.signed_usage_only"] is False


# --- 5. the unknown-app cache

class CountingStore:
    """The real store, with its app lookups counted by id."""

    def __init__(self, store: AnalyticsStore) -> None:
        self.store, self.lookups = store, Counter()

    def find_app(self, ref: str) -> App | None:
        self.lookups[ref] += 1
        return self.store.find_app(ref)


def test_a_flood_of_unknown_app_ids_keeps_known_apps_cached(astore):
    """10,001 unknown ids cost one lookup each and leave the known app cached; the unknown ones are bounded (LRU) and each forgotten after MISS_TTL."""
    app = astore.create_app(App.new("known", "UTC"))
    store, mono = CountingStore(astore), Clock(0.0)
    cache = AppCache(store, mono, max_unknown=100)

    async def get(app_id: str) -> App | None:
        try:
            return await cache.get(app_id)
        except Refused as exc:
            assert exc.status == 404
            return None

    async def main() -> None:
        assert await get(app.id) == app
        for i in range(10_001):
            assert await get(f"{i:016x}") is None
        assert await get(app.id) == app
        assert store.lookups[app.id] == 1
        assert sum(store.lookups.values()) == 10_002 and len(cache.unknown) == 100
        assert await get(f"{10_000:016x}") is None  # remembered
        assert await get(f"{0:016x}") is None  # forgotten (least recently seen): looked up again
        assert (store.lookups[f"{10_000:016x}"], store.lookups[f"{0:016x}"]) == (1, 2)
        mono.advance(MISS_TTL)
        assert await get(f"{10_000:016x}") is None
        assert store.lookups[f"{10_000:016x}"] == 2
        assert await get("not an id!") is None and "not an id!" not in store.lookups
        mono.advance(APP_TTL)
        assert await get(app.id) == app and store.lookups[app.id] == 2

    asyncio.run(main())


def test_unknown_app_ids_over_http_are_looked_up_once(serve, astore):
    """Over HTTP: 300 unknown ids are 300 lookups, a repeat within a second none, the known app none after its first."""
    s = serve()
    app = astore.create_app(App.new("cached", "UTC"))
    assert _open(s, app, "k").status_code == 200
    fake = [App(f"{i:016x}", "x", "UTC", "k" * 32) for i in range(300)]
    assert {_open(s, f, "k").status_code for f in fake} == {404}
    assert _open(s, fake[0], "k").status_code == 404
    assert _open(s, app, "k2").status_code == 200
    assert metric(s.metrics(), "etcdcron_collector_app_lookups_total") == 301


# --- 6. refusals counted, logged as a summary

def test_refusals_are_counted_and_logged_once_per_interval(serve, astore):
    """Each refusal moves etcdcron_collector_refused_total{route,status}; the log gets the first at once, then one summary line per minute."""
    s = serve()
    app = astore.create_app(App.new("refusals", "UTC"))
    with capture_logs() as logs:
        for _ in range(20):
            assert _open(s, app, "d", key="0" * 32).status_code == 401
        url, body = batch(app, [ev(1, s.wall(), type="crash")])
        assert s.http.post(url, content=body).status_code == 400
        assert s.http.post("/v1/events?appId=ffffffffffffffff&sign=x", content=body).status_code == 404
        lines = [e for e in logs if e["event"] == "collector.refused"]
        assert len(lines) == 1 and lines[0]["requests"] == 1
        s.mono.advance(60)
        assert s.http.post(url, content=body).status_code == 400
        lines = [e for e in logs if e["event"] == "collector.refused"]
    assert len(lines) == 2
    assert lines[1]["requests"] == 22
    assert lines[1]["by"] == {"/i/user/open_app 401": 19, "/v1/events 400": 2, "/v1/events 404": 1}
    assert "bad type" in lines[1]["examples"]["400"]
    m = s.metrics()
    assert metric(m, "etcdcron_collector_refused_total", route="/i/user/open_app", status="401") == 20
    assert metric(m, "etcdcron_collector_refused_total", route="/v1/events", status="400") == 2
    assert metric(m, "etcdcron_collector_refused_total", route="/v1/events", status="404") == 1
    assert metric(m, "etcdcron_collector_refused_total") == 23
    assert s.events() == []


# --- 7. key rotation

def test_the_old_key_works_until_its_overlap_ends(serve, astore):
    """After a rotation both keys sign (batch and GoAnalytics) until old_key_until; after it the old key is refused (401) and nothing of it stored."""
    s = serve()
    app = astore.create_app(App.new("rotated", "UTC"))
    old, new = app.key, "n" * 32
    app = astore.update_app(app.id, {"key": new, "old_key": old, "old_key_until": s.wall() + 3600})
    assert app.keys(s.wall()) == (new, old)
    for key, i in ((old, 1), (new, 2)):
        url, body = batch(app, [ev(i, s.wall())], key=key)
        assert s.http.post(url, content=body).status_code == 200
        assert _open(s, app, f"goa-{i}", key=key).status_code == 200
    s.wall.advance(3600)
    url, body = batch(app, [ev(3, s.wall())], key=old)
    assert s.http.post(url, content=body).status_code == 401
    assert _open(s, app, "goa-3", key=old).status_code == 401
    url, body = batch(app, [ev(4, s.wall())], key=new)
    assert s.http.post(url, content=body).status_code == 200
    ids = {d["_id"].split(":", 1)[1] for d in s.events() if not d["_id"].split(":", 1)[1].startswith("g:")}
    assert ids == {"e1", "e2", "e4"}
    assert sorted(d["dev"] for d in s.events() if d["dev"].startswith("goa")) == ["goa-1", "goa-2"]


def test_a_rotation_reaches_a_running_collector_within_the_app_cache_ttl(serve, astore):
    """A collector that cached the app before a rotation takes the new key once APP_TTL has passed."""
    s = serve()
    app = astore.create_app(App.new("cachedkey", "UTC"))
    assert _open(s, app, "before").status_code == 200
    app = astore.update_app(app.id, {"key": "n" * 32, "old_key": app.key, "old_key_until": s.wall() + 3600})
    assert _open(s, app, "new-1").status_code == 401
    s.mono.advance(APP_TTL)
    assert _open(s, app, "new-2").status_code == 200
    assert sorted(d["dev"] for d in s.events()) == ["before", "new-2"]


def test_a_non_ascii_signature_is_refused_with_401(serve, astore):
    """A sign of non-ASCII text is a bad signature (401) on both routes, not a server error."""
    s = serve()
    app = astore.create_app(App.new("unicode", "UTC"))
    q = goa(app, s.wall()).rsplit("&sign=", 1)[0]
    assert s.http.post(f"/i/user/open_app?{q}&sign=%C3%A9").status_code == 401
    url, body = batch(app, [ev(1, s.wall())])
    assert s.http.post(url.rsplit("&sign=", 1)[0] + "&sign=%C3%A9", content=body).status_code == 401
    assert s.events() == []


# --- 8. custom events

COUNTERS = {"signup": {"type": "sum", "slots": []}, "purchase": {"type": "slot", "slots": ["gold", "silver"]},
            "share": {"type": "cpv", "slots": []}}


def test_declared_custom_events_are_stored_with_name_amount_and_slot(serve, astore):
    """Custom events of declared counters are stored with name, amt (default 1) and slot."""
    s = serve()
    app = astore.create_app(App.new("custom", "UTC"))
    app = astore.update_app(app.id, {"counters": COUNTERS})
    now = s.wall()
    events = [ev(1, now), ev(2, now, type="custom", name="signup", amount=3),
              ev(3, now, type="custom", name="purchase", slot="gold", amount=2), ev(4, now, type="custom", name="share")]
    url, body = batch(app, events)
    r = s.http.post(url, content=body)
    assert r.status_code == 200 and r.json()["stored"] == 4, r.text
    got = {d["_id"].split(":")[1]: (d["type"], d.get("name"), d.get("amt"), d.get("slot")) for d in s.events()}
    assert got == {"e1": ("open", None, None, None), "e2": ("custom", "signup", 3, ""),
                   "e3": ("custom", "purchase", 2, "gold"), "e4": ("custom", "share", 1, "")}


@pytest.mark.parametrize("bad,reason", [
    ({"name": "refund"}, "undeclared custom event 'refund'"),
    ({"name": "purchase", "slot": "bronze"}, "bad slot 'bronze'"),
    ({"name": "purchase"}, "bad slot 'None'"),
    ({"name": "signup", "slot": "gold"}, "takes no slot"),
    ({"name": "signup", "amount": -1}, "bad amount"),
    ({"name": "signup", "amount": 1.5}, "bad amount"),
    ({}, "undeclared custom event 'None'"),
])
def test_undeclared_custom_events_refuse_the_whole_batch(serve, astore, bad, reason):
    """An undeclared name or slot (or a bad amount) in a batch answers 400 naming the event, and nothing of the batch is stored."""
    s = serve()
    app = astore.update_app(astore.create_app(App.new("strictcustom", "UTC")).id, {"counters": COUNTERS})
    now = s.wall()
    url, body = batch(app, [ev(1, now), ev(2, now, type="custom", name="signup"), ev(3, now, type="custom", **bad)])
    r = s.http.post(url, content=body)
    assert r.status_code == 400 and r.json()["error"].startswith("event 2: ") and reason in r.json()["error"], r.text
    assert s.events() == []
