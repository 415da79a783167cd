"""The web app: ``create_app(project_path)`` returns a FastAPI application.

Pages (server-rendered HTML, ``templates/``) and their JSON twins, one router per area
(``routers/``)::

    /login        POST /api/login              log in (password or token) -> session cookie
    /queue        GET /api/queue, POST /api/labels, /api/undo, /api/skip, /api/classes,
                  POST /api/decisions (multi-label projects: the set of classes of an item)
    /boxes        GET /api/boxes, GET/POST /api/boxes/<item>, POST /api/boxes/<item>/skip
                  the box editor of detection projects (/queue and /review lead there)
    /review       GET/POST /api/review         machine labels to accept or fix in bulk
    /audit        GET/POST /api/audit          suspected label errors and their neighbours
    /dashboard    GET /api/dashboard           counts, quality, plots (/plots/<name>.png)
    /users        GET/POST /api/users          admin only
    /guidelines   GET/PUT /api/guidelines      labeling guidelines: all read, admins write
    /rules        GET /api/rules, POST /api/rules/<name>   labeling functions: reviewers read, admins switch
    /export?format=csv|jsonl                   download the labels
    /media/<item id>                           an image, by item id only
    /api/openapi.json                          the schema of all of the above

Every route but the login ones and /static requires a session cookie or an
``Authorization: Bearer`` token; roles are checked on the server. Errors are JSON
``{"error": kind, "detail": message}`` (``schemas.ErrorOut``) with the status of the
labelloop error class; HTML pages get an error page instead.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import LabelloopError, ValidationError
from ..store import class_name_pattern, validate_class_name
from . import auth
from .auth import User
from .context import SESSION_COOKIE, WebContext, principal_of
from .guard import RequestGuard
from .queue import DEFAULT_STRATEGY, N_TOP
from .render import page
from .routers import ROUTERS, all_routes
from .schemas import ERROR_RESPONSES, USER_NAME_PATTERN

__all__ = ["create_app", "WebContext", "SESSION_COOKIE"]

log = logging.getLogger("labelloop.web")

STATIC_DIR = Path(__file__).parent / "static"
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; "
       "base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


class _SecurityHeaders:
    """Pure ASGI middleware: CSP and friends on every response."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                h = MutableHeaders(scope=message)
                h.setdefault("Content-Security-Policy", CSP)
                h.setdefault("X-Content-Type-Options", "nosniff")
                h.setdefault("X-Frame-Options", "DENY")
                h.setdefault("Referrer-Policy", "same-origin")
                h.setdefault("Cache-Control", "no-store")
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _wants_html(request: Request) -> bool:
    path = request.url.path
    if path.startswith(("/api/", "/media/", "/plots/", "/export", "/static/")):
        return False
    return "text/html" in request.headers.get("accept", "")


def _validation_message(err: dict) -> str:
    """Pydantic's message, or for a pattern our own validators' message (which says what to fix)."""
    pattern = (err.get("ctx") or {}).get("pattern")
    if err.get("type") == "string_pattern_mismatch" and isinstance(err.get("input"), str):
        check = {class_name_pattern(): validate_class_name, USER_NAME_PATTERN: auth.validate_user_name}.get(pattern)
        if check is not None:
            try:
                check(err["input"])
            except ValidationError as exc:
                return str(exc)
            return "must contain a visible character"
    return str(err.get("msg"))


