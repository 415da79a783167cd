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

A single power cannot move the top and the bottom of the confidence scale independently (digits
pixels at 5 labels per class: the 80 % most confident items were 0.996 right at mean confidence
0.961). :func:`fit_calibrator` with ``top_label=True`` (what :func:`labelloop.loop.predict.predict`
uses) then fits a logistic map of the top-label confidence (Platt scaling on its logit),
``conf' = sigmoid(a logit(conf) + b)``, on the same held-out items, pulled toward the identity
(a = 1, b = 0) by a Gaussian prior worth :data:`TOP_PRIOR_ITEMS` items; the intercept b only where
the held-out items support it (:func:`choose_top_label`: a handful of them moved every item's
confidence by their own noise). The other classes keep their proportions and the predicted label
never changes (:func:`apply_top_label`). With fewer than MIN_CALIBRATION_ITEMS held-out items (one
label per class: none can be held out) the power is :data:`DEFAULT_BETA`, right on average over
the offline data sets.

Limits, measured on benchmarks/robustness.py's 60 cells with 5 seeds
(benchmarks/results/calibration_calib6.md, "Why cells miss"): of the 29 cells whose mean
confidence misses accuracy by more than 0.05, 17 are over- and 12 underconfident on average, for
three reasons that pull opposite ways and a fourth that is noise:

- one label per class (8 cells): no held-out labels, the default power; the power each data set
  needs is 1-27, so a constant misses both ways (5 under, 3 over);
- the held-out labels are scored by fold models, which lack each one's own label: with two labels
  per class, half its class's labels. They are less accurate than the final model (digits pixels:
  0.87 against 0.94 with the held-out labels weighted to the true class shares), so the map
  learned on them is underconfident (2 labels per class on the image sets: -0.06 to -0.125);
- :func:`prediction_weights` weights a class by its share of the *predicted* labels; an
  over-predicted class has high recall and so the most weight, and the held-out accuracy comes
  out above the population's (WordNet nouns, 5 per class: 0.55 against 0.49 weighted to the true
  shares, 0.44 on the unlabeled items; Rotten Tomatoes, 3 imbalanced classes, 0.55-0.65 against
  0.39-0.57): overconfident on the imbalanced texts (+0.06 to +0.11);
- the rest scatter both ways around zero: a few held-out labels (4-20) cannot tell their own
  accuracy to 0.05.

The two biases cancel on average (mean gap over the cells with held-out labels: +0.000), so
removing one alone makes the suite worse: weights to class shares corrected by the held-out
confusion matrix (Lipton et al. 2018) 27 of 60 cells within 0.05 instead of 31, unweighted 30,
folds that hide one label of every class at a time 29, a power pulled toward DEFAULT_BETA 28, and
an intercept that makes the held-out labels' mean confidence equal their accuracy (calibration and
the accuracy estimate telling one story) 25. Removing both with oracles (the final model's
predictions of unlabeled items, true class shares) reaches 35; 50 random labels of unlabeled
items 41, 500 all but 3.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Calibrator", "fit_calibrator", "apply_power", "apply_top_label", "fit_top_label", "choose_top_label",
           "expected_calibration_error", "prediction_weights", "BETA_GRID", "DEFAULT_BETA", "TOP_PRIOR_ITEMS"]

