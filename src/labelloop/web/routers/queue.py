"""The labeling queue: the page and its JSON twin, labels (multi-label projects: a set of
classes per item), undo, skip, classes."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from .. import actions, multilabel
from ..markup import render_markdown
from ..context import Annotator, Ctx, Principal, WebContext, item_json, parse_ids
from ..queue import QueueEntry
from ..render import page
from ..schemas import ID_LIST_PATTERN, ClassIn, ClassSetIn, LabelIn, ReleaseIn, SkipIn, UndoIn

#: the longest ``/api/queue?wait=`` a client may ask for, seconds
MAX_WAIT = 30.0

router = APIRouter(tags=["queue"])


def _queue_payload(ctx: WebContext, p: Principal, n: int, exclude: list[int]) -> dict:
    store = ctx.readers.store()
    snap = ctx.refresher.snapshot
    entries = ctx.queue.next_items(store, snap, p.user.name, n, exclude)
    ctx.refresher.record_served(p.user.name, entries, snap.ranking)
    items = store.items([e.item_id for e in entries]) if entries else []
    out = [item_json(it, snap, e) for it, e in zip(items, entries)]
    task = "multilabel" if multilabel.is_multilabel(store) else "classification"
    if task == "multilabel":   # the machine's per-class scores: toggles pre-set from them
        scores = multilabel.suggestions(ctx.readers.project(), [d["id"] for d in out])
        for d in out:
            d["scores"] = scores.get(d["id"], {})
    return {"items": out, "classes": store.classes(), "remaining": _remaining(ctx), "task": task,
            "suggest_at": multilabel.SUGGEST_AT, "snapshot": snap.to_dict(), "refresh": dict(ctx.refresher.status)}


def _remaining(ctx: WebContext) -> int:
    """Items left to label, recounted at most once a second, off the request (a count of every
    item: milliseconds at 100k items, tens at 1M)."""
    def count() -> int:
        store = ctx.readers.store()
        return multilabel.open_count(store) if multilabel.is_multilabel(store) else store.unlabeled_count()
    return ctx.cached_ahead("remaining", int(time.time()), count)


@router.get("/queue", include_in_schema=False)
def queue_page(p: Annotator, ctx: Ctx):
    if ctx.readers.project().task == "detection":   # images are labeled with boxes
        return RedirectResponse("/boxes", status_code=303)
    data = _queue_payload(ctx, p, 6, [])
    guidelines = render_markdown(ctx.readers.store().guidelines()["text"])
    return page("queue.html", title="Label", user=p.user, csrf=p.csrf or "", page_id="queue", wide=True,
                classes=data["classes"], initial=data, guidelines=guidelines, task=data["task"])


@router.get("/api/queue")
async def api_queue(p: Annotator, ctx: Ctx, n: Annotated[int, Query(ge=1, le=50)] = 5,
                    exclude: Annotated[str, Query(max_length=10_000, pattern=ID_LIST_PATTERN)] = "",
                    after: Annotated[int | None, Query(ge=0)] = None,
                    wait: Annotated[float, Query(ge=0, le=MAX_WAIT)] = 0.0):
    """The next ``n`` items for this user (reserved for them a few minutes), with the
    machine's guess; ``exclude``: comma-separated ids the client already holds. With
    ``after`` (an annotation id, e.g. the label just posted) and ``wait`` (seconds): answer as
    soon as predictions refreshed with that label are served, or after ``wait`` seconds
    (``snapshot.applied_annotation_id`` tells which) instead of polling."""
    ids = parse_ids(exclude, "exclude")
    if after is None or wait <= 0:
        return await run_in_threadpool(_queue_payload, ctx, p, n, ids)
    applied = ctx.refresher.when_applied(after)

    async def answered() -> None:   # the refresh that woke this request stores its arrays now
        ctx.refresher.answered(applied)

    try:
        try:
            await asyncio.wait_for(asyncio.wrap_future(applied), wait)
        except asyncio.TimeoutError:
            pass   # answered with what is served now
        finally:
            applied.cancel()
        # the page a person waits for, built here on the event loop rather than after one more
        # thread hop: SQLite reads of a few rows (the served queue is recorded by the writer,
        # the remaining count recounted off the request)
        data = jsonable_encoder(_queue_payload(ctx, p, n, ids))
    except BaseException:
        await answered()
        raise
    return JSONResponse(data, background=BackgroundTask(answered))   # (once it is sent)


@router.post("/api/labels")
async def api_label(body: LabelIn, p: Annotator, ctx: Ctx):
    """Label one item (a human annotation by this user); triggers a background refresh."""
    out = await ctx.write(lambda s: actions.label_item(s, p.user, body.item, body.label, body.key), refresh=True)
    ctx.queue.release(body.item)
    return out


@router.post("/api/decisions")
async def api_decide(body: ClassSetIn, p: Annotator, ctx: Ctx):
    """Multi-label projects: the classes that apply to one item ([] = none does), this user's
    full decision for it (every other class: does not apply); triggers a background refresh."""
    out = await ctx.write(lambda s: multilabel.decide(s, p.user, body.item, body.classes), refresh=True)
    ctx.queue.release(body.item)
    return out


@router.post("/api/undo")
async def api_undo(p: Annotator, ctx: Ctx, body: UndoIn | None = None):
    """Withdraw this user's most recent label in effect; returns that item to label again.
    Multi-label projects: the item gets back the decisions in effect before this user's last
    one (withdrawn where there were none), so it is open again; ``key`` is not used there."""
    key = body.key if body else None
    if multilabel.is_multilabel(ctx.readers.store()):
        out = await ctx.write(lambda s: multilabel.undo(s, p.user), refresh=True)
    else:
        out = await ctx.write(lambda s: actions.undo_last(s, p.user, key), refresh=True)
    ctx.queue.unskip(p.user.name, out["item"])

    def item():
        store = ctx.readers.store()
        it = store.items([out["item"]])[0]
        d = item_json(it, ctx.refresher.snapshot, QueueEntry(it.id, "undone"))
        if multilabel.is_multilabel(store):   # the toggles are pre-set from the scores again
            d["scores"] = multilabel.suggestions(ctx.readers.project(), [it.id]).get(it.id, {})
        return d

    return out | {"item_data": await run_in_threadpool(item)}


@router.post("/api/skip")
async def api_skip(body: SkipIn, p: Annotator, ctx: Ctx):
    """Skip an item: it is not shown to this user again in this server session. Writes nothing."""
    actions.item_exists(ctx.readers.store(), body.item)
    ctx.queue.skip(p.user.name, body.item)
    return {"ok": True, "item": body.item}


@router.post("/api/release")
async def api_release(body: ReleaseIn, p: Annotator, ctx: Ctx):
    """Hand back items this user was served and will not label now (the page replaced its
    prefetched items with a refreshed queue): other annotators can get them at once instead
    of after the reservation's few minutes. Writes nothing."""
    return {"ok": True, "released": ctx.queue.release_held(p.user.name, body.items)}


@router.get("/api/classes")
async def api_classes(p: Annotator, ctx: Ctx):
    return {"classes": ctx.readers.store().classes()}


@router.post("/api/classes")
async def api_add_class(body: ClassIn, p: Annotator, ctx: Ctx):
    """Add a class (any logged-in user may, from the labeling page)."""
    out = await ctx.write(lambda s: actions.add_class(s, body.name))
    if out["added"]:
        ctx.refresher.request()
    return out
