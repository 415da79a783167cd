"""Image-level review of pre-labels: what a person would keep, fix or draw, how sure the
detector is of a whole image, and the confidence bar that certifies auto-accepting images.

An image is accepted or not as a whole (all its boxes at once). Its pre-labels are the
predicted boxes with score >= ``box_threshold``. The review of one image (:func:`review_image`)
matches them greedily by score to the people's boxes (best IoU first):

- **unchanged**: IoU >= 0.5 and the right class (the person accepts the box as it is);
- **corrected**: IoU >= 0.5 with the wrong class, or 0.1 <= IoU < 0.5 (the class or the box moved);
- **drawn**: a person's box no pre-label matched (drawn from scratch);
- **deleted**: a pre-label that matched nothing.

The image is **right** when every box is unchanged and nothing is drawn or deleted.

Image confidence (:func:`image_confidence`): the detector is as sure of an image as of its
least sure decision, kept or dropped: ``min(min kept score, 1 - max dropped score)`` (1 for an
image with no boxes either way).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..autolabel import DEFAULT_LEVEL, precision_lower_bound
from .boxes import ImageBoxes
from .metrics import iou_xywh

__all__ = ["MATCH_IOU", "MOVE_IOU", "Review", "review_image", "image_confidence", "accept_threshold"]

MATCH_IOU = 0.5     # a box this close needs no change (the mAP@0.5 criterion)
MOVE_IOU = 0.1      # a box this close is worth correcting rather than redrawing


@dataclass
class Review:
    unchanged: int
    corrected: int
    drawn: int
    deleted: int

    @property
    def right(self) -> bool:
        return self.corrected == 0 and self.drawn == 0 and self.deleted == 0


def review_image(pred: ImageBoxes, truth: ImageBoxes, *, box_threshold: float) -> Review:
    """What reviewing ``pred`` (boxes with score >= ``box_threshold``) against ``truth`` takes."""
    keep = pred.scores >= box_threshold
    order = np.argsort(-pred.scores[keep], kind="mergesort")
    boxes, labels = pred.boxes[keep][order], pred.labels[keep][order]
    G = len(truth)
    iou = iou_xywh(boxes, truth.boxes) if len(boxes) and G else np.zeros((len(boxes), G))   # (D, G)
    taken = np.zeros(G, dtype=bool)
    unchanged = corrected = deleted = 0
    for d in range(len(boxes)):
        cand = np.where(taken, -1.0, iou[d]) if G else np.zeros(0)
        g = int(np.argmax(cand)) if G else -1
        if g < 0 or cand[g] < MOVE_IOU:
            deleted += 1
            continue
        taken[g] = True
        if cand[g] >= MATCH_IOU and labels[d] == truth.labels[g]:
            unchanged += 1
        else:
            corrected += 1
    return Review(unchanged=unchanged, corrected=corrected, drawn=int((~taken).sum()), deleted=deleted)


def image_confidence(pred: ImageBoxes, *, box_threshold: float) -> float:
    """``min(min kept score, 1 - max dropped score)``; 1 when there is no box either way."""
    s = pred.scores
    kept, dropped = s[s >= box_threshold], s[s < box_threshold]
    return float(min(kept.min() if kept.size else 1.0, 1.0 - dropped.max() if dropped.size else 1.0))


def accept_threshold(confidence: np.ndarray, right: np.ndarray, *, target_precision: float,
                     confidence_level: float = DEFAULT_LEVEL) -> float:
    """The lowest image confidence whose accepted set of reviewed images (confidence >= it)
    has a one-sided Clopper-Pearson lower bound of its share of right images >= target;
    ``inf`` (accept nothing) when no set reaches it.

    ``confidence``, ``right``: ``(n,)`` over images people reviewed, drawn at random. Trying
    every cut and keeping the largest that passes is a mild multiple comparison: the realised
    precision on fresh images is what the benchmark reports."""
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(right, dtype=bool)
    order = np.argsort(-conf, kind="mergesort")
    c, k = conf[order], np.cumsum(ok[order])                 # accepted = the first m, m = 1..n
    m = np.arange(1, len(c) + 1)
    lb = precision_lower_bound(k, m, confidence_level=confidence_level)
    # a cut can only fall between distinct confidences: the last index of each run of ties
    last = np.r_[c[1:] != c[:-1], True]
    passing = np.flatnonzero(last & (lb >= target_precision))
    return float(c[passing.max()]) if passing.size else float("inf")
