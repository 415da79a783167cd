"""The web app: ``create_app(project_path)`` returns a FastAPI application.

Pages (server-rendered HTML) and their JSON twins::

    /login        POST /api/login              log in (password or token) -> session cookie
    /queue        GET /api/queue, POST /api/labels, /api/undo, /api/skip, /api/classes
    /review       GET/POST /api/review         machine labels to accept or fix in bulk
    /audit        GET/POST /api/audit          suspected label errors and their neighbours
    /dashboard    GET /api/dashboard           counts, quality, plots (/plots/<name>.png)
    /users        GET/POST /api/users          admin only
    /export?format=csv|jsonl                   download the labels
    /media/<item id>                           an image, by item id only
    /api/openapi.json                          the schema of all of the above

Every route but the login ones and /static requires a session cookie or an
``Authorization: Bearer`` token; roles are checked on the server. Errors are JSON
``{"error": kind, "detail": message}`` with the status of the labelloop error class.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import logging
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs, urlencode

import numpy as np
from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException

from .. import __version__
from ..errors import AuthError, LabelloopError, UnknownItemError, ValidationError
from ..project import EXPORT_FORMATS
from ..store import Store, class_name_pattern, validate_class_name
from . import actions, auth, pages
from .guard import HashSlots, LoginLimiter, RequestGuard
from .media import image_bytes, media_type, thumbnail
from .schemas import (ERROR_RESPONSES, ID_LIST_PATTERN, USER_NAME_PATTERN, AuditIn, ClassIn, LabelIn, LoginIn, ReviewIn, SkipIn, UndoIn, UserChange,
                      UserIn)
from .auth import ForbiddenError, User, has_role
from .queue import DEFAULT_STRATEGY, N_TOP, LabelQueue, QueueEntry, Snapshot
from .service import Readers, Refresher, Writer

__all__ = ["create_app", "WebContext", "SESSION_COOKIE"]

log = logging.getLogger("labelloop.web")

SESSION_COOKIE = "labelloop_session"
LOGIN_CSRF_COOKIE = "labelloop_login_csrf"
STATIC_DIR = Path(__file__).parent / "static"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
REVIEW_PAGE = 48
CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'; "
       "base-uri 'none'; frame-ancestors 'none'; form-action 'self'")


class CsrfError(ForbiddenError):
    kind = "csrf"


# ------------------------------------------------------------------------------ context
@dataclass
class Principal:
    user: User
    csrf: str | None     # the session's CSRF token; None for bearer API tokens
    cookie: bool         # authenticated by the session cookie (so CSRF applies)
    token: str


class WebContext:
    """Everything the routes share: the writer, the readers, the refresher and the queue."""

    def __init__(self, root: Path, *, strategy: str, refresh: bool, debounce: float, secure_cookies: bool,
                 n_top: int):
        Store(root).close()   # fails clearly if there is no project; applies pending migrations
        self.root = Path(root).resolve()
        self.writer = Writer(self.root)
        self.readers = Readers(self.root)
        self.refresher = Refresher(self.root, strategy=strategy, enabled=refresh, debounce=debounce, n_top=n_top,
                                   writer=self.writer)
        self.queue = LabelQueue()
        self.secure_cookies = secure_cookies
        self._lock = threading.Lock()
        self.logins = LoginLimiter()
        self.hash_slots = HashSlots()
        self._cache: dict[str, tuple[Any, Any]] = {}
        self._compute_locks: dict[str, threading.Lock] = {}
        self._started = False

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        self.writer.start()
        self.refresher.start()

    def close(self) -> None:
        self.refresher.stop()
        self.writer.stop()
        self.readers.close()
        self._started = False

    async def write(self, fn):
        """Run ``fn(store)`` on the writer thread and await its result."""
        self.start()
        return await asyncio.wrap_future(self.writer.submit(fn))

    def write_sync(self, fn):
        self.start()
        return self.writer.call(fn)

    # -------------------------------------------------------------- small caches
    def cached(self, name: str, key, compute):
        """``compute()`` once per (name, key); concurrent callers wait for the first one."""
        with self._lock:
            lock = self._compute_locks.setdefault(name, threading.Lock())
        with lock:
            hit = self._cache.get(name)
            if hit is not None and hit[0] == key:
                return hit[1]
            value = compute()
            self._cache[name] = (key, value)
            return value

    def version(self, store: Store) -> str:
        """Changes whenever a label, a class or the predictions change (cache key of plots)."""
        a, c = store.conn.execute(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM annotations), (SELECT COUNT(*) FROM classes)").fetchone()
        return f"{self.refresher.snapshot.run_id}-{a}-{c}"


def _ctx(request: Request) -> WebContext:
    return request.app.state.web


# -------------------------------------------------------------------------- authentication
def _principal(request: Request) -> Principal:
    known = request.scope.get(RequestGuard.PRINCIPAL_KEY)   # checked before the body was read
    if known is not None:
        return known
    ctx = _ctx(request)
    header = request.headers.get("authorization")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError("the Authorization header must be 'Bearer <token>'")
        token, cookie = token.strip(), False
    else:
        token, cookie = request.cookies.get(SESSION_COOKIE), True
    if not token:
        raise AuthError("not logged in: log in at /login, or send 'Authorization: Bearer <token>' "
                        "(tokens come from `labelloop users add NAME --token`)")
    found = auth.user_for_token(ctx.readers.store(), token)
    if found is None or (cookie and found[1] is None):
        raise AuthError("unknown or expired session or token: log in again at /login")
    return Principal(found[0], found[1], cookie, token)


def require(role: str, *, form: bool = False):
    """Dependency: a logged-in user with at least ``role``. Cookie-authenticated writes must
    echo the session's CSRF token in ``X-CSRF-Token`` (form routes check their form field)."""

    # async: runs on the event loop (two indexed SQLite lookups), saving a thread hop per request
    async def dependency(request: Request) -> Principal:
        p = _principal(request)
        if not has_role(p.user, role):
            raise ForbiddenError(f"{p.user.name} has the {p.user.role} role; this needs the {role} role")
        if p.cookie and not form and request.method not in SAFE_METHODS:
            _check_csrf(p, request.headers.get("x-csrf-token"))
        return p

    dependency.__name__ = f"require_{role}"
    return dependency


