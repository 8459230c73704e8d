"""The console's pages: HTML shells rendered on the server (who is logged in, which buttons the role
may use, the CSRF token in a ``<meta>``), filled and kept live by ``static/console.js`` from the API.

Pages change nothing themselves: every button and form calls the JSON API (with the session's CSRF
token), so the API's role checks are the console's too, one enforcement point for both.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from ..accounts import Role
from ..jobs import check_name
from .auth import Principal, login_redirect, page_principal
from .templating import page

router = APIRouter(include_in_schema=False)

NAV = (("jobs", "Jobs"), ("runs", "Runs"), ("nodes", "Nodes"), ("cluster", "Cluster"), ("analytics", "Analytics"))


def _render(request: Request, who: Principal, name: str, section: str, **context) -> Response:
    return page(request, name, who=who, csrf=who.csrf, section=section, nav=NAV,
                can_operate=who.role.allows(Role.OPERATOR), can_admin=who.role.allows(Role.ADMIN), **context)


def _page(template: str, section: str):
    def show(request: Request) -> Response:
        who = page_principal(request)
        if who is None:
            return login_redirect(request)
        return _render(request, who, template, section)
    show.__name__ = f"page_{section}"
    return show


router.add_api_route("/jobs", _page("jobs.html", "jobs"), methods=["GET"])
router.add_api_route("/runs", _page("runs.html", "runs"), methods=["GET"])
router.add_api_route("/nodes", _page("nodes.html", "nodes"), methods=["GET"])
router.add_api_route("/cluster", _page("cluster.html", "cluster"), methods=["GET"])


@router.get("/")
def home(request: Request) -> Response:
    return RedirectResponse("/jobs" if page_principal(request) else "/login", status_code=303)


@router.get("/jobs/{name}")
def job_page(request: Request, name: str) -> Response:
    who = page_principal(request)
    if who is None:
        return login_redirect(request)
    check_name(name)  # a bad name is a 422 like the API's
    return _render(request, who, "job.html", "jobs", job=name)


@router.get("/analytics")
@router.get("/analytics/{app}")
def analytics_page(request: Request, app: str | None = None) -> Response:
    who = page_principal(request)
    if who is None:
        return login_redirect(request)
    return _render(request, who, "analytics.html", "analytics", app=app)
