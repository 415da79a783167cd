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

import functools
import math
from typing import Any

import numpy as np

from .config import SETTINGS
from .errors import ValidationError

__all__ = [
    "precision_lower_bound",
    "min_verified_count",
    "anytime_log_evalue",
    "anytime_passes",
    "anytime_min_correct",
    "anytime_lower_bound",
    "anytime_min_count",
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


# ---------------------------------------------------------------- anytime-valid test
#
# A Clopper-Pearson bound holds at one look. Certification looks after every batch of checks
# and keeps what passes, so :mod:`labelloop.loop.certify` uses a test that holds at every look:
# an e-process. Against the target p0, each alternative q = p0 + c (1 - p0) (c in BET_FRACTIONS)
# bets the fraction c of its wealth on "right" at the fair odds of p0, which multiplies its
# wealth by q / p0 on a right check and by (1 - q) / (1 - p0) on a wrong one (the likelihood
# ratio of q to p0). While the checks' precision is <= p0 every factor has expectation <= 1 given
# the past, so the BET_WEIGHTS mixture E of these products is a nonnegative supermartingale and,
# by Ville's inequality, P(E ever reaches 1 / alpha) <= alpha, however often it is looked at and
# however the next region to draw from is chosen from the past. E depends on the counts only.
# Most weight sits on c = 0.98 (nearly "all in"): with no wrong check it needs 62 checks at
# 95 % / 95 % (Clopper-Pearson at one look: 59); the rest keeps large samples with a few
# wrong checks certifiable (1 wrong: 135, 3 wrong: 247, where Clopper-Pearson needs 93 / 153).
BET_FRACTIONS = np.array([0.98, 0.9, 0.7, 0.4])
BET_WEIGHTS = np.array([0.8, 0.1, 0.05, 0.05])


def anytime_log_evalue(correct: Any, checked: Any, target: Any) -> np.ndarray:
    """log E of ``correct`` right out of ``checked`` checks against precision ``target`` (the
    BET_WEIGHTS mixture of likelihood ratios; 0 with no checks)."""
    k = np.asarray(correct, dtype=np.float64)[..., None]
    m = np.asarray(checked, dtype=np.float64)[..., None]
    p0 = np.asarray(target, dtype=np.float64)[..., None]
    q = p0 + BET_FRACTIONS * (1.0 - p0)  # (..., J) the alternatives
    log_lr = k * np.log(q / p0) + (m - k) * np.log((1.0 - q) / (1.0 - p0))
    top = log_lr.max(axis=-1, keepdims=True)
    return (top + np.log((BET_WEIGHTS * np.exp(log_lr - top)).sum(axis=-1, keepdims=True)))[..., 0]


def anytime_passes(correct: Any, checked: Any, *, target_precision: float = DEFAULT_TARGET,
                   confidence_level: float = DEFAULT_LEVEL) -> np.ndarray:
    """Whether the checks show precision > ``target_precision`` at every-look level
    ``confidence_level``: E >= 1 / (1 - level) (see BET_FRACTIONS)."""
    return anytime_log_evalue(correct, checked, target_precision) >= math.log(1.0 / (1.0 - confidence_level)) - 1e-12


def anytime_lower_bound(correct: Any, checked: Any, *, confidence_level: float = DEFAULT_LEVEL,
                        resolution: float = 0.001) -> np.ndarray:
    """The anytime-valid lower bound of a precision: the largest p on a ``resolution`` grid such
    that every target up to p passes :func:`anytime_passes` (0 when none does)."""
    k = np.asarray(correct, dtype=np.float64)
    m = np.asarray(checked, dtype=np.float64)
    grid = np.arange(resolution, 1.0, resolution)  # (G,)
    ok = anytime_passes(k[..., None], m[..., None], target_precision=grid, confidence_level=confidence_level)
    run = np.cumprod(ok, axis=-1).sum(axis=-1)  # how many grid targets from the bottom all pass
    return np.where(run > 0, grid[np.maximum(run - 1, 0)], 0.0)


def anytime_min_correct(max_checked: int, target_precision: float = DEFAULT_TARGET,
                        confidence_level: float = DEFAULT_LEVEL) -> np.ndarray:
    """(max_checked + 1,) for every count m of checks up to ``max_checked``, the fewest right
    ones that pass :func:`anytime_passes` (m + 1 where none does). E grows with the right checks
    at a fixed m (every alternative bets on "right"), so ``correct >= table[checked]`` is the
    same decision as ``anytime_passes(correct, checked)``, one lookup instead of a mixture of
    exponentials per pair: certification judges every (check, region) pair of a round."""
    top = 1 << max(int(max_checked), 1).bit_length()   # tables kept per power of two
    return _min_correct_table(top, float(target_precision), float(confidence_level))[:int(max_checked) + 1]


@functools.lru_cache(maxsize=16)
def _min_correct_table(top: int, target: float, level: float) -> np.ndarray:
    """:func:`anytime_min_correct` up to ``top``: bisection on :func:`anytime_passes` itself."""
    m = np.arange(top + 1)
    lo, hi = np.zeros_like(m), m + 1   # the answer lies in [lo, hi]; hi = m + 1: none passes
    while (open_ := lo < hi).any():
        mid = (lo + hi) // 2
        ok = anytime_passes(mid, m, target_precision=target, confidence_level=level) & open_
        hi = np.where(ok, mid, hi)
        lo = np.where(open_ & ~ok, mid + 1, lo)
    hi.setflags(write=False)
    return hi


@functools.lru_cache(maxsize=64)
def anytime_min_count(target_precision: float = DEFAULT_TARGET, confidence_level: float = DEFAULT_LEVEL) -> int:
    """Fewest checks, all right, that pass :func:`anytime_passes` (62 at 95 % / 95 %)."""
    target = _check_level("target_precision", target_precision)
    level = _check_level("confidence_level", confidence_level)
    m = min_verified_count(target, level)  # the one-look minimum is a floor
    while not anytime_passes(m, m, target_precision=target, confidence_level=level):
        m += 1
    return m
