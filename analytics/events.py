"""Apps and events: the model, validation at the edge, and the two signature schemes.

Everything the collector stores passes through here, so the jobs trust their data. Two client APIs:

* the GoAnalytics API (``POST /i/user/open_app``, ``POST /i/usage/time``): one event per request,
  fields in the query, ``sign`` = hex md5 of
  ``appId=…&channel=…&deviceId=…&platform=…&timestamp=…&version=…&key=<app key>``. GoAnalytics
  sends a usage report's ``seconds`` in the body, which that signature does not cover; our signed
  form puts ``seconds`` in the query, where it is signed between ``platform`` and ``timestamp``;
* the batch API (``POST /v1/events?appId=…&sign=…``): a JSON body ``{"events": [...]}``, ``sign`` =
  hex HMAC-SHA256 of the raw body under the app key; every event carries its own ``id``.

An event is stored under ``_id`` = its event id, scoped by app, so a resent event is stored once. The
GoAnalytics API has no event ids: the id is derived from the event's content (a retried request is
the same event; two opens of one device in the same second are one open); it contains a ``:``,
which client ids may not, so the two kinds never collide.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import secrets
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .days import accepts, day_of, zone
from .errors import InvalidApp, Refused

APP_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
EVENT_ID_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
FIELD_RE = re.compile(r"[\x21-\x7e]{0,64}")  # printable ASCII, no spaces
DEVICE_RE = re.compile(r"[\x21-\x7e]{1,128}")
USER_RE = re.compile(r"[\x21-\x7e]{0,128}")

TYPES = ("open", "usage", "custom")
MAX_AMOUNT = 1_000_000_000  # one custom event's amount: a whole number 0..1e9
SIGNED_FIELDS = ("appId", "channel", "deviceId", "platform", "timestamp", "version")
# The signed usage form: ``seconds`` in the query, signed in alphabetical place like the rest.
SIGNED_USAGE_FIELDS = ("appId", "channel", "deviceId", "platform", "seconds", "timestamp", "version")
SECONDS_PARAM_RE = re.compile(r"\d{1,5}(?:\.\d{1,3})?")
MAX_FUTURE = 600.0  # seconds an event may lie ahead of the collector's clock (phone clocks drift)
MAX_SECONDS = 86_400.0  # one usage report never exceeds a day
MAX_BATCH_EVENTS = 1000
MAX_BATCH_BYTES = 1 << 20
MAX_SMALL_BODY = 4096
# The batch shape nests 3 levels ({"events": [{…}]}). json.loads recurses per level, so a deep body
# ends in RecursionError; such bodies are refused by a scan of the raw bytes before parsing.
MAX_JSON_DEPTH = 32
DEFAULT_GRACE = 7200.0


MAX_GRACE = 7 * 86_400.0  # the longest grace an app may have (a week: late phones, offline queues)
DEFAULT_TOP = 20  # breakdown values kept per dimension and day; the rest are summed as "other"
MAX_TOP = 1000
COUNTER_NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,31}")
SLOT_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")
COUNTER_TYPES = ("sum", "slot", "cpv")
MAX_COUNTERS = 50
MAX_SLOTS = 50


@dataclass(frozen=True)
class Counter:
    """A custom event an app declares (GoAnalytics' customized counter): ``sum`` adds ``amount`` per
    day, ``slot`` per declared slot, ``cpv`` per channel, platform and version."""

    name: str
    type: str
    slots: tuple[str, ...] = ()

    @classmethod
    def new(cls, name: str, type: str, slots: tuple[str, ...] | list[str] = ()) -> "Counter":
        if not isinstance(name, str) or not COUNTER_NAME_RE.fullmatch(name):
            raise InvalidApp(f"bad counter name {str(name)[:80]!r}: must match [a-z][a-z0-9_]{{0,31}}")
        if type not in COUNTER_TYPES:
            raise InvalidApp(f"bad counter type {str(type)[:40]!r}: must be sum, slot or cpv")
        slots = tuple(slots)
        if type == "slot":
            if not slots:
                raise InvalidApp(f"counter {name!r} of type slot needs --slots a,b,c")
            if len(slots) > MAX_SLOTS:
                raise InvalidApp(f"counter {name!r}: {len(slots)} slots (limit {MAX_SLOTS})")
            for slot in slots:
                if not isinstance(slot, str) or not SLOT_RE.fullmatch(slot):
                    raise InvalidApp(f"bad slot {str(slot)[:40]!r}: must match [a-z0-9][a-z0-9_-]{{0,31}}")
            if len(set(slots)) != len(slots):
                raise InvalidApp(f"counter {name!r}: a slot is named twice")
        elif slots:
            raise InvalidApp(f"counter {name!r} of type {type} takes no --slots (only type slot does)")
        return cls(name, type, slots)

    def doc(self) -> dict[str, Any]:
        return {"type": self.type, "slots": list(self.slots)}


@dataclass(frozen=True)
class App:
    """A registered app: ``id`` and ``key`` are generated; days are counted in zone ``tz``; events
    may arrive until ``grace`` seconds after the end of their day. After a key rotation the previous
    key (``old_key``) is still accepted until ``old_key_until`` (Unix seconds). ``top`` bounds the
    breakdowns; ``counters`` are the declared custom events by name."""

    id: str
    name: str
    tz: str
    key: str
    grace: float = DEFAULT_GRACE
    top: int = DEFAULT_TOP
    counters: tuple[Counter, ...] = ()
    old_key: str | None = None
    old_key_until: float = 0.0

    @classmethod
    def new(cls, name: str, tz: str, grace: float = DEFAULT_GRACE, top: int = DEFAULT_TOP) -> "App":
        check_app_name(name)
        zone(tz)
        return cls(id=secrets.token_hex(8), name=name, tz=tz, key=secrets.token_hex(16), grace=check_grace(grace),
                   top=check_top(top))

    def doc(self) -> dict[str, Any]:
        d = {"_id": self.id, "name": self.name, "tz": self.tz, "key": self.key, "grace": self.grace, "top": self.top,
             "counters": {c.name: c.doc() for c in self.counters}}
        if self.old_key:
            d.update(old_key=self.old_key, old_key_until=self.old_key_until)
        return d

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> "App":
        counters = tuple(Counter(name, c["type"], tuple(c.get("slots") or ()))
                         for name, c in sorted((doc.get("counters") or {}).items()))
        return cls(id=doc["_id"], name=doc["name"], tz=doc["tz"], key=doc["key"], grace=float(doc.get("grace", DEFAULT_GRACE)),
                   top=int(doc.get("top", DEFAULT_TOP)), counters=counters, old_key=doc.get("old_key"),
                   old_key_until=float(doc.get("old_key_until", 0.0)))

    def keys(self, now: float) -> tuple[str, ...]:
        """The keys a signature may use at ``now``: the key, and the previous one during its overlap."""
        if self.old_key and now < self.old_key_until:
            return (self.key, self.old_key)
        return (self.key,)

    def counter(self, name: str) -> Counter | None:
        return next((c for c in self.counters if c.name == name), None)

    def public(self) -> dict[str, Any]:
        """What `apps show` and `apps ls` print: everything but the keys."""
        return {"id": self.id, "name": self.name, "tz": self.tz, "grace": self.grace, "top": self.top,
                "counters": {c.name: c.doc() for c in self.counters},
                "old_key_until": self.old_key_until if self.old_key else None}


def check_grace(grace: Any) -> float:
    if isinstance(grace, bool) or not isinstance(grace, (int, float)) or grace != grace or not 0 <= grace <= MAX_GRACE:
        raise InvalidApp(f"bad --grace {grace!r}: must be 0 to {MAX_GRACE:.0f} seconds")
    return float(grace)


def check_top(top: Any) -> int:
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= MAX_TOP:
        raise InvalidApp(f"bad --top {top!r}: must be a whole number from 1 to {MAX_TOP}")
    return top


def check_app_name(name: str) -> str:
    if not isinstance(name, str) or not APP_NAME_RE.fullmatch(name):
        raise InvalidApp(f"bad app name {name!r}: must match [a-z0-9][a-z0-9._-]{{0,62}}")
    return name


@dataclass(frozen=True)
class Event:
    """One client event, validated; ``sec`` (usage events) is rounded to the millisecond."""

    id: str  # unique within the app
    type: str  # open | usage
    dev: str
    ts: float
    sec: float = 0.0
    ch: str = ""
    pf: str = ""
    ver: str = ""
    uid: str | None = None
    name: str = ""  # custom events: the declared counter,
    amt: int = 0  # the amount added,
    slot: str = ""  # and the slot (counters of type slot)

    def doc(self, app: App) -> dict[str, Any]:
        """The stored form (DESIGN §6 ``events``); the event id is the primary key."""
        d = {"_id": f"{app.id}:{self.id}", "app": app.id, "dev": self.dev, "type": self.type, "ts": self.ts,
             "day": day_of(self.ts, app.tz), "sec": self.sec, "ch": self.ch, "pf": self.pf, "ver": self.ver}
        if self.uid:
            d["uid"] = self.uid
        if self.type == "custom":
            d.update(name=self.name, amt=self.amt, slot=self.slot)
        return d


def check_future(event: Event, now: float) -> None:
    """Refuse an event stamped more than MAX_FUTURE ahead of ``now`` (the collector's and the import's rule)."""
    if event.ts > now + MAX_FUTURE:
        raise Refused(422, f"timestamp {event.ts:g} is {event.ts - now:.0f} s in the future (limit {MAX_FUTURE:.0f} s; "
                           "timestamps are Unix seconds)")


def check_time(event: Event, app: App, now: float) -> None:
    """Refuse an event stamped too far ahead of ``now``, or for a day the collector no longer takes."""
    check_future(event, now)
    day = day_of(event.ts, app.tz)
    if not accepts(day, app.tz, app.grace, now):
        raise Refused(422, f"timestamp {event.ts:g} is too old: its day {day} ({app.tz}) closed more than "
                           f"{app.grace:.0f} s ago")


# --- signatures

def goa_sign(params: Mapping[str, str], key: str) -> str:
    """GoAnalytics signature: md5 of the six signed fields in order, then the app key; with
    ``seconds`` in the query (our signed usage form) it is signed too, between platform and timestamp."""
    fields = SIGNED_USAGE_FIELDS if "seconds" in params else SIGNED_FIELDS
    text = "&".join(f"{k}={params.get(k, '')}" for k in fields) + f"&key={key}"
    return hashlib.md5(text.encode()).hexdigest()


def batch_sign(body: bytes, key: str) -> str:
    """Batch signature: HMAC-SHA256 of the raw body under the app key."""
    return hmac.new(key.encode(), body, hashlib.sha256).hexdigest()


def verify(expected: str, given: str | None) -> None:
    verify_any((expected,), given)


def verify_any(expected: Iterable[str], given: str | None) -> None:
    """Accept a signature made with any of the app's current keys (``App.keys``: during a rotation's
    overlap the previous key too); every candidate is compared, in constant time each (as bytes:
    compare_digest refuses non-ASCII text with a TypeError, which would be a 500)."""
    given = (given or "").lower()
    raw = given.encode("utf-8", "replace")
    matched = False
    for candidate in expected:
        matched |= hmac.compare_digest(candidate.lower().encode(), raw)
    if not given or not matched:
        raise Refused(401, "bad signature")


# --- parsing

def _text(value: Any, name: str, pattern: re.Pattern = FIELD_RE) -> str:
    if value is None:
        value = ""
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise Refused(400, f"bad {name} {str(value)[:80]!r}")
    return value


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not low <= value <= high:
        raise Refused(400, f"bad {name} {str(value)[:80]!r}: must be a number from {low:g} to {high:g}")
    return value


_JSON_TOKEN = re.compile(rb'\\.|["\[\]{}]', re.S)  # an escape pair (one token: \" never ends a string), a quote, a bracket


def check_depth(body: bytes, limit: int = MAX_JSON_DEPTH) -> None:
    """Refuse JSON nested deeper than ``limit`` before it is parsed: one pass over the escape pairs,
    quotes and brackets (brackets inside strings do not count); linear in the body (a regular
    expression cutting strings out went quadratic on runs of escaped quotes: a signed 1 MiB body would
    have held the event loop for most of an hour), and it stops at the first level too deep."""
    depth, in_string = 0, False
    for m in _JSON_TOKEN.finditer(body):
        token = m.group()
        if token == b'"':
            in_string = not in_string
        elif in_string or len(token) == 2:
            continue
        elif token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                raise Refused(400, f"malformed body: JSON nested deeper than {limit} levels")
        else:
            depth -= 1


def load_json(body: bytes) -> Any:
    """The body as JSON, refused (400) when nested too deep or not JSON."""
    check_depth(body)
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise Refused(400, "malformed body: not JSON") from None


def _seconds_param(raw: str) -> float:
    if not SECONDS_PARAM_RE.fullmatch(raw) or float(raw) > MAX_SECONDS:
        raise Refused(400, f"bad seconds {raw[:40]!r}: must be a decimal number from 0 to {MAX_SECONDS:g} "
                           "(at most 3 decimals)")
    return round(float(raw), 3)


def _timestamp_param(raw: str | None) -> int:
    if raw is None or not re.fullmatch(r"\d{1,12}", raw):
        raise Refused(400, f"bad timestamp {str(raw)[:40]!r}: must be Unix seconds")
    return int(raw)


def goa_event(kind: str, params: Mapping[str, str], body: bytes) -> Event:
    """One GoAnalytics request as an event (the signature is checked by the caller, with the app)."""
    ts = _timestamp_param(params.get("timestamp"))
    dev = _text(params.get("deviceId"), "deviceId", DEVICE_RE)
    fields = {name: _text(params.get(key), key) for name, key in (("ch", "channel"), ("pf", "platform"), ("ver", "version"))}
    uid = _text(params.get("userId"), "userId", USER_RE) or None
    sec = 0.0
    if kind != "usage" and "seconds" in params:
        raise Refused(400, "an open event has no seconds")
    if kind == "usage" and "seconds" in params:  # the signed form
        if body.strip():
            raise Refused(400, "seconds is in the signed query: send no body")
        sec = _seconds_param(params["seconds"])
    elif kind == "usage":  # the GoAnalytics form: seconds in the (unsigned) body
        data = load_json(body)
        if not isinstance(data, dict) or "seconds" not in data:
            raise Refused(400, 'malformed body: expected {"seconds": number}')
        sec = round(float(_number(data["seconds"], "seconds", 0, MAX_SECONDS)), 3)
    digest = hashlib.sha1(f"{dev}|{kind}|{ts}|{sec!r}".encode()).hexdigest()[:24]
    return Event(id=f"g:{digest}", type=kind, dev=dev, ts=ts, sec=sec, uid=uid, **fields)


def batch_events(body: bytes, app: App | None = None) -> list[Event]:
    """The events of a batch body; the first bad event refuses the whole batch, naming it. Custom
    events are checked against ``app``'s declared counters (refused without an app)."""
    data = load_json(body)
    items = data.get("events") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise Refused(400, 'malformed body: expected {"events": [ ... ]} with at least one event')
    if len(items) > MAX_BATCH_EVENTS:
        raise Refused(413, f"batch too large: {len(items)} events (limit {MAX_BATCH_EVENTS})")
    out = []
    for i, item in enumerate(items):
        try:
            out.append(parse_event(item, app))
        except Refused as exc:
            raise Refused(exc.status, f"event {i}: {exc.reason}") from None
    return out


