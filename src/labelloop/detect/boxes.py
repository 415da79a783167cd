"""Box arithmetic in plain torch: conversions, IoU, coding against points or anchors, NMS.

Conventions (one home for them): a box is four floats in image pixels with the origin at the
top-left corner and y pointing down.

- ``xywh``   ``(x, y, w, h)``: top-left corner, width, height (COCO, the store, predictions)
- ``xyxy``   ``(x1, y1, x2, y2)``: top-left and bottom-right corners (what IoU and NMS use)
- ``cxcywh`` ``(cx, cy, w, h)``: centre, width, height (YOLO, anchor coding)

Widths are continuous: a box from x1 = 2 to x2 = 5 has width 3 (no ``+ 1`` pixel convention).
Every function takes ``(..., 4)`` float tensors and keeps the leading dimensions.
torchvision cannot be installed here, so this is written from the definitions; the tests check
each function against numbers worked out by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ValidationError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "ImageBoxes",
    "xywh_to_xyxy",
    "xyxy_to_xywh",
    "cxcywh_to_xyxy",
    "xyxy_to_cxcywh",
    "xywh_to_cxcywh",
    "cxcywh_to_xywh",
    "box_area",
    "box_iou",
    "aligned_iou",
    "aligned_giou",
    "encode_ltrb",
    "decode_ltrb",
    "encode_anchor",
    "decode_anchor",
    "nms",
    "batched_nms",
]


# ------------------------------------------------------------------------- conversions
def xywh_to_xyxy(b: "torch.Tensor") -> "torch.Tensor":
    x, y, w, h = b.unbind(-1)
    return _stack(x, y, x + w, y + h)


def xyxy_to_xywh(b: "torch.Tensor") -> "torch.Tensor":
    x1, y1, x2, y2 = b.unbind(-1)
    return _stack(x1, y1, x2 - x1, y2 - y1)


def cxcywh_to_xyxy(b: "torch.Tensor") -> "torch.Tensor":
    cx, cy, w, h = b.unbind(-1)
    return _stack(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def xyxy_to_cxcywh(b: "torch.Tensor") -> "torch.Tensor":
    x1, y1, x2, y2 = b.unbind(-1)
    return _stack((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1)


def xywh_to_cxcywh(b: "torch.Tensor") -> "torch.Tensor":
    x, y, w, h = b.unbind(-1)
    return _stack(x + w / 2, y + h / 2, w, h)


def cxcywh_to_xywh(b: "torch.Tensor") -> "torch.Tensor":
    cx, cy, w, h = b.unbind(-1)
    return _stack(cx - w / 2, cy - h / 2, w, h)


def _stack(*cols: "torch.Tensor") -> "torch.Tensor":
    import torch

    return torch.stack(cols, dim=-1)


# ---------------------------------------------------------------------------------- IoU
def box_area(b: "torch.Tensor") -> "torch.Tensor":
    """Area of ``xyxy`` boxes; a degenerate box (x2 < x1) has area 0."""
    return (b[..., 2] - b[..., 0]).clamp(min=0) * (b[..., 3] - b[..., 1]).clamp(min=0)


def _inter_union(a: "torch.Tensor", b: "torch.Tensor"):
    import torch

    # a, b broadcast against each other: (..., 4) each
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a) + box_area(b) - inter
    return inter, union


def box_iou(a: "torch.Tensor", b: "torch.Tensor") -> "torch.Tensor":
    """Pairwise IoU of ``xyxy`` boxes: ``(N, 4), (M, 4) -> (N, M)``.

    IoU = |a ∩ b| / |a ∪ b|; 0 where the union is empty (two degenerate boxes)."""
    inter, union = _inter_union(a[:, None, :], b[None, :, :])   # (N, M) each
    return _safe_div(inter, union)


def aligned_iou(a: "torch.Tensor", b: "torch.Tensor") -> "torch.Tensor":
    """IoU of ``a[i]`` with ``b[i]``: ``(..., 4), (..., 4) -> (...)``."""
    inter, union = _inter_union(a, b)
    return _safe_div(inter, union)


def aligned_giou(a: "torch.Tensor", b: "torch.Tensor") -> "torch.Tensor":
    """Generalised IoU of ``a[i]`` with ``b[i]`` (Rezatofighi et al. 2019), in [-1, 1]:
    ``GIoU = IoU - |C \\ (a ∪ b)| / |C|`` with C the smallest box enclosing both."""
    import torch

    inter, union = _inter_union(a, b)
    iou = _safe_div(inter, union)
    lt = torch.minimum(a[..., :2], b[..., :2])
    rb = torch.maximum(a[..., 2:], b[..., 2:])
    wh = (rb - lt).clamp(min=0)
    hull = wh[..., 0] * wh[..., 1]
    return iou - _safe_div(hull - union, hull)


def _safe_div(num: "torch.Tensor", den: "torch.Tensor") -> "torch.Tensor":
    import torch

    return torch.where(den > 0, num / den.clamp(min=1e-12), torch.zeros_like(num))


# ------------------------------------------------------------------------------- coding
def encode_ltrb(points: "torch.Tensor", boxes: "torch.Tensor", stride: float | "torch.Tensor") -> "torch.Tensor":
    """Box as seen from a point (FCOS, Tian et al. 2019), in units of the feature stride:
    ``(l, t, r, b) = (px - x1, py - y1, x2 - px, y2 - py) / stride``.

    ``points (N, 2)`` (x, y) pixels, ``boxes (N, 4)`` xyxy, ``stride`` a number or ``(N,)``.
    A point outside its box gives a negative distance (callers assign only inside points)."""
    import torch

    s = torch.as_tensor(stride, dtype=boxes.dtype, device=boxes.device)
    s = s[..., None] if s.ndim else s
    px, py = points.unbind(-1)
    x1, y1, x2, y2 = boxes.unbind(-1)
    return _stack(px - x1, py - y1, x2 - px, y2 - py) / s


def decode_ltrb(points: "torch.Tensor", ltrb: "torch.Tensor", stride: float | "torch.Tensor") -> "torch.Tensor":
    """Inverse of :func:`encode_ltrb`: ``(N, 2), (N, 4) -> (N, 4)`` xyxy pixels."""
    import torch

    s = torch.as_tensor(stride, dtype=ltrb.dtype, device=ltrb.device)
    s = s[..., None] if s.ndim else s
    d = ltrb * s
    px, py = points.unbind(-1)
    return _stack(px - d[..., 0], py - d[..., 1], px + d[..., 2], py + d[..., 3])


def encode_anchor(anchors: "torch.Tensor", boxes: "torch.Tensor") -> "torch.Tensor":
    """Box relative to an anchor (Faster R-CNN coding), both ``xyxy`` ``(N, 4)``:
    ``(dx, dy, dw, dh) = ((cx - acx) / aw, (cy - acy) / ah, log(w / aw), log(h / ah))``."""
    import torch

    a = xyxy_to_cxcywh(anchors)
    g = xyxy_to_cxcywh(boxes)
    return _stack((g[..., 0] - a[..., 0]) / a[..., 2], (g[..., 1] - a[..., 1]) / a[..., 3],
                  torch.log(g[..., 2] / a[..., 2]), torch.log(g[..., 3] / a[..., 3]))


def decode_anchor(anchors: "torch.Tensor", deltas: "torch.Tensor") -> "torch.Tensor":
    """Inverse of :func:`encode_anchor`: ``(N, 4) xyxy, (N, 4) deltas -> (N, 4) xyxy``."""
    import torch

    a = xyxy_to_cxcywh(anchors)
    cx = a[..., 0] + deltas[..., 0] * a[..., 2]
    cy = a[..., 1] + deltas[..., 1] * a[..., 3]
    w = a[..., 2] * torch.exp(deltas[..., 2])
    h = a[..., 3] * torch.exp(deltas[..., 3])
    return cxcywh_to_xyxy(_stack(cx, cy, w, h))


# ---------------------------------------------------------------------------------- NMS
def nms(boxes: "torch.Tensor", scores: "torch.Tensor", iou_threshold: float) -> "torch.Tensor":
    """Greedy non-maximum suppression; indices of the kept boxes, highest score first.

    Walk the boxes by descending score (ties: lower index first); keep a box unless it
    overlaps an already kept box with IoU > ``iou_threshold``. ``boxes (N, 4)`` xyxy."""
    import torch

    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    order = torch.sort(scores, descending=True, stable=True).indices
    iou = box_iou(boxes[order], boxes[order])                  # (N, N), in score order
    over = (iou > iou_threshold).cpu()
    n = order.shape[0]
    suppressed = torch.zeros(n, dtype=torch.bool)
    keep = []
    for i in range(n):  # O(N) python steps over a precomputed matrix; N is capped by top-k
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= over[i]
    return order[torch.tensor(keep, dtype=torch.long, device=order.device)]


def batched_nms(boxes: "torch.Tensor", scores: "torch.Tensor", classes: "torch.Tensor", *,
                iou_threshold: float = 0.5, score_threshold: float = 0.0,
                pre_nms_top_k: int | None = 1000, max_detections: int | None = 100) -> "torch.Tensor":
    """NMS within each class; indices of the kept boxes, highest score first.

    Drops scores below ``score_threshold``; keeps the ``pre_nms_top_k`` best before NMS and
    the ``max_detections`` best after. Boxes of different classes never suppress each other:
    each class is shifted by ``class * (largest coordinate + 1)`` so they cannot overlap."""
    import torch

    idx = torch.nonzero(scores >= score_threshold).flatten()
    if pre_nms_top_k is not None and idx.numel() > pre_nms_top_k:
        idx = idx[torch.topk(scores[idx], pre_nms_top_k).indices]
    if idx.numel() == 0:
        return idx
    b = boxes[idx]
    offset = classes[idx].to(b.dtype) * (b.max() - b.min() + 1)           # (K,)
    kept = idx[nms(b + offset[:, None], scores[idx], iou_threshold)]
    return kept[:max_detections] if max_detections is not None else kept


# ----------------------------------------------------------------------- boxes of an image
@dataclass
class ImageBoxes:
    """The boxes of one image: ``boxes (n, 4)`` xywh pixels, ``labels (n,)`` class indices,
    ``scores (n,)`` (None for boxes people drew). What the detector predicts and what the
    metrics compare."""

    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float64).reshape(-1, 4)
        self.labels = np.asarray(self.labels, dtype=np.int64).reshape(-1)
        if self.scores is not None:
            self.scores = np.asarray(self.scores, dtype=np.float64).reshape(-1)
        n = self.boxes.shape[0]
        if self.labels.shape[0] != n or (self.scores is not None and self.scores.shape[0] != n):
            raise ValidationError(
                f"an image has {n} boxes but {self.labels.shape[0]} labels"
                + ("" if self.scores is None else f" and {self.scores.shape[0]} scores")
                + "; give one label (and score) per box")
        if n and (not np.isfinite(self.boxes).all() or (self.boxes[:, 2:] < 0).any()):
            raise ValidationError("boxes must be finite (x, y, w, h) with w, h >= 0; "
                                  f"got {self.boxes[~np.isfinite(self.boxes).all(1) | (self.boxes[:, 2:] < 0).any(1)][:3].tolist()}")

    def __len__(self) -> int:
        return int(self.boxes.shape[0])
