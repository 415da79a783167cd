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

The bar (:func:`certify_images`): on images people reviewed after the detector pre-labeled them
(held out: the detector never trained on them), the box threshold that makes the most of them
exactly right (:func:`choose_box_threshold`), then the lowest image confidence whose reviewed
images above it are right with a one-sided Clopper-Pearson lower bound >= the target
(:func:`accept_threshold`); when none is, how many more right reviews the most promising band
needs (:func:`labelloop.loop.certify.more_needed`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from ..autolabel import DEFAULT_LEVEL, min_verified_count, precision_lower_bound
from .boxes import ImageBoxes
from .metrics import iou_xywh

__all__ = ["MATCH_IOU", "MOVE_IOU", "BOX_THRESHOLDS", "DEFAULT_BOX_THRESHOLD", "Review", "ImageBar", "review_image",
           "image_confidence", "accept_threshold", "choose_box_threshold", "certify_images"]

MATCH_IOU = 0.5     # a box this close needs no change (the mAP@0.5 criterion)
MOVE_IOU = 0.1      # a box this close is worth correcting rather than redrawing
BOX_THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.2, 0.81, 0.05), 2))   # tried by choose_box_threshold
DEFAULT_BOX_THRESHOLD = 0.5   # before any image is reviewed: a box is kept when the detector says more likely than not


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


def choose_box_threshold(preds: Sequence[ImageBoxes], truths: Sequence[ImageBoxes],
                         thresholds: Sequence[float] = BOX_THRESHOLDS) -> float:
    """The box threshold that makes the most reviewed images exactly right (the lowest of ties);
    :data:`DEFAULT_BOX_THRESHOLD` without reviewed images."""
    if not len(preds):
        return DEFAULT_BOX_THRESHOLD
    right = [sum(review_image(p, t, box_threshold=tau).right for p, t in zip(preds, truths, strict=True))
             for tau in thresholds]
    return float(thresholds[int(np.argmax(right))])   # argmax: the first (lowest) of ties


@dataclass
class ImageBar:
    """What the reviewed images certify: accept an image when its confidence >= ``bar``."""

    box_threshold: float
    bar: float                      # inf: nothing certified
    reviewed: int                   # held-out reviewed images
    right: int                      # of them exactly right at the box threshold
    checked: int = 0                # reviewed images at or above the bar (or in the candidate band)
    correct: int = 0                # of them right
    precision_estimate: float | None = None
    precision_lower: float | None = None
    more_needed: int | None = None  # further right reviews in the candidate band that would certify it
    candidate: float | None = None  # the image confidence the candidate band starts at
    reason: str = ""

    @property
    def certified(self) -> bool:
        return bool(np.isfinite(self.bar))

    def to_dict(self) -> dict:
        return asdict(self) | {"bar": self.bar if self.certified else None, "certified": self.certified}


def certify_images(preds: Sequence[ImageBoxes], truths: Sequence[ImageBoxes], *, target_precision: float,
                   confidence_level: float = DEFAULT_LEVEL,
                   box_threshold: float | None = None) -> ImageBar:
    """The image-level accept bar from held-out reviewed images (``preds``: what the detector
    proposed before the review, ``truths``: the boxes after it). Choosing the box threshold and
    the cut on the same images is a mild multiple comparison; the benchmark reports the
    realised precision on fresh images."""
    from ..loop.certify import more_needed

    tau = choose_box_threshold(preds, truths) if box_threshold is None else float(box_threshold)
    right = np.array([review_image(p, t, box_threshold=tau).right for p, t in zip(preds, truths, strict=True)],
                     dtype=bool)
    conf = np.array([image_confidence(p, box_threshold=tau) for p in preds], dtype=np.float64)
    out = ImageBar(box_threshold=tau, bar=float("inf"), reviewed=len(right), right=int(right.sum()))
    need = min_verified_count(target_precision, confidence_level)
    if not len(right):
        out.more_needed = need
        out.reason = (f"no reviewed image was pre-labeled before its review: review at least {need} pre-labeled "
                      "images (labelloop prelabel, then labelloop next)")
        return out
    bar = accept_threshold(conf, right, target_precision=target_precision, confidence_level=confidence_level)
    if np.isfinite(bar):
        sel = conf >= bar
        k, m = int(right[sel].sum()), int(sel.sum())
        out.bar, out.checked, out.correct = bar, m, k
        out.precision_estimate = k / m
        out.precision_lower = float(precision_lower_bound(k, m, confidence_level=confidence_level))
        out.reason = (f"{k} of the {m} reviewed images with image confidence >= {bar:.3f} were exactly right: "
                      f"lower bound {out.precision_lower:.3f} >= target {target_precision}")
        return out
    # the candidate band: the largest top group whose observed share of right images meets the target
    order = np.argsort(-conf, kind="mergesort")
    k_cum = np.cumsum(right[order])                               # (n,) right among the top m
    m_cum = np.arange(1, len(order) + 1)
    ends = np.flatnonzero(np.r_[conf[order][1:] != conf[order][:-1], True])   # cuts between distinct values
    good = ends[k_cum[ends] >= target_precision * m_cum[ends]]
    if good.size:
        e = int(good.max())
        k, m = int(k_cum[e]), int(m_cum[e])
        out.checked, out.correct, out.candidate = m, k, float(conf[order][e])
        out.precision_estimate = k / m
        out.precision_lower = float(precision_lower_bound(k, m, confidence_level=confidence_level))
        out.more_needed = more_needed(k, m, target_precision=target_precision, confidence_level=confidence_level)
        out.reason = (f"not certified: {k} of the {m} reviewed images with image confidence >= {out.candidate:.3f} "
                      f"were exactly right (lower bound {out.precision_lower:.3f} < target {target_precision}); "
                      + (f"{out.more_needed} more right reviews in that band would certify it"
                         if out.more_needed is not None else "far from certifiable"))
    else:
        out.reason = (f"not certified: no confidence band of the {len(right)} reviewed images is right often enough "
                      f"({int(right.sum())} exactly right at box threshold {tau:.2f}); train on more images first")
    return out