def parse_event(item: Any, app: App | None = None) -> Event:
    """One event of the batch shape (docs/analytics.md), validated; custom events against ``app``'s
    counters. Shared by the collector's batch route and ``analytics import``."""
    if not isinstance(item, dict):
        raise Refused(400, "not an object")
    kind = item.get("type")
    if kind not in TYPES:
        raise Refused(400, f"bad type {str(kind)[:40]!r}: must be open, usage or custom")
    sec = 0.0
    if kind == "usage":
        sec = round(float(_number(item.get("seconds"), "seconds", 0, MAX_SECONDS)), 3)
    elif "seconds" in item:
        raise Refused(400, f"a{'n' if kind == 'open' else ''} {kind} event has no seconds")
    custom: dict[str, Any] = {}
    if kind == "custom":
        custom = _custom(item, app)
    else:
        for key in ("name", "amount", "slot"):
            if key in item:
                raise Refused(400, f"a{'n' if kind == 'open' else ''} {kind} event has no {key} (custom events do)")
    return Event(
        id=_text(item.get("id"), "id", EVENT_ID_RE), type=kind, dev=_text(item.get("deviceId"), "deviceId", DEVICE_RE),
        ts=_number(item.get("ts"), "ts", 0, 1e11), sec=sec, ch=_text(item.get("channel"), "channel"),
        pf=_text(item.get("platform"), "platform"), ver=_text(item.get("version"), "version"),
        uid=_text(item.get("userId"), "userId", USER_RE) or None, **custom,
    )


