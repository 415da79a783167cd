"""Shared fixtures: real files on disk (images of every mode, broken ones), real SQLite projects."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def write_image(path: Path, mode: str = "RGB", size=(16, 12), seed: int = 0, fmt: str | None = None) -> Path:
    from PIL import Image

    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = rng.integers(0, 256, size=(size[1], size[0], 4), dtype=np.uint8)
    if mode == "L":
        im = Image.fromarray(arr[..., 0], "L")
    elif mode == "RGBA":
        im = Image.fromarray(arr, "RGBA")
    elif mode == "P":
        im = Image.fromarray(arr[..., :3], "RGB").convert("P")
    else:
        im = Image.fromarray(arr[..., :3], "RGB")
    im.save(path, format=fmt)
    return path


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """cat/ and dog/ subfolders with images in several formats and modes."""
    root = tmp_path / "photos"
    write_image(root / "cat" / "c1.jpg", "RGB", seed=1)
    write_image(root / "cat" / "c2.png", "RGBA", seed=2)
    write_image(root / "cat" / "c3.gif", "P", seed=3)
    write_image(root / "dog" / "d1.bmp", "RGB", seed=4)
    write_image(root / "dog" / "d2.webp", "RGB", seed=5)
    write_image(root / "dog" / "d3.png", "L", size=(1, 1), seed=6)
    return root


@pytest.fixture
def project_factory(tmp_path):
    from labelloop import Project

    made = []

    def make(modality: str = "image", classes=None, name: str = "proj"):
        p = Project.init(tmp_path / name, modality=modality, classes=classes)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()
