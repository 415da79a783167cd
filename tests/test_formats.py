"""labelloop.formats: every reader and writer round-trips (write -> read -> equal) and reads a
hand-written file in the real format; bad files give an error naming the file, the record and
the fix."""

from __future__ import annotations

import json

import pytest
from conftest import write_image

from labelloop import formats
from labelloop.errors import ValidationError
from labelloop.formats import Box, Collection, Record


def _images(root, paths, size=(40, 30)):
    for n, p in enumerate(paths):
        write_image(root / p, size=size, seed=n)
    return root


def _detection() -> Collection:
    """Three images of 40 x 30 pixels: boxes people drew, a model's boxes, and none."""
    return Collection(["cat", "dog"], [
        Record(path="a/1.png", width=40, height=30,
               boxes=[Box(4, 3, 10, 12, "cat"), Box(20, 0, 20, 30, "dog")]),
        Record(path="b/2.png", width=40, height=30,
               predicted_boxes=[Box(0.5, 1.5, 8, 6, "dog", score=0.75)]),
        Record(path="3.png", width=40, height=30),
    ])


def _boxes(boxes):
    return [((b.x, b.y, b.w, b.h), b.label, b.score) for b in boxes]


def _approx_boxes(boxes):
    return [(pytest.approx(xywh, abs=1e-6), label, score) for xywh, label, score in _boxes(boxes)]


def _same_boxes(got: Collection, want: Collection, *, predicted=True):
    by_path = {r.path: r for r in got.records}
    assert set(by_path) == {r.path for r in want.records}
    for w in want.records:
        g = by_path[w.path]
        assert _boxes(g.boxes) == _approx_boxes(w.boxes)
        if predicted:
            assert _boxes(g.predicted_boxes) == _approx_boxes(w.predicted_boxes)


def test_the_public_surface():
    assert sorted(formats.__all__) == sorted(set(formats.__all__))
    for name in formats.__all__:
        assert getattr(formats, name) is not None


# ---------------------------------------------------------------------------- COCO
def test_coco_round_trip_boxes_classes_predictions_and_meta(tmp_path):
    coll = _detection()
    coll.records[0].labels = ["cat"]
    coll.records[2].predicted, coll.records[2].score = ["dog"], 0.6
    coll.records[2].meta = {"site": "north", "camera": 7}
    formats.write_coco(coll, tmp_path / "c.json")
    back = formats.read_coco(tmp_path / "c.json")
    assert back.classes == ["cat", "dog"]
    _same_boxes(back, coll)
    r0, _, r2 = back.records
    assert r0.labels == ["cat"] and (r0.width, r0.height) == (40, 30)
    assert (r2.predicted, r2.score, r2.meta) == (["dog"], 0.6, {"site": "north", "camera": 7})


def test_coco_reads_a_hand_written_file(tmp_path):
    (tmp_path / "c.json").write_text("""{
      "info": {"description": "shelf"},
      "images": [{"id": 7, "file_name": "img/0001.jpg", "width": 640, "height": 480},
                 {"id": 9, "file_name": "img/0002.jpg", "width": 640, "height": 480}],
      "annotations": [
        {"id": 1, "image_id": 7, "category_id": 3, "bbox": [10.5, 20, 100, 50], "area": 5000, "iscrowd": 0},
        {"id": 2, "image_id": 7, "category_id": 5, "bbox": [0, 0, 640, 480], "area": 307200, "iscrowd": 0},
        {"id": 3, "image_id": 9, "category_id": 5},
        {"id": 4, "image_id": 9, "category_id": 3, "bbox": [1, 2, 3, 4], "score": 0.25}
      ],
      "categories": [{"id": 3, "name": "bottle", "supercategory": "x"}, {"id": 5, "name": "can"}]
    }""")
    c = formats.read_coco(tmp_path / "c.json")
    assert c.classes == ["bottle", "can"]
    a, b = c.records
    assert a.path == "img/0001.jpg" and a.boxes == [Box(10.5, 20, 100, 50, "bottle"), Box(0, 0, 640, 480, "can")]
    assert b.labels == ["can"] and b.predicted_boxes == [Box(1, 2, 3, 4, "bottle", 0.25)] and b.boxes == []


