"""The audit: suspected label errors with their disagreeing neighbours; relabel or keep.
The page and its JSON twin."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse

from ...errors import ValidationError
from .. import actions
from ..audit_view import audit_view
from ..context import Ctx, Principal, Reviewer, ReviewerForm, WebContext, as_int, check_csrf, form_value, read_form
from ..render import page
from ..schemas import AuditIn

router = APIRouter(tags=["audit"])



@router.get("/api/audit")
def api_audit(p: Reviewer, ctx: Ctx, limit: Annotated[int, Query(ge=1, le=200)] = 30):
    """Suspected label errors, most suspicious first, each with its nearest neighbours."""
    return audit_view(ctx, limit=limit)


@router.get("/audit", include_in_schema=False)
def audit_page(p: Reviewer, ctx: Ctx, done: str = ""):
    flash = {"fix": "Relabeled.", "keep": "Label kept; it will not be flagged again."}.get(done)
    return page("audit.html", title="Audit", user=p.user, csrf=p.csrf or "", page_id="audit", wide=True,
                flash=flash, data=audit_view(ctx))


async def _audit_action(ctx: WebContext, p: Principal, item: int, label: str, action: str) -> dict:
    if action == "fix":
        out = await ctx.write(lambda s: actions.review_labels(s, p.user, [(item, label)]), refresh=True)
    else:
        out = await ctx.write(lambda s: actions.confirm_label(s, p.user, item, label, "web audit"), refresh=True)
    return out


@router.post("/api/audit")
async def api_audit_post(body: AuditIn, p: Reviewer, ctx: Ctx):
    """``fix``: relabel the item (a human label); ``keep``: confirm its label despite the flag."""
    return await _audit_action(ctx, p, body.item, body.label, body.action)


@router.post("/audit", include_in_schema=False)
async def audit_form(request: Request, p: ReviewerForm, ctx: Ctx):
    form = await read_form(request)
    check_csrf(p, form_value(form, "csrf_token"))
    action = form_value(form, "action")
    if action not in ("fix", "keep"):
        raise ValidationError("action must be 'fix' or 'keep'")
    await _audit_action(ctx, p, as_int(form_value(form, "item"), "item"), form_value(form, "label"), action)
    return RedirectResponse(f"/audit?done={action}", status_code=303)
