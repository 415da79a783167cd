"""The box editor of detection projects: which image comes next, an image's boxes as JSON, and
how a person's final box list for an image becomes append-only box rows.

Saving an image (:func:`save_boxes`, on the writer thread) compares the list the browser sends
with the boxes in effect and writes only the difference, each through :class:`Project`:

- a box the list names by ``id`` and leaves as it was: a machine pre-label becomes the
  person's (``Project.edit_box`` with nothing changed: a human row replacing it), a human or
  imported box stays;
- a box named by ``id`` that moved, was resized or got another class: ``Project.edit_box``;
- a box in effect that the list leaves out: withdrawn (``edit_box(delete=True)``);
- a box without ``id``: ``Project.add_boxes(source="human")``.

Everything is checked before the first write, so a rejected list changes nothing (each row is
then its own ``Project`` call; only this writer thread writes while the server runs). A save is
a person's review of the whole image (``Project.mark_reviewed``, also when it leaves no box), so
the image is done for ``train``, ``next``, ``prelabel``, ``autolabel`` and export: which images
are done is ``Project.done_images``.
"""

from __future__ import annotations

import io
import math
import threading
import time
from collections.abc import Sequence

from ..errors import LabelloopError, NotReadyError, UnknownClassError, UnknownItemError, ValidationError
from ..project import Project
from ..store import Store
from .auth import User
from .media import image_bytes

__all__ = ["BoxQueue", "image_size", "image_json", "save_boxes", "require_detection", "MAX_BOXES", "TOLERANCE"]

MAX_BOXES = 500          # boxes on one image in one save
N_RANKED = 50            # images Project.next ranks per prelabel run for the editor
TOLERANCE = 0.01         # pixels: a coordinate that moved less than this did not move


def require_detection(project: Project) -> None:
    if project.task != "detection":
        raise NotReadyError(f"the box editor is for detection projects; this is a {project.task} project: "
                            "label it on /queue")


