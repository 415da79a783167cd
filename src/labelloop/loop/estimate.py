"""How accurate is the whole dataset if exported now: human labels count as right, every other
item is right or wrong, and its calibrated confidence says how likely.

The estimate is prediction-powered (Angelopoulos et al. 2023, "Prediction-powered
inference"): the N items without a human label contribute their confidences, corrected by the
calibration error measured where the truth is known, on the m human labels scored held out
(by models that never saw them):

    accuracy = (n_human + sum_i conf_i - sum_b N_b gap_b) / n
    gap_b    = mean over held-out items in confidence stratum b of (confidence - correct)
    var      = sum_i conf_i (1 - conf_i)                 each item's own Bernoulli noise
             + sum_b N_b^2 s_b^2 / m_b                   the measured correction's sampling error

Strata: up to MAX_STRATA equal-count bins of the held-out confidences, at least MIN_PER_STRATUM
held-out items each (one stratum below that); N_b counts the unlabeled items whose confidence
falls in bin b, so a held-out set that is less confident than the population (fold models see
fewer labels) is compared like with like. ``s_b^2`` is the (weighted) variance of
``confidence - correct`` in the stratum, with two pseudo-items (one right, one wrong, at the
stratum's mean confidence) so a small stratum with no error yet is not taken as error-free
(the rule-of-three idea); the quantile is Student's t with m_eff - 1 degrees of freedom.

Assumptions, stated so a user can judge them: the held-out human labels are a random sample of
the items within their class (``heldout_weights`` reweight the classes to the population's
predicted shares, :func:`labelloop.loop.calibrate.prediction_weights`), and the calibration
error of the fold models at a given confidence is that of the final model. Actively chosen
labels break the first assumption (the caller leaves them out). Without held-out labels
(one label per class) nothing checks the confidences and the interval is [n_human / n, 1].

Measured: benchmarks/results/robustness_audit.md (coverage and width in simulated runs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["DatasetEstimate", "estimate_dataset_accuracy"]

#: confidence strata of the held-out correction: at most this many, each with at least this
#: many held-out items (fewer items: one stratum)
MAX_STRATA = 4
MIN_PER_STRATUM = 20


@dataclass(frozen=True)
class DatasetEstimate:
    accuracy: float
    lower: float
    upper: float
    n_items: int
    n_human: int
    calibration_gap: float | None   # held-out mean confidence - accuracy (None: no held-out labels)


def _normal_quantile(p: float) -> float:
    """The standard normal quantile: Newton's method on ``math.erf`` to machine precision
    (statistics.NormalDist would do, but importing statistics costs every command ~7 ms)."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"a quantile needs 0 < p < 1, got {p}")
    z = 0.0
    for _ in range(100):
        step = (0.5 * math.erfc(-z / math.sqrt(2)) - p) / (math.exp(-z * z / 2) / math.sqrt(2 * math.pi))
        z -= step
        if abs(step) <= 1e-15 * max(1.0, abs(z)):
            break
    return z


def _t_quantile(p: float, df: float) -> float:
    """Student's t quantile (Cornish-Fisher expansion around the normal; scipy.stats costs 1.4 s
    to import). Within 1 % of the exact value from 3 degrees of freedom up."""
    z = _normal_quantile(p)
    if not math.isfinite(df) or df <= 0:
        return z
    g1 = (z**3 + z) / 4
    g2 = (5 * z**5 + 16 * z**3 + 3 * z) / 96
    g3 = (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / 384
    return z + g1 / df + g2 / df**2 + g3 / df**3


def _strata(hc: np.ndarray) -> np.ndarray:
    """(B - 1,) inner edges of equal-count bins of the held-out confidences ``hc``, the most
    bins (<= MAX_STRATA) that keep MIN_PER_STRATUM items in each (ties can empty a bin)."""
    for B in range(int(min(MAX_STRATA, hc.size // MIN_PER_STRATUM)), 1, -1):
        edges = np.unique(np.quantile(hc, np.arange(1, B) / B))
        if np.bincount(np.searchsorted(edges, hc, side="right"), minlength=edges.size + 1).min() >= MIN_PER_STRATUM:
            return edges
    return np.zeros(0)


def estimate_dataset_accuracy(confidence: np.ndarray, human: np.ndarray, heldout_confidence: np.ndarray,
                              heldout_correct: np.ndarray, *, confidence_level: float = 0.95,
                              heldout_weights: np.ndarray | None = None) -> DatasetEstimate:
    """The whole dataset's accuracy with a ``confidence_level`` interval (module docstring).

    ``confidence``: (n,) calibrated confidence of every item's predicted label; ``human``: (n,)
    bool, items whose label a person gave (counted right); ``heldout_confidence`` /
    ``heldout_correct``: (m,) the held-out human labels' confidences and whether the held-out
    prediction was right; ``heldout_weights``: (m,) class-shift weights (None: equal)."""
    conf = np.asarray(confidence, dtype=np.float64)
    human = np.asarray(human, bool)
    n = conf.size
    if n == 0:
        return DatasetEstimate(float("nan"), float("nan"), float("nan"), 0, 0, None)
    c = conf[~human]  # (N,) machine-labeled or predicted
    n_h = int(human.sum())
    var = float((c * (1.0 - c)).sum())
    hc = np.asarray(heldout_confidence, dtype=np.float64)
    if hc.size == 0:  # nothing checks the confidences: anything is possible
        total = n_h + float(c.sum())
        return DatasetEstimate(total / n, n_h / n, 1.0, n, n_h, None)
    ok = np.asarray(heldout_correct, dtype=np.float64)
    w = np.ones(hc.size) if heldout_weights is None else np.asarray(heldout_weights, dtype=np.float64)
    resid = hc - ok  # (m,) confidence - correct
    gap = float((w * resid).sum() / w.sum())
    edges = _strata(hc)
    b_pop = np.searchsorted(edges, c, side="right")  # (N,) stratum of each unlabeled item
    b_held = np.searchsorted(edges, hc, side="right")  # (m,)
    total, var_gap, df = n_h + float(c.sum()), 0.0, math.inf
    for b in range(edges.size + 1):
        N_b = int((b_pop == b).sum())
        sel = b_held == b
        wb, rb = w[sel], resid[sel]
        gap_b = float((wb * rb).sum() / wb.sum())
        m_eff = wb.sum() ** 2 / (wb**2).sum()  # effective sample size of the weighted stratum
        # two pseudo-items at the stratum's mean confidence, one right and one wrong
        cb = float((wb * hc[sel]).sum() / wb.sum())
        s2 = (float((wb * (rb - gap_b) ** 2).sum() / wb.sum()) * m_eff
              + (cb - gap_b) ** 2 + (cb - 1.0 - gap_b) ** 2) / (m_eff + 2.0)
        total -= N_b * gap_b
        var_gap += N_b**2 * s2 / m_eff
        df = min(df, max(m_eff - 1.0, 1.0))
    half = _t_quantile(0.5 + confidence_level / 2, df) * math.sqrt(var + var_gap)
    total = min(max(total, n_h), n)
    return DatasetEstimate(total / n, max(total - half, n_h) / n, min(total + half, n) / n, n, n_h, gap)