#: powers tried: 2^-3 .. 2^6 (flatten 8x .. sharpen 64x)
BETA_GRID = tuple(float(b) for b in 2.0 ** np.linspace(-3, 6, 37))
#: fewest held-out items to fit beta on; below it, beta is DEFAULT_BETA (nothing fitted). The
#: add-one smoothed targets keep a fit on a few items modest (4 of 4 right: about 0.83, not 1.0);
#: 4 rather than the earlier 10 lets a binary project with 2 labels per class be calibrated, where
#: the raw propagation is far too flat (benchmarks/robustness.py at 2 labels per class, binary
#: and 3-class texts: mean ECE 0.22 -> 0.13 on the unlabeled items).
MIN_CALIBRATION_ITEMS = 4
#: the power below MIN_CALIBRATION_ITEMS held-out items (a grid point, 2^1). The raw propagation
#: at one label per class is too flat on every data set of benchmarks/robustness.py but one (the
#: power that makes its unlabeled items' mean confidence match their accuracy: 1 to 27, median
#: about 2.8), and nothing in a project tells which: the default is right on average, the power
#: at which the mean over the suite's (data set, backbone) pairs of (mean confidence - accuracy)
#: of the unlabeled items is zero. Fitted with each data set left out in turn it was 1.74 - 2.14;
#: on the left-out sets, 5 of 12 cells were within 0.05 of their accuracy, mean |gap| 0.148
#: (benchmarks/results/calibration.md). The earlier default, 2^0.75 = 1.68 (the power maximising
#: the pooled likelihood), left the suite underconfident on average (mean gap -0.033; 2 of 12
#: cells within 0.05, mean |gap| 0.150); a sharper one costs more where the propagation is wrong
#: (a binary text set at 0.30 accuracy), so the likelihood alone is no guide to the mean.
DEFAULT_BETA = 2.0
#: the prior of the top-label map: worth this many held-out items at a = 1, b = 0 (measured on
#: benchmarks/robustness.py's cells: 1 -> ECE 0.067 at >= 2 labels per class, 5 -> 0.063, 20 -> 0.064)
TOP_PRIOR_ITEMS = 5.0
_EPS = 1e-12
_LOGIT_MAX = 16.0   # |logit| of a confidence is clipped here (float32 reaches 1 - 6e-8)


@dataclass(frozen=True)
class Calibrator:
    beta: float               # the power; 1.0 = unchanged
    n: int                    # held-out items it was fitted on
    ece_before: float | None  # held-out ECE of the raw distributions (None: too few items)
    ece_after: float | None   # held-out ECE after the map (in-sample)
    top: tuple[float, float] = (1.0, 0.0)  # (a, b) of the top-label map after the power; (1, 0) = none

    def __call__(self, P: np.ndarray, *, overwrite: bool = False) -> np.ndarray:
        """The calibrated (n, C) float32 distributions of ``P``; ``overwrite``: in ``P``'s own
        memory where it is a writeable C-contiguous float32 array (no new (n, C) array)."""
        Q = apply_power(P, self.beta, out=P if overwrite else None)   # P's memory, or a new array
        return Q if self.top == (1.0, 0.0) else apply_top_label(Q, *self.top, overwrite=True)

    def to_dict(self) -> dict:
        r = lambda v: None if v is None else round(float(v), 4)  # noqa: E731
        return {"beta": round(self.beta, 4), "top_slope": round(self.top[0], 6), "top_intercept": round(self.top[1], 6),
                "heldout_items": self.n, "ece_heldout_before": r(self.ece_before), "ece_heldout": r(self.ece_after)}

    @classmethod
    def from_dict(cls, d: dict) -> Calibrator:
        """The calibrator :meth:`to_dict` stored (a warm refresh reuses the last one)."""
        return cls(float(d["beta"]), int(d.get("heldout_items", 0)), d.get("ece_heldout_before"), d.get("ece_heldout"),
                   (float(d.get("top_slope", 1.0)), float(d.get("top_intercept", 0.0))))


#: rows :func:`apply_power` maps at a time: its temporaries stay in cache (32k x 10 float32:
#: 1.3 MB) where whole-array passes streamed 40 MB through memory eight times at 1M items
POWER_BLOCK_ROWS = 32_768


def apply_power(P: np.ndarray, beta: float, *, out: np.ndarray | None = None) -> np.ndarray:
    """Row-wise p^beta, renormalised. (n, C) -> (n, C) float32, in ``out`` where it is a
    writeable C-contiguous float32 array of P's shape (it may be P), else in a new array.

    In float32, in place, POWER_BLOCK_ROWS rows at a time, the row max taken column by column
    and the row sums by einsum (numpy's axis-1 reductions over ~10 columns are several times
    slower): a warm refresh applies it to every item, 0.07 CPU-s at 1M x 10 instead of 0.29 in
    float64 (within a few float32 ulps of it; benchmarks/results/e2e_latency_1000000.md)."""
    usable = out is not None and out.dtype == np.float32 and out.shape == np.shape(P) \
        and out.flags.c_contiguous and out.flags.writeable
    if beta == 1.0:
        if not usable:
            return np.array(P, dtype=np.float32)
        np.copyto(out, P, casting="same_kind")
        return out
    P = np.asarray(P)
    E = out if usable else np.empty(P.shape, np.float32)   # (n, C) a new array, or out
    if not (E.shape[0] and E.shape[1]):
        return E
    for a in range(0, E.shape[0], POWER_BLOCK_ROWS):
        B = E[a:a + POWER_BLOCK_ROWS]   # (b, C) a view, mapped in place
        np.maximum(P[a:a + POWER_BLOCK_ROWS], np.float32(_EPS), out=B, casting="same_kind")
        # p / max_c p, then ^beta in log space: beta > 0, so this is the log-space shift by the
        # row max (no underflow at large beta)
        top = B[:, 0].copy()
        for c in range(1, B.shape[1]):
            np.maximum(top, B[:, c], out=top)
        B /= top[:, None]
        np.log(B, out=B)
        B *= np.float32(beta)
        np.exp(B, out=B)
        B /= np.einsum("ij->i", B)[:, None]
    return E


