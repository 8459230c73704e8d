"""Run history in MongoDB (`job_runs`): every run and non-run archived, fenced, readable by `history --mongo`."""

from __future__ import annotations

import json

import pymongo

from etcdcron.history import MongoHistory
from etcdcron.nodes import wait_for


def test_job_runs_has_its_indexes_and_refuses_a_lower_fence(mongo_uri):
    """job_runs is indexed by (job, slot) uniquely and by TTL; a record under a lower fence never overwrites."""
    h = MongoHistory(mongo_uri)
    h.write("j", 60, {"state": "succeeded", "fence": 10, "node": "b"})
    h.write("j", 60, {"state": "failed", "fence": 7, "node": "a"})
    h.write("j", 120, {"state": "missed"})
    rows = h.read("j", 10)
    assert [(r["slot"], r["state"]) for r in rows] == [(120, "missed"), (60, "succeeded")]
    names = {ix["name"]: ix for ix in pymongo.MongoClient(mongo_uri).get_default_database()["job_runs"].list_indexes()}
    assert names["job_slot"]["unique"] and "expireAfterSeconds" in names["ttl"]
    h.write("j", 60, {"state": "succeeded", "fence": 12, "node": "c"})
    assert h.read("j", 10)[1]["fence"] == 12


def test_history_after_runs_on_other_nodes(cluster, mongo_uri):
    """Runs on two nodes and their skipped firings are all in MongoDB; `history --mongo` shows them from anywhere."""
    cluster.start("n1", "--mongo", mongo_uri)
    cluster.start("n2", "--mongo", mongo_uri)
    assert wait_for(lambda: {"n1", "n2"} <= cluster.live(), 20)
    cluster.add_ledger_job("archived", "* * * * * *", 1.5, concurrency="forbid")
    assert wait_for(lambda: {ln.node for ln in cluster.lines() if ln.what == "end"} == {"n1", "n2"}, 30)
    cluster.cli("pause", "archived")
    assert wait_for(lambda: all(c.state != "running" for (j, _), c in cluster.claims().items() if j == "archived"), 10)
    in_etcd = {(c.slot, c.state, c.fence) for (j, _), c in cluster.claims().items() if j == "archived"}
    r = cluster.cli("history", "archived", "--mongo", mongo_uri, "--limit", "1000", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    in_mongo = {(pymongo_slot(row["slot"]), row["state"], row["fence"]) for row in rows}
    assert in_etcd == in_mongo
    assert {row["node"] for row in rows if row["state"] == "succeeded"} == {"n1", "n2"}
    assert "skipped" in {row["state"] for row in rows}


def pymongo_slot(iso: str) -> int:
    from datetime import datetime
    return int(datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())