def image_size(item) -> tuple[int, int]:
    """(width, height) in pixels of an image item, read from its file (checked like /media)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(image_bytes(item))) as im:
            return im.size
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise ValidationError(f"item {item.id}: cannot read its image ({exc})") from None


def _box_json(b: dict) -> dict:
    return {"id": b["id"], "x": b["x"], "y": b["y"], "w": b["w"], "h": b["h"], "class": b["class"],
            "source": b["source"], "score": None if b["score"] is None else round(float(b["score"]), 4),
            "annotator": b["annotator"]}


def image_json(project: Project, item_id: int, reason: str = "") -> dict:
    """One image for the editor: id, name, media URL, size and the boxes in effect."""
    from pathlib import PurePath

    (it,) = project.store.items([item_id])
    if it.modality != "image":
        raise UnknownItemError(f"item {item_id} is not an image")
    width, height = image_size(it)
    return {"id": it.id, "name": PurePath(it.external_id).name if it.external_id else f"#{it.id}",
            "media": f"/media/{it.id}", "width": width, "height": height, "reason": reason,
            "boxes": [_box_json(b) for b in project.boxes(it.id)]}


class BoxQueue:
    """Which images the editor offers: not yet done (``Project.done_images``), minus those a
    user skipped in this server session and those handed to another user in the last
    :attr:`RESERVE` seconds (so two people do not box one image twice).

    Once a prelabel run exists (and the images are embedded), the first are the ones
    ``labelloop next`` would ask for: :meth:`Project.next`'s detection order (the least sure
    pre-labels, diverse), ranked once per prelabel run without recording a query run
    (``record=False``) and ranked again when all of its :data:`N_RANKED` images are done."""

    RESERVE = 600.0   # seconds an image handed out stays with its user

    def __init__(self):
        self._lock = threading.Lock()
        self._skipped: dict[str, set[int]] = {}
        self._reserved: dict[int, tuple[str, float]] = {}   # item -> (user, until)
        self._rank_lock = threading.Lock()   # one ranking at a time
        self._ranking: tuple[int | None, list[tuple[int, str]]] = (None, [])   # (prelabel run, ranked)

    def saved(self, item_id: int) -> None:
        with self._lock:
            self._reserved.pop(int(item_id), None)

    def take(self, project: Project, user: str, n: int, exclude: set[int]) -> tuple[list[tuple[int, str]], int]:
        """Up to ``n`` (item id, why) for ``user``, now reserved for them, and how many images
        are not yet reviewed in all."""
        pending = self.pending(project, user)
        now = time.monotonic()
        out = []
        with self._lock:
            for i, why in pending:
                if len(out) >= n:
                    break
                held = self._reserved.get(i)
                if i in exclude or (held is not None and held[0] != user and held[1] > now):
                    continue
                self._reserved[i] = (user, now + self.RESERVE)
                out.append((i, why))
        return out, len(pending)

    def skip(self, user: str, item_id: int) -> None:
        with self._lock:
            self._skipped.setdefault(user, set()).add(int(item_id))
            self._reserved.pop(int(item_id), None)

    def ranked(self, project: Project, done: set[int]) -> list[tuple[int, str]]:
        """(item id, why) of :meth:`Project.next`'s detection choice for the last prelabel run
        ([] before one, or when the images are not embedded), cached until the next prelabel
        run or until every image of it is done."""
        last = project.store.last_run_id("prelabel")
        if last is None:
            return []
        with self._rank_lock:
            key, ranked = self._ranking
            if key == last and (not ranked or any(i not in done for i, _ in ranked)):
                return ranked
            try:
                rows = project.next(N_RANKED, seed=int(last), record=False)
            except LabelloopError:   # not embedded, or nothing left to ask: the plain order
                rows = []
            ranked = [(int(o["item"]), o["reason"]) for o in rows]
            self._ranking = (last, ranked)
            return ranked

    def pending(self, project: Project, user: str | None = None) -> list[tuple[int, str]]:
        """(item id, why) of the images not yet reviewed: :meth:`ranked` first, then those with
        machine pre-labels (they are the quickest to confirm and teach the detector the most
        about its errors), then the rest in import order."""
        reviewed = project.done_images()
        prelabeled = {b["item_id"] for b in project.store.current_boxes(sources=("machine",))}
        with self._lock:
            skipped = set(self._skipped.get(user, ())) if user else set()
        ids = [int(i) for i in project.store.item_ids() if int(i) not in reviewed and int(i) not in skipped]
        todo = set(ids)
        head = [(i, why) for i, why in self.ranked(project, reviewed) if i in todo]
        taken = {i for i, _ in head}
        first = [(i, "pre-labeled: check the machine's boxes") for i in ids if i in prelabeled and i not in taken]
        return head + first + [(i, "no boxes yet") for i in ids if i not in prelabeled and i not in taken]


# ---------------------------------------------------------------------------------- saving
def _where(i: int, b: dict) -> str:
    cls = b.get("class")
    return (f"box {i + 1}" + (f" (id {b['id']})" if b.get("id") else "") +
            f" at x={b['x']:g}, y={b['y']:g}, w={b['w']:g}, h={b['h']:g}" + (f", class {cls!r}" if cls else ""))


def _moved(a: dict, b: dict) -> bool:
    return any(abs(float(a[k]) - float(b[k])) > TOLERANCE for k in "xywh")


def save_boxes(store: Store, user: User, item_id: int, boxes: Sequence[dict]) -> dict:
    """Make ``boxes`` (dicts with x, y, w, h, class and, for a box already stored, its id) the
    boxes of image ``item_id`` by ``user``; returns what was written and the boxes now in effect.
    A list naming a box that is no longer in effect (someone saved this image meanwhile) is
    refused whole (409): reload the image."""
    project = Project.on_store(store)
    require_detection(project)
    if not store.has_item(item_id):
        raise UnknownItemError(f"no item with id {item_id} in this project")
    if len(boxes) > MAX_BOXES:
        raise ValidationError(f"item {item_id}: {len(boxes)} boxes in one save; at most {MAX_BOXES}")
    (it,) = store.items([item_id])
    width, height = image_size(it)
    current = {b["id"]: b for b in project.boxes(item_id)}
    classes = set(store.classes())
    seen: set[int] = set()
    plan_keep, plan_edit, plan_new = [], [], []
    for i, b in enumerate(boxes):
        where = _where(i, b)
        if b["class"] not in classes:
            raise UnknownClassError(f"item {item_id}: {where}: unknown class; classes: "
                                    f"{', '.join(sorted(classes)) or '(none)'}. Pick one with keys 1-9 "
                                    "or add it first (POST /api/classes)")
        old = current.get(b["id"]) if b.get("id") is not None else None
        if b.get("id") is not None:
            if old is None:
                raise NotReadyError(f"item {item_id}: {where}: box {b['id']} is not in effect on this image "
                                    "(someone saved it meanwhile, or the id is wrong): reload the image and "
                                    "edit the boxes it has now")
            if b["id"] in seen:
                raise ValidationError(f"item {item_id}: {where}: box {b['id']} is listed twice; list each box once")
            seen.add(b["id"])
        changed = old is None or _moved(old, b)
        if changed:   # the geometry the person made must lie on the image
            if not all(math.isfinite(float(b[k])) for k in "xywh"):
                raise ValidationError(f"item {item_id}: {where}: coordinates must be finite numbers")
            if b["w"] < 1 or b["h"] < 1:
                raise ValidationError(f"item {item_id}: {where}: a box needs a width and height of at least "
                                      "1 pixel: drag a larger box, or delete this one")
            if (b["x"] < -TOLERANCE or b["y"] < -TOLERANCE or b["x"] + b["w"] > width + TOLERANCE
                    or b["y"] + b["h"] > height + TOLERANCE):
                raise ValidationError(f"item {item_id}: {where}: lies outside the {width}x{height} image; "
                                      f"keep x, y >= 0, x + w <= {width} and y + h <= {height} "
                                      "(image pixels from the top-left corner)")
        if old is None:
            plan_new.append(b)
        elif changed or b["class"] != old["class"] or old["source"] == "machine":
            plan_edit.append((old, b))
        else:
            plan_keep.append(old)
    deleted = [old for bid, old in current.items() if bid not in seen]

    # every check passed: write (append-only rows through the Project API)
    accepted = edited = 0
    for old, b in plan_edit:
        kw = {k: float(b[k]) for k in "xywh"} if _moved(old, b) else {}
        project.edit_box(old["id"], **kw, class_name=b["class"] if b["class"] != old["class"] else None,
                         annotator=user.name)
        if kw or b["class"] != old["class"]:
            edited += 1
        else:
            accepted += 1
    for old in deleted:
        project.edit_box(old["id"], delete=True, annotator=user.name)
    if plan_new:
        project.add_boxes(item_id, [(float(b["x"]), float(b["y"]), float(b["w"]), float(b["h"]), b["class"])
                                    for b in plan_new], source="human", annotator=user.name)
    project.mark_reviewed(item_id, annotator=user.name)
    now = project.boxes(item_id)
    return {"ok": True, "item": int(item_id), "accepted": accepted, "edited": edited, "added": len(plan_new),
            "deleted": len(deleted), "kept": len(plan_keep), "boxes": [_box_json(b) for b in now]}