@pytest.mark.parametrize("doc, message", [
    ("{\"images\": [], \n \"categories\": [}", "c.json is not valid JSON: Expecting value at line 2"),
    ('{"images": []}', "is not COCO JSON"),
    ('{"images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 1, "name": "x"}],'
     ' "annotations": [{"id": 5, "image_id": 2, "category_id": 1}]}', "annotations[0] (id 5): image_id 2 is not in 'images'"),
    ('{"images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 1, "name": "x"}],'
     ' "annotations": [{"id": 5, "image_id": 1, "category_id": 4}]}', "category_id 4 is not in 'categories'; the ids are 1"),
    ('{"images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 1, "name": "x"}],'
     ' "annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 2, 3]}]}', "bbox must be [x, y, width, height]"),
    ('{"images": [{"id": 1, "file_name": "a.jpg"}], "categories": [{"id": 1, "name": "x"}],'
     ' "annotations": [{"image_id": 1, "category_id": 1, "bbox": [1, 2, -3, 4]}]}', "must be at least 0"),
])
def test_coco_bad_files_name_the_file_the_record_and_the_fix(tmp_path, doc, message):
    (tmp_path / "c.json").write_text(doc)
    with pytest.raises(ValidationError, match="c.json") as err:
        formats.read_coco(tmp_path / "c.json")
    assert message in str(err.value)


# ---------------------------------------------------------------------------- YOLO
def test_yolo_round_trip(tmp_path):
    coll = _detection()
    images = _images(tmp_path / "images", [r.path for r in coll.records])
    formats.write_yolo(coll, tmp_path / "yolo")
    assert (tmp_path / "yolo" / "classes.txt").read_text() == "cat\ndog\n"
    back = formats.read_yolo(tmp_path / "yolo" / "labels", images)
    assert back.classes == ["cat", "dog"]
    _same_boxes(back, coll)


def test_yolo_reads_a_hand_written_dataset_with_data_yaml(tmp_path):
    images = _images(tmp_path / "ds" / "images", ["x.jpg", "y.jpg"], size=(200, 100))
    labels = tmp_path / "ds" / "labels"
    labels.mkdir()
    (labels / "x.txt").write_text("1 0.5 0.5 0.2 0.4\n\n0 0.1 0.1 0.2 0.2 0.9\n")
    (tmp_path / "ds" / "data.yaml").write_text("path: .\ntrain: images\nnames:\n  0: person\n  1: 'traffic light'\n")
    c = formats.read_yolo(labels, images)
    assert c.classes == ["person", "traffic light"]
    x, y = c.records
    assert (x.width, x.height) == (200, 100)
    (b,) = x.boxes  # cx 0.5 * 200 = 100, w 0.2 * 200 = 40: x = 80; cy 50, h 40: y = 30
    assert ((b.x, b.y, b.w, b.h), b.label) == (pytest.approx((80, 30, 40, 40)), "traffic light")
    assert [(b.label, b.score) for b in x.predicted_boxes] == [("person", 0.9)]
    assert y.boxes == [] and y.path == "y.jpg"


