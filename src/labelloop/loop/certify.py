"""Certified auto-labeling: which machine labels may be accepted, and what it takes to get there.

The precision of the labels a threshold accepts is estimated on a **random** sample of the
items that threshold accepts, checked by people (DESIGN.md, "Certification"):

1. :func:`candidate_threshold` proposes the region worth certifying: the largest set of items,
   by calibrated confidence, whose mean confidence (their expected precision, if the
   calibration holds) is at least ``1 - (1 - target) / CANDIDATE_SAFETY``. The margin makes it
   likely that a sample of a few dozen verified items actually clears the bound.
2. :func:`verify_sample` draws the items a person should check from that region: a sample
   stratified by confidence (the region split into ``n`` equal slices by confidence, one item
   drawn from each), so every item of the region has the same chance ``n / |region|`` of being
   drawn and the sample spans the whole confidence range.
3. :func:`certify` pools the checked items (the machine's guess *when it was drawn* against the
   person's label, never the clamped prediction after it) and picks the largest region whose
   one-sided Clopper-Pearson lower bound reaches the target (:mod:`labelloop.autolabel`). It
   also says how many more all-correct checks would certify the candidate region.

Regions are measured in **coverage**, the share of the eligible items at least as confident as
an item (:func:`coverage_of`), not in raw confidence: the calibration is refitted at every
refresh, so a confidence of 0.97 today is not the 0.97 of the check drawn yesterday, while "the
most confident 70 %" keeps its meaning. Once a region is certified, the next checks are drawn
from a region ``EXPAND`` larger (:func:`verify_coverage`), so certification can grow.

Only randomly drawn checks count: `verify` samples and the random share of ``next`` (uniform
over all unlabeled items, hence uniform over any region). Labels chosen by an active-learning
strategy are the hardest items by design and are never treated as a random sample.

Pooling checks drawn under earlier predictions is an approximation: each was a uniform draw
from its region at the time, and later predictions (with more labels) are usually at least as
accurate, so the pooled estimate tends to be conservative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..autolabel import (
    DEFAULT_LEVEL,
    DEFAULT_TARGET,
    calibrate_per_class,
    calibrate_threshold,
    min_verified_count,
    precision_lower_bound,
)

__all__ = ["candidate_threshold", "verify_sample", "certify", "Certificate", "more_needed",
           "CANDIDATE_SAFETY", "coverage_of", "verify_coverage", "EXPAND"]

#: the candidate region's expected precision is 1 - (1 - target) / CANDIDATE_SAFETY: at target 0.95,
#: 0.975. Measured with simulate.certify_loop on digits pixels, 5 labels per class then verify
#: checks (6 seeds): safety 3 certified 4 of 5 seeds, 2 certified 6 of 6 (coverage 0.60-0.78).
CANDIDATE_SAFETY = 2.0


#: once a region is certified, verify checks are drawn from a region this much larger (in coverage):
#: digits, 5 labels per class then verify checks to 130 labels, 6 seeds: certified coverage 0.62-0.92
#: (4 of 6 >= 0.80) at 0.15; 0.10 reached 0.80 in 3 of 6, 0.20 in 3 of 6 (simulate.certify_loop)
EXPAND = 0.15


def coverage_of(confidence: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """(n,) for every item, the share of the eligible items whose confidence is >= its own
    (the coverage of the smallest confidence region that contains it)."""
    conf = np.asarray(confidence, dtype=np.float64)
    pool = np.sort(conf[np.asarray(eligible, bool)])  # (m,) ascending
    if pool.size == 0:
        return np.ones(conf.size)
    return (pool.size - np.searchsorted(pool, conf, side="left")) / pool.size


def verify_coverage(confidence: np.ndarray, eligible: np.ndarray, *, target_precision: float = DEFAULT_TARGET,
                    certified_coverage: float = 0.0) -> float:
    """The coverage verify checks are drawn from: the calibration's candidate region, or the
    certified one grown by EXPAND, whichever is larger (0 when there is nothing to check)."""
    conf = np.asarray(confidence, dtype=np.float64)
    eligible = np.asarray(eligible, bool)
    if not eligible.any():
        return 0.0
    t = candidate_threshold(conf[eligible], target_precision=target_precision)
    cand = float((conf[eligible] >= t).mean()) if math.isfinite(t) else 0.0
    if certified_coverage > 0:
        cand = max(cand, min(1.0, certified_coverage + EXPAND))
    return cand


def candidate_threshold(confidence: np.ndarray, *, target_precision: float = DEFAULT_TARGET,
                        safety: float = CANDIDATE_SAFETY) -> float:
    """The lowest confidence t such that the items with confidence >= t have mean confidence
    >= 1 - (1 - target) / safety; inf when even the most confident item falls short."""
    conf = np.sort(np.asarray(confidence, dtype=np.float64))[::-1]  # (m,) descending
    if conf.size == 0:
        return math.inf
    need = 1.0 - (1.0 - target_precision) / safety
    running = np.cumsum(conf) / np.arange(1, conf.size + 1)  # mean of the top m
    # a threshold accepts a whole tie group: only the last item of each group is a choice
    ends = np.r_[conf[1:] != conf[:-1], True]
    ok = np.flatnonzero((running >= need) & ends)
    if ok.size == 0:
        return math.inf
    return float(conf[ok[-1]])


def verify_sample(confidence: np.ndarray, eligible: np.ndarray, n: int, *, threshold: float,
                  seed: int = 0) -> np.ndarray:
    """Indices of ``n`` eligible items with confidence >= ``threshold``, stratified by
    confidence (one draw per equal slice); fewer if the region is smaller."""
    conf = np.asarray(confidence, dtype=np.float64)
    region = np.flatnonzero(np.asarray(eligible, bool) & (conf >= threshold))
    if region.size <= n:
        return region
    rng = np.random.default_rng(seed)
    region = region[np.argsort(-conf[region], kind="stable")]  # most confident first
    # slice boundaries: n equal parts of the sorted region; one uniform draw inside each
    edges = np.linspace(0, region.size, n + 1)
    lo, hi = np.floor(edges[:-1]).astype(np.int64), np.floor(edges[1:]).astype(np.int64)
    hi = np.maximum(hi, lo + 1)
    picks = lo + (rng.random(n) * (hi - lo)).astype(np.int64)
    return region[np.minimum(picks, region.size - 1)]


def more_needed(correct: int, checked: int, *, target_precision: float = DEFAULT_TARGET,
                confidence_level: float = DEFAULT_LEVEL, cap: int = 10_000) -> int | None:
    """Fewest further all-correct checks x with lower_bound(correct + x, checked + x) >= target;
    None if more than ``cap`` would be needed."""
    x = max(0, min_verified_count(target_precision, confidence_level) - checked)
    while x <= cap:
        lb = float(precision_lower_bound(correct + x, checked + x, confidence_level=confidence_level))
        if lb >= target_precision:
            return x
        x += 1 if x < 100 else max(1, x // 20)
    return None


@dataclass
class Certificate:
    """What the random checks say: the certified coverage (per predicted class) and how far
    from certified it is."""

    coverage: np.ndarray          # (C,) accept the items within this coverage; 0 = not certified
    certified: bool
    checked: int                  # random checks in the pool
    correct: int
    precision_estimate: float     # among the checks the certified regions hold (nan: none)
    precision_lower: float
    reason: str
    candidate: float              # the coverage worth certifying now
    checked_in_candidate: int = 0
    correct_in_candidate: int = 0
    more_needed: int | None = None  # further all-correct checks that would certify the candidate

    def accepts(self, coverage: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        """(n,) bool: items (their current coverage and predicted class) the certificate accepts."""
        return np.asarray(coverage) <= self.coverage[np.asarray(predicted, dtype=np.int64)] + 1e-12

    def to_dict(self) -> dict:
        f = lambda v: None if v is None or not np.isfinite(v) else round(float(v), 6)  # noqa: E731
        return {"certified": self.certified, "random_checks": self.checked, "correct": self.correct,
                "certified_coverage": f(float(self.coverage.max())) if self.coverage.size else 0.0,
                "precision_estimate": f(self.precision_estimate), "precision_lower": f(self.precision_lower),
                "candidate_coverage": f(self.candidate), "checks_in_candidate": self.checked_in_candidate,
                "more_needed": self.more_needed, "reason": self.reason}


def certify(check_coverage: np.ndarray, check_predicted: np.ndarray, check_correct: np.ndarray, *,
            n_classes: int, candidate: float, target_precision: float = DEFAULT_TARGET,
            confidence_level: float = DEFAULT_LEVEL, per_class: bool = True) -> Certificate:
    """The largest regions random checks certify: (m,) coverage and predicted class of each
    checked item when it was drawn, and whether the person's label agreed; ``candidate``: the
    coverage verify draws from now. Per class where a class has enough checks of its own
    (:func:`labelloop.autolabel.calibrate_per_class`), else one region for all."""
    cov = np.asarray(check_coverage, dtype=np.float64)
    score = 1.0 - cov  # higher = more confident, as the threshold calibration expects
    pred = np.asarray(check_predicted, dtype=np.int64)
    corr = np.asarray(check_correct, dtype=bool)
    if per_class:
        thresholds = calibrate_per_class(score, pred, corr, n_classes=n_classes, target_precision=target_precision,
                                         confidence_level=confidence_level).thresholds
    else:
        glob = calibrate_threshold(score, corr, target_precision=target_precision, confidence_level=confidence_level)
        thresholds = np.full(n_classes, glob.threshold)
    coverage = np.where(np.isfinite(thresholds), 1.0 - thresholds, 0.0)  # (C,)
    certified = bool((coverage > 0).any())
    acc = cov <= coverage[pred] + 1e-12 if cov.size else np.zeros(0, bool)
    acc &= coverage[pred] > 0
    k, m = int(corr[acc].sum()), int(acc.sum())
    in_cand = cov <= candidate + 1e-12
    kc, mc = int(corr[in_cand].sum()), int(in_cand.sum())
    need = more_needed(kc, mc, target_precision=target_precision, confidence_level=confidence_level) \
        if candidate > 0 else None
    lower = float(precision_lower_bound(k, m, confidence_level=confidence_level)) if m else 0.0
    if certified:
        reason = (f"certified: the {coverage.max():.0%} most confident machine labels; {m} random checks there, "
                  f"{k} correct: precision >= {lower:.3f} at {confidence_level:.0%} confidence")
        if need:
            reason += (f"; {need} more correct checks would certify the {candidate:.0%} most confident "
                       f"(`labelloop next --strategy verify --n {need}`)")
    elif candidate <= 0:
        reason = (f"no region of the predictions is expected to reach {target_precision:.0%} precision "
                  "yet: label more items (`labelloop next`) and refresh")
    elif need is None:
        reason = (f"{mc} random checks of the {candidate:.0%} most confident machine labels, {kc} correct: "
                  f"they do not reach {target_precision:.0%}; label more items (`labelloop next`) and refresh")
    else:
        reason = (f"{mc} random checks of the {candidate:.0%} most confident machine labels, {kc} correct; "
                  f"{need} more correct checks would certify {target_precision:.0%} precision: "
                  f"run `labelloop next --strategy verify --n {need}`")
    return Certificate(coverage=coverage, certified=certified, checked=int(cov.size), correct=int(corr.sum()),
                       precision_estimate=k / m if m else float("nan"), precision_lower=lower, reason=reason,
                       candidate=float(candidate), checked_in_candidate=mc, correct_in_candidate=kc,
                       more_needed=need)
