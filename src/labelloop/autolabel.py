"""Calibrated auto-labeling: accept the machine's label only where it meets a target precision.

On items a human verified, we know the machine's confidence and whether its prediction was
right. For a threshold t the accepted set is {confidence >= t}; its precision is a binomial
proportion, and we choose the lowest t whose one-sided lower confidence bound
(Clopper-Pearson by default) is at least the target. Using the bound instead of the observed
proportion makes the choice conservative: on fresh data from the same distribution the
precision meets the target in most repetitions (tests/test_autolabel.py counts them).

The calibration items must be a fair sample of what will be auto-labeled: predictions
recorded *before* the human answered (clamped propagation reproduces a given label), and
preferably items drawn at random rather than by an uncertainty strategy, which
over-represents hard items.

Pure numpy / scipy: nothing here reads the store.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .config import SETTINGS
from .errors import ValidationError

__all__ = [
    "Calibration",
    "ClassCalibration",
    "AccuracyEstimate",
    "precision_lower_bound",
    "min_verified_count",
    "calibrate_threshold",
    "calibrate_per_class",
    "select_autolabels",
    "estimate_accuracy",
]

# The user-facing default (DESIGN.md: "a target precision the user sets (e.g. 95 %)").
DEFAULT_TARGET = SETTINGS["target_precision"].default  # one source: the target_precision setting
DEFAULT_LEVEL = 0.95
METHODS = ("clopper-pearson", "wilson")


@dataclass(frozen=True)
class Calibration:
    """A threshold on confidence and what the calibration set says about it."""

    threshold: float  # accept confidence >= threshold; inf = accept nothing
    precision_estimate: float  # correct / accepted among calibration items (nan if none)
    precision_lower: float  # one-sided lower confidence bound of that precision
    n_accepted_calibration: int  # calibration items at or above the threshold
    coverage_calibration: float  # their fraction of the calibration set
    n_calibration: int
    target_precision: float
    confidence_level: float
    reason: str  # one sentence: what was chosen, or why nothing is accepted

    @property
    def accepts_any(self) -> bool:
        return math.isfinite(self.threshold)


@dataclass(frozen=True)
class ClassCalibration:
    """Per predicted class thresholds; classes with too few verified items use the global one."""

    thresholds: np.ndarray  # (C,) float, inf = never accept this class
    is_global: np.ndarray  # (C,) bool, True where the global threshold was used
    per_class: list[Calibration | None]  # (C,) the class's own calibration, None if global
    global_calibration: Calibration


@dataclass(frozen=True)
class AccuracyEstimate:
    """Estimated accuracy of the labels of the whole dataset, with an interval."""

    accuracy: float
    lower: float
    upper: float
    confidence_level: float
    n_items: int
    n_human: int  # counted correct
    n_accepted: int  # machine labels accepted, counted at their calibrated precision
    n_rest: int  # neither: counted at the calibration accuracy at their confidence
    accepted_precision: float  # nan when nothing is accepted
    rest_accuracy: float  # nan when there is no rest


# ---------------------------------------------------------------- validation


def _check_level(name: str, value: Any) -> float:
    v = float(value)
    if not 0.0 < v < 1.0:
        raise ValidationError(f"{name} must be strictly between 0 and 1, got {value!r}")
    return v


def _check_method(method: str) -> str:
    if method not in METHODS:
        raise ValidationError(f"unknown method {method!r}; choose one of: {', '.join(METHODS)}")
    return method


def _conf(name: str, value: Any, n: int | None = None) -> np.ndarray:
    a = np.asarray(value, dtype=np.float64)
    if a.ndim != 1:
        raise ValidationError(f"{name} must be a 1-D array, got shape {a.shape}")
    if n is not None and a.size != n:
        raise ValidationError(f"{name} has {a.size} entries, expected {n}")
    if not np.isfinite(a).all():
        raise ValidationError(f"{name} contains NaN or infinite values")
    return a


def _bools(name: str, value: Any, n: int) -> np.ndarray:
    a = np.asarray(value)
    if a.shape != (n,):
        raise ValidationError(f"{name} must have shape ({n},), got {a.shape}")
    if a.dtype != bool:
        if not np.isin(a, (0, 1)).all():
            raise ValidationError(f"{name} must hold booleans (or 0 / 1)")
        a = a.astype(bool)
    return a


def _classes(name: str, value: Any, n: int) -> np.ndarray:
    a = np.asarray(value)
    if a.shape != (n,) or (a.size and not np.issubdtype(a.dtype, np.integer)):
        raise ValidationError(f"{name} must be ({n},) integer class indices, got {a.shape} "
                              f"{a.dtype}")
    a = a.astype(np.int64, copy=False)
    if a.size and a.min() < 0:
        raise ValidationError(f"{name} must be class indices >= 0, got {a.min()}")
    return a


# ---------------------------------------------------------------- bounds


def precision_lower_bound(correct: Any, accepted: Any, *, confidence_level: float = DEFAULT_LEVEL,
                          method: str = "clopper-pearson") -> np.ndarray:
    """One-sided lower confidence bound of a binomial proportion correct / accepted.

    Clopper-Pearson: the alpha quantile of Beta(k, m - k + 1), 0 when k = 0 (exact,
    conservative). Wilson: the score interval's lower end with z = Phi^-1(level).
    """
    from scipy.stats import beta, norm

    k = np.asarray(correct, dtype=np.float64)
    m = np.asarray(accepted, dtype=np.float64)
    alpha = 1.0 - confidence_level
    if method == "clopper-pearson":
        with np.errstate(invalid="ignore", divide="ignore"):
            lb = beta.ppf(alpha, np.maximum(k, 1e-300), m - k + 1.0)
        return np.where((k > 0) & (m > 0), lb, 0.0)
    # Wilson: (p + z^2/2m - z sqrt(p(1-p)/m + z^2/4m^2)) / (1 + z^2/m)
    z = norm.ppf(confidence_level)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / m
        lb = (p + z**2 / (2 * m) - z * np.sqrt(p * (1 - p) / m + z**2 / (4 * m**2))) / (
            1 + z**2 / m
        )
    return np.where(m > 0, np.maximum(lb, 0.0), 0.0)


def min_verified_count(target_precision: float = DEFAULT_TARGET,
                       confidence_level: float = DEFAULT_LEVEL,
                       method: str = "clopper-pearson") -> int:
    """Fewest verified items that could ever show ``target_precision`` (all of them correct).

    Clopper-Pearson: m / m correct has lower bound alpha^(1/m), so m >= ln(alpha) / ln(target);
    59 items at 95 % / 95 %.
    """
    _check_method(method)
    target = _check_level("target_precision", target_precision)
    level = _check_level("confidence_level", confidence_level)
    m = max(1, math.ceil(math.log(1.0 - level) / math.log(target)) - 2)
    while precision_lower_bound(m, m, confidence_level=level, method=method) < target:
        m += 1
    return m


# ---------------------------------------------------------------- calibration


def _min_count(min_count: Any, target: float, level: float, method: str) -> int:
    if min_count is None:
        return min_verified_count(target, level, method)
    if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) \
            or min_count < 1:
        raise ValidationError(f"min_count must be a whole number >= 1, got {min_count!r}")
    return int(min_count)


def _calibrate(conf: np.ndarray, correct: np.ndarray, target: float, level: float,
               min_count: int, method: str) -> Calibration:
    n = conf.size

    def result(threshold: float, k: int, m: int, lb: float, reason: str) -> Calibration:
        return Calibration(
            threshold=threshold,
            precision_estimate=k / m if m else float("nan"),
            precision_lower=lb,
            n_accepted_calibration=m,
            coverage_calibration=m / n if n else 0.0,
            n_calibration=n,
            target_precision=target,
            confidence_level=level,
            reason=reason,
        )

    if n < min_count:
        return result(math.inf, 0, 0, 0.0,
                      f"only {n} verified items; at least {min_count} are needed to show "
                      f"precision {target:.0%} at {level:.0%} confidence: accept nothing")
    order = np.argsort(-conf, kind="stable")
    c_sorted = conf[order]  # (n,) descending
    k = np.cumsum(correct[order])  # (n,) correct among the top m
    m = np.arange(1, n + 1)
    # a threshold t accepts a whole tie group: evaluate at the last item of each group
    ends = np.flatnonzero(np.r_[c_sorted[1:] != c_sorted[:-1], True])
    k, m, t = k[ends], m[ends], c_sorted[ends]
    lb = precision_lower_bound(k, m, confidence_level=level, method=method)  # (groups,)
    ok = np.flatnonzero(lb >= target)
    if ok.size == 0:
        best = int(np.argmax(lb))
        return result(math.inf, 0, 0, 0.0,
                      f"no threshold reaches precision {target:.0%} at {level:.0%} confidence "
                      f"(best lower bound {lb[best]:.3f}, at confidence >= {t[best]:.3g} with "
                      f"{m[best]} verified items): accept nothing")
    i = int(ok[-1])  # the lowest qualifying threshold: the largest accepted set
    return result(float(t[i]), int(k[i]), int(m[i]), float(lb[i]),
                  f"accept confidence >= {t[i]:.3g}: {m[i]} of {n} verified items, {k[i]} "
                  f"correct; precision >= {lb[i]:.3f} at {level:.0%} confidence")


def calibrate_threshold(
    confidence: Any,
    correct: Any,
    *,
    target_precision: float = DEFAULT_TARGET,
    confidence_level: float = DEFAULT_LEVEL,
    min_count: int | None = None,
    method: str = "clopper-pearson",
) -> Calibration:
    """The lowest confidence threshold whose accepted set provably meets ``target_precision``.

    ``confidence`` (m,) machine confidence of verified items, ``correct`` (m,) whether the
    machine's label matched the human's. ``min_count``: fewest verified items to calibrate on
    (default :func:`min_verified_count`, the fewest that could ever pass). When no threshold
    qualifies, ``threshold`` is inf (accept nothing) and ``reason`` says why.
    """
    conf = _conf("confidence", confidence)
    corr = _bools("correct", correct, conf.size)
    method = _check_method(method)
    target = _check_level("target_precision", target_precision)
    level = _check_level("confidence_level", confidence_level)
    min_count = _min_count(min_count, target, level, method)
    return _calibrate(conf, corr, target, level, min_count, method)


def calibrate_per_class(
    confidence: Any,
    predicted: Any,
    correct: Any,
    *,
    n_classes: int | None = None,
    target_precision: float = DEFAULT_TARGET,
    confidence_level: float = DEFAULT_LEVEL,
    min_count: int | None = None,
    method: str = "clopper-pearson",
) -> ClassCalibration:
    """One threshold per predicted class where it has ``min_count`` verified items, else global.

    A class with enough verified items keeps its own result even when that is inf: its own
    evidence says it does not reach the target, which the global threshold must not override.
    """
    conf = _conf("confidence", confidence)
    pred = _classes("predicted", predicted, conf.size)
    corr = _bools("correct", correct, conf.size)
    method = _check_method(method)
    target = _check_level("target_precision", target_precision)
    level = _check_level("confidence_level", confidence_level)
    min_count = _min_count(min_count, target, level, method)
    if n_classes is None:
        n_classes = int(pred.max()) + 1 if pred.size else 0
    elif pred.size and pred.max() >= n_classes:
        raise ValidationError(f"predicted holds class {pred.max()} but n_classes={n_classes}")
    glob = _calibrate(conf, corr, target, level, min_count, method)
    thresholds = np.full(n_classes, glob.threshold)  # (C,)
    is_global = np.ones(n_classes, dtype=bool)
    per_class: list[Calibration | None] = [None] * n_classes
    counts = np.bincount(pred, minlength=n_classes)
    for c in np.flatnonzero(counts >= min_count):
        mask = pred == c
        cal = _calibrate(conf[mask], corr[mask], target, level, min_count, method)
        per_class[c] = cal
        thresholds[c] = cal.threshold
        is_global[c] = False
    return ClassCalibration(thresholds, is_global, per_class, glob)


def _threshold_per_item(thresholds: Any, predicted: np.ndarray) -> np.ndarray:
    if isinstance(thresholds, ClassCalibration):
        thresholds = thresholds.thresholds
    elif isinstance(thresholds, Calibration):
        thresholds = thresholds.threshold
    t = np.asarray(thresholds, dtype=np.float64)
    if t.ndim == 0:
        return np.full(predicted.size, float(t))
    if t.ndim != 1:
        raise ValidationError(f"thresholds must be a number or one per class, got {t.shape}")
    if predicted.size and predicted.max() >= t.size:
        raise ValidationError(f"predicted holds class {predicted.max()} but only {t.size} "
                              f"thresholds were given")
    return t[predicted]


def select_autolabels(
    confidence: Any,
    predicted: Any,
    thresholds: float | np.ndarray | Calibration | ClassCalibration,
    eligible_mask: Any = None,
) -> np.ndarray:
    """(n,) bool: eligible items whose confidence reaches the threshold of their predicted class.

    ``thresholds``: one number, (C,) per class, or a Calibration / ClassCalibration;
    ``eligible_mask`` (n,) bool, e.g. items without a human label (default: all).
    """
    conf = _conf("confidence", confidence)
    pred = _classes("predicted", predicted, conf.size)
    t = _threshold_per_item(thresholds, pred)  # (n,)
    accept = conf >= t  # inf never passes
    if eligible_mask is not None:
        accept &= _bools("eligible_mask", eligible_mask, conf.size)
    return accept


# ---------------------------------------------------------------- dataset accuracy


def estimate_accuracy(
    confidence: Any,
    predicted: Any,
    human_mask: Any,
    thresholds: float | np.ndarray | Calibration | ClassCalibration,
    calib_confidence: Any,
    calib_predicted: Any,
    calib_correct: Any,
    *,
    n_bins: int = 10,
    confidence_level: float = DEFAULT_LEVEL,
) -> AccuracyEstimate:
    """Estimated accuracy of the whole dataset's labels if exported now.

    Items with a human label count as correct. Machine-accepted items (by ``thresholds``)
    count at the precision of the calibration items those thresholds accept. Every other
    item keeps the machine's prediction and counts at the calibration accuracy of its
    confidence bin (``n_bins`` quantile bins of calibration confidence). The interval is a
    normal approximation to the variance of the total: calibration uncertainty of each
    stratum's rate, N_s^2 p(1-p)/m_s, plus the items' own Bernoulli noise, N_s p(1-p).
    """
    conf = _conf("confidence", confidence)
    n = conf.size
    pred = _classes("predicted", predicted, n)
    human = _bools("human_mask", human_mask, n)
    c_conf = _conf("calib_confidence", calib_confidence)
    c_pred = _classes("calib_predicted", calib_predicted, c_conf.size)
    c_corr = _bools("calib_correct", calib_correct, c_conf.size)
    level = _check_level("confidence_level", confidence_level)
    if isinstance(n_bins, bool) or not isinstance(n_bins, int) or n_bins < 1:
        raise ValidationError(f"n_bins must be a whole number >= 1, got {n_bins!r}")

    accepted = select_autolabels(conf, pred, thresholds, ~human)  # (n,)
    c_accepted = select_autolabels(c_conf, c_pred, thresholds)  # (m,)
    rest = ~human & ~accepted
    # strata: (items in the dataset, calibration correct, calibration count)
    strata: list[tuple[int, int, int]] = []
    acc_prec = float("nan")
    if accepted.any() and c_accepted.any():
        k_a, m_a = int(c_corr[c_accepted].sum()), int(c_accepted.sum())
        strata.append((int(accepted.sum()), k_a, m_a))
        acc_prec = k_a / m_a
    else:  # nothing accepted in calibration: score the accepted items like the rest
        rest |= accepted
    rest_acc = float("nan")
    if rest.any():
        # rest items are scored against calibration items of the same kind (not accepted),
        # unless every calibration item was accepted
        if (~c_accepted).any():
            c_conf, c_corr = c_conf[~c_accepted], c_corr[~c_accepted]
        if c_conf.size == 0:
            raise ValidationError("estimate_accuracy needs verified calibration items for the "
                                  "machine-labeled items; verify some items first")
        # bin edges are calibration values, so every bin but possibly the first holds some
        qs = np.linspace(0, 1, n_bins + 1)[1:-1]
        inner = np.unique(np.quantile(c_conf, qs, method="inverted_cdf"))  # (B - 1,)
        c_bin = np.searchsorted(inner, c_conf, side="right")  # (m,)
        m_b = np.bincount(c_bin, minlength=inner.size + 1)  # (B,)
        k_b = np.bincount(c_bin, weights=c_corr, minlength=inner.size + 1).astype(np.int64)
        # an item whose bin has no calibration item goes to the nearest bin that has some
        filled = np.flatnonzero(m_b)
        nearest = filled[np.abs(np.arange(m_b.size)[:, None] - filled[None, :]).argmin(axis=1)]
        r_bin = nearest[np.searchsorted(inner, conf[rest], side="right")]  # (n_rest,)
        N_b = np.bincount(r_bin, minlength=inner.size + 1)
        for b in np.flatnonzero(N_b):
            strata.append((int(N_b[b]), int(k_b[b]), int(m_b[b])))
        rest_acc = float((N_b * k_b / np.maximum(m_b, 1)).sum() / N_b.sum())

    from scipy.stats import norm

    n_human = int(human.sum())
    total = float(n_human)
    var = 0.0
    for N_s, k_s, m_s in strata:
        total += N_s * k_s / m_s
        p = (k_s + 0.5) / (m_s + 1.0)  # smoothed, so an all-correct stratum still has spread
        var += N_s**2 * p * (1 - p) / m_s + N_s * p * (1 - p)
    half = norm.ppf(0.5 + level / 2) * math.sqrt(var)
    acc = total / n if n else float("nan")
    lo = max(total - half, n_human) / n if n else float("nan")
    hi = min(total + half, n) / n if n else float("nan")
    return AccuracyEstimate(
        accuracy=acc,
        lower=float(lo),
        upper=float(hi),
        confidence_level=level,
        n_items=n,
        n_human=n_human,
        n_accepted=int(accepted.sum()) if not math.isnan(acc_prec) else 0,
        n_rest=int(rest.sum()),
        accepted_precision=acc_prec,
        rest_accuracy=rest_acc,
    )