def test_yolo_bad_lines_name_the_file_and_line(tmp_path):
    images = _images(tmp_path / "images", ["x.png"])
    labels = tmp_path / "labels"
    labels.mkdir()
    (labels / "classes.txt").write_text("a\nb\n")
    (labels / "x.txt").write_text("0 0.5 0.5 0.1 0.1\n2 0.5 0.5 0.1 0.1\n")
    with pytest.raises(ValidationError, match=r"x.txt:2: class 2 but there are 2 class names.*classes.txt"):
        formats.read_yolo(labels, images)
    (labels / "x.txt").write_text("0 0.5 0.5 0.1\n")
    with pytest.raises(ValidationError, match=r"x.txt:1: expected 'class cx cy w h'"):
        formats.read_yolo(labels, images)
    (labels / "x.txt").write_text("")
    (labels / "stray.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(ValidationError, match="stray.txt: no image with this name"):
        formats.read_yolo(labels, images)
    (labels / "stray.txt").unlink()
    (labels / "classes.txt").unlink()
    with pytest.raises(ValidationError, match="no classes.txt or data.yaml"):
        formats.read_yolo(labels, images)


def test_yolo_writer_needs_the_image_size_for_boxes(tmp_path):
    coll = Collection(["a"], [Record(path="x.png", boxes=[Box(1, 1, 2, 2, "a")])])
    with pytest.raises(ValidationError, match="x.png: YOLO stores boxes relative to the image size"):
        formats.write_yolo(coll, tmp_path / "y")


# ------------------------------------------------------------------------ Pascal VOC
def test_voc_round_trip(tmp_path):
    coll = _detection()
    formats.write_voc(coll, tmp_path / "voc")
    back = formats.read_voc(tmp_path / "voc")
    assert back.classes == ["cat", "dog"]
    _same_boxes(back, coll, predicted=False)  # VOC has no scores: predictions are not written
    assert all((r.width, r.height) == (40, 30) for r in back.records)


def test_voc_reads_a_hand_written_file_with_one_based_inclusive_pixels(tmp_path):
    (tmp_path / "000005.xml").write_text("""<annotation>
        <folder>VOC2007</folder>
        <filename>000005.jpg</filename>
        <source><database>The VOC2007 Database</database></source>
        <size><width>500</width><height>375</height><depth>3</depth></size>
        <segmented>0</segmented>
        <object>
            <name>chair</name><pose>Rear</pose><truncated>0</truncated><difficult>0</difficult>
            <bndbox><xmin>263</xmin><ymin>211</ymin><xmax>324</xmax><ymax>339</ymax></bndbox>
        </object>
        <object>
            <name>chair</name><pose>Unspecified</pose><truncated>0</truncated><difficult>0</difficult>
            <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>10</xmax><ymax>10</ymax></bndbox>
        </object>
    </annotation>""")
    c = formats.read_voc(tmp_path)
    (r,) = c.records
    assert (r.path, r.width, r.height, c.classes) == ("000005.jpg", 500, 375, ["chair"])
    assert r.boxes == [Box(262, 210, 62, 129, "chair"), Box(0, 0, 10, 10, "chair")]


def test_voc_bad_files(tmp_path):
    (tmp_path / "a.xml").write_text("<annotation><filename>a.jpg</filename>\n<object><name>x</name>")
    with pytest.raises(ValidationError, match=r"a.xml is not valid XML .* line 2"):
        formats.read_voc(tmp_path)
    (tmp_path / "a.xml").write_text("<annotation><filename>a.jpg</filename><object><name>x</name>"
                                    "<bndbox><xmin>5</xmin><ymin>1</ymin><xmax>2</xmax><ymax>3</ymax></bndbox>"
                                    "</object></annotation>")
    with pytest.raises(ValidationError, match=r"a.xml: <object> 1: xmax/ymax .* swap them"):
        formats.read_voc(tmp_path)
    (tmp_path / "a.xml").write_text("<annotation><filename>a.jpg</filename><object><name>x</name>"
                                    "<bndbox><xmin>five</xmin></bndbox></object></annotation>")
    with pytest.raises(ValidationError, match=r"<xmin> must be a number, got 'five'"):
        formats.read_voc(tmp_path)


# ---------------------------------------------------------------------- Label Studio
def test_labelstudio_round_trip_images_and_texts(tmp_path):
    coll = _detection()
    coll.records[0].labels = ["cat"]
    coll.records[1].predicted, coll.records[1].score = ["dog"], 0.8
    coll.records[2].meta = {"labelloop_item": 3, "source": "human"}
    formats.write_labelstudio(coll, tmp_path / "t.json")
    back = formats.read_labelstudio(tmp_path / "t.json")
    assert back.classes == ["cat", "dog"] and back.notes == []
    _same_boxes(back, coll)
    r0, r1, r2 = back.records
    assert r0.labels == ["cat"] and (r0.width, r0.height) == (40, 30)
    assert (r1.predicted, r1.score) == (["dog"], 0.8)
    assert r2.meta == {"labelloop_item": 3, "source": "human"}

    texts = Collection(["bug", "billing"], [Record(text="it crashes", labels=["bug"]),
                                            Record(text="refund me", predicted=["billing"], score=0.55),
                                            Record(text="both", labels=["bug", "billing"])])
    formats.write_labelstudio(texts, tmp_path / "x.json")
    back = formats.read_labelstudio(tmp_path / "x.json")
    assert [(r.text, r.labels, r.predicted, r.score) for r in back.records] == \
        [(r.text, r.labels, r.predicted, r.score) for r in texts.records]


def test_labelstudio_reads_a_real_export(tmp_path):
    """The shape Label Studio's JSON export has: upload paths, several annotations (one
    cancelled), predictions with scores, a polygon it cannot carry."""
    (tmp_path / "export.json").write_text(json.dumps([
        {"id": 11, "data": {"image": "/data/upload/3/8f3a2b1c-cat_01.jpg", "site": "n"},
         "annotations": [
             {"id": 1, "completed_by": 1, "was_cancelled": False, "result": [
                 {"id": "a", "type": "choices", "from_name": "choice", "to_name": "image",
                  "value": {"choices": ["cat"]}},
                 {"id": "b", "type": "rectanglelabels", "from_name": "label", "to_name": "image",
                  "original_width": 200, "original_height": 100, "image_rotation": 0,
                  "value": {"x": 10, "y": 20, "width": 50, "height": 30, "rotation": 0,
                            "rectanglelabels": ["cat"]}},
                 {"id": "c", "type": "polygonlabels", "from_name": "poly", "to_name": "image",
                  "value": {"points": [[1, 2], [3, 4], [5, 6]], "polygonlabels": ["cat"]}}]},
             {"id": 2, "completed_by": 2, "was_cancelled": True, "result": [
                 {"type": "choices", "value": {"choices": ["dog"]}}]}],
         "predictions": [{"model_version": "v1", "score": 0.42, "result": [
             {"type": "choices", "from_name": "choice", "to_name": "image", "value": {"choices": ["dog"]}}]}]},
        {"id": 12, "data": {"image": "/data/local-files/?d=photos%2Fdog_02.png"}},
        {"id": 13, "data": {"image": "https://example.com/img/x.jpg?sig=1"}, "annotations": [],
         "predictions": [{"result": [{"type": "rectanglelabels", "score": 0.9, "original_width": 10,
                                      "original_height": 10, "value": {"x": 0, "y": 0, "width": 100,
                                                                       "height": 50, "rectanglelabels": ["dog"]}}]}]},
    ]))
    c = formats.read_labelstudio(tmp_path / "export.json")
    a, b, x = c.records
    assert (a.path, a.labels, a.predicted, a.score, a.meta) == ("cat_01.jpg", ["cat"], ["dog"], 0.42, {"site": "n"})
    assert a.boxes == [Box(20, 20, 100, 30, "cat")] and (a.width, a.height) == (200, 100)
    assert b.path == "photos/dog_02.png" and b.labels == []
    assert x.path == "x.jpg" and x.predicted_boxes == [Box(0, 0, 10, 5, "dog", 0.9)]
    assert c.classes == ["cat", "dog"]
    assert c.notes == ["export.json: 1 results of type 'polygonlabels' were not read (only choices and "
                       "rectanglelabels are)"]


@pytest.mark.parametrize("doc, message", [
    ('{"tasks": 1}', "expected a list of tasks"),
    ('[{"id": 4, "data": {"url": "a.jpg"}}]', "task 1 (id 4): data has no 'image' or 'text' (its keys: url)"),
    ('[{"data": {"image": "a.jpg"}, "annotations": [{"result": [{"type": "rectanglelabels", '
     '"value": {"x": 1, "y": 1, "width": 2, "height": 2, "rectanglelabels": ["a"]}}]}]}]',
     "task 1 annotation result 1: no original_width / original_height"),
    ('[{"data": {"image": "a.jpg"}, "annotations": [{"result": [{"type": "choices", "value": {"choices": "a"}}]}]}]',
     "value.choices must be a list of class names"),
])
def test_labelstudio_bad_files(tmp_path, doc, message):
    (tmp_path / "t.json").write_text(doc)
    with pytest.raises(ValidationError, match="t.json") as err:
        formats.read_labelstudio(tmp_path / "t.json")
    assert message in str(err.value)


def test_labelstudio_config_names_the_controls_the_writer_uses():
    xml = formats.labelstudio_config(["cat", 'a "b"'], modality="image", boxes=True)
    import xml.etree.ElementTree as ET

    root = ET.fromstring(xml)
    assert root.find("RectangleLabels").get("name") == "label"
    assert [c.get("value") for c in root.find("Choices")] == ["cat", 'a "b"']
    assert root.find("Choices").get("toName") == "image"


# ------------------------------------------------------------------------ ImageFolder
def test_imagefolder_round_trip(tmp_path):
    src = _images(tmp_path / "src", ["x/1.png", "y/1.png", "z.png"])
    coll = Collection(["cat", "dog"], [Record(path="x/1.png", labels=["cat"]), Record(path="y/1.png", labels=["cat"]),
                                       Record(path="z.png", labels=["dog"])])
    formats.write_imagefolder(coll, tmp_path / "out", images_root=src)
    back = formats.read_imagefolder(tmp_path / "out")
    assert back.classes == ["cat", "dog"]
    assert sorted((r.path, r.labels[0]) for r in back.records) == [
        ("cat/1.png", "cat"), ("cat/y__1.png", "cat"), ("dog/z.png", "dog")]
    assert (tmp_path / "out" / "cat" / "1.png").read_bytes() == (src / "x" / "1.png").read_bytes()
    with pytest.raises(ValidationError, match="already exists"):
        formats.write_imagefolder(coll, tmp_path / "out", images_root=src)


def test_imagefolder_reads_a_tree_made_by_hand(tmp_path):
    root = _images(tmp_path / "tree", ["zebra/a.jpg", "ant/deep/b.png", "loose.png"])
    (root / "ant" / "notes.txt").write_text("not an image")
    c = formats.read_imagefolder(root)
    assert c.classes == ["ant", "zebra"]  # sorted, as torchvision's ImageFolder numbers them
    assert [(r.path, r.labels) for r in c.records] == [
        ("ant/deep/b.png", ["ant"]), ("loose.png", []), ("zebra/a.jpg", ["zebra"])]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValidationError, match="has no image files"):
        formats.read_imagefolder(tmp_path / "empty")


