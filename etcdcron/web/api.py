"""The JSON API, ``/api/v1``: jobs, runs, nodes, the cluster, analytics apps and reports, accounts.

Each route is declared with the least role it needs (``**allow(Role.X)``, which also writes
``x-role`` into the OpenAPI document) and only translates HTTP to a call of the core the CLI calls
(:class:`~etcdcron.admin.Admin`, :mod:`etcdcron.history`, :class:`~etcdcron.accounts.Accounts`,
:mod:`etcdcron.analytics.report`), so the two validate and answer alike. Route code raises
etcdcron errors; ``web/__init__`` maps them to a status and ``{"error": "one line"}`` once.

The OpenAPI document is the one FastAPI generates from these routes: it cannot drift from them,
and the authorization test walks it. A job's body is left an open object there on purpose: its
keys are those of a jobs file, validated by :func:`etcdcron.apply.entry` (one validator, not a
second schema to keep in step).

Request bodies are parsed by a dependency (:func:`_body`) rather than by FastAPI's own body
parameters, which it reads before any dependency runs: that way the caller is authenticated and
its role checked before its body is even looked at, so a stranger gets 401 and a viewer 403
whatever they send, never a 400 that answers questions about the body.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any, Callable

import structlog
from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field, StrictBool, StrictInt, ValidationError

from .. import apply as jobfiles
from ..accounts import Role
from ..admin import schedule_firings
from ..errors import InvalidInput
from ..jobs import parse_instant
from ..history import MAX_LIMIT, RunQuery, find_run, query_runs
from .auth import HTTPError, Principal, allow, principal
from .context import WebContext, ctx

log = structlog.get_logger("etcdcron.web")

router = APIRouter()

JobName = Path(description="job name, [a-z0-9][a-z0-9._-]{0,62}")

JOB_EXAMPLE = {"schedule": "*/5 * * * *", "shell": "/usr/local/bin/report --daily", "tz": "Europe/Berlin",
               "level": 2, "retries": 1}


def _done(what: str, who: Principal, **fields: Any) -> None:
    """Mutations are logged with who made them: the console has no other audit trail."""
    log.info(f"web.{what}", by=who.name, via=who.via, **fields)


def _body(model: type[BaseModel] | None = None) -> Callable:
    """Dependency: the request's JSON body (an object; validated by ``model`` when given), or 400."""
    async def parse(request: Request):
        raw = await request.body()
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPError(400, f"bad JSON body: {exc}" if raw.strip() else "bad JSON body: empty") from None
        if not isinstance(data, dict):
            raise HTTPError(400, f"bad JSON body: must be an object, not {type(data).__name__}")
        if model is None:
            return data
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            e = exc.errors()[0]
            raise HTTPError(400, f"bad {'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}") from None
    return parse


def _with_body(role: Role, schema: dict, example: dict | None = None) -> dict:
    """``allow(role)`` plus the request body's schema in the OpenAPI document (:func:`_body` reads it)."""
    kw = allow(role)
    media = {"schema": schema} | ({"example": example} if example else {})
    kw["openapi_extra"] = {**kw["openapi_extra"], "requestBody": {"required": True, "content": {"application/json": media}}}
    return kw


# --- who am I -----------------------------------------------------------------------------------------

@router.get("/me", summary="The caller", **allow(Role.VIEWER))
def me(who: Principal = Depends(principal)) -> dict:
    """The caller's account name, role, and how it authenticated (``session`` or ``token``)."""
    return {"name": who.name, "role": who.role.value, "via": who.via}


# --- jobs ---------------------------------------------------------------------------------------------

@router.get("/jobs", summary="List jobs", **allow(Role.VIEWER))
def list_jobs(c: WebContext = Depends(ctx)) -> dict:
    """Every job: its spec, the schedule in words, the next firing (local and UTC; null while paused),
    the last final outcome, the number of live runs and the states of its last 20 records, oldest first."""
    return {"jobs": c.admin.job_rows()}


@router.get("/jobs/{name}", summary="One job", **allow(Role.VIEWER))
def get_job(name: str = JobName, c: WebContext = Depends(ctx)) -> dict:
    """One job as a row of the jobs list (``etcdcron show NAME`` plus next, last and strip)."""
    return c.admin.job_row(name)


FROM = Query(None, alias="from", description="firings after this instant: ISO-8601 (without an offset: UTC) or "
                                               "Unix seconds; default now")