def _check_csrf(p: Principal, sent: str | None) -> None:
    if not p.cookie:
        return
    if not sent or not p.csrf or not hmac.compare_digest(sent.encode(), p.csrf.encode()):
        raise CsrfError("missing or wrong CSRF token: pages send it from their csrf-token meta tag "
                        "(X-CSRF-Token header or csrf_token form field); API clients can use a bearer token")


async def _form(request: Request) -> dict[str, list[str]]:
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("application/x-www-form-urlencoded"):
        raise ValidationError("expected an HTML form post (application/x-www-form-urlencoded)")
    body = await request.body()
    if len(body) > 2_000_000:
        raise ValidationError("form too large")
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


def _one(form: dict[str, list[str]], name: str, default: str = "") -> str:
    return form.get(name, [default])[0]


_ASCII_ID = re.compile(r"[0-9]{1,18}")   # str.isdigit() would take "١٢" (Arabic-Indic 12) too


def _as_int(value: str, what: str) -> int:
    value = value.strip()
    if not _ASCII_ID.fullmatch(value):
        raise ValidationError(f"{what} must be a whole number of at most 18 digits 0-9, got {value[:40]!r}")
    return int(value)


Annotator = Annotated[Principal, Depends(require("annotator"))]
Reviewer = Annotated[Principal, Depends(require("reviewer"))]
Admin = Annotated[Principal, Depends(require("admin"))]
ReviewerForm = Annotated[Principal, Depends(require("reviewer", form=True))]
AdminForm = Annotated[Principal, Depends(require("admin", form=True))]
AnyForm = Annotated[Principal, Depends(require("annotator", form=True))]
Conf = Annotated[float | None, Query(ge=0.0, le=1.0)]


def _home(user: User) -> str:
    return "/dashboard" if has_role(user, "reviewer") else "/queue"


def _safe_next(url: str, user: User) -> str:
    # only local paths: "/x" but never "//host" or "/\\host"
    if url.startswith("/") and not url.startswith("//") and not url.startswith("/\\") and "\n" not in url:
        return url
    return _home(user)


# ------------------------------------------------------------------------------ payloads
def _display_name(ext: str | None, item_id: int) -> str:
    # the file name only: folders may be class names and would hint the answer
    return PurePath(ext).name if ext else f"#{item_id}"


def item_json(it, snap: Snapshot, entry: QueueEntry | None = None) -> dict:
    d: dict[str, Any] = {"id": it.id, "modality": it.modality, "name": _display_name(it.external_id, it.id)}
    if it.modality == "image":
        d["media"] = f"/media/{it.id}"
    else:
        d["text"] = it.text
    if entry is not None:
        d["reason"] = entry.reason
        d["assigned"] = entry.assigned is not None
    g = None if (entry is not None and entry.assigned) else snap.guess(it.id)  # assigned: judged blind
    d["guess"] = None if g is None else {"label": g[0], "confidence": round(g[1], 4)}
    return d


