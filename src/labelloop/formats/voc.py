"""Pascal VOC XML: one ``<annotation>`` file per image with ``<filename>``, ``<size>`` and an
``<object>`` per box (``<name>``, ``<bndbox>`` xmin ymin xmax ymax).

VOC counts pixels from 1 and its xmax / ymax are inclusive (the devkit's convention): a box
covering pixels 1..10 is x = 0, w = 10 here. VOC has no image-level classes and no scores:
records' ``labels`` and predictions are not written.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from ..errors import ValidationError
from .model import Box, Collection, Record, number, plain, write_text_atomic


def read_voc(xml_dir: str | Path) -> Collection:
    """Every ``*.xml`` under ``xml_dir``; the record's path is the file's ``<filename>`` (in
    ``<folder>``'s place when the XML lies in a subfolder, its subfolder is kept)."""
    root = Path(xml_dir).expanduser()
    if not root.is_dir():
        raise ValidationError(f"{root} is not a folder: give the folder of Pascal VOC .xml files")
    files = sorted(root.rglob("*.xml"))
    if not files:
        raise ValidationError(f"{root} has no .xml files: give the folder of Pascal VOC annotations")
    records = [_read_one(f, f.relative_to(root).parent.as_posix()) for f in files]
    return Collection([], records).with_classes_of_records()


def _read_one(path: Path, subdir: str) -> Record:
    name = path.name
    try:
        doc = ET.parse(path).getroot()
    except ET.ParseError as exc:
        line, col = exc.position
        raise ValidationError(f"{name} is not valid XML ({str(exc).split(':')[0]} at line {line} column {col + 1}); "
                              "give the annotation file as written by the labeling tool") from None
    if doc.tag != "annotation":
        raise ValidationError(f"{name}: the root element is <{doc.tag}>, not <annotation>: not a Pascal VOC file")
    filename = (doc.findtext("filename") or "").strip()
    if not filename:
        raise ValidationError(f"{name}: no <filename>; add the image's file name")
    rec = Record(path=filename if subdir in ("", ".") else f"{subdir}/{filename}")
    size = doc.find("size")
    if size is not None and size.findtext("width") and size.findtext("height"):
        rec.width = int(_num(size, "width", f"{name} <size>"))
        rec.height = int(_num(size, "height", f"{name} <size>"))
    for n, obj in enumerate(doc.iter("object"), start=1):
        where = f"{name}: <object> {n}"
        label = (obj.findtext("name") or "").strip()
        bb = obj.find("bndbox")
        if not label or bb is None:
            raise ValidationError(f"{where} needs a <name> and a <bndbox>")
        x1, y1, x2, y2 = (_num(bb, k, where) for k in ("xmin", "ymin", "xmax", "ymax"))
        if x2 < x1 or y2 < y1:
            raise ValidationError(f"{where}: xmax/ymax ({x2:g}, {y2:g}) lie before xmin/ymin ({x1:g}, {y1:g}); swap them")
        rec.boxes.append(Box(x1 - 1, y1 - 1, x2 - x1 + 1, y2 - y1 + 1, label))
    return rec


def _num(parent: ET.Element, tag: str, where: str) -> float:
    text = (parent.findtext(tag) or "").strip()
    try:
        return number(float(text), f"{where} <{tag}>")
    except ValueError:
        raise ValidationError(f"{where}: <{tag}> must be a number, got {text!r}") from None


def write_voc(collection: Collection, out_dir: str | Path) -> Path:
    """``out_dir/<path>.xml`` for every image record (also those without boxes)."""
    out = Path(out_dir).expanduser()
    for r in collection.records:
        if r.path is None:
            raise ValidationError(f"Pascal VOC holds images; record {r.name} is a text")
        ann = ET.Element("annotation")
        p = Path(r.path)
        ET.SubElement(ann, "folder").text = p.parent.as_posix() if p.parent != Path(".") else ""
        ET.SubElement(ann, "filename").text = p.name
        if r.width is not None and r.height is not None:
            size = ET.SubElement(ann, "size")
            for tag, v in (("width", r.width), ("height", r.height), ("depth", 3)):
                ET.SubElement(size, tag).text = str(v)
        for b in r.boxes:
            obj = ET.SubElement(ann, "object")
            ET.SubElement(obj, "name").text = b.label
            ET.SubElement(obj, "difficult").text = "0"
            bb = ET.SubElement(obj, "bndbox")
            for tag, v in (("xmin", b.x + 1), ("ymin", b.y + 1), ("xmax", b.x2), ("ymax", b.y2)):
                ET.SubElement(bb, tag).text = str(plain(v))
        ET.indent(ann)
        write_text_atomic(out / p.with_suffix(".xml"), ET.tostring(ann, encoding="unicode") + "\n")
    return out
