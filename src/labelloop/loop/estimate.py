"""How accurate is the whole dataset if exported now: human labels count as right, every other
item counts at its calibrated confidence.

    accuracy = (n_human + sum_i conf_i) / n          over items without a human label
    var      = sum_i conf_i (1 - conf_i)              (each item's own Bernoulli noise)
             + (N_machine * delta)^2                   (the calibration itself may be off)
    delta^2  = gap^2 + p (1 - p) / m                   on the m held-out human labels: gap =
                                                       mean confidence - accuracy, p = accuracy

The interval is the normal one at ``confidence_level``, clipped to [n_human / n, 1].
"""

from __future__ import annotations

import math
from statistics import NormalDist
from dataclasses import dataclass

import numpy as np

__all__ = ["DatasetEstimate", "estimate_dataset_accuracy"]


@dataclass(frozen=True)
class DatasetEstimate:
    accuracy: float
    lower: float
    upper: float
    n_items: int
    n_human: int
    calibration_gap: float | None   # held-out mean confidence - accuracy (None: no held-out labels)


def estimate_dataset_accuracy(confidence: np.ndarray, human: np.ndarray, heldout_confidence: np.ndarray,
                              heldout_correct: np.ndarray, *, confidence_level: float = 0.95,
                              heldout_weights: np.ndarray | None = None) -> DatasetEstimate:
    conf = np.asarray(confidence, dtype=np.float64)
    human = np.asarray(human, bool)
    n = conf.size
    if n == 0:
        return DatasetEstimate(float("nan"), float("nan"), float("nan"), 0, 0, None)
    c = conf[~human]  # (N,) machine-labeled or predicted
    n_h = int(human.sum())
    total = n_h + float(c.sum())
    var = float((c * (1.0 - c)).sum())
    hc = np.asarray(heldout_confidence, dtype=np.float64)
    gap = None
    if hc.size:
        w = np.ones(hc.size) if heldout_weights is None else np.asarray(heldout_weights, dtype=np.float64)
        p = float((w * np.asarray(heldout_correct, dtype=np.float64)).sum() / w.sum())
        gap = float((w * hc).sum() / w.sum()) - p
        m_eff = w.sum() ** 2 / (w**2).sum()  # effective sample size of the weighted held-out set
        delta2 = gap**2 + max(p * (1 - p), 0.25 / m_eff) / m_eff
    else:
        delta2 = 0.25  # nothing to check the calibration against: anything is possible
    var += (c.size**2) * delta2
    # the normal quantile from the standard library (scipy.stats costs 1.4 s to import)
    half = NormalDist().inv_cdf(0.5 + confidence_level / 2) * math.sqrt(var)
    return DatasetEstimate(total / n, max(total - half, n_h) / n, min(total + half, n) / n, n, n_h, gap)