def _queue_payload(ctx: WebContext, p: Principal, n: int, exclude: list[int]) -> dict:
    store = ctx.readers.store()
    snap = ctx.refresher.snapshot
    entries = ctx.queue.next_items(store, snap, p.user.name, n, exclude)
    items = store.items([e.item_id for e in entries]) if entries else []
    return {"items": [item_json(it, snap, e) for it, e in zip(items, entries)],
            "classes": store.classes(), "remaining": _remaining(ctx, store),
            "snapshot": snap.to_dict(), "refresh": dict(ctx.refresher.status)}


def _remaining(ctx: WebContext, store: Store) -> int:
    def compute():
        n = store.conn.execute("SELECT COUNT(*) FROM items").fetchone()[0]
        done = store.conn.execute(
            "SELECT COUNT(DISTINCT item_id) FROM annotations WHERE class_id IS NOT NULL").fetchone()[0]
        return max(int(n) - int(done), 0)

    return ctx.cached("remaining", int(time.time()), compute)   # recounted at most once a second


def _parse_ids(text: str, what: str, limit: int = 500) -> list[int]:
    parts = [t for t in text.split(",") if t.strip()]
    if len(parts) > limit:
        raise ValidationError(f"{what}: at most {limit} ids")
    return [_as_int(t, what) for t in parts]


# ------------------------------------------------------------------------------- review
def review_data(ctx: WebContext, *, source: str | None, label: str | None, min_confidence: float | None,
                max_confidence: float | None, order: str, offset: int, limit: int) -> dict:
    project = ctx.readers.project()
    store = project.store
    classes = store.classes()
    if label and label not in classes:
        raise ValidationError(f"unknown class {label!r}; known classes: {', '.join(classes) or '(none)'}")
    if order not in ("desc", "asc"):
        raise ValidationError(f"order must be 'desc' or 'asc', not {order!r}")
    if source is None:
        has_machine = store.conn.execute("SELECT 1 FROM annotations WHERE source = 'machine' LIMIT 1").fetchone()
        source = "machine" if has_machine else "predicted"
    if source not in ("machine", "predicted"):
        raise ValidationError(f"source must be 'machine' or 'predicted', not {source!r}")
    lo = 0.0 if min_confidence is None else min_confidence
    hi = 1.0 if max_confidence is None else max_confidence
    rows: list[tuple[int, str, float]] = []
    if source == "machine":
        where = ["a.class_id IS NOT NULL",
                 "COALESCE(a.confidence, 0) >= ?", "COALESCE(a.confidence, 0) <= ?",
                 # no human label in effect (any annotator's latest human row with a class)
                 "NOT EXISTS (SELECT 1 FROM annotations h WHERE h.item_id = a.item_id AND h.source = 'human' "
                 "AND h.class_id IS NOT NULL AND h.id = (SELECT MAX(h2.id) FROM annotations h2 WHERE "
                 "h2.item_id = h.item_id AND h2.source = 'human' AND COALESCE(h2.annotator, '') = "
                 "COALESCE(h.annotator, '')))"]
        args: list = [lo, hi]
        if label:
            where.append("c.name = ?")
            args.append(label)
        sql = ("FROM annotations a JOIN (SELECT item_id, MAX(id) AS last FROM annotations WHERE source = 'machine' "
               "GROUP BY item_id) l ON a.id = l.last JOIN classes c ON c.id = a.class_id WHERE " + " AND ".join(where))
        total = store.conn.execute("SELECT COUNT(*) " + sql, args).fetchone()[0]
        direction = "DESC" if order == "desc" else "ASC"
        rows = [tuple(r) for r in store.conn.execute(
            f"SELECT a.item_id, c.name, COALESCE(a.confidence, 0) {sql} "
            f"ORDER BY COALESCE(a.confidence, 0) {direction}, a.item_id LIMIT ? OFFSET ?", args + [limit, offset])]
    else:
        snap = ctx.refresher.snapshot
        total = 0
        if len(snap.item_ids):
            y = project.label_vector(snap.item_ids, sources=("human", "import", "machine"))
            keep = (y < 0) & (snap.confidence >= lo) & (snap.confidence <= hi)
            if label:
                keep &= np.array(snap.classes)[snap.label] == label if snap.classes else False
            idx = np.flatnonzero(keep)
            conf = snap.confidence[idx]
            idx = idx[np.argsort(-conf if order == "desc" else conf, kind="stable")]
            total = int(idx.size)
            rows = [(int(snap.item_ids[r]), snap.classes[int(snap.label[r])], float(snap.confidence[r]))
                    for r in idx[offset:offset + limit]]
    items = store.items([r[0] for r in rows]) if rows else []
    snap = ctx.refresher.snapshot
    out = []
    for it, (_, name, conf) in zip(items, rows):
        d = item_json(it, snap)
        d.update(label=name, confidence=round(float(conf), 4), source=source)
        out.append(d)
    return {"source": source, "items": out, "total": int(total), "offset": offset, "limit": limit,
            "classes": classes, "filters": {"label": label, "min_confidence": min_confidence,
                                            "max_confidence": max_confidence, "order": order}}


