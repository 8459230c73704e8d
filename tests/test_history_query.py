"""The run query behind `etcdcron history` and GET /api/v1/runs: filters, (slot, job) order, cursor
pages, and the etcd window merged with MongoDB's archive; against real etcd and a real MongoDB server."""

from __future__ import annotations

import pytest

from etcdcron.admin import Admin
from etcdcron.claims import ClaimRecord
from etcdcron.errors import InvalidInput, NotFound
from etcdcron.history import MongoHistory, RunQuery, decode_cursor, encode_cursor, find_run, query_runs

# (job, slot, state, node, fence): a, b and c fire at overlapping slots so ties on slot are ordered by job
RECORDS = [("a", 100, "succeeded", "n1", 11), ("b", 100, "failed", "n2", 12), ("c", 100, "missed", None, 0),
           ("a", 160, "succeeded", "n2", 21), ("b", 160, "succeeded", "n1", 22), ("a", 220, "killed", "n1", 31),
           ("c", 220, "succeeded", "n1", 32), ("b", 280, "timeout", "n2", 41), ("a", 280, "succeeded", "n1", 42)]


def _put(store, keys, job, slot, state, node, fence, **extra) -> None:
    rec = ClaimRecord.of(state, node=node, fence=fence or None, attempt=1 if node else 0, started=slot + 0.5,
                         ended=slot + 2.0 if node else None, output=f"{job}@{slot}" * 200 if node else None, **extra)
    store.put(keys.claim(job, slot), rec.to_json())


def _all_pages(admin, archive=None, **filters) -> tuple[list[tuple[int, str]], int]:
    out, pages, cursor = [], 0, None
    while True:
        page = query_runs(admin, RunQuery.of(limit=2, cursor=cursor, **filters), archive)
        out += [(r["slot"], r["job"]) for r in page.runs]
        pages += 1
        if page.next_cursor is None:
            return out, pages
        cursor = page.next_cursor


@pytest.fixture
def admin(store, keys) -> Admin:
    for rec in RECORDS:
        _put(store, keys, *rec)
    return Admin(store, keys)


def test_etcd_pages_are_newest_first_and_cover_each_record_once(admin):
    """Pages of 2 from the etcd window come newest first by (slot, job), each record exactly once, the last page without a cursor."""
    got, pages = _all_pages(admin)
    assert got == sorted(((s, j) for j, s, *_ in RECORDS), reverse=True)
    assert pages == 5
    first = query_runs(admin, RunQuery.of(limit=50))
    assert first.source == "etcd" and first.next_cursor is None
    row = first.runs[0]
    assert (row["job"], row["slot"], row["slot_utc"], row["state"], row["node"], row["fence"]) == \
        ("b", 280, "1970-01-01T00:04:40Z", "timeout", "n2", 41)
    assert row["duration"] == 1.5 and len(row["output"]) == 512


@pytest.mark.parametrize("filters, keep", [
    ({"job": "a"}, lambda j, s, st, n: j == "a"),
    ({"state": "succeeded,killed"}, lambda j, s, st, n: st in ("succeeded", "killed")),
    ({"node": "n2"}, lambda j, s, st, n: n == "n2"),
    ({"since": "160", "until": "1970-01-01T00:03:40Z"}, lambda j, s, st, n: 160 <= s <= 220),
    ({"job": "b", "state": "succeeded", "since": "100"}, lambda j, s, st, n: j == "b" and st == "succeeded"),
])
def test_filters_select_exactly_the_matching_records(admin, filters, keep):
    """Each filter (and their conjunction) pages through exactly the records it matches, in order."""
    got, _ = _all_pages(admin, **filters)
    assert got == sorted(((s, j) for j, s, st, n, _ in RECORDS if keep(j, s, st, n)), reverse=True)


def test_archive_is_merged_with_the_window_under_the_higher_fence(admin, store, keys, mongo_uri):
    """With MongoDB, archived runs gone from etcd still show, a run only etcd has (running) shows, and a
    firing in both shows once, from the copy with the higher fence (the archive's when equal)."""
    archive = MongoHistory(mongo_uri)
    for job, slot, state, node, fence in RECORDS:
        archive.write(job, slot, {"state": state, "node": node, "fence": fence, "output": f"{job}@{slot}" * 300})
    archive.write("a", 40, {"state": "succeeded", "node": "n9", "fence": 5})  # collected from etcd long ago
    archive.write("a", 280, {"state": "failed", "node": "n1", "fence": 1})  # a stale write under a lower fence
    _put(store, keys, "c", 340, "running", "n1", 0)
    assert archive.flush(10)
    try:
        got, _ = _all_pages(admin, archive)
        assert got == sorted([(s, j) for j, s, *_ in RECORDS] + [(40, "a"), (340, "c")], reverse=True)
        page = query_runs(admin, RunQuery.of(job="a", limit=50), archive)
        assert page.source == "mongo"
        assert [(r["slot"], r["state"], r["node"]) for r in page.runs] == \
            [(280, "succeeded", "n1"), (220, "killed", "n1"), (160, "succeeded", "n2"), (100, "succeeded", "n1"), (40, "succeeded", "n9")]
        running = query_runs(admin, RunQuery.of(state="running"), archive).runs
        assert [(r["job"], r["slot"], r["node"]) for r in running] == [("c", 340, "n1")] and running[0]["fence"] > 0
        one = find_run(admin, "b", 160, archive)
        assert one["state"] == "succeeded" and len(one["output"]) == len("b@160" * 300)  # the archive's whole tail
        assert find_run(admin, "a", 40, archive)["node"] == "n9"
    finally:
        archive.close()


def test_one_run_and_its_tries(admin, store, keys):
    """find_run gives one firing's record with its whole stored output and its tries; NotFound names the firing."""
    _put(store, keys, "r", 400, "failed", "n1", 50, tries=[{"attempt": 1, "fence": 49, "state": "failed", "exit_code": 1}])
    one = find_run(admin, "r", 400)
    assert one["tries"] == [{"attempt": 1, "fence": 49, "state": "failed", "exit_code": 1}]
    assert one["output"] == "r@400" * 200
    with pytest.raises(NotFound, match=r"no record of job 'r' at slot 460 \(1970-01-01T00:07:40Z\)"):
        find_run(admin, "r", 460)


@pytest.mark.parametrize("kw, message", [
    ({"state": "succeeded,done"}, "bad state 'done': must be one of running, succeeded"),
    ({"job": "Bad Name"}, "bad job name 'Bad Name'"),
    ({"since": "yesterday"}, "bad since 'yesterday': must be ISO-8601"),
    ({"limit": 0}, "bad limit 0: must be at least 1"),
    ({"cursor": "not-a-cursor"}, "bad cursor 'not-a-cursor'"),
])
def test_bad_input_is_refused_with_one_line(kw, message):
    """A bad filter, limit or cursor is InvalidInput naming it."""
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(")):
        RunQuery.of(**kw)


def test_cursor_round_trips():
    """A cursor is an opaque token of (slot, job) that decodes to what was encoded."""
    assert decode_cursor(encode_cursor(1_780_000_000, "nightly.backup")) == (1_780_000_000, "nightly.backup")
