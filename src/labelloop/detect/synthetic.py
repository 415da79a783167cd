"""Synthetic detection scenes with known boxes, built from bundled datasets (never downloaded).

No labeled detection data ships in a package here, so the benchmark and the end-to-end test
paste small grey-scale objects (Fashion-MNIST, or scikit-learn's digits) onto varied
backgrounds: each object is scaled, tinted and alpha-blended (its own intensity is the alpha),
and its box is the tight box of the pixels it actually covers. This is **synthetic**: clean
objects on textures, no occlusion beyond the allowed overlap, no real photographs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ValidationError
from .boxes import ImageBoxes

__all__ = ["Scenes", "object_pool", "make_scenes"]

ALPHA_MIN = 0.15          # object pixels with less ink than this do not count for the box


@dataclass
class Scenes:
    images: list           # PIL RGB images
    targets: list          # ImageBoxes per image (xywh pixels)
    class_names: list[str]


def object_pool(source: str = "fashion-mnist", *, classes: list[str] | None = None, n_per_class: int = 200,
                seed: int = 0) -> tuple[list[np.ndarray], np.ndarray, list[str]]:
    """Grey-scale object patches (float 0..1) of a bundled dataset, ``n_per_class`` per class:
    ``(patches, labels, class_names)``; ``classes`` keeps only those classes (renumbered)."""
    from ..datasets import load_dataset

    ds = load_dataset(source)
    names = list(ds.class_names)
    keep = names if classes is None else classes
    unknown = [c for c in keep if c not in names]
    if unknown:
        raise ValidationError(f"{source} has no class {unknown[0]!r}; classes: {', '.join(names)}")
    rng = np.random.default_rng(seed)
    patches, labels = [], []
    for new, c in enumerate(keep):
        idx = np.flatnonzero(ds.labels == names.index(c))
        for i in rng.choice(idx, size=min(n_per_class, len(idx)), replace=False):
            patches.append(np.asarray(ds.items[i], dtype=np.float32) / 255.0)
            labels.append(new)
    return patches, np.asarray(labels, dtype=np.int64), list(keep)


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random texture: a colour gradient, low-frequency blobs and pixel noise, ``(h, w, 3)``."""
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    c0, c1 = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
    angle = rng.uniform(0, 2 * np.pi)
    t = (np.cos(angle) * xx + np.sin(angle) * yy)
    t = (t - t.min()) / max(1e-6, np.ptp(t))
    img = c0 * (1 - t[..., None]) + c1 * t[..., None]
    for _ in range(rng.integers(0, 5)):   # soft blobs
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.05, 0.3) * max(h, w)
        m = np.exp(-((np.mgrid[0:h, 0:w][0] - cy) ** 2 + (np.mgrid[0:h, 0:w][1] - cx) ** 2) / (2 * r * r))
        img = img * (1 - 0.6 * m[..., None]) + 0.6 * m[..., None] * rng.uniform(0, 1, 3)
    img += rng.normal(0, rng.uniform(0.0, 0.08), img.shape)
    return np.clip(img, 0, 1)


def _iou(a, b) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def make_scenes(patches: list[np.ndarray], labels: np.ndarray, class_names: list[str], n_images: int, *,
                size: tuple[int, int] = (128, 128), objects: tuple[int, int] = (1, 4),
                object_size: tuple[int, int] = (14, 48), max_overlap: float = 0.3, seed: int = 0) -> Scenes:
    """``n_images`` scenes of ``size`` (w, h), each with ``objects`` (min, max) objects whose
    longer side is drawn from ``object_size`` px; two boxes overlap by at most ``max_overlap``
    IoU (so some overlap, none hides another)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    images, targets = [], []
    for _ in range(n_images):
        canvas = _background(rng, h, w)
        boxes, labs = [], []
        for _ in range(int(rng.integers(objects[0], objects[1] + 1))):
            k = int(rng.integers(len(patches)))
            side = int(rng.integers(object_size[0], object_size[1] + 1))
            alpha = np.asarray(Image.fromarray((patches[k] * 255).astype(np.uint8)).resize(
                (side, side), Image.Resampling.BILINEAR), dtype=np.float64) / 255.0   # (side, side)
            ys, xs = np.nonzero(alpha > ALPHA_MIN)
            if len(ys) == 0:
                continue
            for _try in range(20):
                ox, oy = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
                box = (ox + xs.min(), oy + ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1)
                if all(_iou(box, b) <= max_overlap for b in boxes):
                    break
            else:
                continue
            colour = rng.uniform(0, 1, 3)
            if np.abs(colour - canvas[oy:oy + side, ox:ox + side].mean((0, 1))).sum() < 0.6:
                colour = 1.0 - colour          # keep the object visible against its background
            a = alpha[..., None]
            canvas[oy:oy + side, ox:ox + side] = canvas[oy:oy + side, ox:ox + side] * (1 - a) + colour * a
            boxes.append(tuple(float(v) for v in box))
            labs.append(int(labels[k]))
        images.append(Image.fromarray((canvas * 255).round().astype(np.uint8), "RGB"))
        targets.append(ImageBoxes(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), labs))
    return Scenes(images, targets, list(class_names))
