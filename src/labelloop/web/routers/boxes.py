"""The box editor of detection projects: the page, its JSON twin and saving an image's boxes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool

from ...errors import UnknownItemError
from ..boxes import image_json, require_detection, save_boxes
from ..context import Annotator, Ctx, Principal, WebContext, parse_ids
from ..media import MediaChangedError
from ..render import page
from ..schemas import ID_LIST_PATTERN, MAX_ITEM_ID, BoxesIn

router = APIRouter(tags=["boxes"])

ItemPath = Annotated[int, Path(ge=1, le=MAX_ITEM_ID, description="item id")]


def _boxes_payload(ctx: WebContext, p: Principal, n: int, exclude: list[int]) -> dict:
    project = ctx.readers.project()
    require_detection(project)
    items, problems, exclude = [], [], set(exclude)
    while True:
        chosen, remaining = ctx.box_queue.take(project, p.user.name, n - len(items), exclude)
        for i, why in chosen:
            try:
                items.append(image_json(project, i, why))
            except MediaChangedError as exc:   # a moved or changed file: named, not offered again here
                ctx.box_queue.skip(p.user.name, i)
                problems.append({"item": i, "detail": str(exc)})
        if len(items) >= n or not chosen:
            break
        exclude |= {i for i, _ in chosen}
    return {"items": items, "classes": project.classes, "remaining": remaining, "problems": problems}


@router.get("/boxes", include_in_schema=False)
def boxes_page(p: Annotator, ctx: Ctx):
    data = _boxes_payload(ctx, p, 3, [])
    return page("boxes.html", title="Boxes", user=p.user, csrf=p.csrf or "", page_id="boxes", wide=True,
                classes=data["classes"], initial=data)


@router.get("/api/boxes")
async def api_boxes(p: Annotator, ctx: Ctx, n: Annotated[int, Query(ge=1, le=20)] = 3,
                    exclude: Annotated[str, Query(max_length=10_000, pattern=ID_LIST_PATTERN)] = ""):
    """The next ``n`` images not yet reviewed, with their boxes in effect (machine pre-labels
    with scores, human and imported boxes); ``exclude``: ids the client already holds.
    ``problems``: images passed over because their file is missing or changed."""
    ids = parse_ids(exclude, "exclude")
    return await run_in_threadpool(_boxes_payload, ctx, p, n, ids)


@router.get("/api/boxes/{item}")
def api_image_boxes(item: ItemPath, p: Annotator, ctx: Ctx):
    """One image with its size and the boxes in effect."""
    project = ctx.readers.project()
    require_detection(project)
    if not project.store.has_item(item):
        raise UnknownItemError(f"no item with id {item} in this project")
    return image_json(project, item)


@router.post("/api/boxes/{item}")
async def api_save_boxes(item: ItemPath, body: BoxesIn, p: Annotator, ctx: Ctx):
    """Make ``boxes`` the image's boxes by this user: pre-labels kept become theirs, changed
    boxes are edits, left-out ones are withdrawn, boxes without ``id`` are added (all
    append-only). The image then counts as reviewed, also with no boxes."""
    boxes = [b.model_dump(by_alias=True) for b in body.boxes]
    out = await ctx.write(lambda s: save_boxes(s, p.user, item, boxes))
    ctx.box_queue.saved(item)
    return out


@router.post("/api/boxes/{item}/skip")
async def api_skip_image(item: ItemPath, p: Annotator, ctx: Ctx):
    """Next image without saving: this one is not offered to this user again in this server
    session. Writes nothing."""
    if not ctx.readers.store().has_item(item):
        raise UnknownItemError(f"no item with id {item} in this project")
    ctx.box_queue.skip(p.user.name, item)
    return {"ok": True, "item": item}