def _allowed_methods(request: Request) -> list[str]:
    from starlette.routing import Match

    methods: set[str] = set()
    for route in all_routes():
        if route.matches(request.scope)[0] != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def _error_json(status: int, kind: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": kind, "detail": detail}, status_code=status)


def _error_page(status: int, kind: str, detail: str, *, user: User | None = None, csrf: str | None = None):
    return page("error.html", title=str(status), user=user, csrf=csrf, status_code=status, status=status, kind=kind,
                detail=detail)


def _user_of(request: Request) -> tuple[User | None, str | None]:
    try:
        p = principal_of(request)
        return p.user, p.csrf
    except LabelloopError:
        return None, None


async def labelloop_error(request: Request, exc: LabelloopError):
    status, kind, detail = exc.http_status, exc.kind, str(exc)
    if _wants_html(request):
        if status == 401:
            resp = RedirectResponse("/login?" + urlencode({"next": request.url.path}), status_code=303)
            resp.delete_cookie(SESSION_COOKIE, path="/")
            return resp
        user, csrf = await run_in_threadpool(_user_of, request)
        return _error_page(status, kind, detail, user=user, csrf=csrf)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse({"error": kind, "detail": detail}, status_code=status, headers=headers)


async def validation_error(request: Request, exc: RequestValidationError):
    parts = []
    for err in exc.errors()[:10]:
        loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
        parts.append(f"{loc}: {_validation_message(err)}" if loc else _validation_message(err))
    return _error_json(422, "validation", "; ".join(parts) or "invalid request")


async def http_error(request: Request, exc: StarletteHTTPException):
    kind = {400: "bad_request", 404: "not_found", 405: "method_not_allowed",
            413: "too_large"}.get(exc.status_code, "http")
    detail = exc.detail if isinstance(exc.detail, str) else "error"
    if exc.status_code == 400 and "parsing the body" in detail:
        detail = "the request body could not be read: send JSON encoded as UTF-8"
    if exc.status_code == 404:
        detail = f"no such page or endpoint: {request.url.path[:200]}"
    headers = getattr(exc, "headers", None)
    if exc.status_code == 405:   # Allow: every method of the path, not only the first route's
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    if _wants_html(request):
        resp = _error_page(exc.status_code, kind, detail)
        resp.headers.update(headers or {})
        return resp
    return JSONResponse({"error": kind, "detail": detail}, status_code=exc.status_code, headers=headers)


async def internal_error(request: Request, exc: Exception):
    log.exception("internal error on %s %s", request.method, request.url.path)
    return _error_json(500, "internal", "internal server error; see the server log")


def create_app(project: str | Path, *, strategy: str = DEFAULT_STRATEGY, refresh: bool = True,
               debounce: float = 0.05, secure_cookies: bool = False, n_top: int = N_TOP) -> FastAPI:
    """The labelloop web app for one project folder.

    ``strategy``: the query strategy ranking the queue (``labelloop.select``); ``refresh``:
    refresh predictions in the background after labels; ``debounce``: seconds a burst of
    labels is collected before one refresh; ``secure_cookies``: mark cookies Secure (behind HTTPS).
    """
    from ..select import available_strategies

    if strategy not in available_strategies():
        raise ValidationError(f"unknown strategy {strategy!r}; choose one of: {', '.join(available_strategies())}")
    ctx = WebContext(Path(project), strategy=strategy, refresh=refresh, debounce=debounce,
                     secure_cookies=secure_cookies, n_top=n_top)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        ctx.start()
        try:
            yield
        finally:
            await run_in_threadpool(ctx.close)

    app = FastAPI(title="labelloop", version=__version__, lifespan=lifespan, responses=ERROR_RESPONSES,
                  openapi_url=None, docs_url=None, redoc_url=None,
                  description="Label images and texts with as few human labels as possible. "
                              "Authenticate with the session cookie from /login (plus X-CSRF-Token on writes) "
                              "or with 'Authorization: Bearer <token>'.")
    app.state.web = ctx
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for router in ROUTERS:
        app.include_router(router)
    app.add_exception_handler(LabelloopError, labelloop_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, internal_error)

    # outermost last: every answer, the guard's early ones too, carries the security headers
    app.add_middleware(RequestGuard, authenticate=principal_of, respond=labelloop_error,
                       public={"/login", "/api/login"})
    app.add_middleware(_SecurityHeaders)
    return app