@router.get("/jobs/{name}/next", summary="Next firings", **allow(Role.VIEWER))
def next_firings(name: str = JobName, n: int = Query(10, ge=1, le=1000, description="how many"),
                 start: str | None = FROM, c: WebContext = Depends(ctx)) -> dict:
    """The next N firings in the job's zone and in UTC, each with the note of a DST change that touches it
    or null (``etcdcron next NAME -n N --from TIME``)."""
    after = None if start is None else parse_instant(start, "from")
    return {"firings": c.admin.next_firings(name, n, after)}


@router.get("/schedule/next", summary="Next firings of a schedule not saved", **allow(Role.VIEWER))
def schedule_next(schedule: str = Query(..., max_length=200, description="a schedule expression"),
                  tz: str = Query("UTC", max_length=255, description="an IANA zone"),
                  n: int = Query(10, ge=1, le=1000, description="how many"),
                  start: str | None = FROM) -> dict:
    """What a schedule would do before it is saved (``etcdcron next --schedule EXPR --tz ZONE``)."""
    after = None if start is None else parse_instant(start, "from")
    return {"firings": schedule_firings(schedule, tz, n, after)}


JOB_SCHEMA = {"type": "object", "additionalProperties": True,
              "description": "one job of a jobs file (the keys of `etcdcron apply`: schedule, exactly one of builtin, "
                             "shell or http, tz, level, concurrency, timeout, retries, …); `name` may be left out "
                             "and must equal the path"}


@router.put("/jobs/{name}", summary="Create or replace a job", status_code=200,
            **_with_body(Role.ADMIN, JOB_SCHEMA, JOB_EXAMPLE))
def put_job(response: Response, name: str = JobName, body: dict[str, Any] = Depends(_body()),
            c: WebContext = Depends(ctx), who: Principal = Depends(principal)) -> dict:
    """Create (201) or replace (200) the job, validated exactly as ``etcdcron apply`` validates a job of
    a file; a bad schedule, zone or option is a 422 naming it, and nothing is written. A replaced job
    keeps its paused state unless the body gives ``paused``."""
    if "name" in body and body["name"] != name:
        raise InvalidInput(f"request body: name {body['name']!r} differs from the path's {name!r}")
    entry = jobfiles.entry({"name": name, **body}, "request body", 1)
    spec, created = c.admin.put_entry(entry)
    response.status_code = 201 if created else 200
    _done("job_put", who, job=spec.name, created=created)
    return {"job": spec.name, "created": created}


@router.delete("/jobs/{name}", summary="Remove a job", **allow(Role.ADMIN))
def remove_job(name: str = JobName, c: WebContext = Depends(ctx), who: Principal = Depends(principal)) -> dict:
    """Remove the job (``etcdcron rm``); its run history stays."""
    c.admin.remove(name)
    _done("job_removed", who, job=name)
    return {"job": name, "removed": True}


@router.post("/jobs/{name}/pause", summary="Pause a job", **allow(Role.OPERATOR))
def pause(name: str = JobName, c: WebContext = Depends(ctx), who: Principal = Depends(principal)) -> dict:
    """Start no new run of the job (``etcdcron pause``); its running runs go on."""
    c.admin.set_paused(name, True)
    _done("job_paused", who, job=name)
    return {"job": name, "paused": True}


@router.post("/jobs/{name}/resume", summary="Resume a job", **allow(Role.OPERATOR))
def resume(name: str = JobName, c: WebContext = Depends(ctx), who: Principal = Depends(principal)) -> dict:
    """Resume the job from now on (``etcdcron resume``); what it skipped while paused is not caught up."""
    c.admin.set_paused(name, False)
    _done("job_resumed", who, job=name)
    return {"job": name, "paused": False}


@router.post("/jobs/{name}/trigger", summary="Run a job now", **allow(Role.OPERATOR))
def trigger(name: str = JobName, c: WebContext = Depends(ctx), who: Principal = Depends(principal)) -> dict:
    """Run the job now, once, through a claim like any firing (``etcdcron trigger``); 422 while paused."""
    at = c.admin.trigger(name)
    _done("job_triggered", who, job=name)
    return {"job": name, "triggered": _utc(at), "slot_epoch": int(at)}


@router.post("/jobs/{name}/kill", summary="Kill a job's runs", **allow(Role.OPERATOR))
def kill(name: str = JobName, c: WebContext = Depends(ctx), who: Principal = Depends(principal)) -> dict:
    """Stop the job's running runs now, child processes included (``etcdcron kill``)."""
    n = c.admin.kill(name)
    _done("job_killed", who, job=name, running=n)
    return {"job": name, "killing": n}


