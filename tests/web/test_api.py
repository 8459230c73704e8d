"""The JSON API of a real `etcdcron web` process: every route's answers and errors, checked against
etcd, MongoDB and the CLI, which calls the same core and must answer alike."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from etcdcron.analytics import jobs as analytics_jobs
from etcdcron.executor import RunContext
from etcdcron.nodes import wait_for

from .conftest import start_web, stop

DAILY = {"schedule": "30 3 * * *", "shell": "echo nightly", "tz": "Europe/Berlin", "level": 3, "retries": 1}


def cli_error(web, *args: str) -> str:
    """The one-line message the CLI prints for a refused command (and that it refused it)."""
    r = web.cli(*args, check=False)
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    line = r.stderr.strip()
    assert line.startswith("error: ")
    return line.removeprefix("error: ")


def test_me_names_the_caller(web):
    """GET /me answers the token's account, role and how it authenticated."""
    for role in ("viewer", "operator", "admin"):
        assert web.api(role).get("/me").json() == {"name": role, "role": role, "via": "token"}


def test_job_create_replace_read_pause_resume_and_delete(web):
    """PUT creates (201) then replaces (200) a job; its row, next firings and pause state match the CLI's; DELETE removes it."""
    admin, op = web.api("admin"), web.api("operator")
    r = admin.put("/jobs/nightly", json=DAILY)
    assert (r.status_code, r.json()) == (201, {"job": "nightly", "created": True})
    shown = json.loads(web.cli("show", "nightly", "--json").stdout)
    assert shown["schedule"] == "30 3 * * *" and shown["tz"] == "Europe/Berlin" and shown["kind"] == "shell"
    assert shown["target"] == "echo nightly" and shown["retries"] == 1 and shown["active_since"] > 0
    r = admin.put("/jobs/nightly", json={**DAILY, "name": "nightly", "retries": 2})
    assert (r.status_code, r.json()) == (200, {"job": "nightly", "created": False})

    row = web.api("viewer").get("/jobs/nightly").json()
    shown = json.loads(web.cli("show", "nightly", "--json").stdout)
    assert {k: row[k] for k in shown} == shown and row["retries"] == 2
    assert row["words"] == "every day at 03:30" and row["last"] is None and row["strip"] == [] and row["running"] == 0
    firings = web.api("viewer").get("/jobs/nightly/next", params={"n": 3}).json()["firings"]
    assert firings == json.loads(web.cli("next", "nightly", "-n", "3", "--json").stdout)
    assert row["next"] == firings[0] and firings[0]["local"].endswith(("+01:00", "+02:00"))
    assert [j["name"] for j in web.api("viewer").get("/jobs").json()["jobs"]] == ["nightly"]

    assert op.post("/jobs/nightly/pause").json() == {"job": "nightly", "paused": True}
    row = web.api("viewer").get("/jobs/nightly").json()
    assert row["paused"] is True and row["next"] is None
    r = op.post("/jobs/nightly/trigger")
    assert (r.status_code, r.json()["error"]) == (422, cli_error(web, "trigger", "nightly"))
    # a replace keeps the paused state, as `etcdcron add` does
    assert admin.put("/jobs/nightly", json=DAILY).status_code == 200
    assert web.api("viewer").get("/jobs/nightly").json()["paused"] is True
    assert op.post("/jobs/nightly/resume").json() == {"job": "nightly", "paused": False}
    assert json.loads(web.cli("show", "nightly", "--json").stdout)["paused"] is False

    assert admin.delete("/jobs/nightly").json() == {"job": "nightly", "removed": True}
    assert web.store.get(web.keys.job("nightly")) is None
    assert web.api("viewer").get("/jobs").json() == {"jobs": []}


def test_a_paused_body_and_a_builtin_without_name(web):
    """A body may create a job paused, and a builtin job's name defaults to the path (the name of a jobs file entry)."""
    admin = web.api("admin")
    assert admin.put("/jobs/ledger", json={"schedule": "@every 5m", "builtin": "ledger", "args": {"path": "/dev/null"},
                                           "paused": True}).status_code == 201
    row = web.api("viewer").get("/jobs/ledger").json()
    assert (row["kind"], row["target"], row["paused"], row["words"], row["next"]) == ("builtin", "ledger", True, "every 5m", None)


