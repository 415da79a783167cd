"""Label Studio JSON: a list of tasks ``{"data": {...}, "annotations": [...], "predictions": [...]}``
(https://labelstud.io/guide/task_format, https://labelstud.io/guide/predictions).

- ``data.image`` (an image task: a URL or path) or ``data.text`` (a text task); the other data
  keys are the record's ``meta``.
- A result of type ``choices`` holds classes (``value.choices``); one of type
  ``rectanglelabels`` a box in percent of the image (``value.x y width height`` 0..100 with
  ``original_width`` / ``original_height`` in pixels beside it). Other result types (polygons,
  text spans, ...) are not read; the collection's ``notes`` count them.
- ``annotations``: people's work; the last one not cancelled is the record's ``labels`` and
  ``boxes``. ``predictions``: a model's; the last one is ``predicted`` (its ``score``) and
  ``predicted_boxes`` (each result's ``score``).

The writer names the controls ``choice`` and ``label`` on an ``image`` / ``text`` object;
:func:`labelstudio_config` gives the matching labeling configuration to paste into a Label
Studio project, so the tasks import there with their annotations and predictions.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path
from xml.sax.saxutils import quoteattr

from ..errors import ValidationError
from .model import Box, Collection, Record, need_size, number, plain, read_json, write_text_atomic

CHOICE, RECT = "choice", "label"   # control names the writer uses (from_name)


def read_labelstudio(path: str | Path) -> Collection:
    path = Path(path).expanduser()
    doc = read_json(path, "Label Studio")
    name = path.name
    if isinstance(doc, dict) and "data" in doc:
        doc = [doc]
    if not isinstance(doc, list):
        raise ValidationError(f"{name} is not a Label Studio export: expected a list of tasks "
                              "(export the project as 'JSON', not 'JSON-MIN' or CSV)")
    records, skipped = [], Counter()
    for n, task in enumerate(doc):
        where = f"{name}: task {n + 1}" + (f" (id {task['id']})" if isinstance(task, dict) and "id" in task else "")
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise ValidationError(f"{where}: expected an object with a 'data' object, got {str(task)[:80]}")
        data = task["data"]
        rec = _record(data, where)
        done = [a for a in _list(task, "annotations", where) if not a.get("was_cancelled")]
        size = None
        if done:
            rec.labels, rec.boxes, _, size = _results(done[-1], f"{where} annotation", skipped)
        preds = _list(task, "predictions", where)
        if preds:
            rec.predicted, rec.predicted_boxes, score, p_size = _results(preds[-1], f"{where} prediction", skipped)
            p_score = preds[-1].get("score")
            rec.score = number(p_score, f"{where} prediction score") if p_score is not None else score
            size = size or p_size
        if size:
            rec.width, rec.height = size
        records.append(rec)
    notes = [f"{name}: {k} results of type {t!r} were not read (only choices and rectanglelabels are)"
             for t, k in sorted(skipped.items())]
    return Collection([], records, notes).with_classes_of_records()


def _record(data: dict, where: str) -> Record:
    meta = {k: v for k, v in data.items() if k not in ("image", "text")}
    if isinstance(data.get("image"), str) and data["image"].strip():
        return Record(path=image_path(data["image"]), meta=meta)
    if isinstance(data.get("text"), str):
        return Record(text=data["text"], meta=meta)
    raise ValidationError(f"{where}: data has no 'image' or 'text' (its keys: {', '.join(data) or 'none'}); "
                          "labelloop reads tasks whose data holds the image URL as 'image' or the text as 'text'")


def _list(task: dict, key: str, where: str) -> list[dict]:
    value = task.get(key) or []
    if not isinstance(value, list) or not all(isinstance(a, dict) for a in value):
        raise ValidationError(f"{where}: '{key}' must be a list of objects")
    return value


def _results(ann: dict, where: str, skipped: Counter
             ) -> tuple[list[str], list[Box], float | None, tuple[int, int] | None]:
    """(classes, boxes, best choice score, the image size the boxes give) of one annotation."""
    labels, boxes, scores, size = [], [], [], None
    results = ann.get("result") or []
    if not isinstance(results, list):
        raise ValidationError(f"{where}: 'result' must be a list")
    for n, res in enumerate(results):
        w = f"{where} result {n + 1}"
        if not isinstance(res, dict) or not isinstance(res.get("value"), dict):
            raise ValidationError(f"{w}: expected an object with a 'value' object")
        value, kind = res["value"], res.get("type")
        score = number(res["score"], f"{w} score") if res.get("score") is not None else None
        if kind == "choices":
            choices = value.get("choices")
            if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
                raise ValidationError(f"{w}: value.choices must be a list of class names")
            labels += [c for c in choices if c not in labels]
            if score is not None:
                scores.append(score)
        elif kind == "rectanglelabels":
            names = value.get("rectanglelabels")
            if not isinstance(names, list) or len(names) != 1 or not isinstance(names[0], str):
                raise ValidationError(f"{w}: value.rectanglelabels must name one class, got {names!r}")
            if value.get("rotation"):
                raise ValidationError(f"{w}: a rotated rectangle ({value['rotation']} degrees); labelloop boxes "
                                      "are axis-aligned: straighten it in Label Studio first")
            if "original_width" not in res or "original_height" not in res:
                raise ValidationError(f"{w}: no original_width / original_height, so the percent box cannot "
                                      "be turned into pixels; export the tasks from Label Studio again (JSON)")
            W = int(number(res["original_width"], f"{w} original_width", minimum=1))
            H = int(number(res["original_height"], f"{w} original_height", minimum=1))
            x, y = (number(value.get(k), f"{w} value.{k}") for k in ("x", "y"))
            bw, bh = (number(value.get(k), f"{w} value.{k}", minimum=0) for k in ("width", "height"))
            boxes.append(Box(x * W / 100, y * H / 100, bw * W / 100, bh * H / 100, names[0], score))
            size = (W, H)
        else:
            skipped[str(kind)] += 1
    return labels, boxes, (max(scores) if scores else None), size


def image_path(url: str) -> str:
    """The file a Label Studio image URL points at: local storage (``/data/local-files/?d=``)
    gives its path; an upload (``/data/upload/<project>/<8 hex>-name``) or a web URL its file
    name."""
    url = url.strip()
    if "?d=" in url:
        from urllib.parse import unquote

        return unquote(url.split("?d=", 1)[1])
    m = re.match(r"^/data/upload/\d+/(?:[0-9a-f]{8}-)?(.+)$", url)
    if m:
        return m.group(1)
    if re.match(r"^[a-z][a-z0-9+.-]*://", url, re.I):
        return url.rsplit("/", 1)[-1].split("?")[0]
    return url


def write_labelstudio(collection: Collection, path: str | Path, *, image_url_prefix: str = "") -> Path:
    """One task per record: ``labels``/``boxes`` as an annotation, ``predicted``/
    ``predicted_boxes`` as a prediction with its scores. ``image_url_prefix`` is put before
    each image path (e.g. ``/data/local-files/?d=photos/`` for Label Studio local storage)."""
    tasks = []
    for i, r in enumerate(collection.records, start=1):
        obj = "image" if r.path is not None else "text"
        data = dict(r.meta) | ({"image": image_url_prefix + r.path} if r.path is not None else {"text": r.text})
        task: dict = {"id": i, "data": data}
        if r.labels or r.boxes:
            task["annotations"] = [{"result": _write_results(r, r.labels, r.boxes, None, obj),
                                    "was_cancelled": False, "ground_truth": False}]
        if r.predicted or r.predicted_boxes:
            pred = {"model_version": "labelloop", "result": _write_results(r, r.predicted, r.predicted_boxes, r.score, obj)}
            if r.score is not None:
                pred["score"] = r.score
            task["predictions"] = [pred]
        tasks.append(task)
    return write_text_atomic(Path(path).expanduser(), json.dumps(tasks, ensure_ascii=False, indent=1))


def _write_results(r: Record, labels: list[str], boxes: list[Box], score: float | None, obj: str) -> list[dict]:
    out = []
    if labels:
        res = {"id": f"c{len(out)}", "type": "choices", "from_name": CHOICE, "to_name": obj,
               "value": {"choices": list(labels)}}
        if score is not None:
            res["score"] = score
        out.append(res)
    if boxes:
        W, H = need_size(r, "Label Studio")
    for b in boxes:
        res = {"id": f"b{len(out)}", "type": "rectanglelabels", "from_name": RECT, "to_name": obj,
               "original_width": W, "original_height": H, "image_rotation": 0,
               "value": {"x": plain(b.x * 100 / W), "y": plain(b.y * 100 / H), "width": plain(b.w * 100 / W),
                         "height": plain(b.h * 100 / H), "rotation": 0, "rectanglelabels": [b.label]}}
        if b.score is not None:
            res["score"] = b.score
        out.append(res)
    return out


def labelstudio_config(classes: list[str], *, modality: str = "image", boxes: bool = False,
                       multilabel: bool = False) -> str:
    """The labeling configuration (XML) whose control names match :func:`write_labelstudio`."""
    obj = ('  <Image name="image" value="$image"/>' if modality == "image"
           else '  <Text name="text" value="$text"/>')
    lines = ["<View>", obj]
    if boxes and modality == "image":
        lines.append(f'  <RectangleLabels name="{RECT}" toName="image">')
        lines += [f"    <Label value={quoteattr(c)}/>" for c in classes]
        lines.append("  </RectangleLabels>")
    choice = "multiple" if multilabel else "single"
    lines.append(f'  <Choices name="{CHOICE}" toName="{"image" if modality == "image" else "text"}" choice="{choice}">')
    lines += [f"    <Choice value={quoteattr(c)}/>" for c in classes]
    lines += ["  </Choices>", "</View>"]
    return "\n".join(lines) + "\n"
