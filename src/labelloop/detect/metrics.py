"""Detection quality: COCO-style average precision, written from the COCO evaluation protocol.

For one class and one IoU threshold t:

1. per image, the class's detections by descending score (at most ``max_detections``); each
   takes the not yet matched ground-truth box of that class with the highest IoU >= t
   (a true positive), else it is a false positive;
2. all images' detections pooled and sorted by score (stable, images in order);
   ``recall = cum TP / #ground truth``, ``precision = cum TP / (cum TP + cum FP)``;
3. precision made non-increasing from the right (the envelope), read at the 101 recall
   points 0, 0.01, ..., 1 (the first detection reaching each recall; 0 past the last recall);
   AP is their mean.

mAP averages AP over the classes that have ground truth (a class with none is left out, as
COCO does); ``mAP@0.5:0.95`` also averages over t = 0.50, 0.55, ..., 0.95.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..errors import ValidationError
from .boxes import ImageBoxes

__all__ = ["COCO_IOU_THRESHOLDS", "RECALL_POINTS", "DetectionMetrics", "iou_xywh", "match_detections",
           "average_precision", "evaluate_detections"]

COCO_IOU_THRESHOLDS = np.round(np.arange(10) * 0.05 + 0.5, 2)   # 0.50 ... 0.95
RECALL_POINTS = np.linspace(0.0, 1.0, 101)                        # COCO's recThrs


@dataclass
class DetectionMetrics:
    map50: float                      # mAP at IoU 0.5
    map: float                        # mAP averaged over IoU 0.50:0.95
    ap: np.ndarray                    # (T, C) AP per threshold and class; nan: class without ground truth
    iou_thresholds: np.ndarray        # (T,)
    n_ground_truth: np.ndarray        # (C,) boxes per class

    def to_dict(self) -> dict:
        return {"map50": self.map50, "map": self.map,
                "ap50_per_class": [None if np.isnan(v) else float(v) for v in self.ap[0]],
                "n_ground_truth": self.n_ground_truth.tolist()}


def iou_xywh(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xywh boxes as numpy: ``(N, 4), (M, 4) -> (N, M)``."""
    import torch

    from .boxes import box_iou, xywh_to_xyxy

    return box_iou(xywh_to_xyxy(torch.from_numpy(a)), xywh_to_xyxy(torch.from_numpy(b))).numpy()


def match_detections(det_boxes: np.ndarray, gt_boxes: np.ndarray, iou_thresholds: np.ndarray) -> np.ndarray:
    """Greedy COCO matching in one image and one class: ``(D, T)`` bool, True where the
    detection is a true positive at threshold t. Detections are taken in the given order
    (the caller sorts them by descending score)."""
    D, G = det_boxes.shape[0], gt_boxes.shape[0]
    tp = np.zeros((D, len(iou_thresholds)), dtype=bool)
    if D == 0 or G == 0:
        return tp
    iou = iou_xywh(det_boxes, gt_boxes)                         # (D, G)
    for ti, t in enumerate(iou_thresholds):
        taken = np.zeros(G, dtype=bool)
        for d in range(D):
            cand = np.where(taken, -1.0, iou[d])
            g = int(np.argmax(cand))                             # best free ground truth
            if cand[g] >= t:
                taken[g] = True
                tp[d, ti] = True
    return tp


def average_precision(tp: np.ndarray, scores: np.ndarray, n_ground_truth: int) -> float:
    """101-point interpolated AP of pooled detections: ``tp (D,)`` bool, ``scores (D,)``."""
    if n_ground_truth == 0:
        return float("nan")
    order = np.argsort(-scores, kind="mergesort")               # stable, like COCO
    hit = tp[order].astype(np.float64)
    ctp, cfp = np.cumsum(hit), np.cumsum(1.0 - hit)
    recall = ctp / n_ground_truth
    precision = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
    # envelope: p[i] = max(p[i:]) so precision never rises with recall
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    idx = np.searchsorted(recall, RECALL_POINTS, side="left")   # first detection reaching r
    q = np.zeros(len(RECALL_POINTS))
    ok = idx < len(precision)
    q[ok] = precision[idx[ok]]
    return float(q.mean())


def evaluate_detections(predictions: Sequence[ImageBoxes], ground_truth: Sequence[ImageBoxes], *,
                        num_classes: int | None = None,
                        iou_thresholds: Sequence[float] = tuple(COCO_IOU_THRESHOLDS),
                        max_detections: int = 100) -> DetectionMetrics:
    """mAP@0.5 and mAP@0.5:0.95 of ``predictions`` (with scores) against ``ground_truth``,
    one :class:`ImageBoxes` per image in the same order."""
    if len(predictions) != len(ground_truth):
        raise ValidationError(f"{len(predictions)} predicted images but {len(ground_truth)} "
                              "ground-truth images; give one of each per image, in the same order")
    for i, p in enumerate(predictions):
        if p.scores is None:
            raise ValidationError(f"predicted image {i} has no scores; predictions need a score per box")
    thr = np.asarray(iou_thresholds, dtype=np.float64)
    labels = [x.labels for x in (*predictions, *ground_truth) if len(x)]
    C = num_classes if num_classes is not None else (int(max(lab.max() for lab in labels)) + 1 if labels else 0)
    n_gt = np.zeros(C, dtype=np.int64)
    tps: list[list[np.ndarray]] = [[] for _ in range(C)]         # per class: (D_i, T) per image
    scores: list[list[np.ndarray]] = [[] for _ in range(C)]
    for pred, gt in zip(predictions, ground_truth, strict=True):
        for c in range(C):
            g = gt.boxes[gt.labels == c]
            n_gt[c] += g.shape[0]
            m = pred.labels == c
            s = pred.scores[m]
            order = np.argsort(-s, kind="mergesort")[:max_detections]
            tps[c].append(match_detections(pred.boxes[m][order], g, thr))
            scores[c].append(s[order])
    ap = np.full((len(thr), C), np.nan)
    for c in range(C):
        if n_gt[c] == 0:
            continue
        tp_c = np.concatenate(tps[c]) if tps[c] else np.zeros((0, len(thr)), dtype=bool)
        s_c = np.concatenate(scores[c]) if scores[c] else np.zeros(0)
        for ti in range(len(thr)):
            ap[ti, c] = average_precision(tp_c[:, ti], s_c, int(n_gt[c]))
    has = n_gt > 0
    if not has.any():
        raise ValidationError("the ground truth holds no boxes: nothing to evaluate against")
    i50 = np.flatnonzero(np.isclose(thr, 0.5))
    map50 = float(np.mean(ap[i50[0], has])) if len(i50) else float("nan")
    return DetectionMetrics(map50=map50, map=float(np.mean(ap[:, has])), ap=ap,
                            iou_thresholds=thr, n_ground_truth=n_gt)