@pytest.mark.parametrize("body, bad", [
    ({"schedule": "61 * * * *", "shell": "true"}, "schedule"),
    ({"schedule": "* * * * *", "shell": "true", "tz": "Mars/Olympus"}, "zone"),
    ({"schedule": "* * * * *", "shell": "true", "retires": 2}, "unknown key"),
    ({"schedule": "* * * * *", "shell": "true", "http": "http://x"}, "exactly one"),
    ({"schedule": "* * * * *", "shell": "true", "level": 7}, "level"),
])
def test_a_bad_job_is_422_with_the_cli_message_and_nothing_is_stored(web, tmp_path, body, bad):
    """A job `etcdcron apply` refuses is refused with the same one line (the file's name is "request body") and not written."""
    path = tmp_path / "jobs.json"
    path.write_text(json.dumps({"jobs": [{"name": "bad", **body}]}))
    expected = cli_error(web, "apply", str(path), "--format", "yaml").replace(str(path), "request body")
    r = web.api("admin").put("/jobs/bad", json=body)
    assert r.status_code == 422 and r.json() == {"error": expected}
    assert bad in expected
    assert web.store.get(web.keys.job("bad")) is None
    assert web.api("viewer").get("/jobs/bad").status_code == 404


def test_a_body_naming_another_job_or_a_bad_path_name_is_422(web):
    """The body's name must be the path's, and the path must be a valid job name; nothing is written."""
    admin = web.api("admin")
    r = admin.put("/jobs/one", json={**DAILY, "name": "two"})
    assert (r.status_code, r.json()) == (422, {"error": "request body: name 'two' differs from the path's 'one'"})
    r = admin.put("/jobs/Bad.Name", json=DAILY)
    assert r.status_code == 422
    assert r.json()["error"] == 'request body: job "Bad.Name": ' + cli_error(web, "add", "@daily", "--name", "Bad.Name", "--shell", "true")
    r = web.api("viewer").get("/jobs/Bad.Name")
    assert (r.status_code, r.json()["error"]) == (422, cli_error(web, "show", "Bad.Name"))
    kvs, _ = web.store.get_prefix(web.keys.jobs)
    assert kvs == []


def test_malformed_requests_are_400_with_one_line(web):
    """Bad JSON, a body of the wrong shape and query or path values of the wrong type are 400 {"error": one line}."""
    admin = web.api("admin")
    admin.put("/jobs/nightly", json=DAILY)
    cases = [
        admin.put("/jobs/nightly", content=b'{"schedule": "* * * * *",', headers={"content-type": "application/json"}),
        admin.put("/jobs/nightly", json=["schedule", "* * * * *"]),
        admin.post("/cluster/degrade", json={"level": "three"}),
        admin.post("/cluster/degrade", content=b"level=3", headers={"content-type": "application/json"}),
        admin.post("/accounts", json={"name": "x"}),
        admin.get("/jobs/nightly/next", params={"n": "ten"}),
        admin.get("/jobs/nightly/next", params={"n": 0}),
        admin.get("/runs", params={"limit": 0}),
        admin.get("/runs/nightly/soon"),
        admin.get("/apps/x/report", params={"days": "many"}),
        admin.get("/apps/x/report", params={"by": "country"}),
    ]
    for r in cases:
        assert r.status_code == 400, (r.request.url, r.text)
        body = r.json()
        assert list(body) == ["error"] and "\n" not in body["error"] and body["error"].startswith("bad "), body
    assert json.loads(web.cli("show", "nightly", "--json").stdout)["schedule"] == DAILY["schedule"]


def test_unknown_names_are_404(web):
    """An unknown job, run, node, account or app is 404 with the CLI's message where the CLI has the command."""
    viewer, op, admin = web.api("viewer"), web.api("operator"), web.api("admin")
    missing = cli_error(web, "show", "ghost")
    assert missing == "no job named 'ghost'"
    for r in (viewer.get("/jobs/ghost"), viewer.get("/jobs/ghost/next"), op.post("/jobs/ghost/pause"),
              op.post("/jobs/ghost/resume"), op.post("/jobs/ghost/trigger"), op.post("/jobs/ghost/kill"),
              admin.delete("/jobs/ghost")):
        assert (r.status_code, r.json()) == (404, {"error": missing}), r.request.url
    r = op.post("/nodes/ghost/drain")
    assert (r.status_code, r.json()["error"]) == (404, cli_error(web, "nodes", "drain", "ghost"))
    r = admin.delete("/accounts/ghost")
    assert (r.status_code, r.json()["error"]) == (404, cli_error(web, "accounts", "rm", "ghost"))
    r = admin.post("/accounts/ghost/token")
    assert (r.status_code, r.json()["error"]) == (404, cli_error(web, "accounts", "token", "ghost"))
    r = viewer.get("/runs/ghost/1780000000")
    assert (r.status_code, r.json()) == (404, {"error": "no record of job 'ghost' at slot 1780000000 (2026-05-28T20:26:40Z)"})
    r = viewer.get("/apps/ghost/report")
    assert (r.status_code, r.json()) == (404, {"error": "unknown app 'ghost'"})
    r = viewer.get("/no-such-route")
    assert r.status_code == 404 and list(r.json()) == ["error"]


