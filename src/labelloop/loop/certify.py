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
   person's label, never the clamped prediction after it) and picks the lowest threshold whose
   one-sided Clopper-Pearson lower bound reaches the target (:mod:`labelloop.autolabel`). It
   also says how many more all-correct checks would certify the candidate region.

Only randomly drawn checks count: `verify` samples and the random share of ``next`` (uniform
over all unlabeled items, hence uniform over any region). Labels chosen by an active-learning
strategy are the hardest items by design and are never treated as a random sample.

Pooling checks drawn under earlier predictions is an approximation: each was a uniform draw
from its region at the time, and later predictions (with more labels) are usually at least as
accurate, so the pooled estimate tends to be conservative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

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
           "CANDIDATE_SAFETY"]

#: the candidate region's expected precision is 1 - (1 - target) / CANDIDATE_SAFETY: at target 0.95,
#: 0.975. Measured with simulate.certify_loop on digits pixels, 5 labels per class then verify
#: checks (6 seeds): safety 3 certified 4 of 5 seeds, 2 certified 6 of 6 (coverage 0.60-0.78).
CANDIDATE_SAFETY = 2.0


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
    """What the random checks say: thresholds (per predicted class) and how far from certified."""

    thresholds: np.ndarray        # (C,) accept confidence >= t; inf = not certified
    certified: bool
    checked: int                  # random checks in the pool
    correct: int
    precision_estimate: float     # among the checks the thresholds accept (nan: none)
    precision_lower: float
    reason: str
    candidate: float              # the region worth certifying now
    checked_in_candidate: int = 0
    correct_in_candidate: int = 0
    more_needed: int | None = None  # further all-correct checks that would certify the candidate
    per_class: list = field(default_factory=list)

    def to_dict(self) -> dict:
        f = lambda v: None if v is None or not np.isfinite(v) else round(float(v), 6)  # noqa: E731
        return {"certified": self.certified, "random_checks": self.checked, "correct": self.correct,
                "precision_estimate": f(self.precision_estimate), "precision_lower": f(self.precision_lower),
                "candidate_threshold": f(self.candidate), "checks_in_candidate": self.checked_in_candidate,
                "more_needed": self.more_needed, "reason": self.reason}


def certify(check_confidence: np.ndarray, check_predicted: np.ndarray, check_correct: np.ndarray, *,
            n_classes: int, candidate: float, target_precision: float = DEFAULT_TARGET,
            confidence_level: float = DEFAULT_LEVEL, per_class: bool = True) -> Certificate:
    """Thresholds certified by random checks: (m,) confidence and predicted class at the time
    each item was drawn, and whether the person's label agreed."""
    conf = np.asarray(check_confidence, dtype=np.float64)
    pred = np.asarray(check_predicted, dtype=np.int64)
    corr = np.asarray(check_correct, dtype=bool)
    if per_class:
        cal = calibrate_per_class(conf, pred, corr, n_classes=n_classes, target_precision=target_precision,
                                  confidence_level=confidence_level)
        thresholds, glob = cal.thresholds, cal.global_calibration
    else:
        glob = calibrate_threshold(conf, corr, target_precision=target_precision,
                                   confidence_level=confidence_level)
        thresholds = np.full(n_classes, glob.threshold)
    certified = bool(np.isfinite(thresholds).any())
    acc = conf >= thresholds[pred] if conf.size else np.zeros(0, bool)
    k, m = int(corr[acc].sum()), int(acc.sum())
    in_cand = conf >= candidate
    kc, mc = int(corr[in_cand].sum()), int(in_cand.sum())
    need = None if certified else (more_needed(kc, mc, target_precision=target_precision,
                                               confidence_level=confidence_level)
                                   if math.isfinite(candidate) else None)
    if certified:
        reason = (f"{m} random checks at or above the thresholds, {k} correct: precision >= "
                  f"{float(precision_lower_bound(k, m, confidence_level=confidence_level)):.3f} at "
                  f"{confidence_level:.0%} confidence")
    elif not math.isfinite(candidate):
        reason = (f"no region of the predictions is expected to reach {target_precision:.0%} precision "
                  "yet: label more items (`labelloop next`) and refresh")
    elif need is None:
        reason = (f"{mc} random checks of the candidate region, {kc} correct: it does not reach "
                  f"{target_precision:.0%}; label more items (`labelloop next`) and refresh")
    else:
        reason = (f"{mc} random checks of the candidate region (confidence >= {candidate:.3g}), {kc} correct; "
                  f"{need} more correct checks would certify {target_precision:.0%} precision: "
                  f"run `labelloop next --strategy verify --n {need}`")
    return Certificate(thresholds=thresholds, certified=certified, checked=int(conf.size), correct=int(corr.sum()),
                       precision_estimate=k / m if m else float("nan"),
                       precision_lower=float(precision_lower_bound(k, m, confidence_level=confidence_level)) if m
                       else 0.0, reason=reason, candidate=float(candidate), checked_in_candidate=mc,
                       correct_in_candidate=kc, more_needed=need)
