"""The detection loop on a real project (SQLite and PostgreSQL): next before and after
pre-labels, reviewed-empty images, held-out certification and whole-image auto-accept, export.
A tiny detector (32 px, one epoch) on small synthetic images: seconds, not minutes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from labelloop import Project, formats
from labelloop.detect.accept import image_confidence
from labelloop.errors import PoolExhaustedError, ValidationError

pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")

pytestmark = pytest.mark.usefixtures("each_db")


def _images(folder, n, seed=0):
    """Bright squares on dark noise (every 4th image empty), 48 x 40 px PNG files; returns
    {name: (x, y) of its square or None}."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for i in range(n):
        a = rng.integers(0, 40, (40, 48, 3)).astype(np.uint8)
        x, y = int(rng.integers(0, 30)), int(rng.integers(0, 22))
        out[f"im{i}.png"] = None if i % 4 == 3 else (x, y)
        if out[f"im{i}.png"]:
            a[y:y + 14, x:x + 14] = 250
        Image.fromarray(a).save(folder / f"im{i}.png")
    return out


def _draw(p, name, where):
    """A person's review: the square's box, or "nothing here"."""
    p.add_boxes(name, [] if where is None else [(*where, 14, 14, "square")], annotator="ann")


@pytest.fixture
def one_thread():
    """Tiny batches: one torch thread avoids OpenMP spin-waiting on a shared machine (5x here)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_detection_loop_end_to_end(tmp_path, one_thread):
    placed = _images(tmp_path / "imgs", 40)
    p = Project.init(tmp_path / "shelf", modality="image", classes=["square"], task="detection")
    p.import_(tmp_path / "imgs")
    p.embed("pixels")
    names = {it.id: it.display for it in p.store.items()}

    # no detector yet: a diverse cold-start pick
    first = p.next(4)
    assert [r["kind"] for r in first] == ["cold-start"] * 4 and len({r["item"] for r in first}) == 4
    assert all(r["reason"].startswith("no pre-labels yet") for r in first)
    with pytest.raises(ValidationError, match="auto or random"):
        p.next(2, strategy="margin")
    trained = [r["ref"] for r in first]
    for name in trained:
        _draw(p, name, placed[name])
    empty = next(n for n, w in placed.items() if w is None and n not in trained)
    p.add_boxes(empty, [], annotator="ann")          # reviewed, nothing there: no box row
    imported = next(n for n, w in placed.items() if w is not None and n not in trained + [empty])
    p.add_boxes(imported, [(*placed[imported], 14, 14, "square")], source="import")
    st = p.status()["detection"]
    assert (st["reviewed"], st["imported"], st["to_do"]) == (5, 1, 34)
    assert st["reviewed_empty"] == 1 + sum(placed[n] is None for n in trained)
    asked = {r["item"] for r in p.next(40 - 6, record=False)}
    assert names.keys() - asked == {p.store.resolve_item(n) for n in [*trained, empty, imported]}

    r = p.train_detector(device="cpu", epochs=1, image_size=32)
    assert r["images"] == 6 and r["empty_images"] == st["reviewed_empty"]
    pre = p.prelabel()
    assert pre["images"] == 34                                # reviewed and imported images are skipped
    p.prelabel(items=[imported])                              # a detector that trained on it pre-labels it

    # after pre-labels: the least sure images, each with its pre-label's confidence
    ranked = p.next(5, record=False)
    assert all(r["kind"] == "uncertain" and r["confidence"] is not None for r in ranked)
    assert {r["item"] for r in ranked}.isdisjoint({p.store.resolve_item(n) for n in trained + [empty]})

    # nothing reviewed after a pre-label yet: nothing certified, and it says so
    s = p.autolabel(target_precision=0.9)
    assert s["accepted"] == 0 and s["calibration_items"] == 0 and "review at least 29" in s["reason"]

    # a person accepts 30 pre-labels unchanged (the boxes scoring >= 0.5), finds the imported image
    # right as well (it does not count: its detector trained on it)
    todo = [n for n in placed if n not in trained + [empty, imported]]
    for name in todo[:30] + [imported]:
        keep = [b for b in p.boxes(name, sources=("machine",)) if b["score"] >= 0.5]
        if keep:
            for b in keep:
                p.edit_box(b["id"], annotator="ann")          # unchanged: written as the person's
        else:
            p.mark_reviewed(name, annotator="ann")
    ids, _, _ = p._heldout_reviews()
    assert sorted(ids) == sorted(p.store.resolve_item(n) for n in todo[:30])
    s = p.autolabel(target_precision=0.9)
    bar = s["bar"]
    assert bar["certified"] and bar["right"] == 30 and s["calibration_items"] == 30
    assert s["estimated_precision"] == 1.0 and s["precision_lower"] == pytest.approx(0.05 ** (1 / bar["checked"]))
    # exactly the remaining images whose confidence clears the bar are accepted, boxes and all
    props = p._current_proposals([p.store.resolve_item(n) for n in todo[30:]])
    expect = {i for i, q in props.items() if image_confidence(q, box_threshold=bar["box_threshold"]) >= bar["bar"]}
    assert s["accepted"] == len(expect) >= 1
    st = p.status()["detection"]
    assert st["auto_accepted"] == len(expect) and st["to_do"] == 4 - len(expect)
    for i in expect:
        assert all(b["source"] == "machine" and b["annotator"] == "autolabel" and b["score"] >= bar["box_threshold"]
                   for b in p.boxes(i))
    if len(expect) < 4:
        assert {r["item"] for r in p.next(10, record=False)}.isdisjoint(expect)
    else:
        with pytest.raises(PoolExhaustedError, match="nothing left to ask"):
            p.next(10)
    assert p.prelabel()["images"] == 4 - len(expect)          # accepted images are done

    # export: reviewed (also empty), imported and accepted images are labeled; accepted boxes as annotations
    rep = p.export_dataset(tmp_path / "out.json", format="coco")
    assert rep.labeled == 6 + 30 + len(expect)
    coll = formats.read_coco(tmp_path / "out.json")
    raw = {im["file_name"]: im for im in json.loads((tmp_path / "out.json").read_text())["images"]}
    assert raw[empty]["labelloop_status"] == "reviewed" and raw[imported]["labelloop_status"] == "reviewed"
    by = {r.path: r for r in coll.records}
    for i in expect:
        assert raw[names[i]]["labelloop_status"] == "auto-accepted"
        assert len(by[names[i]].boxes) == len(p.boxes(i)) and not by[names[i]].predicted_boxes

    # the CLI prints the bar honestly
    out = subprocess.run([sys.executable, "-m", "labelloop.cli", "autolabel", "-p", str(p.root),
                          "--target-precision", "0.9"], capture_output=True, text=True, env={**os.environ},
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert "30 reviewed images the detector pre-labeled before review (held out)" in out.stdout
    assert "95% lower bound" in out.stdout
    p.close()
