"""Logging in and out (a page and its JSON twin), who am I, the start page, the API schema."""

from __future__ import annotations

import hmac
import secrets

from fastapi import APIRouter, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from ...errors import AuthError, ValidationError
from .. import auth
from ..auth import User
from ..context import (LOGIN_CSRF_COOKIE, SESSION_COOKIE, Annotator, AnyForm, Ctx, WebContext, check_csrf,
                       form_value, home_of, read_form, safe_next)
from ..render import page
from ..schemas import LoginIn

router = APIRouter()


def _login_page(csrf: str, next_url: str, error: str | None = None, *, status_code: int = 200) -> HTMLResponse:
    return page("login.html", title="Log in", page_id="login", login_csrf=csrf, next_url=next_url, error=error,
                status_code=status_code)


def _set_session(ctx: WebContext, resp: Response, token: str) -> None:
    resp.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict", secure=ctx.secure_cookies,
                    path="/", max_age=int(auth.SESSION_TTL))


def _credentials(ctx: WebContext, name: str, password: str | None, token: str | None) -> User | None:
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


async def _login(ctx: WebContext, request: Request, name: str, password: str | None,
                 token: str | None) -> tuple[User, str, str]:
    """Check the credentials within the login limits -> (user, session token, CSRF token)."""
    name = (name or "").strip()
    address = request.client.host if request.client else "unknown"
    ctx.logins.check(name, address)
    if password:   # at most a few scrypt hashes at once, whoever asks
        user = await ctx.hash_slots.run(_credentials, ctx, name, password, token)
    else:
        user = await run_in_threadpool(_credentials, ctx, name, password, token)
    if user is None:
        ctx.logins.failed(name, address)
        raise AuthError("wrong user name, password or token")
    tok, csrf = await ctx.write(lambda s: auth.create_session(s, user))
    return user, tok, csrf


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def login_page(request: Request, ctx: Ctx, next: str = ""):
    csrf = secrets.token_urlsafe(24)
    resp = _login_page(csrf, next)
    resp.set_cookie(LOGIN_CSRF_COOKIE, csrf, httponly=True, samesite="strict", secure=ctx.secure_cookies,
                    path="/login", max_age=3600)
    return resp


@router.post("/login", include_in_schema=False)
async def login_form(request: Request, ctx: Ctx):
    form = await read_form(request)
    sent, cookie = form_value(form, "csrf_token"), request.cookies.get(LOGIN_CSRF_COOKIE, "")
    next_url = form_value(form, "next")
    if not sent or not cookie or not hmac.compare_digest(sent.encode(), cookie.encode()):
        csrf = secrets.token_urlsafe(24)
        resp = _login_page(csrf, next_url, "The form expired; please log in again.", status_code=403)
        resp.set_cookie(LOGIN_CSRF_COOKIE, csrf, httponly=True, samesite="strict", path="/login", max_age=3600)
        return resp
    try:
        user, tok, _ = await _login(ctx, request, form_value(form, "name"), form_value(form, "password"), None)
    except AuthError as exc:
        csrf = secrets.token_urlsafe(24)
        resp = _login_page(csrf, next_url, str(exc), status_code=exc.http_status)
        resp.set_cookie(LOGIN_CSRF_COOKIE, csrf, httponly=True, samesite="strict", path="/login", max_age=3600)
        return resp
    resp = RedirectResponse(safe_next(next_url, user), status_code=303)
    _set_session(ctx, resp, tok)
    resp.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return resp


@router.post("/api/login", tags=["auth"])
async def api_login(body: LoginIn, request: Request, ctx: Ctx):
    """Log in with a password (or an API token): a session token, its CSRF token, and the
    session cookie. JSON only, so a cross-site form cannot post it."""
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise ValidationError("send JSON (Content-Type: application/json)")
    user, tok, csrf = await _login(ctx, request, body.name, body.password, body.token)
    resp = JSONResponse({"user": user.to_dict(), "session": tok, "csrf": csrf})
    _set_session(ctx, resp, tok)
    return resp


@router.post("/logout", include_in_schema=False)
async def logout_form(request: Request, p: AnyForm, ctx: Ctx):
    form = await read_form(request)
    check_csrf(p, form_value(form, "csrf_token"))
    await ctx.write(lambda s: auth.delete_session(s, p.token))
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


@router.post("/api/logout", tags=["auth"])
async def api_logout(p: Annotator, ctx: Ctx):
    """End this session (a bearer API token stays valid: revoke it with a new token)."""
    if p.csrf is not None:
        await ctx.write(lambda s: auth.delete_session(s, p.token))
    resp = JSONResponse({"ok": True})
    resp.delete_cookie(SESSION_COOKIE, path="/")
    return resp


@router.get("/api/me", tags=["auth"])
async def api_me(p: Annotator):
    return {"user": p.user.to_dict(), "csrf": p.csrf}


@router.get("/", include_in_schema=False)
def root(p: Annotator):
    return RedirectResponse(home_of(p.user), status_code=303)


@router.get("/api/openapi.json", tags=["meta"])
def openapi(p: Annotator, request: Request):
    """This API's OpenAPI schema."""
    app = request.app
    if app.openapi_schema is None:
        app.openapi_schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                         routes=app.routes)
    return app.openapi_schema
