"""Detection projects: the task, append-only boxes in a real SQLite store, train / prelabel
through the API and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from labelloop import Project
from labelloop.errors import NotReadyError, UnknownClassError, ValidationError


def _images(folder, n=6, seed=0):
    """Bright squares on dark noise, 48 x 40 px PNG files; returns [(name, (x, y))]."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        a = rng.integers(0, 40, (40, 48, 3)).astype(np.uint8)
        x, y = int(rng.integers(0, 30)), int(rng.integers(0, 22))
        a[y:y + 14, x:x + 14] = 250
        Image.fromarray(a).save(folder / f"im{i}.png")
        out.append((f"im{i}.png", (x, y)))
    return out


@pytest.fixture
def shelf(tmp_path):
    p = Project.init(tmp_path / "shelf", modality="image", classes=["square", "bar"], task="detection")
    placed = _images(tmp_path / "imgs")
    p.import_(tmp_path / "imgs")
    yield p, placed
    p.close()


def test_task_is_stored_and_checked(tmp_path):
    with Project.init(tmp_path / "c", modality="text") as p:
        assert p.task == "classification"
        with pytest.raises(ValidationError, match="detection projects"):
            p.prelabel()
    with pytest.raises(ValidationError, match="--modality image"):
        Project.init(tmp_path / "t", modality="text", task="detection")
    with pytest.raises(ValidationError, match="task must be one of"):
        Project.init(tmp_path / "x", modality="image", task="segmentation")


def test_boxes_are_append_only(shelf):
    p, placed = shelf
    (x, y) = placed[0][1]
    a, b = p.add_boxes("im0.png", [(x, y, 14, 14, "square"), (1, 1, 5, 30, "bar")], annotator="ann")
    assert [(r["id"], r["class"], r["source"], r["annotator"]) for r in p.boxes("im0.png")] == \
        [(a, "square", "human", "ann"), (b, "bar", "human", "ann")]
    # an edit is a new row that replaces the old one; a deletion withdraws it
    a2 = p.edit_box(a, x=x + 1, annotator="rev")
    p.edit_box(b, delete=True, annotator="rev")
    now = p.boxes("im0.png")
    assert [(r["id"], r["x"], r["class"], r["annotator"]) for r in now] == [(a2, x + 1, "square", "rev")]
    with pytest.raises(ValidationError, match="already edited"):
        p.edit_box(a, class_name="bar")
    with pytest.raises(ValidationError, match="no box with id 999"):
        p.edit_box(999)
    # nothing was overwritten: four rows in the table
    assert len(p.store.conn.execute("SELECT id FROM boxes").fetchall()) == 4


def test_bad_boxes_are_named_and_nothing_is_stored(shelf):
    p, _ = shelf
    with pytest.raises(UnknownClassError, match="unknown class 'can'"):
        p.add_boxes("im1.png", [(0, 0, 5, 5, "square"), (0, 0, 5, 5, "can")])
    with pytest.raises(ValidationError, match=r"im1.png \(48x40 px\): box .* outside the image"):
        p.add_boxes("im1.png", [(60, 0, 5, 5, "square")])
    with pytest.raises(ValidationError, match="positive width"):
        p.add_boxes("im1.png", [(0, 0, 0, 5, "square")])
    with pytest.raises(ValidationError, match="four numbers"):
        p.add_boxes("im1.png", [("a", 0, 5, 5, "square")])
    assert p.boxes() == []
    with pytest.raises(NotReadyError, match="draw or import boxes"):
        p.train_detector()
    with pytest.raises(NotReadyError, match="no detector yet"):
        p.prelabel()
    p.add_boxes("im1.png", [(0, 0, 5, 5, "can")], create_classes=True)
    assert "can" in p.classes


def test_cli_init_detection_and_prelabel_before_training(tmp_path):
    env = {**os.environ}
    run = [sys.executable, "-m", "labelloop.cli"]
    out = subprocess.run([*run, "init", "-p", tmp_path / "s", "--modality", "image", "--task", "detection",
                          "--classes", "bottle,can"], capture_output=True, text=True, env=env, check=True)
    assert "image detection project" in out.stdout
    assert Project(tmp_path / "s").task == "detection"
    bad = subprocess.run([*run, "prelabel", "-p", tmp_path / "s"], capture_output=True, text=True, env=env)
    assert bad.returncode != 0 and "no detector yet: run labelloop train first" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
def test_train_and_prelabel_through_the_cli(shelf):
    """Real packaged weights; tiny images and a few epochs: the loop runs end to end."""
    p, placed = shelf
    for name, (x, y) in placed[:4]:
        p.add_boxes(name, [(x, y, 14, 14, "square")])
    root = str(p.root)
    run = [sys.executable, "-m", "labelloop.cli"]
    out = subprocess.run([*run, "train", "-p", root, "--epochs", "3", "--device", "cpu", "--json"],
                         capture_output=True, text=True, check=True)
    r = json.loads(out.stdout)
    assert r["images"] == 4 and r["boxes"] == 4 and r["epochs"] == 3 and r["trainable_blocks"] == 0
    assert (p.root / r["path"]).is_file()
    out = subprocess.run([*run, "prelabel", "-p", root, "--json", "--score-threshold", "0"],
                         capture_output=True, text=True, check=True)
    r = json.loads(out.stdout)
    assert r["images"] == 2 and r["boxes"] > 0
    machine = p.boxes(sources=("machine",))
    assert {b["item_id"] for b in machine} == {p.store.resolve_item(n) for n, _ in placed[4:]}
    assert all(b["score"] is not None and b["run_id"] == r["run"] for b in machine)
    # pre-labeling again withdraws the previous machine boxes instead of piling them up
    again = p.prelabel(score_threshold=0.0)
    assert len(p.boxes(sources=("machine",))) == again["boxes"]