def test_imagefolder_refuses_multilabel_and_leaves_nothing_behind(tmp_path):
    src = _images(tmp_path / "src", ["a.png"])
    coll = Collection(["a", "b"], [Record(path="a.png", labels=["a", "b"])])
    with pytest.raises(ValidationError, match="a.png has 2 labels"):
        formats.write_imagefolder(coll, tmp_path / "out", images_root=src)
    coll = Collection(["a"], [Record(path="a.png", labels=["a"]), Record(path="gone.png", labels=["a"])])
    with pytest.raises(ValidationError, match="gone.png is not a file"):
        formats.write_imagefolder(coll, tmp_path / "out", images_root=src)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


# ----------------------------------------------------------------------- HF datasets
def test_hf_round_trip_images_with_classlabel_predictions_boxes_and_meta(tmp_path):
    coll = _detection()
    for r, lab in zip(coll.records, (["cat"], [], ["dog"])):
        r.labels = lab
    coll.records[1].predicted, coll.records[1].score = ["dog"], 0.7
    for n, r in enumerate(coll.records):
        r.meta = {"item": n + 1, "source": "human" if r.labels else None}
        r.predicted_boxes = []  # HF keeps the boxes people drew; model boxes travel as COCO / LS
    src = _images(tmp_path / "img", [r.path for r in coll.records])
    formats.write_hf(coll, tmp_path / "hf", images_root=src)
    from datasets import ClassLabel, load_from_disk

    ds = load_from_disk(str(tmp_path / "hf"))
    assert ds.features["label"] == ClassLabel(names=["cat", "dog"])
    back = formats.read_hf(tmp_path / "hf")
    assert back.classes == ["cat", "dog"]
    assert [(r.path, r.labels, r.predicted, r.score, r.meta) for r in back.records] == \
        [(r.path, r.labels, r.predicted, r.score, r.meta) for r in coll.records]
    _same_boxes(back, coll)


