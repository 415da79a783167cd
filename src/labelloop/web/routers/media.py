"""Images by item id only, re-checked against what was imported (see ``web.media``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response

from ...errors import UnknownItemError
from ..context import ASCII_ID, Annotator, Ctx
from ..media import image_bytes, media_type, thumbnail
from ..schemas import ErrorOut

router = APIRouter(tags=["queue"])


@router.get("/media/{ref}", responses={200: {"content": {"image/png": {}}}, 410: {
    "model": ErrorOut, "description": "the file changed, moved or left its import folder since import"}})
def media(ref: str, p: Annotator, ctx: Ctx, w: Annotated[int | None, Query(ge=16, le=1024)] = None):
    """The image of an item, by item id only; ``w``: a thumbnail at most this wide and high."""
    if not ASCII_ID.fullmatch(ref):
        raise UnknownItemError(f"no item {ref[:40]!r}: media are addressed by item id (digits 0-9)")
    it = ctx.readers.store().items([int(ref)])[0]   # UnknownItemError (404) if there is none
    if it.modality != "image" or not it.uri:
        raise UnknownItemError(f"item {it.id} is a text item; its text is in the JSON")
    headers = {"Cache-Control": "private, max-age=86400"}
    if w is not None:
        return Response(thumbnail(it, w), media_type="image/png", headers=headers)
    return Response(image_bytes(it), media_type=media_type(it), headers=headers)
