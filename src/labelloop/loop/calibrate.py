"""Calibrated confidence: the score the loop acts on must mean what it says.

Propagated class distributions are too flat or too sharp depending on the graph, the number of
steps and the number of labels. A one-parameter power map (temperature scaling on the log
distribution, Guo et al. 2017),

    p'_ic = p_ic^beta / sum_c' p_ic'^beta,

is fitted by maximum likelihood on held-out distributions of human labels, against targets
smoothed by add-one (Laplace) counts, ``(1 - eps) one_hot + eps / C`` with ``eps = 1 / (m + 2)``:
m held-out items all predicted right say "about (m + 1) / (m + 2) right", not "certain" (an
unsmoothed fit sharpens without bound and then every item has confidence 1.0)
(:mod:`labelloop.loop.heldout`), weighted so that each class counts with its estimated share of
the population (label shift, see :func:`prediction_weights`). Expected calibration error (ECE) is
reported with equal-width confidence bins.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Calibrator", "fit_calibrator", "apply_power", "expected_calibration_error",
           "prediction_weights", "BETA_GRID"]

#: powers tried: 2^-3 .. 2^6 (flatten 8x .. sharpen 64x)
BETA_GRID = tuple(float(b) for b in 2.0 ** np.linspace(-3, 6, 37))
#: fewest held-out items to fit beta on; below it, beta stays 1 (no calibration claimed). The
#: add-one smoothed targets keep a fit on a few items modest (4 of 4 right: about 0.83, not 1.0);
#: 4 rather than the earlier 10 lets a binary project with 2 labels per class be calibrated, where
#: the raw propagation is far too flat (benchmarks/robustness.py at 2 labels per class, binary
#: and 3-class texts: mean ECE 0.22 -> 0.13 on the unlabeled items).
MIN_CALIBRATION_ITEMS = 4
_EPS = 1e-12


@dataclass(frozen=True)
class Calibrator:
    beta: float               # the power; 1.0 = unchanged
    n: int                    # held-out items it was fitted on
    ece_before: float | None  # held-out ECE of the raw distributions (None: too few items)
    ece_after: float | None   # held-out ECE after the power map (in-sample for beta)

    def __call__(self, P: np.ndarray) -> np.ndarray:
        return apply_power(P, self.beta)

    def to_dict(self) -> dict:
        r = lambda v: None if v is None else round(float(v), 4)  # noqa: E731
        return {"beta": round(self.beta, 4), "heldout_items": self.n, "ece_heldout_before": r(self.ece_before),
                "ece_heldout": r(self.ece_after)}


def apply_power(P: np.ndarray, beta: float) -> np.ndarray:
    """Row-wise p^beta, renormalised. (n, C) -> (n, C) float32.

    In float32, in place on one (n, C) copy, the row max taken column by column and the row sums
    by einsum (numpy's axis-1 reductions over ~10 columns are several times slower): a warm
    refresh applies it to every item, 0.07 CPU-s at 1M x 10 instead of 0.29 in float64 (within
    a few float32 ulps of it; benchmarks/results/e2e_latency_1000000.md)."""
    if beta == 1.0:
        return np.array(P, dtype=np.float32)
    E = np.maximum(np.asarray(P, dtype=np.float32), np.float32(_EPS))   # (n, C) a new array
    if E.shape[0] and E.shape[1]:
        # p / max_c p, then ^beta in log space: beta > 0, so this is the log-space shift by the
        # row max (no underflow at large beta)
        top = E[:, 0].copy()
        for c in range(1, E.shape[1]):
            np.maximum(top, E[:, c], out=top)
        E /= top[:, None]
        np.log(E, out=E)
        E *= np.float32(beta)
        np.exp(E, out=E)
        E /= np.einsum("ij->i", E)[:, None]
    return E


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, *, n_bins: int = 10,
                               weights: np.ndarray | None = None) -> float:
    """ECE = sum_b (w_b / w) |mean confidence_b - accuracy_b| over ``n_bins`` equal-width bins."""
    conf = np.asarray(confidence, dtype=np.float64)
    corr = np.asarray(correct, dtype=np.float64)
    if conf.size == 0:
        return float("nan")
    w = np.ones_like(conf) if weights is None else np.asarray(weights, dtype=np.float64)
    b = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)  # (m,) bin of each item
    W = np.bincount(b, weights=w, minlength=n_bins)
    gap = np.bincount(b, weights=w * conf, minlength=n_bins) - np.bincount(b, weights=w * corr, minlength=n_bins)
    return float(np.abs(gap).sum() / W.sum())


def prediction_weights(heldout_labels: np.ndarray, population_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(m,) label-shift weights: w_i = share of class y_i among the population's predictions /
    its share among the held-out labels.

    Human labels are usually a few per class whatever the classes' true shares; unweighted, an
    8 % minority counts as much as the 92 % majority and the calibration fits the wrong mixture
    (held-out accuracy 0.6 where the population's was 0.94, on an imbalanced text set). The
    population's class shares are estimated by its predicted labels (after class-mass
    normalisation, which estimates them from the graph)."""
    heldout_labels = np.asarray(heldout_labels, dtype=np.int64)
    pop = (np.bincount(population_pred, minlength=n_classes) + 1.0) / (len(population_pred) + n_classes)
    held = np.bincount(heldout_labels, minlength=n_classes) / max(len(heldout_labels), 1)
    w = pop[heldout_labels] / np.maximum(held[heldout_labels], _EPS)
    return w / w.mean() if w.size and w.mean() > 0 else np.ones(len(heldout_labels))


def fit_calibrator(P_heldout: np.ndarray, y_true: np.ndarray, *, weights: np.ndarray | None = None
                   ) -> Calibrator:
    """The power ``beta`` minimising the (weighted) negative log-likelihood of ``y_true`` under
    ``P_heldout`` (m, C); beta = 1 with fewer than MIN_CALIBRATION_ITEMS items."""
    P = np.asarray(P_heldout, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.int64)
    m = len(y)
    if m < MIN_CALIBRATION_ITEMS:
        return Calibrator(1.0, m, None, None)
    w = np.ones(m) if weights is None else np.asarray(weights, dtype=np.float64)
    L = np.log(np.maximum(P, _EPS))  # (m, C)
    C = P.shape[1]
    eps = 1.0 / (m + 2)
    target = np.full((m, C), eps / C)
    target[np.arange(m), y] += 1.0 - eps  # (m, C) smoothed one-hot
    best, best_beta = np.inf, 1.0
    for beta in BETA_GRID:
        Z = beta * L
        Z -= Z.max(axis=1, keepdims=True)
        logp = Z - np.log(np.exp(Z).sum(axis=1, keepdims=True))  # (m, C)
        nll = -(target * logp).sum(axis=1)  # (m,) cross-entropy against the smoothed targets
        v = float((w * nll).sum() / w.sum())
        if v < best - 1e-12:
            best, best_beta = v, beta
    conf0, pred0 = P.max(1), P.argmax(1)
    Pc = apply_power(P, best_beta)
    ece0 = expected_calibration_error(conf0, pred0 == y, weights=w)
    ece1 = expected_calibration_error(Pc.max(1), Pc.argmax(1) == y, weights=w)
    return Calibrator(best_beta, m, ece0, ece1)
