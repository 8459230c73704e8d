"""Who is asking, and may they: browser sessions, API tokens, roles, CSRF and login throttling.

A request is authenticated by ``Authorization: Bearer <token>`` (API clients) or by the session
cookie the login form sets (the console). Sessions live in this process's memory: logout and expiry
end them here and now, and a restart of ``web`` logs everyone out, which is the safe direction. A
session also ends when its account is removed or its password changes (the account's
``generation``), checked on every request with one etcd read.

Every route declares the least role it needs with :func:`allow`, which also writes that role into
the OpenAPI document (``x-role``), so the authorization test walks the real route table. A request
authenticated by cookie that changes state must carry the session's CSRF token (``X-CSRF-Token``
header, or the form's ``csrf`` field); SameSite=Lax alone leaves same-site subdomains and old
browsers. A bearer token needs no CSRF token: a browser never sends it on its own.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import structlog
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response

from ..accounts import Account, Role
from .context import WebContext, ctx
from .templating import page

log = structlog.get_logger("etcdcron.web")

SESSION_COOKIE = "etcdcron_session"
LOGIN_COOKIE = "etcdcron_login"  # the login form's CSRF token (double submit: there is no session yet)
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_HASHING = threading.BoundedSemaphore(4)


class HTTPError(Exception):
    """An answer other than 2xx, as JSON ``{"error": message}`` (see the handlers in ``web/__init__``)."""

    def __init__(self, status: int, message: str, headers: dict | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers or {}


@dataclass(frozen=True)
class Principal:
    """The caller of a request."""

    name: str
    role: Role
    via: str  # "session" or "token"
    csrf: str | None = None  # the session's CSRF token (None for a bearer token)


@dataclass
class Session:
    account: str
    account_created: float  # the account's creation: a removed and re-created name is another account
    generation: int
    csrf: str
    created: float
    seen: float


class Sessions:
    """Browser sessions by the SHA-256 of their cookie, with idle and absolute expiry."""

    def __init__(self, idle: float, maximum: float, clock=time.monotonic) -> None:
        self.idle, self.maximum, self.clock = idle, maximum, clock
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _id(sid: str) -> str:
        import hashlib  # noqa: PLC0415

        return hashlib.sha256(sid.encode()).hexdigest()

    def create(self, account: Account) -> tuple[str, Session]:
        sid, now = secrets.token_urlsafe(32), self.clock()
        s = Session(account.name, account.created, account.generation, secrets.token_urlsafe(24), now, now)
        with self._lock:
            self._expire(now)
            self._by_id[self._id(sid)] = s
        return sid, s

    def get(self, sid: str) -> Session | None:
        now = self.clock()
        with self._lock:
            s = self._by_id.get(self._id(sid))
            if s is None:
                return None
            if now - s.seen > self.idle or now - s.created > self.maximum:
                del self._by_id[self._id(sid)]
                return None
            s.seen = now
            return s

    def end(self, sid: str) -> bool:
        with self._lock:
            return self._by_id.pop(self._id(sid), None) is not None

    def _expire(self, now: float) -> None:
        for k in [k for k, s in self._by_id.items() if now - s.seen > self.idle or now - s.created > self.maximum]:
            del self._by_id[k]


class Throttle:
    """Failed logins: at most ``per_name`` per account name and ``per_client`` per client address
    within ``window`` seconds; beyond that, logins are refused (429) until the oldest failure ages out."""

    def __init__(self, per_name: int = 5, per_client: int = 20, window: float = 60.0, clock=time.monotonic) -> None:
        self.limits = {"name": per_name, "client": per_client}
        self.window, self.clock = window, clock
        self._failures: dict[tuple[str, str], deque] = {}
        self._lock = threading.Lock()

    def retry_after(self, name: str, client: str) -> float:
        """Seconds until a login for ``name`` from ``client`` may be tried; 0 when it may now."""
        with self._lock:
            return self._wait(name, client)

    def _wait(self, name: str, client: str) -> float:
        now, wait = self.clock(), 0.0
        for key in (("name", name), ("client", client)):
            q = self._failures.get(key)
            while q and now - q[0] > self.window:
                q.popleft()
            if q and len(q) >= self.limits[key[0]]:
                wait = max(wait, self.window - (now - q[-self.limits[key[0]]]))
        return wait

    def attempt(self, name: str, client: str) -> float:
        """Let a login attempt through and count it as a failure until :meth:`succeeded` says otherwise
        (0), or refuse it (seconds to wait). One step under the lock: concurrent attempts cannot all
        pass the check before any of them is counted."""
        with self._lock:
            wait = self._wait(name, client)
            if wait == 0:
                now = self.clock()
                for key in (("name", name), ("client", client)):
                    self._failures.setdefault(key, deque(maxlen=1000)).append(now)
            return wait

    def failed(self, name: str, client: str) -> None:
        now = self.clock()
        with self._lock:
            for key in (("name", name), ("client", client)):
                self._failures.setdefault(key, deque(maxlen=1000)).append(now)

    def succeeded(self, name: str, client: str | None = None) -> None:
        """A good password: the name's failures are forgotten, and the attempt counted for the client
        by :meth:`attempt` is taken back."""
        with self._lock:
            self._failures.pop(("name", name), None)
            q = self._failures.get(("client", client)) if client is not None else None
            if q:
                q.pop()


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if header is None:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise HTTPError(401, "bad Authorization header: use 'Bearer <token>'", {"WWW-Authenticate": "Bearer"})
    return token.strip()


def _session_principal(request: Request, c: WebContext) -> Principal | None:
    sid = request.cookies.get(SESSION_COOKIE)
    if not sid:
        return None
    s = request.app.state.sessions.get(sid)
    if s is None:
        return None
    account = c.accounts.get(s.account)
    if account is None or account.generation != s.generation or account.created != s.account_created:
        request.app.state.sessions.end(sid)  # removed, or its password changed: the session is over
        return None
    return Principal(account.name, account.role, "session", s.csrf)


def principal(request: Request, c: WebContext = Depends(ctx)) -> Principal:
    """Dependency: the caller of an API request, or 401; a cookie caller's mutation needs its CSRF token."""
    token = _bearer(request)
    if token is not None:
        account = c.accounts.by_token(token)
        if account is None:
            raise HTTPError(401, "bad or revoked API token", {"WWW-Authenticate": "Bearer"})
        return Principal(account.name, account.role, "token")
    who = _session_principal(request, c)
    if who is None:
        raise HTTPError(401, "not authenticated: log in, or send 'Authorization: Bearer <token>'",
                        {"WWW-Authenticate": "Bearer"})
    if request.method not in SAFE_METHODS:
        sent = request.headers.get("x-csrf-token", "")
        if not hmac.compare_digest(sent.encode(), (who.csrf or "").encode()):
            raise HTTPError(403, "missing or wrong X-CSRF-Token header (reload the page)")
    return who


