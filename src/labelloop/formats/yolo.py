"""YOLO txt: one ``labels/<image stem>.txt`` per image, a line per box
``class_index cx cy w h`` normalised to [0, 1] by the image's size (a sixth number, when
present, is a model's confidence), class names in ``classes.txt`` (one per line) or
``data.yaml`` (``names``). An image without a label file has no boxes. YOLO has no
image-level classes: records' ``labels`` are not written.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import MissingDependencyError, ValidationError
from .model import Box, Collection, Record, image_size, need_size, number, write_text_atomic
from .imagefolder import image_files


def read_yolo(labels_dir: str | Path, images_dir: str | Path, *, classes: list[str] | None = None) -> Collection:
    """Every image under ``images_dir`` with the boxes of its label file (same relative path,
    ``.txt``) under ``labels_dir``. Class names: ``classes``, else ``classes.txt`` or
    ``data.yaml`` in ``labels_dir`` or its parent."""
    labels_dir, images_dir = Path(labels_dir).expanduser(), Path(images_dir).expanduser()
    for d, what in ((labels_dir, "labels"), (images_dir, "images")):
        if not d.is_dir():
            raise ValidationError(f"{d} is not a folder: give the YOLO {what} folder")
    names = classes if classes is not None else _class_names(labels_dir)
    images = image_files(images_dir)
    records = []
    used = set()
    for rel in images:
        txt = labels_dir / Path(rel).with_suffix(".txt")
        rec = Record(path=rel)
        records.append(rec)
        if not txt.is_file():
            continue
        used.add(txt.resolve())
        size = image_size(images_dir / rel)
        if size is None:
            raise ValidationError(f"{images_dir / rel}: not a readable image; YOLO boxes need its size")
        rec.width, rec.height = size
        rec.boxes, rec.predicted_boxes = _read_txt(txt, names, *size)
    orphans = sorted(p for p in labels_dir.rglob("*.txt")
                     if p.resolve() not in used and p.name != "classes.txt")
    if orphans:
        raise ValidationError(
            f"{orphans[0]}: no image with this name under {images_dir} ({len(orphans)} label files have none); "
            "give the images folder the label files belong to, or remove the stray files")
    return Collection(list(names), records)


def _class_names(labels_dir: Path) -> list[str]:
    for d in (labels_dir, labels_dir.parent):
        if (d / "classes.txt").is_file():
            return [ln.strip() for ln in (d / "classes.txt").read_text(encoding="utf-8").splitlines() if ln.strip()]
        for name in ("data.yaml", "data.yml"):
            if (d / name).is_file():
                return _yaml_names(d / name)
    raise ValidationError(f"no classes.txt or data.yaml in {labels_dir} or {labels_dir.parent}: YOLO labels "
                          "hold class numbers; give the class names (a classes.txt, one name per line)")


def _yaml_names(path: Path) -> list[str]:
    try:
        import yaml
    except ImportError:
        raise MissingDependencyError.for_extra("yaml", "formats") from None
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValidationError(f"{path.name} is not valid YAML ({str(exc).splitlines()[0]})") from None
    names = doc.get("names") if isinstance(doc, dict) else None
    if isinstance(names, dict) and all(isinstance(k, int) for k in names):
        if sorted(names) != list(range(len(names))):
            raise ValidationError(f"{path.name}: names must be numbered 0..{len(names) - 1}, got {sorted(names)}")
        names = [names[i] for i in range(len(names))]
    if not isinstance(names, list) or not all(isinstance(n, (str, int)) for n in names):
        raise ValidationError(f"{path.name}: expected 'names' as a list or a 0..n-1 mapping of class names")
    return [str(n) for n in names]


def _read_txt(path: Path, names: list[str], width: int, height: int) -> tuple[list[Box], list[Box]]:
    boxes, predicted = [], []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path.name}:{lineno}"
        parts = line.split()
        if len(parts) not in (5, 6):
            raise ValidationError(f"{where}: expected 'class cx cy w h' (and an optional confidence), got {line!r}; "
                                  "segmentation polygons are not supported")
        try:
            k, values = int(parts[0]), [float(v) for v in parts[1:]]
        except ValueError:
            raise ValidationError(f"{where}: expected an integer class and numbers, got {line!r}") from None
        if not 0 <= k < len(names):
            raise ValidationError(f"{where}: class {k} but there are {len(names)} class names (0..{len(names) - 1}); "
                                  "add the missing names to classes.txt / data.yaml")
        cx, cy, w, h = (number(v, where, minimum=0) for v in values[:4])
        score = number(values[4], where) if len(values) == 5 else None
        box = Box((cx - w / 2) * width, (cy - h / 2) * height, w * width, h * height, names[k], score)
        (boxes if score is None else predicted).append(box)
    return boxes, predicted


def write_yolo(collection: Collection, out_dir: str | Path) -> Path:
    """``out_dir/labels/<path>.txt`` for every image record (an empty file for one without
    boxes), ``classes.txt`` and ``data.yaml`` (``names``). Images are not copied."""
    coll = collection.with_classes_of_records()
    out = Path(out_dir).expanduser()
    index = {c: i for i, c in enumerate(coll.classes)}
    for r in coll.records:
        if r.path is None:
            raise ValidationError(f"YOLO holds images; record {r.name} is a text")
        lines = []
        if r.boxes or r.predicted_boxes:
            width, height = need_size(r, "YOLO")
            for b in [*r.boxes, *r.predicted_boxes]:
                values = [(b.x + b.w / 2) / width, (b.y + b.h / 2) / height, b.w / width, b.h / height]
                if b.score is not None:
                    values.append(b.score)
                lines.append(" ".join([str(index[b.label]), *(f"{v:.10g}" for v in values)]))
        write_text_atomic(out / "labels" / Path(r.path).with_suffix(".txt"), "".join(ln + "\n" for ln in lines))
    write_text_atomic(out / "classes.txt", "".join(c + "\n" for c in coll.classes))
    # JSON strings are YAML scalars: names with ':' or quotes stay intact without a YAML writer
    yaml = "names:\n" + "".join(f"  {i}: {json.dumps(c, ensure_ascii=False)}\n" for i, c in enumerate(coll.classes))
    write_text_atomic(out / "data.yaml", f"nc: {len(coll.classes)}\n" + yaml)
    return out