# --- runs ---------------------------------------------------------------------------------------------

@router.get("/runs", summary="Run history", **allow(Role.VIEWER))
def runs(request: Request,
         job: str | None = Query(None, description="only this job"),
         state: str | None = Query(None, description="only these states, comma-separated (succeeded,failed,…)"),
         node: str | None = Query(None, description="only runs of this node"),
         since: str | None = Query(None, description="slots at or after: ISO-8601 or Unix seconds"),
         until: str | None = Query(None, description="slots at or before: ISO-8601 or Unix seconds"),
         limit: int = Query(50, ge=1, le=MAX_LIMIT),
         cursor: str | None = Query(None, description="the next_cursor of the previous page"),
         c: WebContext = Depends(ctx)) -> dict:
    """Firings and what became of them, newest first by (slot, job), a page at a time: pass
    ``next_cursor`` back as ``cursor`` for the next page (null: no more). From the etcd window, merged
    with MongoDB's archive (``job_runs``) when ``web`` runs with --mongo (``source``)."""
    q = RunQuery.of(job, state, node, since, until, limit, cursor)
    page = query_runs(c.admin, q, c.run_archive())
    return {"runs": page.runs, "next_cursor": page.next_cursor, "source": page.source}


@router.get("/runs/{job}/{slot}", summary="One run", **allow(Role.VIEWER))
def run(request: Request, job: str = Path(description="job name"),
        slot: int = Path(ge=0, le=253_402_300_799, description="the firing's slot, Unix seconds"),
        c: WebContext = Depends(ctx)) -> dict:
    """One firing's record with its whole stored output tail (and ``tries`` when it was retried)."""
    return find_run(c.admin, job, slot, c.run_archive())


# --- nodes and the cluster ----------------------------------------------------------------------------

@router.get("/nodes", summary="Live nodes", **allow(Role.VIEWER))
def nodes(c: WebContext = Depends(ctx)) -> dict:
    """Live nodes with the levels they serve, whether each leads, the seconds left on its lease, its
    running runs and whether it is draining; and the leader's id."""
    found, leader = c.admin.nodes()
    return {"leader": leader, "nodes": found}


@router.post("/nodes/{node_id}/drain", summary="Drain a node", **allow(Role.OPERATOR))
def drain(node_id: str = Path(description="a live node's id"), c: WebContext = Depends(ctx),
          who: Principal = Depends(principal)) -> dict:
    """The node stops claiming, finishes its runs and leaves (``etcdcron nodes drain``)."""
    c.admin.drain(node_id)
    _done("node_drained", who, node=node_id)
    return {"node": node_id, "draining": True}


@router.get("/cluster", summary="Cluster status", **allow(Role.VIEWER))
def cluster(c: WebContext = Depends(ctx)) -> dict:
    """``etcdcron status``: etcd's version, revision and database size; node, job and run counts;
    recent records by state; the degraded levels."""
    return c.admin.status()


class Degrade(BaseModel):
    level: StrictInt = Field(description="stop starting jobs of this level and above (1 critical, 2 transactional, 3 best effort)")
    kill: StrictBool = Field(False, description="also stop their running processes")


class Restore(BaseModel):
    level: StrictInt = Field(description="start jobs of this level and above again")


@router.post("/cluster/degrade", summary="Degrade levels", **_with_body(Role.OPERATOR, Degrade.model_json_schema()))
def degrade(body: Degrade = Depends(_body(Degrade)), c: WebContext = Depends(ctx),
            who: Principal = Depends(principal)) -> dict:
    """Stop starting jobs of ``level`` and above; with ``kill``, stop their runs (``etcdcron degrade``)."""
    levels = c.admin.degrade(body.level, body.kill)
    _done("degraded", who, level=body.level, kill=body.kill)
    return {"degraded": levels, "killed_running": body.kill}


@router.post("/cluster/restore", summary="Restore levels", **_with_body(Role.OPERATOR, Restore.model_json_schema()))
def restore(body: Restore = Depends(_body(Restore)), c: WebContext = Depends(ctx),
            who: Principal = Depends(principal)) -> dict:
    """End the degradation of ``level`` and above (``etcdcron restore``)."""
    levels = c.admin.restore(body.level)
    _done("restored", who, level=body.level)
    return {"degraded": levels}


