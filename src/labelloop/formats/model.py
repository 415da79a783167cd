"""The neutral model every reader returns and every writer takes.

A :class:`Collection` is the class names (their order is the class index of YOLO, COCO's
category ids in written files and a ``ClassLabel``'s integers) and one :class:`Record` per
image or text. Coordinates are image pixels, origin at the top-left corner, ``x`` to the
right and ``y`` down; a box is its top-left corner plus width and height (COCO's ``bbox``).

What a record holds:

- ``labels``: image- or text-level classes given by a person or taken as truth (one for
  classification, several for multi-label).
- ``boxes``: objects given by a person, each :class:`Box` with its class.
- ``predicted`` / ``predicted_boxes``: what a model proposed (Label Studio ``predictions``, COCO
  annotations with a ``score``); ``score`` is the model's confidence in ``predicted``, each
  predicted box has its own.
- ``width`` / ``height``: the image's size in pixels when known (YOLO and Label Studio store
  boxes relative to it, so their writers need it).
- ``meta``: extra per-record fields a format carries through (Label Studio ``data`` keys, COCO
  image fields, Hugging Face columns); values are JSON scalars.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ValidationError


@dataclass(frozen=True)
class Box:
    """An axis-aligned box in image pixels: top-left corner (x, y), width w, height h."""

    x: float
    y: float
    w: float
    h: float
    label: str
    score: float | None = None   # a model's confidence; None for a box a person drew

    @property
    def x2(self) -> float:
        return self.x + self.w

    @property
    def y2(self) -> float:
        return self.y + self.h


@dataclass
class Record:
    """One image (``path``, relative to the dataset's image folder, with ``/``) or one text."""

    path: str | None = None
    text: str | None = None
    labels: list[str] = field(default_factory=list)
    boxes: list[Box] = field(default_factory=list)
    width: int | None = None
    height: int | None = None
    predicted: list[str] = field(default_factory=list)
    score: float | None = None
    predicted_boxes: list[Box] = field(default_factory=list)
    meta: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        """How an error message names the record."""
        if self.path is not None:
            return self.path
        text = self.text or ""
        return repr(text[:40] + ("..." if len(text) > 40 else ""))


@dataclass
class Collection:
    """Class names (index = class index) and the records; ``notes`` says what a reader could
    not carry over (e.g. polygon results of a Label Studio export), once per kind."""

    classes: list[str] = field(default_factory=list)
    records: list[Record] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def with_classes_of_records(self) -> "Collection":
        """The same records; ``classes`` extended (in order of first use) by every class a
        record uses that is not listed yet."""
        classes = list(self.classes)
        seen = set(classes)
        for r in self.records:
            for name in (*r.labels, *r.predicted, *(b.label for b in (*r.boxes, *r.predicted_boxes))):
                if name not in seen:
                    seen.add(name)
                    classes.append(name)
        return Collection(classes, self.records, list(self.notes))


# ----------------------------------------------------------------- shared helpers
def read_json(path: str | Path, what: str):
    """Parse a JSON file; a bad file is a ValidationError that names it, the line and column."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValidationError(f"{path} is not a file: give the {what} JSON file")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValidationError(f"{path.name} is not UTF-8 text (byte {exc.start}): "
                              f"give the {what} JSON file as exported") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"{path.name} is not valid JSON: {exc.msg} at line {exc.lineno} column "
                              f"{exc.colno}; give the {what} file as exported, unedited") from None


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file: a failed write leaves no half file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def number(value, where: str, *, minimum: float | None = None) -> float:
    """A finite number from a parsed file, else a ValidationError naming ``where``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValidationError(f"{where}: expected a number, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValidationError(f"{where}: must be at least {minimum:g}, got {value!r}")
    return float(value)


def plain(value: float) -> float | int:
    """A coordinate as files usually write it: 12 rather than 12.0."""
    return int(value) if float(value).is_integer() else float(value)


def need_size(record: Record, fmt: str) -> tuple[int, int]:
    if not record.width or not record.height:
        raise ValidationError(
            f"{record.name}: {fmt} stores boxes relative to the image size, and this record has no "
            "width/height; give the record its image size (formats.image_size(path))")
    return record.width, record.height


def image_file(images_root, path: str) -> Path:
    """Where the image of a record's ``path`` lies: ``images_root`` is the folder paths are
    relative to (None: the working directory) or a mapping path -> file."""
    if isinstance(images_root, Mapping):
        return Path(images_root[path])
    return Path(images_root if images_root is not None else ".").expanduser() / path


def image_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) from the image file's header (no decoding), or None if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.size
    except (OSError, UnidentifiedImageError, ValueError):
        return None
