"""Candidate new classes: the page and its JSON twin. Reviewers look for clusters of items far
from every known class, in one batch or the whole project (``Project.novel``, recorded as a
run), and add a class from a cluster in one click (``Project.add_class_from_cluster``): the
class is added and the cluster's examples are queued for a person; nothing is machine-labeled."""

from __future__ import annotations

import time
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from ...errors import ValidationError
from .. import actions
from ..context import Ctx, Principal, Reviewer, ReviewerForm, WebContext, as_int, check_csrf, form_value, read_form
from ..render import page
from ..schemas import NovelClassIn, NovelFindIn

router = APIRouter(tags=["novel"])


def novel_data(ctx: WebContext) -> dict:
    """The last novel run (None before the first), each example with what the page shows of
    it (an image's /media URL or a text), the project's batches and classes."""
    project = ctx.readers.project()
    last = project.last_novel()
    if last is not None:
        ids = [e["item"] for c in last["clusters"] for e in c["examples"]]
        shown = {it.id: it for it in project.store.items(ids)}
        for c in last["clusters"]:
            for e in c["examples"]:
                it = shown[e["item"]]
                e.update(id=it.id, media=f"/media/{it.id}" if it.modality == "image" else None,
                         text=None if it.modality == "image" else it.text)
        last["finished_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(last["finished"]))
    return {"last": last, "batches": [b["name"] for b in project.batches()], "classes": project.classes}


async def _find(ctx: WebContext, p: Principal, batch: str | None) -> dict:
    return await ctx.write(lambda s: actions.find_novel(s, p.user, batch))


async def _add(ctx: WebContext, p: Principal, cluster: int, name: str) -> dict:
    return await ctx.write(lambda s: actions.add_class_from_cluster(s, p.user, cluster, name))


@router.get("/api/novel")
def api_novel(p: Reviewer, ctx: Ctx):
    """The last search for candidate new classes: its batch, the clusters (size, nearest known
    class, what the model predicts for them now, examples); the batches and classes."""
    return novel_data(ctx)


@router.post("/api/novel")
async def api_find_novel(body: NovelFindIn, p: Reviewer, ctx: Ctx):
    """Look for clusters of unlabeled items (of ``batch``) far from every known class."""
    return await _find(ctx, p, body.batch)


@router.post("/api/novel/{cluster}")
async def api_add_class(cluster: int, body: NovelClassIn, p: Reviewer, ctx: Ctx):
    """Add a class for a cluster of the last search; its examples are queued for a person."""
    return await _add(ctx, p, cluster, body.name)


@router.get("/novel", include_in_schema=False)
def novel_page(p: Reviewer, ctx: Ctx, added: str = "", found: str = ""):
    data = novel_data(ctx)
    flash = None
    if added and added in data["classes"]:
        flash = (f"Class {added} added. Its examples are queued for a person to label (nothing was labeled "
                 "by the machine); label them in the queue or with `labelloop label`.")
    elif found and data["last"] is not None:
        n = len(data["last"]["clusters"])
        flash = f"{n} candidate cluster{'s' if n != 1 else ''} found." if n else "No candidate new class found."
    return page("novel.html", title="New classes", user=p.user, csrf=p.csrf or "", page_id="novel", wide=True,
                flash=flash, data=data)


@router.post("/novel", include_in_schema=False)
async def novel_form(request: Request, p: ReviewerForm, ctx: Ctx):
    form = await read_form(request)
    check_csrf(p, form_value(form, "csrf_token"))
    action = form_value(form, "action")
    if action == "find":
        await _find(ctx, p, form_value(form, "batch") or None)
        return RedirectResponse("/novel?found=1", status_code=303)
    if action == "add":
        name = (form_value(form, "name") or "").strip()
        out = await _add(ctx, p, as_int(form_value(form, "cluster") or "", "cluster"), name)
        return RedirectResponse("/novel?" + urlencode({"added": out["class"]}), status_code=303)
    raise ValidationError("action must be 'find' or 'add'")
