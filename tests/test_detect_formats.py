"""Boxes in and out of a detection project through the interchange formats (real SQLite store,
real files): COCO, Label Studio, YOLO and Pascal VOC, and the CLI's one-line errors."""

from __future__ import annotations

import subprocess
import sys

import pytest

from labelloop import Project, formats
from labelloop.errors import ValidationError

from test_detect_project import _images



def _truth(placed):
    """One 14 px 'square' per image where the helper put it, and a 'bar' on the first image."""
    records = []
    for k, (name, (x, y)) in enumerate(placed):
        boxes = [formats.Box(x, y, 14, 14, "square")] + ([formats.Box(1, 1, 5, 30, "bar")] if k == 0 else [])
        records.append(formats.Record(path=name, boxes=boxes, width=48, height=40))
    return formats.Collection(["square", "bar"], records)


def _boxes(p):
    items = {it.id: it.external_id for it in p.store.items()}
    return sorted((items[b["item_id"]], b["class"], round(b["x"], 3), round(b["y"], 3), round(b["w"], 3),
                   round(b["h"], 3), b["source"]) for b in p.boxes())


@pytest.mark.parametrize("fmt", ["coco", "labelstudio", "yolo", "voc"])
def test_boxes_import_and_round_trip(tmp_path, fmt):
    placed = _images(tmp_path / "imgs", n=4)
    truth = _truth(placed)
    where = tmp_path / "ann"
    write = {"coco": lambda: formats.write_coco(truth, where / "a.json"),
             "labelstudio": lambda: formats.write_labelstudio(truth, where / "a.json"),
             "yolo": lambda: formats.write_yolo(truth, where / "yolo"),
             "voc": lambda: formats.write_voc(truth, where / "voc")}
    ann = write[fmt]()
    if fmt == "yolo":
        ann = ann / "labels" if (ann / "labels").is_dir() else ann
    with Project.init(tmp_path / "p", modality="image", task="detection") as p:
        report = p.import_(tmp_path / "imgs", annotations=ann, annotation_format=fmt)
        assert report.added == 4 and not report.skipped
        expect = sorted((r.path, b.label, float(b.x), float(b.y), float(b.w), float(b.h), "import")
                        for r in truth.records for b in r.boxes)
        assert _boxes(p) == expect
        assert set(p.classes) == {"square", "bar"}
        # the same file again adds nothing
        p.import_(tmp_path / "imgs", annotations=ann, annotation_format=fmt)
        assert _boxes(p) == expect
        # out again in the same format, and back into a new project: the same boxes
        out = tmp_path / ("out.json" if fmt in ("coco", "labelstudio") else "out")
        p.export(out, format=fmt)
    back = out / "labels" if fmt == "yolo" and (out / "labels").is_dir() else out
    with Project.init(tmp_path / "q", modality="image", task="detection") as q:
        q.import_(tmp_path / "imgs", annotations=back, annotation_format=fmt)
        assert _boxes(q) == expect


def test_machine_boxes_export_as_predictions(tmp_path):
    placed = _images(tmp_path / "imgs", n=2)
    with Project.init(tmp_path / "p", modality="image", classes=["square"], task="detection") as p:
        p.import_(tmp_path / "imgs")
        (x, y) = placed[0][1]
        p.add_boxes("im0.png", [(x, y, 14, 14, "square")], annotator="ann")
        rows = p._box_rows(p.store.items([p.store.resolve_item("im1.png")])[0], [(2, 3, 10, 10, "square")],
                           source="machine", annotator=None, create_classes=False)
        rows[0]["score"] = 0.8
        p.store.add_boxes(rows)
        p.export(tmp_path / "o.json", format="coco")
    coll = formats.read_coco(tmp_path / "o.json")
    by = {r.path: r for r in coll.records}
    assert [(b.x, b.y, b.label) for b in by["im0.png"].boxes] == [(x, y, "square")]
    assert [(b.x, b.y, b.score) for b in by["im1.png"].predicted_boxes] == [(2, 3, 0.8)]
    assert not by["im1.png"].boxes


def test_a_box_outside_its_image_is_skipped_by_name_and_the_rest_imported(tmp_path):
    placed = _images(tmp_path / "imgs", n=3)
    truth = _truth(placed)
    truth.records[1].boxes = [formats.Box(100, 100, 5, 5, "square")]   # the image is 48 x 40
    truth.records[1].width = truth.records[1].height = None
    formats.write_coco(truth, tmp_path / "a.json")
    with Project.init(tmp_path / "p", modality="image", task="detection") as p:
        report = p.import_(tmp_path / "imgs", annotations=tmp_path / "a.json")
        assert report.added == 3
        assert [s.where for s in report.skipped] == ["a.json: im1.png"]
        assert "outside the image" in report.skipped[0].reason
        assert {b[0] for b in _boxes(p)} == {"im0.png", "im2.png"}


def test_box_files_need_a_detection_project_and_the_cli_says_so(tmp_path):
    placed = _images(tmp_path / "imgs", n=2)
    formats.write_voc(_truth(placed), tmp_path / "voc")
    with Project.init(tmp_path / "c", modality="image") as p:
        with pytest.raises(ValidationError, match="--task detection"):
            p.import_(tmp_path / "imgs", annotations=tmp_path / "voc", annotation_format="voc")
        assert p.store.item_count() == 0
    r = subprocess.run([sys.executable, "-m", "labelloop.cli", "import", "-p", str(tmp_path / "c"),
                        str(tmp_path / "imgs"), "--voc", str(tmp_path / "voc")], capture_output=True, text=True)
    assert r.returncode != 0 and "--task detection" in r.stderr and "Traceback" not in r.stderr
