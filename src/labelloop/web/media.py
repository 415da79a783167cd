"""Serving an item's image: only the very bytes that were imported, from inside the folder
they were imported from.

The store records, per image item, the absolute path it was read from (``uri``, resolved at
import), its path relative to the import folder (``external_id``) and the sha256 of its bytes
(``content_hash``). At serve time the file's real path (symlinks resolved) must still lie in
that folder and its bytes must still hash to ``content_hash``; anything else (missing, moved,
swapped for a symlink, edited) is refused with 410 and a message that says what to do.
The bytes are read once, checked, and served from memory, so what is checked is what is sent.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections import OrderedDict
from pathlib import Path, PurePosixPath

from ..errors import LabelloopError
from ..store import Item

__all__ = ["MediaChangedError", "image_bytes", "thumbnail", "media_type"]

_MEDIA_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".gif": "image/gif",
                ".bmp": "image/bmp", ".webp": "image/webp", ".tif": "image/tiff", ".tiff": "image/tiff"}


class MediaChangedError(LabelloopError):
    """The file of an image item is no longer what was imported."""

    kind = "media_changed"
    http_status = 410


def import_root(item: Item) -> Path:
    """The folder the item was imported from: ``uri`` minus its ``external_id`` tail (or the
    file's own folder when they do not line up, e.g. for items of older imports)."""
    uri = Path(item.uri)
    rel = PurePosixPath(item.external_id or uri.name).parts
    if len(rel) <= len(uri.parts) - 1 and uri.parts[len(uri.parts) - len(rel):] == rel:
        return Path(*uri.parts[:len(uri.parts) - len(rel)])
    return uri.parent


def image_bytes(item: Item) -> bytes:
    """The imported bytes of an image item, re-checked now (see the module docstring)."""
    fix = f"re-import the folder (`labelloop import {import_root(item)}`) or restore the file"
    root = os.path.realpath(import_root(item))
    real = os.path.realpath(item.uri)
    if not os.path.isfile(real):
        raise MediaChangedError(f"the image file of item {item.id} is missing on the server "
                                f"({item.external_id}); {fix}")
    if os.path.commonpath([root, real]) != root:
        raise MediaChangedError(f"the image file of item {item.id} now points outside the folder it was imported "
                                f"from ({item.external_id}); it is not served. {fix}")
    try:
        fd = os.open(real, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        with os.fdopen(fd, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise MediaChangedError(f"the image file of item {item.id} cannot be read ({exc.strerror}); {fix}") from None
    if hashlib.sha256(data).hexdigest() != item.content_hash:
        raise MediaChangedError(f"the image file of item {item.id} ({item.external_id}) changed since import; "
                                f"it is not served. To label the new content, {fix.replace('re-import', 'import')} "
                                "under a new name")
    return data


def media_type(item: Item) -> str:
    return _MEDIA_TYPES.get(Path(item.uri).suffix.lower(), "application/octet-stream")


_THUMBS: OrderedDict[tuple[str, int], bytes] = OrderedDict()   # (content hash, width) -> PNG
_THUMBS_MAX = 4096
_lock = threading.Lock()


def _render_thumbnail(data: bytes, width: int) -> bytes:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as im:
        im.load()
        if im.mode not in ("RGB", "L"):
            im = im.convert("RGBA").convert("RGB") if im.mode != "P" else im.convert("RGB")
        im.thumbnail((width, width))
        buf = io.BytesIO()
        im.save(buf, format="PNG")
    return buf.getvalue()


def thumbnail(item: Item, width: int) -> bytes:
    """A PNG at most ``width`` wide and high of the checked bytes (cached by content)."""
    data = image_bytes(item)   # checked on every request, cached or not
    key = (item.content_hash, width)
    with _lock:
        png = _THUMBS.get(key)
        if png is not None:
            _THUMBS.move_to_end(key)
            return png
    png = _render_thumbnail(data, width)
    with _lock:
        _THUMBS[key] = png
        while len(_THUMBS) > _THUMBS_MAX:
            _THUMBS.popitem(last=False)
    return png
