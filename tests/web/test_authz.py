"""Authorization of every API route, read from the served OpenAPI document: each operation declares
the least role it needs (``x-role``), and a real `etcdcron web` refuses exactly the roles below it
(403, nothing written), refuses callers without credentials (401), and refuses a browser session's
mutation without its CSRF token (403)."""

from __future__ import annotations

import re

import httpx
import pytest

from etcdcron.accounts import Role
from etcdcron.admin import Admin
from etcdcron.jobs import make_spec
from etcdcron.web.api import router

ROLES = ("viewer", "operator", "admin")
MUTATING = ("post", "put", "patch", "delete")

# Path parameters: the job exists (so allowed calls reach the core), the rest need not.
PARAMS = {"name": "authz", "job": "authz", "slot": "60", "node_id": "ghost", "ref": "ghost"}
ACCOUNT_PARAMS = {"name": "nobody"}
# A valid body per operation, so an allowed call does its work and a refused one is refused for its role alone.
BODIES = {
    ("put", "/jobs/{name}"): {"schedule": "@daily", "shell": "true"},
    ("post", "/cluster/degrade"): {"level": 3},
    ("post", "/cluster/restore"): {"level": 3},
    ("post", "/apps"): {"name": "authz-app"},
    ("post", "/accounts"): {"name": "authz-account", "role": "viewer", "password": "authz-password"},
}


def operations(doc: dict) -> list[tuple[str, str, str]]:
    """(method, path under /api/v1, x-role) of every operation of the document, plus the document itself."""
    ops = [(m, p.removeprefix("/api/v1"), op.get("x-role")) for p, item in doc["paths"].items() for m, op in item.items()]
    return ops + [("get", "/openapi.json", "viewer")]


def url_of(path: str) -> str:
    params = ACCOUNT_PARAMS if path.startswith("/accounts/") else PARAMS
    return re.sub(r"\{(\w+)\}", lambda m: params[m.group(1)], path)


def call(client: httpx.Client, method: str, path: str) -> httpx.Response:
    body = BODIES.get((method, path))
    if method in MUTATING:
        return client.request(method.upper(), url_of(path), json=body if body is not None else {})
    return client.request(method.upper(), url_of(path))


@pytest.fixture
def doc(web) -> dict:
    r = web.api("viewer").get("/openapi.json")
    assert r.status_code == 200
    return r.json()


def reset(web) -> None:
    """The job the walk's paths name, as it was before any walk (a walk as admin deletes it)."""
    Admin(web.store, web.keys).put_job(make_spec("authz", "@daily", shell="true"), paused=False)


def test_every_route_declares_its_role(doc):
    """Each operation of the served document has an x-role, and each route of the API router is in the document."""
    ops = operations(doc)
    assert all(role in ROLES for _, _, role in ops), [o for o in ops if o[2] not in ROLES]
    served = {(m, p) for m, p, _ in ops}
    declared = {(m.lower(), r.path) for r in router.routes for m in r.methods}
    assert declared <= served, declared - served
    assert len(declared) >= 24
    mutating = {(m, p): role for m, p, role in ops if m in MUTATING}
    assert mutating and all(role in ("operator", "admin") for role in mutating.values())


@pytest.mark.parametrize("caller", ROLES)
def test_each_role_is_refused_exactly_the_routes_above_it(web, doc, caller):
    """Walking every operation as one role: 403 exactly where x-role is above the role, with nothing written to etcd; otherwise never 401 or 403."""
    me = Role(caller)
    client = web.api(caller)
    ops = operations(doc)
    # refused ones first, so a refusal is checked against an untouched cluster
    ops.sort(key=lambda o: me.allows(Role(o[2])))
    reset(web)
    for method, path, role in ops:
        before = web.store.status()["revision"]
        r = call(client, method, path)
        if me.allows(Role(role)):
            assert r.status_code not in (401, 403), (caller, method, path, r.status_code, r.text)
        else:
            assert r.status_code == 403, (caller, method, path, r.status_code, r.text)
            assert r.json() == {"error": f"forbidden: this needs the {role} role ({caller} is {caller})"}
            assert web.store.status()["revision"] == before, f"{method} {path} refused to {caller} wrote to etcd"


def test_no_credentials_is_401_everywhere(web, doc):
    """Every operation, the document included, answers 401 JSON to a caller without credentials, or with a bad token."""
    reset(web)
    anonymous = web.api(None)
    forged = httpx.Client(base_url=f"{web.url}/api/v1", headers={"Authorization": "Bearer ecr_forged"}, timeout=30)
    for method, path, _ in operations(doc):
        for client in (anonymous, forged):
            r = call(client, method, path)
            assert r.status_code == 401 and list(r.json()) == ["error"], (method, path, r.status_code, r.text)
    assert Admin(web.store, web.keys).get_job("authz").paused is False


def test_refusals_come_before_the_body_is_read(web, doc):
    """A malformed body does not change the answer: 401 without credentials, 403 below the role, 400 only for a caller let through."""
    reset(web)
    bad = {"content": b'{"level": ', "headers": {"content-type": "application/json"}}
    for method, path, role in operations(doc):
        if method not in MUTATING:
            continue
        assert web.api(None).request(method.upper(), url_of(path), **bad).status_code == 401, (method, path)
        below = ROLES[ROLES.index(role) - 1]
        assert web.api(below).request(method.upper(), url_of(path), **bad).status_code == 403, (method, path)
        if (method, path) in BODIES:
            r = web.api(role).request(method.upper(), url_of(path), **bad)
            assert r.status_code == 400 and r.json()["error"].startswith("bad JSON body: "), (method, path, r.text)


def _session(web, role: str) -> httpx.Client:
    c = httpx.Client(base_url=web.url, timeout=30)
    page = c.get("/login").text
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    r = c.post("/login", data={"username": role, "password": web.password[role], "csrf": token})
    assert r.status_code == 303
    return c


def test_a_session_mutation_without_its_csrf_token_is_403(web, doc):
    """With an admin's session cookie, every mutating operation without X-CSRF-Token, or with a wrong one, is 403 and writes nothing; reads need no token."""
    reset(web)
    c = _session(web, "admin")
    c.base_url = f"{web.url}/api/v1"
    assert c.get("/me").json() == {"name": "admin", "role": "admin", "via": "session"}
    for method, path, _ in operations(doc):
        if method not in MUTATING:
            assert call(c, method, path).status_code not in (401, 403), (method, path)
            continue
        before = web.store.status()["revision"]
        for headers in ({}, {"X-CSRF-Token": "forged"}):
            c.headers.update(headers)
            r = call(c, method, path)
            assert r.status_code == 403 and "X-CSRF-Token" in r.json()["error"], (method, path, r.status_code, r.text)
            c.headers.pop("X-CSRF-Token", None)
        assert web.store.status()["revision"] == before


def test_a_session_with_its_csrf_token_is_held_to_its_role(web):
    """A viewer's session with the right CSRF token is still refused an operator's route; an operator's is let through."""
    reset(web)
    for role, status in (("viewer", 403), ("operator", 200)):
        c = _session(web, role)
        csrf = re.search(r'name="csrf-token" content="([^"]+)"', c.get("/jobs").text).group(1)
        r = c.post("/api/v1/jobs/authz/pause", headers={"X-CSRF-Token": csrf})
        assert r.status_code == status, (role, r.text)
    assert Admin(web.store, web.keys).get_job("authz").paused is True
