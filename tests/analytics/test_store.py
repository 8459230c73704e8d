"""The MongoDB adapter against a real wire-protocol server: the fenced write, apps, events, error mapping."""

from __future__ import annotations

import threading

import pytest
from pymongo.errors import PyMongoError

from etcdcron.analytics.errors import InvalidApp, MongoError, MongoUnavailable
from etcdcron.analytics.events import App
from etcdcron.analytics.store import AnalyticsStore


def test_fenced_set_never_overwrites_a_higher_fence(astore):
    """A lower fence is refused, the same or a higher one writes; the refused write changes nothing."""
    assert astore.fenced_set("t", [("a", {"v": 1})], 10) == (1, 0)
    assert astore.fenced_set("t", [("a", {"v": 2})], 9) == (0, 1)
    assert astore.one("t", "a") == {"_id": "a", "v": 1, "fence": 10}
    assert astore.fenced_set("t", [("a", {"v": 3})], 10) == (1, 0)
    assert astore.fenced_set("t", [("a", {"v": 4}), ("b", {"v": 5})], 11) == (2, 0)
    assert astore.one("t", "a") == {"_id": "a", "v": 4, "fence": 11}


def test_fenced_set_mixed_batch_counts_each_row(astore):
    """In one batch, rows under a higher fence are refused and the others written."""
    astore.fenced_set("t", [(f"k{i}", {"v": 0}) for i in range(0, 10, 2)], 50)
    written, refused = astore.fenced_set("t", [(f"k{i}", {"v": 1}) for i in range(10)], 40)
    assert (written, refused) == (5, 5)
    docs = {d["_id"]: d["v"] for d in astore.db.t.find()}
    assert docs == {f"k{i}": (0 if i % 2 == 0 else 1) for i in range(10)}


def test_concurrent_upserts_of_a_new_document_end_with_the_highest_fence(astore):
    """Writers racing to create one document: the duplicate-key retry lets the highest fence win."""
    for round_ in range(3):
        key = f"race{round_}"
        barrier = threading.Barrier(6)

        def write(f: int) -> None:
            with AnalyticsStore(astore.uri) as s:
                barrier.wait()
                s.fenced_set("t", [(key, {"v": f})], f)

        threads = [threading.Thread(target=write, args=(f,)) for f in range(1, 7)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert astore.one("t", key) == {"_id": key, "v": 6, "fence": 6}


def test_claim_refuses_a_stale_run(astore):
    """The (job, app) fence register: a newer run's claim stands, an older run's is refused."""
    assert astore.claim("rollup", "app1", 7)
    assert astore.claim("rollup", "app1", 7)
    assert not astore.claim("rollup", "app1", 6)
    assert astore.claim("rollup", "app2", 6)
    assert astore.claim("retention", "app1", 1)


def test_events_are_stored_once_per_id(astore, app_kolkata):
    """Inserting an event id again reports it as a duplicate and stores nothing more."""
    docs = [{"_id": f"{app_kolkata.id}:e{i}", "app": app_kolkata.id, "day": "2026-01-01", "dev": "d"} for i in range(3)]
    assert astore.insert_events(docs) == set()
    assert astore.insert_events(docs[1:] + [{**docs[0], "_id": f"{app_kolkata.id}:e9"}]) == {0, 1}
    assert astore.count_events(app_kolkata.id) == 4
    assert astore.first_event_day(app_kolkata.id) == "2026-01-01"


def test_apps_by_id_or_name_and_unique_names(astore, app_kolkata):
    """An app is found by id or name; a second app of the same name is refused as bad input."""
    assert astore.app(app_kolkata.id) == app_kolkata == astore.app("kolkata")
    with pytest.raises(InvalidApp, match="exists already"):
        astore.create_app(App.new("kolkata", "UTC"))
    with pytest.raises(InvalidApp, match="unknown app 'nope'"):
        astore.app("nope")


def test_pymongo_errors_are_mapped():
    """An unreachable server is MongoUnavailable, one line, with the pymongo error as its cause."""
    with pytest.raises(MongoUnavailable) as info:
        AnalyticsStore("mongodb://127.0.0.1:1/x", timeout=0.3)
    assert isinstance(info.value.__cause__, PyMongoError)
    assert "\n" not in str(info.value) and "Topology" not in str(info.value)
    assert issubclass(MongoUnavailable, MongoError)


def test_a_server_side_failure_is_a_mongo_error(astore):
    """A write the server rejects (other than a duplicate key) is a MongoError, not a pymongo exception."""
    with pytest.raises(MongoError, match="conflict") as info:
        astore.fenced_set("t", [("x", {"a": 1, "a.b": 2})], 1)
    assert isinstance(info.value.__cause__, PyMongoError)


def test_insert_first_still_honours_fences(astore):
    """The bulk-insert shortcut writes new documents, and hands existing ones to the fenced path."""
    astore.fenced_set("t", [("low", {"v": 0}), ("high", {"v": 0})], 5), astore.fenced_set("t", [("high", {"v": 0})], 9)
    written, refused = astore.fenced_set("t", [("new", {"v": 1}), ("low", {"v": 1}), ("high", {"v": 1})], 7, insert_first=True)
    assert (written, refused) == (2, 1)
    assert {d["_id"]: (d["v"], d["fence"]) for d in astore.db.t.find()} == {"new": (1, 7), "low": (1, 7), "high": (0, 9)}


def test_resolve_uses_the_given_or_default_server(mongo_server, monkeypatch):
    """resolve() keeps a given URI, uses a server answering at the default URI, and starts none then."""
    from etcdcron.analytics import embedded

    assert embedded.resolve("mongodb://elsewhere:1/x") == ("mongodb://elsewhere:1/x", None)
    monkeypatch.setattr(embedded, "DEFAULT_URI", mongo_server.uri)
    assert embedded.resolve(None, embed=True) == (mongo_server.uri, None)
    monkeypatch.setattr(embedded, "DEFAULT_URI", "mongodb://127.0.0.1:1")
    assert embedded.resolve(None, embed=False) == ("mongodb://127.0.0.1:1", None)


def test_an_app_update_on_a_stale_read_changes_nothing(astore):
    """Two commands that read an app and then write it (rotate-key, counter add/rm): the second write,
    made on what it read before the first landed, is refused and writes nothing."""
    from etcdcron.analytics.events import App
    from etcdcron.errors import ConcurrentChange

    app = astore.create_app(App.new("race", "UTC"))
    first, rev = astore.app_with_rev("race")
    _, same = astore.app_with_rev(app.id)
    astore.update_app(app.id, {"key": "a" * 32, "old_key": first.key, "old_key_until": 1e10}, rev=rev)
    before = astore.db.apps.find_one({"_id": app.id})
    with pytest.raises(ConcurrentChange):
        astore.update_app(app.id, {"key": "b" * 32, "old_key": first.key, "old_key_until": 1e10}, rev=same)
    assert astore.db.apps.find_one({"_id": app.id}) == before and astore.app(app.id).key == "a" * 32
    assert astore.app_with_rev("race")[1] == rev + 1
