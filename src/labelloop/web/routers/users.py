"""Users (admin only): the page and its JSON twin."""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.concurrency import run_in_threadpool

from ...errors import ValidationError
from ...store import Store
from .. import auth
from ..auth import User
from ..context import Admin, AdminForm, Ctx, Principal, WebContext, check_csrf, form_value, read_form
from ..render import page
from ..schemas import UserChange, UserIn

router = APIRouter(tags=["users"])



def _users_page(p: Principal, users: list[dict], *, shown: dict | None = None, flash: str | None = None):
    return page("users.html", title="Users", user=p.user, csrf=p.csrf or "", page_id="users", flash=flash,
                users=users, shown=shown)



def _users_list(ctx: WebContext) -> list[dict]:
    return [u.to_dict() for u in auth.list_users(ctx.readers.store())]


@router.get("/api/users")
def api_users(p: Admin, ctx: Ctx):
    return {"users": _users_list(ctx)}


@router.post("/api/users")
async def api_add_user(body: UserIn, p: Admin, ctx: Ctx):
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


async def _user_action(ctx: WebContext, p: Principal, name: str, action: str) -> dict:
    return await ctx.write(lambda s: _change_user(s, p.user, name, action))


@router.post("/api/users/{name}")
async def api_change_user(name: str, body: UserChange, p: Admin, ctx: Ctx):
    """activate / deactivate a user, or give them a new password / token (shown once)."""
    return await _user_action(ctx, p, name, body.action)


@router.get("/users", include_in_schema=False)
def users_page(p: Admin, ctx: Ctx):
    return _users_page(p, _users_list(ctx))


@router.post("/users", include_in_schema=False)
async def users_form(request: Request, p: AdminForm, ctx: Ctx):
    form = await read_form(request)
    check_csrf(p, form_value(form, "csrf_token"))
    action, name = form_value(form, "action"), form_value(form, "name").strip()
    shown, flash = None, None
    try:
        if action == "add":
            role = form_value(form, "role", "annotator")
            user, secret = await ctx.write(lambda s: auth.add_user(s, name, role, token=form_value(form, "token") == "1"))
            shown, flash = {"name": user.name, **secret}, f"Added {user.name} ({user.role})."
        elif action in ("activate", "deactivate", "password", "token"):
            out = await _user_action(ctx, p, name, action)
            if out.get("password") or out.get("token"):
                shown = {"name": name, **{k: out[k] for k in ("password", "token") if out.get(k)}}
            flash = f"{name}: {action} done."
        else:
            raise ValidationError(f"unknown action {action[:20]!r}")
    except ValidationError as exc:
        flash = f"Error: {exc}"
    users = await run_in_threadpool(_users_list, ctx)
    return _users_page(p, users, shown=shown, flash=flash)