def page_principal(request: Request) -> Principal | None:
    """The logged-in browser user of a console page, or None (the page then redirects to the login)."""
    return _session_principal(request, request.app.state.ctx)


def _need(role: Role):
    def check(who: Principal = Depends(principal)) -> Principal:
        if not who.role.allows(role):
            raise HTTPError(403, f"forbidden: this needs the {role.value} role ({who.name} is {who.role.value})")
        return who
    check.__name__ = f"need_{role.value}"
    return check


def allow(role: Role) -> dict:
    """Route keyword arguments: authentication, the least role the route needs, and ``x-role`` in the
    OpenAPI document: ``@router.post("/jobs/{name}/pause", **allow(Role.OPERATOR))``."""
    return {"dependencies": [Depends(_need(role))], "openapi_extra": {"x-role": role.value}}


# --- the login form ---------------------------------------------------------------------------------

router = APIRouter(include_in_schema=False)


def _next(target: str | None) -> str:
    """Only a path of this site: an open redirect would make the login page a phishing aid."""
    if not target:
        return "/jobs"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/jobs"
    return target


def _cookie(response: Response, request: Request, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, httponly=True, samesite="lax",
                        secure=request.app.state.secure, path="/")


def _login_page(request: Request, status: int = 200, error: str | None = None, name: str = "",
                target: str | None = None) -> Response:
    form_token = secrets.token_urlsafe(24)
    response = page(request, "login.html", status=status, error=error, username=name,
                    form_token=form_token, next=_next(target or request.query_params.get("next")))
    _cookie(response, request, LOGIN_COOKIE, form_token, max_age=3600)
    return response


@router.get("/login")
def login_form(request: Request) -> Response:
    if page_principal(request) is not None:
        return RedirectResponse(_next(request.query_params.get("next")), status_code=303)
    return _login_page(request)


@router.post("/login")
def login(request: Request, username: str = Form(""), password: str = Form(""), csrf: str = Form(""),
          next: str = Form(""), c: WebContext = Depends(ctx)) -> Response:
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(csrf.encode(), expected.encode()):
        return _login_page(request, 403, "the login form expired: try again", username, next)
    client = request.client.host if request.client else "?"
    throttle: Throttle = request.app.state.throttle
    wait = throttle.attempt(username, client)  # counted now: concurrent guesses cannot all slip past the limit
    if wait > 0:
        log.warning("web.login_throttled", account=username, client=client)
        response = _login_page(request, 429, f"too many failed logins: try again in {int(wait) + 1} s", username, next)
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    with _HASHING:  # argon2 takes 64 MiB and most of a core: a few at a time, whoever asks
        account = c.accounts.check_password(username, password)
    if account is None:
        log.warning("web.login_failed", account=username, client=client)
        return _login_page(request, 401, "wrong user name or password", username, next)
    throttle.succeeded(username, client)
    sid, _ = request.app.state.sessions.create(account)
    log.info("web.login", account=account.name, role=account.role.value, client=client)
    response = RedirectResponse(_next(next), status_code=303)
    _cookie(response, request, SESSION_COOKIE, sid)
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


@router.post("/logout")
def logout(request: Request, csrf: str = Form("")) -> Response:
    sid = request.cookies.get(SESSION_COOKIE)
    s = request.app.state.sessions.get(sid) if sid else None
    if s is not None:
        if not hmac.compare_digest(csrf.encode(), s.csrf.encode()):
            raise HTTPError(403, "missing or wrong csrf field (reload the page)")
        request.app.state.sessions.end(sid)
        log.info("web.logout", account=s.account)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def login_redirect(request: Request) -> RedirectResponse:
    """Where a console page sends a browser that is not logged in."""
    return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)


__all__ = ["HTTPError", "Principal", "Sessions", "Throttle", "allow", "login_redirect", "page_principal",
           "principal", "router"]