def _logit(conf: np.ndarray) -> np.ndarray:
    c = np.asarray(conf, dtype=np.float64)
    return np.clip(np.log(np.maximum(c, _EPS)) - np.log(np.maximum(1.0 - c, _EPS)), -_LOGIT_MAX, _LOGIT_MAX)


#: rows :func:`apply_top_label` maps at a time (as POWER_BLOCK_ROWS)
TOP_BLOCK_ROWS = 32_768


def apply_top_label(P: np.ndarray, a: float, b: float, *, overwrite: bool = False) -> np.ndarray:
    """(n, C) -> (n, C) float32: the top class's probability mapped to ``sigmoid(a logit(p) + b)``,
    the other classes scaled to share the rest in their proportions. The top class stays the
    top (it is kept above the rescaled runner-up), so the predicted label never changes; a row
    with all its mass on one class is left as it is. ``overwrite``: in ``P``'s own memory where
    it is a writeable C-contiguous float32 array. TOP_BLOCK_ROWS rows at a time, the top two
    of each row found on the block's transpose (:func:`labelloop.propagate.top_two`)."""
    from ..propagate import top_two

    usable = overwrite and isinstance(P, np.ndarray) and P.dtype == np.float32 and P.flags.c_contiguous \
        and P.flags.writeable
    P = P if usable else np.array(P, dtype=np.float32)
    if P.shape[0] == 0 or P.shape[1] < 2:
        return P
    for s in range(0, P.shape[0], TOP_BLOCK_ROWS):
        B = P[s:s + TOP_BLOCK_ROWS]   # (m, C) a view, mapped in place
        idx = np.arange(len(B))
        top = np.empty(len(B), np.intp)
        conf, second = top_two(np.array(B.T, order="C"), top)   # (m,) the largest and the runner-up
        conf, second = conf.astype(np.float64), second.astype(np.float64)
        rest = np.maximum(1.0 - conf, 0.0)
        new = 1.0 / (1.0 + np.exp(-(a * _logit(conf) + b)))
        # top >= runner-up after scaling the others by (1 - new) / rest  <=>  new >= second / (rest + second)
        new = np.maximum(new, second / np.maximum(rest + second, _EPS) + 1e-4)
        new = np.where(rest > 1e-7, np.minimum(new, 1.0), conf)
        B *= (np.where(rest > 1e-7, (1.0 - new) / np.maximum(rest, _EPS), 1.0)).astype(np.float32)[:, None]
        B[idx, top] = new
    return P


def _top_label_terms(conf: np.ndarray, correct: np.ndarray, weights: np.ndarray | None):
    """``(z, r, w)``: the logit of the top-label confidence, the add-one smoothed targets (as
    :func:`fit_calibrator`) and the weights (ones where None, not normalised)."""
    z = _logit(conf)
    m = z.size
    w = np.ones(m) if weights is None else np.asarray(weights, dtype=np.float64)
    eps = 1.0 / (m + 2)
    return z, np.asarray(correct, dtype=np.float64) * (1.0 - eps) + eps / 2, w


def _top_label_nll(z: np.ndarray, r: np.ndarray, w: np.ndarray, a: float, b: float) -> float:
    """sum_i w_i * cross-entropy of the targets ``r`` under ``sigmoid(a z + b)`` (no prior)."""
    s = a * z + b
    # -(r log sigmoid(s) + (1 - r) log(1 - sigmoid(s))) = logaddexp(0, s) - r s
    return float(w @ (np.logaddexp(0.0, s) - r * s))


