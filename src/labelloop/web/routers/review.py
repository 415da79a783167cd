"""Review of machine labels (or propagated predictions) of items no person labeled:
filter, then accept or fix in bulk. The page and its JSON twin."""

from __future__ import annotations

from typing import Annotated, Literal
from urllib.parse import parse_qs, urlencode

import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse

from ...errors import ValidationError
from .. import actions
from ..context import (Conf, Ctx, Reviewer, ReviewerForm, WebContext, as_int, check_csrf, form_value, item_json,
                       read_form)
from ..render import page
from ..schemas import ReviewIn

router = APIRouter(tags=["review"])

REVIEW_PAGE = 48   # tiles per page



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
        source = "machine" if store.has_source("machine") else "predicted"
    if source not in ("machine", "predicted"):
        raise ValidationError(f"source must be 'machine' or 'predicted', not {source!r}")
    lo = 0.0 if min_confidence is None else min_confidence
    hi = 1.0 if max_confidence is None else max_confidence
    rows: list[tuple[int, str, float]] = []
    if source == "machine":
        total, rows = store.machine_labels_page(lo=lo, hi=hi, class_name=label, descending=order == "desc",
                                                limit=limit, offset=offset)
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




def _review_args(source, label, min_confidence, max_confidence, order, offset):
    return dict(source=source or None, label=label or None, min_confidence=min_confidence,
                max_confidence=max_confidence, order=order or "desc", offset=offset, limit=REVIEW_PAGE)


@router.get("/api/review")
def api_review(p: Reviewer, ctx: Ctx, source: Literal["machine", "predicted"] | None = None, label: str = "",
               min_confidence: Conf = None, max_confidence: Conf = None,
               order: Literal["desc", "asc"] = "desc", offset: Annotated[int, Query(ge=0, le=10**9)] = 0):
    """Machine labels (or propagated predictions) of items no human labeled, filtered."""
    return review_data(ctx, **_review_args(source, label, min_confidence, max_confidence, order, offset))


@router.get("/review", include_in_schema=False)
def review_page(request: Request, p: Reviewer, ctx: Ctx, source: str = "", label: str = "", min_confidence: str = "",
                max_confidence: str = "", order: str = "desc", offset: str = "0", done: str = ""):
    if ctx.readers.project().task == "detection":   # pre-labels are reviewed box by box, in the box editor
        return RedirectResponse("/boxes", status_code=303)
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
                                           as_int(offset or "0", "offset")))
    query = {k: v for k, v in dict(source=data["source"], label=label, min_confidence=min_confidence,
                                   max_confidence=max_confidence, order=order).items() if v}
    flash = None
    if done.isdigit():
        flash = "1 label is now human-verified." if done == "1" else f"{done} labels are now human-verified."
    return page("review.html", title="Review", user=p.user, csrf=p.csrf or "", page_id="review", wide=True,
                flash=flash, data=data, query=query)


@router.post("/api/review")
async def api_review_post(body: ReviewIn, p: Reviewer, ctx: Ctx):
    """Accept (same label) or fix (another label) many items: human labels by this reviewer."""
    decisions = [(d.item, d.label) for d in body.items]
    out = await ctx.write(lambda s: actions.review_labels(s, p.user, decisions, body.key), refresh=True)
    return out


@router.post("/review", include_in_schema=False)
async def review_form(request: Request, p: ReviewerForm, ctx: Ctx):
    form = await read_form(request)
    check_csrf(p, form_value(form, "csrf_token"))
    bulk = form_value(form, "bulk_label").strip()
    decisions = []
    for v in form.get("item", []):
        item_id = as_int(v, "item")
        decisions.append((item_id, bulk or form_value(form, f"label_{item_id}")))
    out = await ctx.write(lambda s: actions.review_labels(s, p.user, decisions), refresh=True)
    back = dict(parse_qs(form_value(form, "back")))
    query = {k: v[0] for k, v in back.items() if k in ("source", "label", "min_confidence", "max_confidence", "order")}
    return RedirectResponse("/review?" + urlencode(query | {"done": out["appended"]}), status_code=303)
