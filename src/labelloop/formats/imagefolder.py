"""ImageFolder: ``root/<class>/<file>`` (torchvision's and Hugging Face's ``imagefolder``
layout). An image directly in ``root`` has no class.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from ..errors import ValidationError
from .model import Collection, Record, image_file

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif"}


def image_files(root: Path) -> list[str]:
    """Paths (relative, with ``/``) of the image files under ``root``, sorted."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def read_imagefolder(root: str | Path) -> Collection:
    root = Path(root).expanduser()
    if not root.is_dir():
        raise ValidationError(f"{root} is not a folder: give the folder with one subfolder per class")
    records = []
    for rel in image_files(root):
        parts = rel.split("/")
        records.append(Record(path=rel, labels=[parts[0]] if len(parts) > 1 else []))
    if not records:
        raise ValidationError(f"{root} has no image files ({', '.join(sorted(IMAGE_EXTENSIONS))})")
    return Collection(sorted({r.labels[0] for r in records if r.labels}), records)


def write_imagefolder(collection: Collection, out_dir: str | Path, *, images_root=None) -> Path:
    """Copy every image record with exactly one label to ``out_dir/<label>/<file name>``
    (the record's path with ``/`` as ``__`` where two names would clash). Records without a
    label are not written; ``out_dir`` must not exist yet (it appears complete or not at all).
    ``images_root``: the folder records' paths are relative to, or a mapping path -> file."""
    out = Path(out_dir).expanduser()
    if out.exists():
        raise ValidationError(f"{out} already exists: give a new folder for the ImageFolder tree")
    plan: dict[Path, Path] = {}
    for r in collection.records:
        if r.path is None:
            raise ValidationError(f"ImageFolder holds images; record {r.name} is a text")
        if not r.labels:
            continue
        if len(r.labels) > 1:
            raise ValidationError(f"{r.name} has {len(r.labels)} labels ({', '.join(r.labels)}); an ImageFolder "
                                  "holds one class per image: use COCO, Label Studio or HF for multi-label")
        label = r.labels[0]
        if label in (".", "..") or "/" in label or "\\" in label:
            raise ValidationError(f"class {label!r} cannot be a folder name; rename the class")
        src = image_file(images_root, r.path)
        if not src.is_file():
            raise ValidationError(f"{src} is not a file: the image of {r.name} is missing")
        dest = Path(label) / Path(r.path).name
        if dest in plan:
            dest = Path(label) / r.path.replace("/", "__")
        plan[dest] = src
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".", dir=out.parent))
    try:
        for dest, src in plan.items():
            (tmp / dest).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, tmp / dest)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