def fit_top_label(conf: np.ndarray, correct: np.ndarray, *, weights: np.ndarray | None = None,
                  prior_items: float = TOP_PRIOR_ITEMS, intercept: bool = True) -> tuple[float, float]:
    """(a, b) of ``sigmoid(a logit(conf) + b)``: the weighted logistic regression of ``correct``
    (m,) on the logit of the top-label confidence ``conf`` (m,), against add-one smoothed
    targets (as :func:`fit_calibrator`), with a Gaussian prior pulling (a, b) toward (1, 0)
    worth ``prior_items`` items. ``intercept=False``: b = 0, the slope alone (a temperature of
    the top label's logit). Newton's method (the objective is strictly convex)."""
    z, r, w = _top_label_terms(conf, correct, weights)
    w = w / w.sum()
    m = z.size
    lam = prior_items / m
    X = np.stack([z, np.ones(m)], axis=1) if intercept else z[:, None]  # (m, k)
    centre = np.array([1.0, 0.0][:X.shape[1]])
    theta = centre.copy()

    def objective(th):
        return _top_label_nll(z, r, w, th[0], th[1] if intercept else 0.0) + 0.5 * lam * float(((th - centre) ** 2).sum())

    f = objective(theta)
    for _ in range(50):
        s = 1.0 / (1.0 + np.exp(-(X @ theta)))
        g = X.T @ (w * (s - r)) + lam * (theta - centre)
        H = (X * (w * s * (1.0 - s))[:, None]).T @ X + lam * np.eye(X.shape[1])
        step = np.linalg.solve(H, g)
        t = 1.0
        while t > 1e-4 and objective(theta - t * step) > f + 1e-15:
            t /= 2
        if t <= 1e-4:
            break
        theta = theta - t * step
        f_new = objective(theta)
        if f - f_new < 1e-12:
            break
        f = f_new
    return float(max(theta[0], 0.0)), float(theta[1]) if intercept else 0.0


def choose_top_label(conf: np.ndarray, correct: np.ndarray, *, weights: np.ndarray | None = None) -> tuple[float, float]:
    """The top-label map :func:`fit_calibrator` uses: the slope alone (:func:`fit_top_label` with
    ``intercept=False``), or slope and intercept where the m held-out items support the second
    parameter by the Bayesian information criterion: its (weighted, smoothed) log-likelihood
    gain exceeds ``0.5 log m``. Measured on benchmarks/robustness.py's cells
    (benchmarks/results/calibration.md): the intercept, fitted on every run, moved the mean
    confidence of the unlabeled items by the noise of a few held-out labels (cells with
    |mean confidence - accuracy| <= 0.05 at >= 2 labels per class: 28 of 48 with it, 31 slope
    alone, 30 with this rule; ECE 0.062 either way); where many held-out items show a shift the
    slope cannot give (tests/test_loop.py), the rule takes it."""
    slope = fit_top_label(conf, correct, weights=weights, intercept=False)
    both = fit_top_label(conf, correct, weights=weights)
    z, r, w = _top_label_terms(conf, correct, weights)
    m = z.size
    w = w * (m / w.sum())  # m items in all: the criterion counts items
    gain = _top_label_nll(z, r, w, *slope) - _top_label_nll(z, r, w, *both)
    return both if gain > 0.5 * np.log(max(m, 1)) else slope


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


def fit_calibrator(P_heldout: np.ndarray, y_true: np.ndarray, *, weights: np.ndarray | None = None,
                   top_label: bool = False) -> Calibrator:
    """The power ``beta`` minimising the (weighted) negative log-likelihood of ``y_true`` under
    ``P_heldout`` (m, C); :data:`DEFAULT_BETA` with fewer than MIN_CALIBRATION_ITEMS items.
    ``top_label``: then the top-label map on the powered distributions (:func:`fit_top_label`)."""
    P = np.asarray(P_heldout, dtype=np.float64)
    y = np.asarray(y_true, dtype=np.int64)
    m = len(y)
    if m < MIN_CALIBRATION_ITEMS:
        return Calibrator(DEFAULT_BETA, m, None, None)
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
    top = choose_top_label(Pc.max(1), Pc.argmax(1) == y, weights=w) if top_label else (1.0, 0.0)
    cal = Calibrator(best_beta, m, None, None, top)
    Pc = cal(P) if top_label else Pc
    ece0 = expected_calibration_error(conf0, pred0 == y, weights=w)
    ece1 = expected_calibration_error(Pc.max(1), Pc.argmax(1) == y, weights=w)
    return Calibrator(best_beta, m, ece0, ece1, top)
