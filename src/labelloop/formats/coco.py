"""COCO JSON: ``images``, ``annotations``, ``categories``.

An annotation with a ``bbox`` ``[x, y, width, height]`` (pixels, top-left origin) is a box; one
without is an image-level class (the iNaturalist convention for classification in COCO form).
An annotation with a ``score`` is a model's (COCO's results convention): a predicted box, or
the image's predicted class. Category ids are written 1..C in ``Collection.classes`` order;
read files may use any ids.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import ValidationError
from .model import Box, Collection, Record, number, plain, read_json, write_text_atomic

_IMAGE_KEYS = ("id", "file_name", "width", "height")


def read_coco(path: str | Path) -> Collection:
    path = Path(path).expanduser()
    doc = read_json(path, "COCO")
    name = path.name
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) \
            or not isinstance(doc.get("categories"), list):
        raise ValidationError(f"{name} is not COCO JSON: expected an object with lists 'images', "
                              "'annotations' and 'categories'")
    cat_name: dict = {}
    for n, c in enumerate(doc["categories"]):
        if not isinstance(c, dict) or "id" not in c or not isinstance(c.get("name"), str) or not c["name"].strip():
            raise ValidationError(f"{name}: categories[{n}] needs an 'id' and a non-empty 'name', got {c!r}")
        if c["id"] in cat_name:
            raise ValidationError(f"{name}: categories[{n}]: category id {c['id']!r} is used twice; "
                                  "give every category its own id")
        cat_name[c["id"]] = c["name"].strip()
    records: dict = {}
    for n, im in enumerate(doc["images"]):
        where = f"{name}: images[{n}]"
        if not isinstance(im, dict) or "id" not in im or not isinstance(im.get("file_name"), str):
            raise ValidationError(f"{where} needs an 'id' and a 'file_name', got {im!r}")
        if im["id"] in records:
            raise ValidationError(f"{where}: image id {im['id']!r} is used twice; give every image its own id")
        size = [im.get(k) for k in ("width", "height")]
        w, h = (int(number(v, f"{where} {k}", minimum=0)) if v is not None else None
                for v, k in zip(size, ("width", "height")))
        meta = {k: v for k, v in im.items() if k not in _IMAGE_KEYS}
        records[im["id"]] = Record(path=im["file_name"], width=w, height=h, meta=meta)
    anns = doc.get("annotations", [])
    if not isinstance(anns, list):
        raise ValidationError(f"{name}: 'annotations' must be a list")
    for n, a in enumerate(anns):
        where = f"{name}: annotations[{n}]" + (f" (id {a['id']})" if isinstance(a, dict) and "id" in a else "")
        if not isinstance(a, dict):
            raise ValidationError(f"{where}: expected an object, got {a!r}")
        rec = records.get(a.get("image_id"))
        if rec is None:
            raise ValidationError(f"{where}: image_id {a.get('image_id')!r} is not in 'images'; "
                                  "add the image or remove the annotation")
        if a.get("category_id") not in cat_name:
            raise ValidationError(f"{where}: category_id {a.get('category_id')!r} is not in 'categories'; "
                                  f"the ids are {', '.join(map(str, cat_name))}")
        label = cat_name[a["category_id"]]
        score = number(a["score"], f"{where} score") if a.get("score") is not None else None
        bbox = a.get("bbox")
        if bbox is None or bbox == []:
            if score is None:
                rec.labels.append(label)
            else:
                rec.predicted.append(label)
                rec.score = score if rec.score is None else max(rec.score, score)
            continue
        if not isinstance(bbox, list) or len(bbox) != 4:
            raise ValidationError(f"{where}: bbox must be [x, y, width, height] in pixels, got {bbox!r}")
        x, y = (number(v, f"{where} bbox") for v in bbox[:2])
        w, h = (number(v, f"{where} bbox width/height", minimum=0) for v in bbox[2:])
        box = Box(x, y, w, h, label, score)
        (rec.boxes if score is None else rec.predicted_boxes).append(box)
    return Collection(list(dict.fromkeys(cat_name.values())), list(records.values()))


def write_coco(collection: Collection, path: str | Path) -> Path:
    """One ``images`` entry per image record (with its ``meta`` as extra fields), categories
    1..C; image-level classes as annotations without ``bbox``; predictions with ``score``."""
    coll = collection.with_classes_of_records()
    cat_id = {c: i + 1 for i, c in enumerate(coll.classes)}
    images, anns = [], []

    def ann(image_id: int, label: str, box: Box | None, score: float | None) -> None:
        a = {"id": len(anns) + 1, "image_id": image_id, "category_id": cat_id[label]}
        if box is not None:
            a.update(bbox=[plain(box.x), plain(box.y), plain(box.w), plain(box.h)],
                     area=plain(box.w * box.h), iscrowd=0)
        if score is not None:
            a["score"] = score
        anns.append(a)

    for i, r in enumerate(coll.records, start=1):
        if r.path is None:
            raise ValidationError(f"COCO holds images; record {r.name} is a text: use Label Studio or HF for texts")
        im = {k: v for k, v in r.meta.items() if k not in _IMAGE_KEYS} | {"id": i, "file_name": r.path}
        if r.width is not None and r.height is not None:
            im.update(width=r.width, height=r.height)
        images.append(im)
        for label in r.labels:
            ann(i, label, None, None)
        for label in r.predicted:
            ann(i, label, None, r.score if r.score is not None else 1.0)
        for b in r.boxes:
            ann(i, b.label, b, None)
        for b in r.predicted_boxes:
            ann(i, b.label, b, b.score if b.score is not None else 1.0)
    doc = {"images": images, "annotations": anns,
           "categories": [{"id": cat_id[c], "name": c, "supercategory": ""} for c in coll.classes]}
    return write_text_atomic(Path(path), json.dumps(doc, ensure_ascii=False, indent=1))