# -------------------------------------------------------------------------------- audit
def audit_data(ctx: WebContext, *, limit: int = 30, n_neighbours: int = 6) -> dict:
    from .audit_view import audit_view

    return audit_view(ctx, limit=limit, n_neighbours=n_neighbours)


# -------------------------------------------------------------------------------- media
# ----------------------------------------------------------------------------- the app
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
    for route in request.app.routes:
        if route.matches(request.scope)[0] != Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    return sorted(methods)


def _error_json(status: int, kind: str, detail: str) -> JSONResponse:
    return JSONResponse({"error": kind, "detail": detail}, status_code=status)


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

    # ------------------------------------------------------------------ errors
    def _user_of(request: Request) -> tuple[User | None, str | None]:
        try:
            p = _principal(request)
            return p.user, p.csrf
        except LabelloopError:
            return None, None

    @app.exception_handler(LabelloopError)
    async def labelloop_error(request: Request, exc: LabelloopError):
        status, kind, detail = exc.http_status, exc.kind, str(exc)
        if _wants_html(request):
            if status == 401:
                resp = RedirectResponse("/login?" + urlencode({"next": request.url.path}), status_code=303)
                resp.delete_cookie(SESSION_COOKIE, path="/")
                return resp
            user, csrf = await run_in_threadpool(_user_of, request)
            return HTMLResponse(pages.error_page(status, kind, detail, user=user, csrf=csrf), status_code=status)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"error": kind, "detail": detail}, status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors()[:10]:
            loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
            parts.append(f"{loc}: {_validation_message(err)}" if loc else _validation_message(err))
        return _error_json(422, "validation", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
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
            return HTMLResponse(pages.error_page(exc.status_code, kind, detail), status_code=exc.status_code,
                                headers=headers)
        return JSONResponse({"error": kind, "detail": detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.exception("internal error on %s %s", request.method, request.url.path)
        return _error_json(500, "internal", "internal server error; see the server log")

    # outermost last: every answer, the guard's early ones too, carries the security headers
    app.add_middleware(RequestGuard, authenticate=_principal, respond=labelloop_error,
                       public={"/login", "/api/login"})
    app.add_middleware(_SecurityHeaders)

    # ------------------------------------------------------------------ login
    def _set_session(resp: Response, token: str) -> None:
        resp.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", secure=ctx.secure_cookies,
                        path="/", max_age=int(auth.SESSION_TTL))

    def _credentials(name: str, password: str | None, token: str | None) -> User | None:
        """The user these credentials prove, or None (a worker thread: scrypt is slow on purpose)."""
        store = ctx.readers.store()
        user = None
        if password:
            user = auth.authenticate_password(store, name, password)
            if user is None:  # the login form takes a token in the password field too
                token = token or password
        if user is None and token:
            found = auth.user_for_token(store, token.strip())
            if found is not None and found[1] is None and found[0].name == name:
                user = found[0]
        return user

    async def _login(request: Request, name: str, password: str | None, token: str | None) -> tuple[User, str, str]:
        """Check the credentials within the login limits -> (user, session token, CSRF token)."""
        name = (name or "").strip()
        address = request.client.host if request.client else "unknown"
        ctx.logins.check(name, address)
        if password:   # at most a few scrypt hashes at once, whoever asks
            user = await ctx.hash_slots.run(_credentials, name, password, token)
        else:
            user = await run_in_threadpool(_credentials, name, password, token)
        if user is None:
            ctx.logins.failed(name, address)
            raise AuthError("wrong user name, password or token")
        tok, csrf = await ctx.write(lambda s: auth.create_session(s, user))
        return user, tok, csrf

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(request: Request, next: str = ""):
        csrf = secrets.token_urlsafe(24)
        resp = HTMLResponse(pages.login_page(csrf=csrf, next_url=next))
        resp.set_cookie(LOGIN_CSRF_COOKIE, csrf, httponly=True, samesite="strict", secure=ctx.secure_cookies,
                        path="/login", max_age=3600)
        return resp

    @app.post("/login", include_in_schema=False)
    async def login_form(request: Request):
        form = await _form(request)
        sent, cookie = _one(form, "csrf_token"), request.cookies.get(LOGIN_CSRF_COOKIE, "")
        next_url = _one(form, "next")
        if not sent or not cookie or not hmac.compare_digest(sent.encode(), cookie.encode()):
            csrf = secrets.token_urlsafe(24)
            resp = HTMLResponse(pages.login_page(csrf=csrf, next_url=next_url,
                                                 error="The form expired; please log in again."), status_code=403)
            resp.set_cookie(LOGIN_CSRF_COOKIE, csrf, httponly=True, samesite="strict", path="/login", max_age=3600)
            return resp
        try:
            user, tok, _ = await _login(request, _one(form, "name"), _one(form, "password"), None)
        except AuthError as exc:
            csrf = secrets.token_urlsafe(24)
            resp = HTMLResponse(pages.login_page(csrf=csrf, next_url=next_url, error=str(exc)),
                                status_code=exc.http_status)
            resp.set_cookie(LOGIN_CSRF_COOKIE, csrf, httponly=True, samesite="strict", path="/login", max_age=3600)
            return resp
        resp = RedirectResponse(_safe_next(next_url, user), status_code=303)
        _set_session(resp, tok)
        resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
        return resp

    @app.post("/api/login", tags=["auth"])
    async def api_login(body: LoginIn, request: Request):
        """Log in with a password (or an API token): a session token, its CSRF token, and the
        session cookie. JSON only, so a cross-site form cannot post it."""
        if not request.headers.get("content-type", "").startswith("application/json"):
            raise ValidationError("send JSON (Content-Type: application/json)")
        user, tok, csrf = await _login(request, body.name, body.password, body.token)
        resp = JSONResponse({"user": user.to_dict(), "session": tok, "csrf": csrf})
        _set_session(resp, tok)
        return resp

    @app.post("/logout", include_in_schema=False)
    async def logout_form(request: Request, p: AnyForm):
        form = await _form(request)
        _check_csrf(p, _one(form, "csrf_token"))
        await ctx.write(lambda s: auth.delete_session(s, p.token))
        resp = RedirectResponse("/login", status_code=303)
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    @app.post("/api/logout", tags=["auth"])
    async def api_logout(p: Annotator):
        """End this session (a bearer API token stays valid: revoke it with a new token)."""
        if p.csrf is not None:
            await ctx.write(lambda s: auth.delete_session(s, p.token))
        resp = JSONResponse({"ok": True})
        resp.delete_cookie(SESSION_COOKIE, path="/")
        return resp

    @app.get("/api/me", tags=["auth"])
    async def api_me(p: Annotator):
        return {"user": p.user.to_dict(), "csrf": p.csrf}

    @app.get("/", include_in_schema=False)
    def root(p: Annotator):
        return RedirectResponse(_home(p.user), status_code=303)

    @app.get("/api/openapi.json", tags=["meta"])
    def openapi(p: Annotator):
        """This API's OpenAPI schema."""
        if app.openapi_schema is None:
            app.openapi_schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                             routes=app.routes)
        return app.openapi_schema

    # ------------------------------------------------------------------ queue
    @app.get("/queue", response_class=HTMLResponse, include_in_schema=False)
    def queue_page(p: Annotator):
        data = _queue_payload(ctx, p, 6, [])
        return HTMLResponse(pages.queue_page(user=p.user, csrf=p.csrf or "", classes=data["classes"], initial=data))

    @app.get("/api/queue", tags=["queue"])
    async def api_queue(p: Annotator, n: Annotated[int, Query(ge=1, le=50)] = 5,
                        exclude: Annotated[str, Query(max_length=10_000, pattern=ID_LIST_PATTERN)] = ""):
        """The next ``n`` items for this user (reserved for them a few minutes), with the
        machine's guess; ``exclude``: comma-separated ids the client already holds."""
        return _queue_payload(ctx, p, n, _parse_ids(exclude, "exclude"))

    def _after_label(item_id: int) -> None:
        ctx.queue.release(item_id)
        ctx.refresher.request()

    @app.post("/api/labels", tags=["queue"])
    async def api_label(body: LabelIn, p: Annotator):
        """Label one item (a human annotation by this user); triggers a background refresh."""
        out = await ctx.write(lambda s: actions.label_item(s, p.user, body.item, body.label, body.key))
        _after_label(body.item)
        return out

    @app.post("/api/undo", tags=["queue"])
    async def api_undo(p: Annotator, body: UndoIn | None = None):
        """Withdraw this user's most recent label in effect; returns that item to label again."""
        key = body.key if body else None
        out = await ctx.write(lambda s: actions.undo_last(s, p.user, key))
        ctx.queue.unskip(p.user.name, out["item"])
        ctx.refresher.request()

        def item():
            store = ctx.readers.store()
            it = store.items([out["item"]])[0]
            return item_json(it, ctx.refresher.snapshot, QueueEntry(it.id, "undone"))

        return out | {"item_data": await run_in_threadpool(item)}

    @app.post("/api/skip", tags=["queue"])
    async def api_skip(body: SkipIn, p: Annotator):
        """Skip an item: it is not shown to this user again in this server session. Writes nothing."""
        actions.item_exists(ctx.readers.store(), body.item)
        ctx.queue.skip(p.user.name, body.item)
        return {"ok": True, "item": body.item}

    @app.get("/api/classes", tags=["queue"])
    async def api_classes(p: Annotator):
        return {"classes": ctx.readers.store().classes()}

    @app.post("/api/classes", tags=["queue"])
    async def api_add_class(body: ClassIn, p: Annotator):
        """Add a class (any logged-in user may, from the labeling page)."""
        out = await ctx.write(lambda s: actions.add_class(s, body.name))
        if out["added"]:
            ctx.refresher.request()
        return out

    # ------------------------------------------------------------------ media
    @app.get("/media/{ref}", tags=["queue"], responses={200: {"content": {"image/png": {}}}})
    def media(ref: str, p: Annotator, w: Annotated[int | None, Query(ge=16, le=1024)] = None):
        """The image of an item, by item id only; ``w``: a thumbnail at most this wide and high."""
        if not _ASCII_ID.fullmatch(ref):
            raise UnknownItemError(f"no item {ref[:40]!r}: media are addressed by item id (digits 0-9)")
        it = ctx.readers.store().items([int(ref)])[0]   # UnknownItemError (404) if there is none
        if it.modality != "image" or not it.uri:
            raise UnknownItemError(f"item {it.id} is a text item; its text is in the JSON")
        headers = {"Cache-Control": "private, max-age=86400"}
        if w is not None:
            return Response(thumbnail(it, w), media_type="image/png", headers=headers)
        return Response(image_bytes(it), media_type=media_type(it), headers=headers)

    # ------------------------------------------------------------------ review
    def _review_args(source, label, min_confidence, max_confidence, order, offset):
        return dict(source=source or None, label=label or None, min_confidence=min_confidence,
                    max_confidence=max_confidence, order=order or "desc", offset=offset, limit=REVIEW_PAGE)

    @app.get("/api/review", tags=["review"])
    def api_review(p: Reviewer, source: Literal["machine", "predicted"] | None = None, label: str = "",
                   min_confidence: Conf = None, max_confidence: Conf = None,
                   order: Literal["desc", "asc"] = "desc", offset: Annotated[int, Query(ge=0, le=10**9)] = 0):
        """Machine labels (or propagated predictions) of items no human labeled, filtered."""
        return review_data(ctx, **_review_args(source, label, min_confidence, max_confidence, order, offset))

    @app.get("/review", response_class=HTMLResponse, include_in_schema=False)
    def review_page(request: Request, p: Reviewer, source: str = "", label: str = "", min_confidence: str = "",
                    max_confidence: str = "", order: str = "desc", offset: str = "0", done: str = ""):
        def conf(v, what):
            if not v.strip():
                return None
            try:
                x = float(v)
            except ValueError:
                raise ValidationError(f"{what} must be a number between 0 and 1, got {v[:20]!r}") from None
            if not 0.0 <= x <= 1.0:
                raise ValidationError(f"{what} must be between 0 and 1, got {x}")
            return x

        data = review_data(ctx, **_review_args(source, label, conf(min_confidence, "min confidence"),
                                               conf(max_confidence, "max confidence"), order,
                                               _as_int(offset or "0", "offset")))
        query = {k: v for k, v in dict(source=data["source"], label=label, min_confidence=min_confidence,
                                       max_confidence=max_confidence, order=order).items() if v}
        flash = None
        if done.isdigit():
            flash = "1 label is now human-verified." if done == "1" else f"{done} labels are now human-verified."
        return HTMLResponse(pages.review_page(user=p.user, csrf=p.csrf or "", data=data, query=query, flash=flash))

    @app.post("/api/review", tags=["review"])
    async def api_review_post(body: ReviewIn, p: Reviewer):
        """Accept (same label) or fix (another label) many items: human labels by this reviewer."""
        decisions = [(d.item, d.label) for d in body.items]
        out = await ctx.write(lambda s: actions.review_labels(s, p.user, decisions, body.key))
        ctx.refresher.request()
        return out

    @app.post("/review", include_in_schema=False)
    async def review_form(request: Request, p: ReviewerForm):
        form = await _form(request)
        _check_csrf(p, _one(form, "csrf_token"))
        bulk = _one(form, "bulk_label").strip()
        decisions = []
        for v in form.get("item", []):
            item_id = _as_int(v, "item")
            decisions.append((item_id, bulk or _one(form, f"label_{item_id}")))
        out = await ctx.write(lambda s: actions.review_labels(s, p.user, decisions))
        ctx.refresher.request()
        back = dict(parse_qs(_one(form, "back")))
        query = {k: v[0] for k, v in back.items() if k in ("source", "label", "min_confidence", "max_confidence", "order")}
        return RedirectResponse("/review?" + urlencode(query | {"done": out["appended"]}), status_code=303)

    # ------------------------------------------------------------------ audit
    @app.get("/api/audit", tags=["audit"])
    def api_audit(p: Reviewer, limit: Annotated[int, Query(ge=1, le=200)] = 30):
        """Suspected label errors, most suspicious first, each with its nearest neighbours."""
        return audit_data(ctx, limit=limit)

    @app.get("/audit", response_class=HTMLResponse, include_in_schema=False)
    def audit_page(p: Reviewer, done: str = ""):
        flash = {"fix": "Relabeled.", "keep": "Label kept; it will not be flagged again."}.get(done)
        return HTMLResponse(pages.audit_page(user=p.user, csrf=p.csrf or "", data=audit_data(ctx), flash=flash))

    async def _audit_action(p: Principal, item: int, label: str, action: str) -> dict:
        if action == "fix":
            out = await ctx.write(lambda s: actions.review_labels(s, p.user, [(item, label)]))
        else:
            out = await ctx.write(lambda s: actions.confirm_label(s, p.user, item, label, "web audit"))
        ctx.refresher.request()
        return out

    @app.post("/api/audit", tags=["audit"])
    async def api_audit_post(body: AuditIn, p: Reviewer):
        """``fix``: relabel the item (a human label); ``keep``: confirm its label despite the flag."""
        return await _audit_action(p, body.item, body.label, body.action)

    @app.post("/audit", include_in_schema=False)
    async def audit_form(request: Request, p: ReviewerForm):
        form = await _form(request)
        _check_csrf(p, _one(form, "csrf_token"))
        action = _one(form, "action")
        if action not in ("fix", "keep"):
            raise ValidationError("action must be 'fix' or 'keep'")
        await _audit_action(p, _as_int(_one(form, "item"), "item"), _one(form, "label"), action)
        return RedirectResponse(f"/audit?done={action}", status_code=303)

    # ------------------------------------------------------------------ dashboard
    def _dashboard(store: Store) -> tuple[dict, str]:
        from .dashboard import dashboard_data

        version = ctx.version(store)
        data = ctx.cached("dashboard", version, lambda: dashboard_data(
            ctx.readers.project(), ctx.refresher.snapshot, ctx.refresher.status))
        return data, version

    @app.get("/api/dashboard", tags=["dashboard"])
    def api_dashboard(p: Reviewer):
        """Counts, accuracy estimate, annotators and their agreement, learning curve,
        confidence histogram, class balance."""
        return _dashboard(ctx.readers.store())[0]

    @app.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
    def dashboard_page(p: Reviewer):
        data, version = _dashboard(ctx.readers.store())
        return HTMLResponse(pages.dashboard_page(user=p.user, csrf=p.csrf or "", data=data, version=version))

    @app.get("/plots/{name}.png", tags=["dashboard"], responses={200: {"content": {"image/png": {}}}})
    def plot(name: str, p: Reviewer):
        """A dashboard picture: learning-curve, confidence, class-balance, embedding-map, annotators."""
        from . import plots
        from .dashboard import embedding_map

        if name not in plots.PLOTS:
            raise UnknownItemError(f"no plot {name[:40]!r}; plots: {', '.join(plots.PLOTS)}")
        store = ctx.readers.store()
        data, version = _dashboard(store)

        def render():
            emb = None
            if name == "embedding-map":
                emb = ctx.cached("map", version, lambda: embedding_map(ctx.readers.project()))
            return plots.render(name, data, emb)

        png = ctx.cached(f"plot:{name}", version, render)
        return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})

    # ------------------------------------------------------------------ export / status
    @app.get("/export", tags=["export"], responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}})
    def export(p: Reviewer, format: Literal[EXPORT_FORMATS] = "csv"):
        """Download one row per item with its current best label (as `labelloop export`)."""
        if format not in EXPORT_FORMATS:
            raise ValidationError(f"format must be one of {', '.join(EXPORT_FORMATS)}, not {format[:20]!r}")
        tmp = tempfile.mkdtemp(prefix="labelloop-export-")
        try:
            path = ctx.readers.project().export(Path(tmp) / f"labels.{format}", format=format)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        media_type = {"csv": "text/csv", "jsonl": "application/x-ndjson"}.get(format, "application/octet-stream")
        name = f"{ctx.root.name}-labels.{format}"
        return FileResponse(path, media_type=media_type, filename=name,
                            background=BackgroundTask(shutil.rmtree, tmp, ignore_errors=True))

    @app.get("/api/status", tags=["dashboard"])
    def api_status(p: Reviewer):
        """``labelloop status`` plus the server's refresh state."""
        return {**ctx.readers.project().status(), "refresh": dict(ctx.refresher.status),
                "snapshot": ctx.refresher.snapshot.to_dict()}

    # ------------------------------------------------------------------ users
    def _users_list() -> list[dict]:
        return [u.to_dict() for u in auth.list_users(ctx.readers.store())]

    @app.get("/api/users", tags=["users"])
    def api_users(p: Admin):
        return {"users": _users_list()}

    @app.post("/api/users", tags=["users"])
    async def api_add_user(body: UserIn, p: Admin):
        """Create a user; the answer holds the password or token, shown this once."""
        user, shown = await ctx.write(lambda s: auth.add_user(s, body.name, body.role, password=body.password,
                                                              token=body.token))
        return {"user": user.to_dict(), **shown}

    def _change_user(s: Store, actor: User, name: str, action: str) -> dict:
        if action in ("activate", "deactivate"):
            if action == "deactivate" and name == actor.name:
                raise ValidationError("you cannot deactivate yourself; ask another admin")
            return {"user": auth.set_active(s, name, action == "activate").to_dict()}
        secret = {"password": auth.set_password(s, name)} if action == "password" else {"token": auth.issue_token(s, name)}
        return {"user": auth.get_user(s, name).to_dict(), **secret}

    async def _user_action(p: Principal, name: str, action: str) -> dict:
        return await ctx.write(lambda s: _change_user(s, p.user, name, action))

    @app.post("/api/users/{name}", tags=["users"])
    async def api_change_user(name: str, body: UserChange, p: Admin):
        """activate / deactivate a user, or give them a new password / token (shown once)."""
        return await _user_action(p, name, body.action)

    @app.get("/users", response_class=HTMLResponse, include_in_schema=False)
    def users_page(p: Admin):
        return HTMLResponse(pages.users_page(user=p.user, csrf=p.csrf or "", users=_users_list()))

    @app.post("/users", response_class=HTMLResponse, include_in_schema=False)
    async def users_form(request: Request, p: AdminForm):
        form = await _form(request)
        _check_csrf(p, _one(form, "csrf_token"))
        action, name = _one(form, "action"), _one(form, "name").strip()
        shown, flash = None, None
        try:
            if action == "add":
                role = _one(form, "role", "annotator")
                user, secret = await ctx.write(lambda s: auth.add_user(s, name, role, token=_one(form, "token") == "1"))
                shown, flash = {"name": user.name, **secret}, f"Added {user.name} ({user.role})."
            elif action in ("activate", "deactivate", "password", "token"):
                out = await _user_action(p, name, action)
                if out.get("password") or out.get("token"):
                    shown = {"name": name, **{k: out[k] for k in ("password", "token") if out.get(k)}}
                flash = f"{name}: {action} done."
            else:
                raise ValidationError(f"unknown action {action[:20]!r}")
        except ValidationError as exc:
            flash = f"Error: {exc}"
        users = await run_in_threadpool(_users_list)
        return HTMLResponse(pages.users_page(user=p.user, csrf=p.csrf or "", users=users, shown=shown, flash=flash))

    return app
