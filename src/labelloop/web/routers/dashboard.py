"""The dashboard (counts, quality, plots) and its JSON twin, the plots as PNG, the label
export and ``labelloop status``."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import FileResponse, Response
from starlette.background import BackgroundTask

from ...errors import UnknownItemError
from ...project import EXPORT_FORMATS
from ...store import Store
from .. import plots
from ..context import Ctx, Reviewer, WebContext
from ..dashboard import dashboard_data, embedding_map
from ..render import page

router = APIRouter()



def _dashboard(ctx: WebContext, store: Store) -> tuple[dict, str]:
    version = ctx.version(store)
    data = ctx.cached("dashboard", version, lambda: dashboard_data(
        ctx.readers.project(), ctx.refresher.snapshot, ctx.refresher.status))
    return data, version


@router.get("/api/dashboard", tags=["dashboard"])
def api_dashboard(p: Reviewer, ctx: Ctx):
    """Counts, accuracy estimate, annotators and their agreement, learning curve,
    confidence histogram, class balance."""
    return _dashboard(ctx, ctx.readers.store())[0]


@router.get("/dashboard", include_in_schema=False)
def dashboard_page(p: Reviewer, ctx: Ctx):
    data, version = _dashboard(ctx, ctx.readers.store())
    return page("dashboard.html", title="Dashboard", user=p.user, csrf=p.csrf or "", page_id="dashboard", wide=True,
                data=data, version=version)


@router.get("/plots/{name}.png", tags=["dashboard"], responses={200: {"content": {"image/png": {}}}})
def plot(name: str, p: Reviewer, ctx: Ctx):
    """A dashboard picture: learning-curve, confidence, class-balance, embedding-map, annotators."""
    if name not in plots.PLOTS:
        raise UnknownItemError(f"no plot {name[:40]!r}; plots: {', '.join(plots.PLOTS)}")
    store = ctx.readers.store()
    data, version = _dashboard(ctx, store)

    def render():
        emb = None
        if name == "embedding-map":
            emb = ctx.cached("map", version, lambda: embedding_map(ctx.readers.project()))
        return plots.render(name, data, emb)

    png = ctx.cached(f"plot:{name}", version, render)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.get("/export", tags=["export"], responses={200: {"content": {"text/csv": {}, "application/x-ndjson": {}}}})
def export(p: Reviewer, ctx: Ctx, format: Literal[EXPORT_FORMATS] = "csv"):
    """Download one row per item with its current best label (as `labelloop export`)."""
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


@router.get("/api/status", tags=["dashboard"])
def api_status(p: Reviewer, ctx: Ctx):
    """``labelloop status`` plus the server's refresh state."""
    return {**ctx.readers.project().status(), "refresh": dict(ctx.refresher.status),
            "snapshot": ctx.refresher.snapshot.to_dict()}