def test_accounts_create_list_token_and_remove(web):
    """Accounts made through the API work at once; a taken name is 409; a removed account's token is refused."""
    admin = web.api("admin")
    r = admin.post("/accounts", json={"name": "ci", "role": "operator", "password": "a-long-password"})
    assert r.status_code == 201 and r.json()["name"] == "ci" and r.json()["role"] == "operator"
    assert "hash" not in r.text and "a-long-password" not in r.text
    r = admin.post("/accounts", json={"name": "ci", "role": "viewer", "password": "another-password"})
    assert (r.status_code, r.json()) == (409, {"error": "account 'ci' exists already (accounts passwd changes its password)"})
    listed = admin.get("/accounts").json()["accounts"]
    assert [(a["name"], a["role"]) for a in listed] == [("admin", "admin"), ("ci", "operator"), ("operator", "operator"),
                                                        ("viewer", "viewer")]
    assert listed == json.loads(web.cli("accounts", "ls", "--json").stdout)
    r = admin.post("/accounts/ci/token")
    assert r.status_code == 201 and r.json()["token"].startswith("ecr_")
    ci = httpx.Client(base_url=f"{web.url}/api/v1", headers={"Authorization": f"Bearer {r.json()['token']}"})
    assert ci.get("/me").json() == {"name": "ci", "role": "operator", "via": "token"}
    for body, what in (({"name": "x", "role": "root", "password": "a-long-password"}, "bad role 'root'"),
                       ({"name": "x", "role": "viewer", "password": "short"}, "bad password"),
                       ({"name": "X Y", "role": "viewer", "password": "a-long-password"}, "bad account name")):
        r = admin.post("/accounts", json=body)
        assert r.status_code == 422 and r.json()["error"].startswith(what)
    assert admin.delete("/accounts/ci").json() == {"account": "ci", "removed": True}
    assert ci.get("/me").status_code == 401
    assert [a["name"] for a in admin.get("/accounts").json()["accounts"]] == ["admin", "operator", "viewer"]


def test_cluster_status_degrade_and_restore(web):
    """GET /cluster is `etcdcron status` plus the degraded levels; degrade and restore answer as the CLI and are seen by it."""
    op, viewer = web.api("operator"), web.api("viewer")
    status = viewer.get("/cluster").json()
    assert status["degraded"] == {"levels": [], "kill": False, "at": None}
    assert status["etcd"]["revision"] > 0 and status["etcd"]["db_size"] > 0 and status["jobs"] == 0
    assert op.post("/cluster/degrade", json={"level": 2, "kill": True}).json() == {"degraded": [2, 3], "killed_running": True}
    cli = json.loads(web.cli("status", "--json").stdout)
    assert cli["degraded"]["levels"] == [2, 3] and cli["degraded"]["kill"] is True
    assert viewer.get("/cluster").json()["degraded"] == cli["degraded"]
    r = op.post("/cluster/degrade", json={"level": 7})
    assert (r.status_code, r.json()["error"]) == (422, cli_error(web, "degrade", "7"))
    assert op.post("/cluster/restore", json={"level": 3}).json() == {"degraded": [2]}
    assert op.post("/cluster/restore", json={"level": 1}).json() == {"degraded": []}
    assert web.store.get(web.keys.degrade) is None
    assert json.loads(web.cli("status", "--json").stdout)["degraded"]["levels"] == []


def _pages(api: httpx.Client, limit: int, **filters) -> list[dict]:
    out, cursor = [], None
    while True:
        page = api.get("/runs", params={**filters, "limit": limit, **({"cursor": cursor} if cursor else {})}).json()
        assert len(page["runs"]) <= limit
        out += page["runs"]
        cursor = page["next_cursor"]
        if cursor is None:
            return out
        assert len(page["runs"]) == limit