def test_hf_multilabel_texts_use_a_list_of_classlabel(tmp_path):
    coll = Collection(["bug", "billing", "urgent"], [Record(text="crash", labels=["bug", "urgent"]),
                                                     Record(text="invoice", labels=["billing"]),
                                                     Record(text="hello", labels=[])])
    formats.write_hf(coll, tmp_path / "hf")
    from datasets import ClassLabel, load_from_disk

    feat = load_from_disk(str(tmp_path / "hf")).features["labels"]
    assert feat.feature == ClassLabel(names=["bug", "billing", "urgent"])
    back = formats.read_hf(tmp_path / "hf")
    assert [(r.text, r.labels) for r in back.records] == [(r.text, r.labels) for r in coll.records]


def test_hf_reads_a_dataset_made_with_datasets_itself(tmp_path):
    from datasets import ClassLabel, Dataset, Features, Value

    ds = Dataset.from_dict({"sentence": ["good", "bad"], "text": ["good film", "bad film"], "y": [1, 0]},
                           features=Features({"sentence": Value("string"), "text": Value("string"),
                                              "y": ClassLabel(names=["neg", "pos"])}))
    ds.save_to_disk(str(tmp_path / "sst"))
    c = formats.read_hf(tmp_path / "sst")
    assert c.classes == ["neg", "pos"]
    assert [(r.text, r.labels, r.meta) for r in c.records] == [
        ("good film", ["pos"], {"sentence": "good"}), ("bad film", ["neg"], {"sentence": "bad"})]
    with pytest.raises(ValidationError, match="not a dataset folder written by save_to_disk"):
        formats.read_hf(tmp_path)


# ------------------------------------------------------------------------- matching
def test_records_match_the_files_of_an_import_folder():
    rels = ["cat/1.jpg", "dog/1.jpg", "dog/2.jpg", "x.jpg"]
    recs = [Record(path=p) for p in ("cat/1.jpg", "/home/me/data/dog/2.jpg", "x.jpg", "1.jpg", "3.jpg", "./x.jpg")]
    matched, unmatched = formats.match_paths(recs, rels)
    assert {k: v.path for k, v in matched.items()} == {"cat/1.jpg": "cat/1.jpg", "dog/2.jpg": "/home/me/data/dog/2.jpg",
                                                       "x.jpg": "x.jpg"}
    reasons = [why for _, why in unmatched]
    assert "2 files are named 1.jpg" in reasons[0]
    assert reasons[1] == "no image with this name in the import folder"
    assert reasons[2].startswith("record 3 of the file already names x.jpg")