def _custom(item: dict, app: App | None) -> dict[str, Any]:
    name = item.get("name")
    counter = app.counter(name) if app is not None and isinstance(name, str) else None
    if counter is None:
        raise Refused(400, f"undeclared custom event {str(name)[:40]!r}: declare it with "
                           f"`etcdcron apps counter add APP NAME --type sum|slot|cpv`")
    amount = item.get("amount", 1)
    if isinstance(amount, bool) or not isinstance(amount, int) or not 0 <= amount <= MAX_AMOUNT:
        raise Refused(400, f"bad amount {str(amount)[:40]!r}: must be a whole number from 0 to {MAX_AMOUNT}")
    slot = item.get("slot")
    if counter.type == "slot":
        if slot not in counter.slots:
            raise Refused(400, f"bad slot {str(slot)[:40]!r} for counter {counter.name!r}: "
                               f"declared slots are {', '.join(counter.slots)}")
    elif slot is not None:
        raise Refused(400, f"counter {counter.name!r} is of type {counter.type}: it takes no slot")
    return {"name": counter.name, "amt": amount, "slot": slot or ""}


def admit(app: App, events: list[Event], now: float) -> tuple[list[dict[str, Any]], int]:
    """The insert path's check, shared by the collector and the seeder: every event's time is
    checked (the first refusal refuses all), then repeated ids within the batch are dropped.
    Returns (documents to store, repeats dropped)."""
    for i, event in enumerate(events):
        try:
            check_time(event, app, now)
        except Refused as exc:
            raise Refused(exc.status, f"event {i}: {exc.reason}" if len(events) > 1 else exc.reason) from None
    seen: set[str] = set()
    docs = []
    for event in events:
        if event.id not in seen:
            seen.add(event.id)
            docs.append(event.doc(app))
    return docs, len(events) - len(docs)