def test_runs_nodes_kill_and_drain_with_real_nodes(web, web_nodes, tmp_path):
    """Runs of real nodes: filters and cursor pages agree with the full history and with etcd; one run has
    its output; /nodes shows the lease, the leader and a running run; kill stops it; drain empties the node."""
    admin, op, viewer = web.api("admin"), web.api("operator"), web.api("viewer")
    web_nodes.start_nodes(["n1", "n2"])
    assert admin.put("/jobs/ok", json={"schedule": "* * * * * *", "shell": "echo ok-$ETCDCRON_SLOT_EPOCH"}).status_code == 201
    assert admin.put("/jobs/bad", json={"schedule": "* * * * * *", "shell": "echo boom >&2; exit 3"}).status_code == 201
    assert wait_for(lambda: sum(1 for c in web_nodes.claims().values() if c.state in ("succeeded", "failed")) >= 12, 40, 0.2)
    for job in ("ok", "bad"):
        assert op.post(f"/jobs/{job}/pause").status_code == 200
    assert wait_for(lambda: not any(c.running for c in web_nodes.claims().values()), 20, 0.2)

    in_etcd = {(c.job, c.slot): c for c in web_nodes.claims().values()}
    full = viewer.get("/runs", params={"limit": 1000}).json()
    assert full["source"] == "mongo" and full["next_cursor"] is None
    rows = full["runs"]
    assert [(r["slot"], r["job"]) for r in rows] == sorted(((s, j) for j, s in in_etcd), reverse=True)
    for r in rows:
        c = in_etcd[(r["job"], r["slot"])]
        assert (r["state"], r["node"], r["fence"], r["attempt"]) == (c.state, c.node, c.fence, c.attempt)
    states = {r["state"] for r in rows}
    assert {"succeeded", "failed"} <= states
    assert {r["node"] for r in rows if r["state"] == "succeeded"} <= {"n1", "n2"}

    assert _pages(viewer, 3) == rows
    since = sorted(r["slot"] for r in rows)[len(rows) // 3]
    until = sorted(r["slot"] for r in rows)[2 * len(rows) // 3]
    until_iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(until))
    for filters, keep in (({"job": "bad"}, lambda r: r["job"] == "bad"),
                          ({"state": "failed"}, lambda r: r["state"] == "failed"),
                          ({"state": "succeeded,failed"}, lambda r: r["state"] in ("succeeded", "failed")),
                          ({"node": "n2"}, lambda r: r["node"] == "n2"),
                          ({"since": str(since), "until": until_iso}, lambda r: since <= r["slot"] <= until),
                          ({"job": "ok", "state": "succeeded", "since": str(since)},
                           lambda r: r["job"] == "ok" and r["state"] == "succeeded" and r["slot"] >= since)):
        assert _pages(viewer, 2, **filters) == [r for r in rows if keep(r)], filters
    bad = viewer.get("/runs", params={"state": "done"})
    assert bad.status_code == 422 and bad.json()["error"].startswith("bad state 'done'")

    failed = next(r for r in rows if r["state"] == "failed")
    one = viewer.get(f"/runs/bad/{failed['slot']}").json()
    assert one["exit_code"] == 3 and "boom" in one["output"] and one["duration"] >= 0
    succeeded = next(r for r in rows if r["job"] == "ok" and r["state"] == "succeeded")
    assert viewer.get(f"/runs/ok/{succeeded['slot']}").json()["output"].strip() == f"ok-{succeeded['slot']}"

    # the etcd-only view (a web without --mongo) pages the same history
    proc, url, _ = start_web(web.etcd, web.prefix, None, tmp_path)
    try:
        plain = httpx.Client(base_url=f"{url}/api/v1", headers={"Authorization": f"Bearer {web.token['viewer']}"})
        page = plain.get("/runs", params={"limit": 1000}).json()
        assert page["source"] == "etcd"
        assert [(r["job"], r["slot"], r["state"], r["fence"]) for r in page["runs"]] == \
            [(r["job"], r["slot"], r["state"], r["fence"]) for r in rows]
        assert plain.get("/apps").status_code == 503
    finally:
        stop(proc)

    # a long run: seen on its node, then killed
    assert admin.put("/jobs/long", json={"schedule": "0 0 1 1 *", "shell": "sleep 60"}).status_code == 201
    slot = op.post("/jobs/long/trigger").json()["slot_epoch"]

    def running_on_a_node() -> bool:
        return any(r["job"] == "long" for n in viewer.get("/nodes").json()["nodes"] for r in n["running"])

    assert wait_for(running_on_a_node, 20, 0.2)
    listing = viewer.get("/nodes").json()
    assert listing["leader"] in ("n1", "n2")
    assert [n["id"] for n in listing["nodes"]] == ["n1", "n2"]
    for n in listing["nodes"]:
        assert n["leader"] == (n["id"] == listing["leader"]) and 0 < n["lease_ttl"] <= 3 and n["draining"] is False
        assert n["levels"] == [1, 2, 3] and n["pid"] > 0
    assert viewer.get("/jobs/long").json()["running"] == 1
    assert viewer.get("/runs", params={"job": "long", "state": "running"}).json()["runs"][0]["slot"] == slot
    assert op.post("/jobs/long/kill").json() == {"job": "long", "killing": 1}
    assert wait_for(lambda: viewer.get(f"/runs/long/{slot}").json()["state"] == "killed", 20, 0.2)
    row = viewer.get("/jobs/long").json()
    assert row["last"]["state"] == "killed" and row["strip"] == ["killed"] and row["running"] == 0
    assert viewer.get("/jobs/ok").json()["strip"] == [r["state"] for r in rows if r["job"] == "ok"][:20][::-1]

    assert op.post("/nodes/n2/drain").json() == {"node": "n2", "draining": True}
    assert wait_for(lambda: [n["id"] for n in viewer.get("/nodes").json()["nodes"]] == ["n1"], 30, 0.2)


@pytest.fixture
def app_with_metrics(web) -> str:
    """An app with a week of seeded events and its metrics computed by the builtin analytics jobs."""
    web.cli("apps", "create", "shop", "--tz", "America/New_York")
    web.cli("analytics", "seed", "--app", "shop", "--devices", "30", "--days", "7")
    now = int(time.time())
    for fence, fn in enumerate((analytics_jobs.rollup, analytics_jobs.active_users, analytics_jobs.retention,
                                analytics_jobs.usage), start=1):
        fn(RunContext(fn.__name__, now, "test", fence, 1, {"app": "shop"}, web.mongo_uri))
    return "shop"


def test_apps_and_the_report_equal_the_cli(web, app_with_metrics):
    """GET /apps lists what `apps ls --json` lists; a report is exactly `analytics report --json` for the same app and days."""
    viewer = web.api("viewer")
    apps = viewer.get("/apps").json()["apps"]
    assert apps == json.loads(web.cli("apps", "ls", "--json").stdout) and apps[0]["name"] == "shop"
    for ref, days, by in (("shop", 14, None), (apps[0]["id"], 5, None), ("shop", 7, "version")):
        for _ in range(3):  # should the app's day turn between the two reads, read both again
            api = viewer.get(f"/apps/{ref}/report", params={"days": days, **({"by": by} if by else {})}).json()
            cli = json.loads(web.cli("analytics", "report", "--app", ref, "--days", str(days), "--json",
                                     *(["--by", by] if by else [])).stdout)
            if api["last"] == cli["last"]:
                break
        assert api == cli
        assert len(api["days"]) == days and any(d["dau"] for d in api["days"]) and api["retention"]
        assert (by is None) == ("breakdown" not in api) and (by is None or any(api["breakdown"].values()))


def test_apps_create(web):
    """POST /apps registers an app (201, with its key) that the CLI then lists; a bad zone is 422 and a taken name 409, with the CLI's message."""
    admin = web.api("admin")
    r = admin.post("/apps", json={"name": "game", "tz": "Asia/Tokyo", "grace": 3600})
    assert r.status_code == 201
    made = r.json()
    assert made["name"] == "game" and made["tz"] == "Asia/Tokyo" and made["grace"] == 3600 and len(made["key"]) == 32
    assert json.loads(web.cli("apps", "ls", "--json").stdout) == [{k: made[k] for k in ("id", "name", "tz", "grace")}]
    r = admin.post("/apps", json={"name": "game"})
    assert (r.status_code, r.json()["error"]) == (409, cli_error(web, "apps", "create", "game"))
    r = admin.post("/apps", json={"name": "other", "tz": "Mars/Olympus"})
    assert (r.status_code, r.json()["error"]) == (422, cli_error(web, "apps", "create", "other", "--tz", "Mars/Olympus"))


def test_degrade_takes_only_a_real_level(web):
    """A level of true, "3" or 1.0 is refused (400) and degrades nothing: true once degraded every level."""
    with web.api("operator") as api:
        for bad in (True, "3", 1.0):
            r = api.post("/cluster/degrade", json={"level": bad})
            assert r.status_code == 400, (bad, r.text)
        assert api.get("/cluster").json()["degraded"]["levels"] == []
