"""What every router of the web app shares: the :class:`WebContext` (writer, readers,
refresher, queue, caches, login limits), who is asking (:class:`Principal` and the role
dependencies), CSRF checks, form and id parsing, and the JSON of an item.

Routers get the context with the ``Ctx`` dependency (it lives on ``app.state.web``)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hmac
import re
import threading
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Annotated, Any
from urllib.parse import parse_qs

from fastapi import Depends, Query, Request

from ..errors import AuthError, ValidationError
from ..store import Store
from . import auth
from .auth import ForbiddenError, User, has_role
from .boxes import BoxQueue
from .guard import HashSlots, LoginLimiter, RequestGuard
from .queue import LabelQueue, QueueEntry, Snapshot
from .service import Readers, Refresher, Writer

__all__ = ["WebContext", "Principal", "Ctx", "Annotator", "Reviewer", "Admin", "ReviewerForm", "AdminForm",
           "AnyForm", "Conf", "SESSION_COOKIE", "LOGIN_CSRF_COOKIE", "principal_of", "check_csrf", "read_form",
           "form_value", "as_int", "parse_ids", "home_of", "safe_next", "item_json"]

SESSION_COOKIE = "labelloop_session"
LOGIN_CSRF_COOKIE = "labelloop_login_csrf"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


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
        self.box_queue = BoxQueue()   # the box editor's (detection projects)
        self.secure_cookies = secure_cookies
        self._lock = threading.Lock()
        self.logins = LoginLimiter()
        self.hash_slots = HashSlots()
        self._cache: dict[str, tuple[Any, Any]] = {}
        self._compute_locks: dict[str, threading.Lock] = {}
        self._computing: set[str] = set()   # cached_ahead: being recomputed in the background
        self._background: concurrent.futures.ThreadPoolExecutor | None = None
        self._started = False

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        self.writer.start()
        self.refresher.start()

    def close(self) -> None:
        if self._background is not None:
            self._background.shutdown(wait=True)
            self._background = None
        self.refresher.stop()
        self.writer.stop()
        self.readers.close()
        self._started = False

    async def write(self, fn, *, refresh: bool = False):
        """Run ``fn(store)`` on the writer thread and await its result. ``refresh``: ask the
        refresher for a refresh right after ``fn`` has committed, from the writer thread (it
        starts without waiting for this request's thread to run again)."""
        self.start()
        if refresh:
            return await asyncio.wrap_future(self.writer.submit(self._then_refresh(fn)))
        return await asyncio.wrap_future(self.writer.submit(fn))

    def _then_refresh(self, fn):
        def job(store):
            out = fn(store)
            self.refresher.request()
            return out
        return job

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

    def cached_ahead(self, name: str, key, compute):
        """Like :meth:`cached`, but once a value exists a new ``key`` answers with it at once and
        ``compute()`` runs on a background thread (which must open what it reads itself), so a
        slow count never holds up a request; the next callers get the new value."""
        with self._lock:
            hit = self._cache.get(name)
            if hit is None:
                stale = None
            elif hit[0] == key or name in self._computing:
                return hit[1]
            else:
                stale = hit[1]
                self._computing.add(name)
                if self._background is None:
                    self._background = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="labelloop-cache")
        if stale is None:
            return self.cached(name, key, compute)

        def refill():
            try:
                value = compute()
                with self._lock:
                    self._cache[name] = (key, value)
            finally:
                with self._lock:
                    self._computing.discard(name)
        self._background.submit(refill)
        return stale

    def version(self, store: Store) -> str:
        """Changes whenever a label, a class or the predictions change (cache key of plots)."""
        return f"{self.refresher.snapshot.run_id}-{store.last_annotation_id()}-{len(store.classes())}"


def get_ctx(request: Request) -> WebContext:
    return request.app.state.web


async def _ctx_dependency(request: Request) -> WebContext:
    """``Ctx``: async, so FastAPI resolves it on the event loop (a plain function would be
    run on a worker thread: two thread switches more before every request's handler runs)."""
    return get_ctx(request)


# -------------------------------------------------------------------------- authentication
def principal_of(request: Request) -> Principal:
    known = request.scope.get(RequestGuard.PRINCIPAL_KEY)   # checked before the body was read
    if known is not None:
        return known
    ctx = get_ctx(request)
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
        p = principal_of(request)
        if not has_role(p.user, role):
            raise ForbiddenError(f"{p.user.name} has the {p.user.role} role; this needs the {role} role")
        if p.cookie and not form and request.method not in SAFE_METHODS:
            check_csrf(p, request.headers.get("x-csrf-token"))
        return p

    dependency.__name__ = f"require_{role}"
    return dependency


def check_csrf(p: Principal, sent: str | None) -> None:
    if not p.cookie:
        return
    if not sent or not p.csrf or not hmac.compare_digest(sent.encode(), p.csrf.encode()):
        raise CsrfError("missing or wrong CSRF token: pages send it from their csrf-token meta tag "
                        "(X-CSRF-Token header or csrf_token form field); API clients can use a bearer token")


async def read_form(request: Request) -> dict[str, list[str]]:
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("application/x-www-form-urlencoded"):
        raise ValidationError("expected an HTML form post (application/x-www-form-urlencoded)")
    body = await request.body()
    if len(body) > 2_000_000:
        raise ValidationError("form too large")
    return parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)


def form_value(form: dict[str, list[str]], name: str, default: str = "") -> str:
    return form.get(name, [default])[0]


ASCII_ID = re.compile(r"[0-9]{1,18}")   # str.isdigit() would take "١٢" (Arabic-Indic 12) too


def as_int(value: str, what: str) -> int:
    value = value.strip()
    if not ASCII_ID.fullmatch(value):
        raise ValidationError(f"{what} must be a whole number of at most 18 digits 0-9, got {value[:40]!r}")
    return int(value)


Annotator = Annotated[Principal, Depends(require("annotator"))]
Reviewer = Annotated[Principal, Depends(require("reviewer"))]
Admin = Annotated[Principal, Depends(require("admin"))]
ReviewerForm = Annotated[Principal, Depends(require("reviewer", form=True))]
AdminForm = Annotated[Principal, Depends(require("admin", form=True))]
AnyForm = Annotated[Principal, Depends(require("annotator", form=True))]
Conf = Annotated[float | None, Query(ge=0.0, le=1.0)]
Ctx = Annotated[WebContext, Depends(_ctx_dependency)]


def home_of(user: User) -> str:
    return "/dashboard" if has_role(user, "reviewer") else "/queue"


def safe_next(url: str, user: User) -> str:
    # only local paths: "/x" but never "//host" or "/\\host"
    if url.startswith("/") and not url.startswith("//") and not url.startswith("/\\") and "\n" not in url:
        return url
    return home_of(user)


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
        d["kind"] = entry.kind   # "verify" | "random" | "strategy" (the loop's choice), None otherwise
    g = None if (entry is not None and entry.assigned) else snap.guess(it.id)  # assigned: judged blind
    d["guess"] = None if g is None else {"label": g[0], "confidence": round(g[1], 4)}
    return d


def parse_ids(text: str, what: str, limit: int = 500) -> list[int]:
    parts = [t for t in text.split(",") if t.strip()]
    if len(parts) > limit:
        raise ValidationError(f"{what}: at most {limit} ids")
    return [as_int(t, what) for t in parts]