# --- analytics ----------------------------------------------------------------------------------------

class NewApp(BaseModel):
    name: str = Field(description="app name, [a-z0-9][a-z0-9._-]{0,62}")
    tz: str = Field("UTC", description="IANA zone in which the app's days are counted")
    grace: float = Field(7200.0, description="seconds after a day's end that its late events are still taken")


def _app(store, ref: str):
    return store.app(ref)  # AppNotFound: 404


@router.get("/apps", summary="Analytics apps", **allow(Role.VIEWER))
def apps(c: WebContext = Depends(ctx)) -> dict:
    """Registered apps, without their keys (``etcdcron apps ls``); 503 when ``web`` runs without --mongo."""
    return {"apps": [{"id": a.id, "name": a.name, "tz": a.tz, "grace": a.grace} for a in c.analytics().apps()]}


@router.post("/apps", summary="Register an app", status_code=201, **_with_body(Role.ADMIN, NewApp.model_json_schema()))
def create_app(body: NewApp = Depends(_body(NewApp)), c: WebContext = Depends(ctx),
               who: Principal = Depends(principal)) -> dict:
    """Register an app (``etcdcron apps create``); the answer holds its key, for the client signatures."""
    from ..analytics.events import App  # noqa: PLC0415 - analytics only with --mongo

    new = App.new(body.name, body.tz, body.grace)  # validates before anything is written
    created = c.analytics().create_app(new)
    _done("app_created", who, app=created.name, id=created.id)
    return created.doc() | {"id": created.id}


@router.get("/apps/{ref}/report", summary="An app's report", **allow(Role.VIEWER))
def report(ref: str = Path(description="app id or name"),
           days: int = Query(14, ge=1, le=400, description="how many recent closed days"),
           by: str | None = Query(None, pattern="^(channel|platform|version)$",
                                  description="also the breakdown by channel, platform or version"),
           c: WebContext = Depends(ctx)) -> dict:
    """Daily metrics, usage, registered users, retention, custom counters and the trend of the app over
    the last ``days`` closed days: exactly what ``etcdcron analytics report --app REF --days N [--by B] --json`` prints."""
    from ..analytics.report import collect  # noqa: PLC0415

    store = c.analytics()
    return collect(store, _app(store, ref), days, by=by)


# --- accounts -----------------------------------------------------------------------------------------

class NewAccount(BaseModel):
    name: str = Field(description="account name, [a-z0-9][a-z0-9._-]{0,62}")
    role: str = Field(description="viewer, operator or admin")
    password: str = Field(description="at least 10 characters", json_schema_extra={"format": "password"})


@router.get("/accounts", summary="Accounts", **allow(Role.ADMIN))
def accounts(c: WebContext = Depends(ctx)) -> dict:
    """Every account with its role (``etcdcron accounts ls``); never a hash."""
    return {"accounts": [a.public() for a in c.accounts.list()]}


@router.post("/accounts", summary="Create an account", status_code=201,
             **_with_body(Role.ADMIN, NewAccount.model_json_schema()))
def create_account(body: NewAccount = Depends(_body(NewAccount)), c: WebContext = Depends(ctx),
                   who: Principal = Depends(principal)) -> dict:
    """Create an account (``etcdcron accounts create``); 409 when the name is taken."""
    account = c.accounts.create(body.name, body.role, body.password)
    _done("account_created", who, account=account.name, role=account.role.value)
    return account.public()


@router.delete("/accounts/{name}", summary="Remove an account", **allow(Role.ADMIN))
def remove_account(name: str = Path(description="account name"), c: WebContext = Depends(ctx),
                   who: Principal = Depends(principal)) -> dict:
    """Remove the account, its API tokens and its browser sessions (``etcdcron accounts rm``)."""
    c.accounts.remove(name)
    _done("account_removed", who, account=name)
    return {"account": name, "removed": True}


@router.post("/accounts/{name}/token", summary="New API token", status_code=201, **allow(Role.ADMIN))
def new_token(name: str = Path(description="account name"), c: WebContext = Depends(ctx),
              who: Principal = Depends(principal)) -> dict:
    """A new API token for the account, shown this once: only its hash is kept (``etcdcron accounts token``)."""
    token = c.accounts.new_token(name)
    _done("token_created", who, account=name)
    return {"account": name, "token": token}


def _utc(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


__all__ = ["router"]
