"""Labeling guidelines: everyone reads them (the queue page shows them too), admins write
them. The page and its JSON twin."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from ...errors import ValidationError
from .. import actions
from ..auth import has_role
from ..context import Admin, AdminForm, Annotator, Ctx, Principal, check_csrf, form_value, read_form
from ..markup import render_markdown
from ..render import page
from ..schemas import GuidelinesIn, GuidelinesOut

router = APIRouter(tags=["guidelines"])


def guidelines_json(found: dict) -> dict:
    """The JSON of the stored guidelines, rendered HTML included."""
    text = found.get("text") or ""
    return {"text": text, "html": str(render_markdown(text)), "updated": found.get("updated"),
            "by": found.get("by"), "max_length": actions.MAX_GUIDELINES}


@router.get("/api/guidelines", response_model=GuidelinesOut)
def api_guidelines(p: Annotator, ctx: Ctx):
    """The labeling guidelines (every logged-in user)."""
    return guidelines_json(ctx.readers.store().guidelines())


@router.put("/api/guidelines", response_model=GuidelinesOut)
async def api_put_guidelines(body: GuidelinesIn, p: Admin, ctx: Ctx):
    """Replace the guidelines (admins); an empty text clears them."""
    return guidelines_json(await ctx.write(lambda s: actions.set_guidelines(s, p.user, body.text)))


def _page(p: Principal, found: dict, *, draft: str | None = None, flash: str | None = None, status_code: int = 200):
    data = guidelines_json(found)
    return page("guidelines.html", title="Guidelines", user=p.user, csrf=p.csrf or "", page_id="guidelines",
                flash=flash, status_code=status_code, data=data, html=render_markdown(data["text"]),
                draft=data["text"] if draft is None else draft, editable=has_role(p.user, "admin"))


@router.get("/guidelines", include_in_schema=False)
def guidelines_page(p: Annotator, ctx: Ctx, done: str = ""):
    return _page(p, ctx.readers.store().guidelines(), flash="Guidelines saved." if done == "1" else None)


@router.post("/guidelines", include_in_schema=False)
async def guidelines_form(request: Request, p: AdminForm, ctx: Ctx):
    form = await read_form(request)
    check_csrf(p, form_value(form, "csrf_token"))
    text = form_value(form, "text")
    try:
        await ctx.write(lambda s: actions.set_guidelines(s, p.user, text))
    except ValidationError as exc:   # the page again, the draft kept, the reason shown
        return _page(p, ctx.readers.store().guidelines(), draft=text, flash=f"Not saved: {exc}", status_code=422)
    return RedirectResponse("/guidelines?done=1", status_code=303)
