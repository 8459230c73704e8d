"""Next firings through the API, with the DST notes and --from of `etcdcron next` (the same core)."""

from __future__ import annotations

import json

import httpx


def test_job_next_from_a_time_matches_the_cli(web):
    """GET /jobs/NAME/next?from= answers what `etcdcron next NAME --from` prints, notes included."""
    assert web.api("admin").put("/jobs/hourly", json={"schedule": "0 * * * *", "shell": "true",
                                                       "tz": "America/New_York"}).status_code == 201
    got = web.api("viewer").get("/jobs/hourly/next", params={"n": 4, "from": "2027-11-07T04:30:00Z"}).json()
    cli = json.loads(web.cli("next", "hourly", "-n", "4", "--from", "2027-11-07T04:30:00Z", "--json").stdout)
    assert got["firings"] == cli
    assert [f["note"] for f in cli] == ["first pass of a repeated hour", "second pass of a repeated hour", None, None]
    assert [f["local"] for f in cli[:2]] == ["2027-11-07T01:00:00-04:00", "2027-11-07T01:00:00-05:00"]
    row = web.api("viewer").get("/jobs/hourly").json()
    assert set(row["next"]) == {"local", "utc", "note"}


def test_schedule_next_for_a_schedule_not_saved(web):
    """GET /schedule/next shows a schedule before it is saved; it writes nothing."""
    params = {"schedule": "*/20 0-3 * * 0", "tz": "Australia/Sydney", "n": 8, "from": "2027-04-04T01:30:00+11:00"}
    got = web.api("viewer").get("/schedule/next", params=params).json()["firings"]
    cli = json.loads(web.cli("next", "--schedule", params["schedule"], "--tz", params["tz"], "-n", "8",
                             "--from", params["from"], "--json").stdout)
    assert got == cli and len(got) == 8
    assert [f["local"][11:] for f in got if f["note"] == "second pass of a repeated hour"] == [
        "02:00:00+10:00", "02:20:00+10:00", "02:40:00+10:00"]
    assert web.api("viewer").get("/jobs").json()["jobs"] == []


def test_bad_input_answers_the_cli_refusal(web):
    """A bad schedule, zone or time: 422 with the CLI's one line; a bad n: 400; no credentials: 401."""
    viewer = web.api("viewer")
    for params, args in [
        ({"schedule": "61 * * * *"}, ["--schedule", "61 * * * *"]),
        ({"schedule": "* * * * *", "tz": "Mars/Olympus"}, ["--schedule", "* * * * *", "--tz", "Mars/Olympus"]),
    ]:
        r = viewer.get("/schedule/next", params=params)
        cli = web.cli("next", *args, check=False)
        assert r.status_code == 422 and cli.returncode == 2
        assert "error: " + r.json()["error"] == cli.stderr.strip()
    for bad in ("soon", "nan", "1e300"):
        r = viewer.get("/schedule/next", params={"schedule": "* * * * *", "from": bad})
        assert r.status_code == 422 and f"'{bad}'" in r.json()["error"]
    assert viewer.get("/schedule/next", params={"schedule": "* * * * *", "n": 0}).status_code == 400
    for bad in ("0001-01-01T00:00:00+10:00", "1e300"):  # the same parser as the runs filter's
        r = viewer.get("/runs", params={"since": bad})
        assert r.status_code == 422 and "years 1 and 9999" in r.json()["error"], r.text
    assert viewer.get("/schedule/next").status_code == 400  # schedule is required
    assert viewer.get("/jobs/missing/next", params={"from": "2027-01-01T00:00:00Z"}).status_code == 404
    r = httpx.get(web.url + "/api/v1/schedule/next", params={"schedule": "* * * * *"})
    assert r.status_code == 401
