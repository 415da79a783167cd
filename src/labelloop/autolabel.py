"""The statistics of auto-labeling: one-sided lower bounds of a precision, and how many
verified items could ever show a target precision.

The precision of the machine labels a region accepts is a binomial proportion over random
checks by people; :mod:`labelloop.loop.certify` accepts the largest region whose one-sided
lower bound (Clopper-Pearson by default) reaches the target. Using the bound instead of the
observed proportion makes the choice conservative: on fresh data from the same distribution the
precision meets the target in most repetitions (tests/test_loop.py counts them).

Pure numpy / scipy: nothing here reads the store.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .config import SETTINGS
from .errors import ValidationError

__all__ = [
    "precision_lower_bound",
    "min_verified_count",
]

# The user-facing default (DESIGN.md: "a target precision the user sets (e.g. 95 %)").
DEFAULT_TARGET = SETTINGS["target_precision"].default  # one source: the target_precision setting
DEFAULT_LEVEL = 0.95
METHODS = ("clopper-pearson", "wilson")


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
