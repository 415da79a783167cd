"""Interchange formats in the product: `import --annotations / --labelstudio` and `export
--format coco|labelstudio|imagefolder|hf` on a real project (real SQLite, real files, the
`pixels` backbone), and through the `labelloop` command."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import write_image

from labelloop import Project, formats
from labelloop.errors import ValidationError


@pytest.fixture
def photos(tmp_path):
    for i in range(8):
        write_image(tmp_path / "photos" / ("cat" if i < 4 else "dog") / f"{i}.png", size=(20, 10), seed=i)
    return tmp_path / "photos"


def _labels(p: Project) -> dict[str, tuple[str, str]]:
    return {r["external_id"]: (r["label"], r["source"]) for r in p.rows() if r["source"] in ("human", "import", "machine")}


def test_coco_image_level_classes_become_import_labels(project_factory, photos, tmp_path):
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({
        "images": [{"id": 1, "file_name": "cat/0.png"}, {"id": 2, "file_name": "/elsewhere/dog/4.png"},
                   {"id": 3, "file_name": "dog/5.png"}, {"id": 4, "file_name": "missing.png"},
                   {"id": 5, "file_name": "cat/1.png"}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1}, {"id": 2, "image_id": 2, "category_id": 2},
                        {"id": 3, "image_id": 3, "category_id": 2, "bbox": [1, 1, 5, 5]},
                        {"id": 4, "image_id": 4, "category_id": 1},
                        {"id": 5, "image_id": 5, "category_id": 1}, {"id": 6, "image_id": 5, "category_id": 2}],
        "categories": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}]}))
    p = project_factory("image")
    r = p.import_(photos, annotations=coco)
    assert (r.added, r.labeled, sorted(r.classes_added)) == (8, 2, ["cat", "dog"])
    assert _labels(p) == {"cat/0.png": ("cat", "import"), "dog/4.png": ("dog", "import")}
    reasons = {s.where: s.reason for s in r.skipped}
    assert reasons["coco.json: missing.png"] == "no image with this name in the import folder"
    assert "2 classes (cat, dog); this project labels one class per item" in reasons["coco.json: cat/1.png"]
    assert r.warnings == ["coco.json: 1 boxes on 1 images were not imported: this project labels whole images "
                          "(convert boxes with labelloop.formats; image-level classes were imported)"]
    # again: nothing new
    again = p.import_(photos, annotations=coco)
    assert (again.added, again.labeled) == (0, 0)


def test_a_bad_annotation_file_imports_nothing(project_factory, photos, tmp_path):
    p = project_factory("image")
    bad = tmp_path / "coco.json"
    bad.write_text('{"images": [{"id": 1, "file_name": "cat/0.png"}], "categories": [{"id": 1, "name": "cat"}],'
                   ' "annotations": [{"id": 9, "image_id": 1, "category_id": 2}]}')
    with pytest.raises(ValidationError, match=r"coco.json: annotations\[0\] \(id 9\): category_id 2"):
        p.import_(photos, annotations=bad)
    bad.write_text('{"images": [{"id": 1, "file_name": "cat/0.png"}], "categories": [{"id": 1, "name": "a\\u0007b"}],'
                   ' "annotations": [{"id": 9, "image_id": 1, "category_id": 1}]}')
    with pytest.raises(ValidationError, match="coco.json: cat/0.png: class name 'a\\\\x07b' has the control character"):
        p.import_(photos, annotations=bad)
    assert p.store.item_count() == 0 and p.classes == [] and p.store.runs("import", status=None) == []


def test_labelstudio_round_trip_through_the_product(project_factory, photos, tmp_path):
    """labelloop -> Label Studio -> labelloop: human labels come back as import labels, the
    machine's as predictions (not imported), and the config names the writer's controls."""
    p = project_factory("image", classes=["cat", "dog"])
    p.import_(photos)
    p.label([("cat/0.png", "cat"), ("dog/4.png", "dog")])
    p.embed("pixels")
    p.refresh()
    p.store.add_annotations([(p.store.resolve_item("cat/1.png"), p.store.class_id("cat"))], source="machine",
                            confidences=[0.93])
    rep = p.export_dataset(tmp_path / "ls" / "tasks.json", format="labelstudio")
    assert (rep.items, rep.labeled, rep.predicted) == (8, 2, 6)
    assert rep.extra == [tmp_path / "ls" / "tasks.label_config.xml"]
    assert 'name="choice" toName="image"' in rep.extra[0].read_text()
    back = formats.read_labelstudio(rep.path)
    rows = {r["external_id"]: r for r in p.rows()}
    for rec in back.records:
        row = rows[rec.path]
        assert rec.meta == {"labelloop_item": row["item"], "labelloop_source": row["source"]}
        if row["source"] == "human":
            assert (rec.labels, rec.predicted) == ([row["label"]], [])
        else:
            assert (rec.labels, rec.predicted, rec.score) == ([], [row["label"]], row["confidence"])

    q = project_factory("image", name="other")
    r = q.import_(photos, annotations=rep.path, annotation_format="labelstudio")
    assert _labels(q) == {"cat/0.png": ("cat", "import"), "dog/4.png": ("dog", "import")}
    assert r.ok and r.notes == ["tasks.json: the predictions of 6 records were not imported (a model's guesses; "
                                "labelloop makes its own): only annotations become import labels"]


def test_labelstudio_tasks_are_the_texts_of_a_text_project(project_factory, tmp_path):
    tasks = tmp_path / "tasks.json"
    tasks.write_text(json.dumps([
        {"id": 1, "data": {"text": "refund please", "channel": "mail"},
         "annotations": [{"result": [{"type": "choices", "value": {"choices": ["billing"]}}]}]},
        {"id": 2, "data": {"text": "app crashes"}},
        {"id": 3, "data": {"text": "refund please"}},
        {"id": 4, "data": {"text": "  "}}]))
    p = project_factory("text")
    r = p.import_(annotations=tasks, annotation_format="labelstudio")
    assert (r.added, r.labeled) == (2, 1)
    assert {s.where: s.reason for s in r.skipped} == {"tasks.json: task 3": "same text as task 1 (duplicate)",
                                                      "tasks.json: task 4": "empty text"}
    assert p.store.rule_inputs()[0]["meta"] == {"channel": "mail"}
    with pytest.raises(ValidationError, match="the Label Studio tasks hold the texts: drop SOURCE"):
        p.import_(tasks, annotations=tasks, annotation_format="labelstudio")
    with pytest.raises(ValidationError, match="COCO annotations describe images; this is a text project"):
        p.import_(annotations=tasks)
    hf = p.export_dataset(tmp_path / "hf", format="hf")
    back = formats.read_hf(hf.path)
    assert [(x.text, x.labels, x.meta["source"]) for x in back.records] == [
        ("refund please", ["billing"], "import"), ("app crashes", [], None)]
    with pytest.raises(ValidationError, match="coco holds images; a text project exports"):
        p.export_dataset(tmp_path / "c.json", format="coco")


def test_coco_imagefolder_and_hf_exports_hold_the_current_labels(project_factory, photos, tmp_path):
    p = project_factory("image", classes=["cat", "dog"])
    p.import_(photos, labels_from_folders=True)
    p.label([("cat/0.png", "dog")])  # a person overrules the import label
    want = _labels(p)

    coco = formats.read_coco(p.export_dataset(tmp_path / "c.json", format="coco").path)
    assert {r.path: r.labels[0] for r in coco.records} == {k: v[0] for k, v in want.items()}
    assert all((r.width, r.height) == (20, 10) for r in coco.records)

    tree = p.export_dataset(tmp_path / "tree", format="imagefolder").path
    q = project_factory("image", name="fromtree")
    q.import_(tree, labels_from_folders=True)
    assert sorted(lab for lab, _ in _labels(q).values()) == sorted(lab for lab, _ in want.values())
    assert (tree / "dog" / "0.png").read_bytes() == (photos / "cat" / "0.png").read_bytes()
    with pytest.raises(ValidationError, match="already exists"):
        p.export_dataset(tree, format="imagefolder")

    hf = formats.read_hf(p.export_dataset(tmp_path / "hf", format="hf").path)
    assert hf.classes == ["cat", "dog"]
    assert {r.path: (r.labels[0], r.meta["source"]) for r in hf.records} == want


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "labelloop.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=120)


def test_cli_import_with_annotations_and_export_formats(tmp_path, photos):
    proj = tmp_path / "proj"
    assert _cli("init", "-p", proj, "--modality", "image").returncode == 0
    bad = tmp_path / "tasks.json"
    bad.write_text('[{"id": 3, "data": {"image": "cat/0.png"}, "annotations": [{"result": '
                   '[{"type": "rectanglelabels", "value": {"x": 1, "y": 1, "width": 2, "height": 2, '
                   '"rectanglelabels": ["cat"]}}]}]}]')
    r = _cli("import", "-p", proj, photos, "--labelstudio", bad)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "tasks.json: task 1 (id 3) annotation result 1: no original_width / original_height" in r.stderr
    bad.write_text(json.dumps([{"data": {"image": "/data/upload/1/0a1b2c3d-0.png"},
                                "annotations": [{"result": [{"type": "choices", "value": {"choices": ["cat"]}}]}]}]))
    r = _cli("import", "-p", proj, photos, "--labelstudio", bad, "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["labeled"] == 1
    r = _cli("export", "-p", proj, "--format", "coco", "--out", tmp_path / "out.json")
    assert r.returncode == 0 and "8 items, 1 with a label" in r.stdout
    r = _cli("export", "-p", proj, "--format", "imagefolder", "--out", tmp_path / "out.json")
    assert r.returncode == 2 and "already exists" in r.stderr
    assert "--labelstudio" in _cli("import", "--help").stdout and "imagefolder" in _cli("export", "--help").stdout
