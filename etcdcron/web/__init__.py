"""``etcdcron web``: the console and the JSON API (``/api/v1``), over the CLI's own core.

    create_app(ctx)  the FastAPI app: auth (login, sessions, tokens, roles), the API, the console pages,
                     static assets, JSON errors and security headers
    serve(cfg)       open etcd, build the app, run it under uvicorn (HTTPS with --tls-cert/--tls-key)

The API and the CLI call the same :class:`~etcdcron.admin.Admin` methods and validators, so they
cannot drift; errors are the same etcdcron errors, mapped here once to an HTTP status and
``{"error": "one line"}``.
"""

from __future__ import annotations

import ssl

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..accounts import Role
from ..errors import (ConcurrentChange, EtcdCronError, InvalidInput, NotFound, StoreAuthFailed,
                      StorePermissionDenied, StoreTLSError, Unavailable)
from .auth import HTTPError, Sessions, Throttle, allow
from .context import WebContext
from .templating import HERE

log = structlog.get_logger("etcdcron.web")

API = "/api/v1"

# Content-Security-Policy: scripts, styles and images from this origin only, no inline code, no
# framing; a stored job name or output can never become script.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'; form-action 'self'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


def status_of(exc: EtcdCronError) -> int:
    """The HTTP status of an etcdcron error (the CLI maps the same tree to exit codes)."""
    from ..analytics.errors import MongoError, Refused  # noqa: PLC0415

    if isinstance(exc, Refused):
        return exc.status
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, ConcurrentChange):
        return 409
    if isinstance(exc, InvalidInput):
        return 422
    if isinstance(exc, (StoreTLSError, StoreAuthFailed, StorePermissionDenied)):
        return 502  # the web process's own etcd credentials are at fault, not the caller
    if isinstance(exc, (Unavailable, MongoError, EtcdCronError)):
        return 503
    return 500


def _one_line(text: str) -> str:
    return " ".join(str(text).split())[:500] or "error"


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": _one_line(message)}, status_code=status, headers=headers)


def create_app(ctx: WebContext, *, secure: bool = False, session_idle: float = 1800.0,
               session_max: float = 43200.0, throttle: Throttle | None = None) -> FastAPI:
    from . import api, console  # noqa: PLC0415
    from .auth import router as auth_router  # noqa: PLC0415

    app = FastAPI(title="etcdcron", version=_version(), openapi_url=None, docs_url=None, redoc_url=None,
                  description="The etcdcron console's JSON API. Authenticate with `Authorization: Bearer <token>` "
                              "(`etcdcron accounts token NAME`). Each operation's `x-role` is the least role it needs.")
    app.state.ctx, app.state.secure = ctx, secure
    app.state.sessions = Sessions(session_idle, session_max)
    app.state.throttle = throttle or Throttle()

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, exc: HTTPError):
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(EtcdCronError)
    async def _etcdcron_error(request: Request, exc: EtcdCronError):
        status = status_of(exc)
        if status >= 500:
            log.warning("web.error", path=request.url.path, status=status, error=str(exc))
        return _error(status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _bad_request(request: Request, exc: RequestValidationError):
        errs = exc.errors()
        if errs:
            e = errs[0]
            where = ".".join(str(p) for p in e.get("loc", ()) if p != "body" and not isinstance(p, int)) or "request"
            return _error(400, f"bad {where}: {e.get('msg', 'invalid')}")
        return _error(400, "bad request")

    @app.exception_handler(StarletteHTTPException)
    async def _starlette(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            return _error(404, f"not found: {request.url.path}")
        if exc.status_code == 405:
            return _error(405, f"method {request.method} not allowed on {request.url.path}", getattr(exc, "headers", None))
        return _error(exc.status_code, exc.detail if isinstance(exc.detail, str) else "error", getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("web.unexpected", path=request.url.path)
        return _error(500, f"unexpected {type(exc).__name__}")

    @app.middleware("http")
    async def _headers(request: Request, call_next):
        response = await call_next(request)
        for k, v in HEADERS.items():
            response.headers.setdefault(k, v)
        if not request.url.path.startswith("/static/"):
            response.headers.setdefault("Cache-Control", "no-store")
        if secure:
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    @app.get(f"{API}/openapi.json", include_in_schema=False, **allow(Role.VIEWER))
    def openapi_document() -> dict:
        """The OpenAPI document FastAPI generates from the routes (each with its ``x-role``)."""
        return app.openapi()

    app.include_router(auth_router)
    app.include_router(api.router, prefix=API)
    app.include_router(console.router)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    return app


def _version() -> str:
    from .. import __version__  # noqa: PLC0415

    return __version__


def _tls(cert: str | None, key: str | None) -> tuple[str, str] | None:
    """Both or neither; each readable and a matching pair, checked before the port opens."""
    if not cert and not key:
        return None
    if not cert or not key:
        raise InvalidInput("bad TLS settings: give both --tls-cert and --tls-key")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except FileNotFoundError as exc:
        raise InvalidInput(f"bad TLS settings: {exc.filename}: no such file") from None
    except (ssl.SSLError, OSError) as exc:
        raise InvalidInput(f"bad TLS settings: cannot load {cert} with {key}: {exc}") from None
    return cert, key


def serve(cfg) -> int:
    """Run the console and API until SIGTERM or SIGINT; returns the exit code."""
    import uvicorn  # noqa: PLC0415

    from ..accounts import Accounts  # noqa: PLC0415
    from ..admin import Admin  # noqa: PLC0415
    from ..app import open_store  # noqa: PLC0415
    from ..keys import Keys  # noqa: PLC0415

    tls = _tls(cfg["web.tls_cert"], cfg["web.tls_key"])
    host, _, port = cfg["web.listen"].rpartition(":")
    store = open_store(cfg)
    store.status()  # fail now, with one line, when etcd cannot be used
    keys = Keys(cfg["etcd.prefix"])
    ctx = WebContext(Admin(store, keys), Accounts(store, keys), cfg["mongo.uri"])
    if not ctx.accounts.list():
        log.warning("web.no_accounts", hint="create one: etcdcron accounts create NAME --role admin")
    app = create_app(ctx, secure=tls is not None, session_idle=cfg["web.session_idle"],
                     session_max=cfg["web.session_max"])
    scheme = "https" if tls else "http"
    log.info("web.listening", url=f"{scheme}://{host or '0.0.0.0'}:{port}", api=f"{scheme}://{host or '0.0.0.0'}:{port}{API}")
    config = uvicorn.Config(app, host=host or "0.0.0.0", port=int(port), log_level="warning", access_log=False,
                            ssl_certfile=tls[0] if tls else None, ssl_keyfile=tls[1] if tls else None,
                            server_header=False)
    try:
        uvicorn.Server(config).run()
    finally:
        ctx.close()
    return 0
