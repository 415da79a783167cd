"""Hugging Face ``datasets``: a dataset folder written by ``save_to_disk``, read by
``load_from_disk`` (``pip install 'labelloop[formats]'``; imported only when used).

Columns the writer makes:

- ``image`` (``Image()``, the file's bytes embedded) and ``path`` (the record's path), or ``text``;
- ``label`` (``ClassLabel``, -1 for none) — or ``labels`` (``List(ClassLabel)``) when a record
  has several (multi-label);
- ``predicted`` (``ClassLabel``, -1 for none) and ``score`` when any record has a prediction;
- ``objects`` {``bbox`` [x, y, w, h] pixels, ``category`` ``ClassLabel``} when any has boxes;
- one column per ``meta`` key.

The reader takes the first ``ClassLabel`` / ``List(ClassLabel)`` column as the labels (class
names from the feature), an ``Image`` or ``text`` column as the item, and keeps the other
plain columns as ``meta``.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ..errors import MissingDependencyError, ValidationError
from .model import Box, Collection, Record, image_file

RESERVED = ("image", "path", "text", "label", "labels", "predicted", "score", "objects", "width", "height")


def _datasets():
    try:
        import datasets
    except ImportError:
        raise MissingDependencyError.for_extra("datasets", "formats") from None
    datasets.disable_progress_bars()
    return datasets


def write_hf(collection: Collection, out_dir: str | Path, *, images_root=None,
             multilabel: bool | None = None) -> Path:
    """Save ``collection`` with ``save_to_disk`` to ``out_dir`` (which must not exist yet).
    ``multilabel``: a ``labels`` list column instead of ``label`` (default: when a record has
    more than one label). Images: ``images_root`` is the folder records' paths are relative to,
    or a mapping path -> file."""
    _datasets()
    from datasets import ClassLabel, Dataset, Features, Image, List, Value

    coll = collection.with_classes_of_records()
    out = Path(out_dir).expanduser()
    if out.exists():
        raise ValidationError(f"{out} already exists: give a new folder for the Hugging Face dataset")
    recs = coll.records
    if not recs:
        raise ValidationError("nothing to write: the collection has no records")
    images = recs[0].path is not None
    if any((r.path is not None) != images for r in recs):
        raise ValidationError("a Hugging Face dataset holds images or texts, not both")
    if multilabel is None:
        multilabel = any(len(r.labels) > 1 for r in recs)
    several = [r for r in recs if len(r.labels) > 1 or len(r.predicted) > 1]
    if not multilabel and several:
        raise ValidationError(f"{several[0].name} has several labels; write with multilabel=True")
    names = ClassLabel(names=coll.classes)
    index = {c: i for i, c in enumerate(coll.classes)}
    cols: dict[str, list] = {}
    feats: dict = {}
    if images:
        files = [image_file(images_root, r.path) for r in recs]
        missing = [f for f in files if not f.is_file()]
        if missing:
            raise ValidationError(f"{missing[0]} is not a file ({len(missing)} images are missing); "
                                  "give the folder the records' paths are relative to")
        cols["image"] = [str(f) for f in files]
        cols["path"] = [r.path for r in recs]
        feats |= {"image": Image(), "path": Value("string")}
    else:
        cols["text"] = [r.text for r in recs]
        feats["text"] = Value("string")
    if multilabel:
        cols["labels"] = [[index[x] for x in r.labels] for r in recs]
        feats["labels"] = List(names)
    else:
        cols["label"] = [index[r.labels[0]] if r.labels else -1 for r in recs]
        feats["label"] = names
    if any(r.predicted for r in recs):
        cols["predicted"] = [index[r.predicted[0]] if r.predicted else -1 for r in recs]
        cols["score"] = [r.score for r in recs]
        feats |= {"predicted": names, "score": Value("float64")}
    if any(r.boxes for r in recs):
        cols["objects"] = [{"bbox": [[b.x, b.y, b.w, b.h] for b in r.boxes],
                            "category": [index[b.label] for b in r.boxes]} for r in recs]
        cols["width"] = [r.width for r in recs]
        cols["height"] = [r.height for r in recs]
        feats |= {"objects": {"bbox": List(List(Value("float64"), length=4)), "category": List(names)},
                  "width": Value("int64"), "height": Value("int64")}
    keys = list(dict.fromkeys(k for r in recs for k in r.meta))
    clash = [k for k in keys if k in RESERVED]
    if clash:
        raise ValidationError(f"meta field {clash[0]!r} has the name of a column the writer makes; rename it")
    for k in keys:
        cols[k] = [r.meta.get(k) for r in recs]
    try:
        ds = Dataset.from_dict(cols, features=Features(feats) if not keys else None)
        if keys:   # let datasets infer the meta columns' types, then set ours
            ds = ds.cast(Features({**ds.features, **feats}))
    except (TypeError, ValueError) as exc:   # pyarrow's ArrowInvalid is a ValueError
        raise ValidationError(f"cannot build the Hugging Face dataset: {exc}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        ds.save_to_disk(str(tmp / "ds"))
        (tmp / "ds").rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out


def read_hf(path: str | Path) -> Collection:
    """A dataset folder written by ``save_to_disk`` (a ``DatasetDict``: its ``train`` split,
    else its only one). Embedded images keep the ``path`` column's value (else the file name
    the ``Image`` feature kept) as the record's path; their bytes are not extracted."""
    _datasets()
    from datasets import ClassLabel, DatasetDict, Image, List, Sequence, load_from_disk

    path = Path(path).expanduser()
    if not (path / "dataset_info.json").is_file() and not (path / "dataset_dict.json").is_file():
        raise ValidationError(f"{path} is not a dataset folder written by save_to_disk "
                              "(no dataset_info.json / dataset_dict.json)")
    ds = load_from_disk(str(path))
    if isinstance(ds, DatasetDict):
        if "train" not in ds and len(ds) != 1:
            raise ValidationError(f"{path.name} has splits {', '.join(ds)}: save one split (or name it train)")
        ds = ds["train"] if "train" in ds else next(iter(ds.values()))
    f = ds.features

    def is_label(feat) -> bool:
        return isinstance(feat, ClassLabel) or (isinstance(feat, (List, Sequence))
                                                and isinstance(feat.feature, ClassLabel))

    label_col = next((c for c in ("label", "labels") if c in f and is_label(f[c])), None) \
        or next((c for c, feat in f.items() if is_label(feat) and c != "predicted"), None)
    if label_col is None:
        raise ValidationError(f"{path.name} has no ClassLabel column (columns: {', '.join(f)}); "
                              "cast the label column with ClassLabel(names=[...]) and save again")
    multi = not isinstance(f[label_col], ClassLabel)
    classes = list((f[label_col].feature if multi else f[label_col]).names)
    image_col = next((c for c, feat in f.items() if isinstance(feat, Image)), None)
    if image_col is None and "text" not in f:
        raise ValidationError(f"{path.name} has neither an Image column nor a 'text' column "
                              f"(columns: {', '.join(f)})")
    if image_col is not None:
        ds = ds.cast_column(image_col, Image(decode=False))
    used = {label_col, image_col, "text", "path", "predicted", "score", "objects", "width", "height"}
    records = []
    for row in ds:
        labels = row[label_col] if multi else ([row[label_col]] if row[label_col] is not None
                                               and row[label_col] >= 0 else [])
        rec = Record(labels=[classes[k] for k in labels],
                     meta={k: v for k, v in row.items() if k not in used})
        if image_col is not None:
            rec.path = row.get("path") or (row[image_col] or {}).get("path")
        else:
            rec.text = row["text"]
        if row.get("predicted") is not None and row["predicted"] >= 0:
            rec.predicted, rec.score = [classes[row["predicted"]]], row.get("score")
        if row.get("objects"):
            rec.boxes = [Box(*bb, classes[k]) for bb, k in zip(row["objects"]["bbox"], row["objects"]["category"])]
            rec.width, rec.height = row.get("width"), row.get("height")
        records.append(rec)
    return Collection(classes, records)
