"""Calibrated auto-labeling: bounds against scipy, thresholds against brute force, and the
promise itself: realised precision on fresh data meets the target in most repetitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import binomtest

from labelloop.autolabel import (
    Calibration,
    calibrate_per_class,
    calibrate_threshold,
    estimate_accuracy,
    min_verified_count,
    precision_lower_bound,
    select_autolabels,
)
from labelloop.errors import ValidationError

# ---------------------------------------------------------------- bounds


@pytest.mark.parametrize("k, m", [(0, 5), (1, 1), (3, 10), (57, 60), (99, 100), (500, 500)])
@pytest.mark.parametrize("method, scipy_method", [("clopper-pearson", "exact"),
                                                  ("wilson", "wilson")])
def test_lower_bound_matches_scipy_two_sided_at_twice_alpha(k, m, method, scipy_method):
    # a one-sided 95 % lower bound is the lower end of the two-sided 90 % interval
    want = binomtest(k, m).proportion_ci(confidence_level=0.90, method=scipy_method).low
    got = precision_lower_bound(k, m, confidence_level=0.95, method=method)
    assert float(got) == pytest.approx(want, abs=1e-9)


def test_min_verified_count_closed_form():
    # all-correct m items: Clopper-Pearson lower bound alpha^(1/m) >= target
    assert min_verified_count(0.95, 0.95) == 59  # 0.05**(1/58) = 0.9497, 0.05**(1/59) = 0.9505
    assert 0.05 ** (1 / 58) < 0.95 <= 0.05 ** (1 / 59)
    assert min_verified_count(0.99, 0.95) == math.ceil(math.log(0.05) / math.log(0.99))


# ---------------------------------------------------------------- threshold choice


def brute_threshold(conf, correct, target, level):
    """Lowest t among the observed confidences whose accepted set's exact bound >= target."""
    best = math.inf
    for t in np.unique(conf):
        acc = conf >= t
        k, m = int(correct[acc].sum()), int(acc.sum())
        lb = binomtest(k, m).proportion_ci(1 - 2 * (1 - level), "exact").low if k else 0.0
        if lb >= target - 1e-12:
            best = min(best, float(t))
    return best


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 10_000), n=st.integers(1, 150),
       target=st.sampled_from([0.5, 0.7, 0.8, 0.9]))
def test_threshold_matches_brute_force(seed, n, target):
    rng = np.random.default_rng(seed)
    conf = rng.integers(0, 20, n) / 20  # many ties
    correct = rng.random(n) < 0.3 + 0.7 * conf
    cal = calibrate_threshold(conf, correct, target_precision=target, min_count=1)
    assert cal.threshold == brute_threshold(conf, correct, target, 0.95)
    if cal.accepts_any:
        acc = conf >= cal.threshold
        assert cal.n_accepted_calibration == acc.sum()
        assert cal.precision_estimate == pytest.approx(correct[acc].mean())
        assert cal.precision_lower >= target
        assert cal.coverage_calibration == pytest.approx(acc.mean())


def test_hand_example():
    # 60 items at confidence 0.9, all correct; 40 at 0.5, half correct
    conf = np.r_[np.full(60, 0.9), np.full(40, 0.5)]
    correct = np.r_[np.ones(60, bool), np.arange(40) % 2 == 0]
    cal = calibrate_threshold(conf, correct)  # 60/60: bound 0.05**(1/60) = 0.9513 >= 0.95
    assert cal.threshold == 0.9
    assert cal.precision_estimate == 1.0
    assert cal.precision_lower == pytest.approx(0.05 ** (1 / 60))
    assert (cal.n_accepted_calibration, cal.coverage_calibration) == (60, 0.6)
    assert "accept confidence >= 0.9: 60 of 100 verified items" in cal.reason


def test_nothing_qualifies_accepts_nothing_with_a_reason():
    conf = np.linspace(0, 1, 200)
    cal = calibrate_threshold(conf, np.arange(200) % 3 == 0)  # 1 in 3 correct everywhere
    assert cal.threshold == math.inf and not cal.accepts_any
    assert "no threshold reaches precision 95%" in cal.reason
    few = calibrate_threshold([0.99] * 10, [True] * 10)
    assert few.threshold == math.inf and "only 10 verified items; at least 59" in few.reason
    assert not select_autolabels([0.99, 1.0], [0, 0], few).any()


def test_realised_precision_meets_target_in_most_repetitions():
    """Correct ~ Bernoulli(score) (calibrated), scores ~ Beta(5, 1); 100 repetitions of
    calibrating on 2,000 verified items and accepting 20,000 fresh ones."""
    rng = np.random.default_rng(0)
    reps, n_cal, n_fresh, target = 100, 2000, 20_000, 0.95
    s = rng.beta(5, 1, (reps, n_cal))
    y = rng.random((reps, n_cal)) < s
    S = rng.beta(5, 1, (reps, n_fresh))
    Y = rng.random((reps, n_fresh)) < S
    t = np.array([calibrate_threshold(s[r], y[r], target_precision=target).threshold
                  for r in range(reps)])[:, None]  # (reps, 1)
    accepted = S >= t  # (reps, n_fresh)
    realised = (Y & accepted).sum(axis=1) / np.maximum(accepted.sum(axis=1), 1)
    finite = np.isfinite(t[:, 0])
    assert finite.sum() >= 95  # it does accept something (about a third of the items)
    assert accepted[finite].mean() > 0.2
    met = int((realised[finite] >= target).sum()) + int((~finite).sum())
    assert met >= 90, met
    # without the bound (lowest threshold whose observed precision >= target) it fails often:
    # evidence that the test can tell the two apart
    naive_met = 0
    for r in range(reps):
        o = np.argsort(-s[r])
        prec = np.cumsum(y[r, o]) / np.arange(1, n_cal + 1)
        tn = s[r, o][np.flatnonzero(prec >= target)[-1]]
        acc = S[r] >= tn
        naive_met += Y[r, acc].mean() >= target
    assert naive_met < 80


# ---------------------------------------------------------------- per class and selection


def test_per_class_thresholds_and_global_fallback():
    rng = np.random.default_rng(1)
    # class 0: 400 items, reliable above 0.8; class 1: 300 items, never above 60 % right;
    # class 2: 20 items (too few for its own threshold)
    conf = np.r_[rng.uniform(0, 1, 400), rng.uniform(0, 1, 300), rng.uniform(0, 1, 20)]
    pred = np.r_[np.zeros(400, int), np.ones(300, int), np.full(20, 2)]
    correct = np.r_[conf[:400] > 0.8, rng.random(300) < 0.6, np.ones(20, bool)]
    correct[:400] |= rng.random(400) < 0.2
    cc = calibrate_per_class(conf, pred, correct, n_classes=4)
    assert cc.is_global.tolist() == [False, False, True, True]
    assert 0.7 < cc.thresholds[0] < 0.95
    assert cc.thresholds[1] == math.inf  # its own evidence, not overridden by the global one
    assert cc.thresholds[2] == cc.thresholds[3] == cc.global_calibration.threshold
    assert cc.per_class[2] is None and isinstance(cc.per_class[0], Calibration)
    own = calibrate_threshold(conf[:400], correct[:400])
    assert cc.thresholds[0] == own.threshold


def test_select_autolabels_hand_example():
    conf = np.array([0.99, 0.95, 0.7, 0.99, 0.5, 0.97])
    pred = np.array([0, 0, 0, 1, 1, 2])
    thresholds = np.array([0.9, np.inf, 0.96])
    eligible = np.array([True, True, True, True, True, False])
    got = select_autolabels(conf, pred, thresholds, eligible)
    assert got.tolist() == [True, True, False, False, False, False]
    assert select_autolabels(conf, pred, 0.96).tolist() == [True, False, False, True, False, True]


# ---------------------------------------------------------------- dataset accuracy


def test_estimate_accuracy_hand_example():
    # calibration: 5 items >= 0.8 (4 correct -> 0.8); 5 below (3 correct -> 0.6)
    c_conf = np.array([0.9, 0.9, 0.85, 0.8, 0.95, 0.3, 0.4, 0.5, 0.6, 0.7])
    c_corr = np.array([1, 1, 1, 0, 1, 1, 1, 1, 0, 0], bool)
    c_pred = np.zeros(10, int)
    conf = np.array([0.1, 0.2, 0.3, 0.4, 0.9, 0.9, 0.9, 0.5, 0.5, 0.5])
    human = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    e = estimate_accuracy(conf, np.zeros(10, int), human, 0.8, c_conf, c_pred, c_corr,
                          n_bins=1)
    # 4 human (correct) + 3 accepted at 0.8 + 3 rest at 0.6
    assert e.accuracy == pytest.approx((4 + 3 * 0.8 + 3 * 0.6) / 10)
    assert (e.n_human, e.n_accepted, e.n_rest) == (4, 3, 3)
    assert e.accepted_precision == pytest.approx(0.8) and e.rest_accuracy == pytest.approx(0.6)
    assert 0.4 <= e.lower < e.accuracy < e.upper <= 1.0


def test_estimate_accuracy_interval_covers_realised_accuracy():
    rng = np.random.default_rng(2)
    inside, errors = 0, []
    for _ in range(60):
        s = rng.beta(5, 1, 1000)
        p = rng.integers(0, 3, 1000)
        y = rng.random(1000) < s
        cc = calibrate_per_class(s, p, y)
        S, P = rng.beta(5, 1, 5000), rng.integers(0, 3, 5000)
        H = rng.random(5000) < 0.1
        Y = (rng.random(5000) < S) | H  # human labels are right
        e = estimate_accuracy(S, P, H, cc, s, p, y)
        inside += e.lower <= Y.mean() <= e.upper
        errors.append(e.accuracy - Y.mean())
    assert inside >= 50  # nominal 95 % of 60 = 57
    assert abs(np.mean(errors)) < 0.01


def test_validation():
    with pytest.raises(ValidationError, match="has 2 entries|shape"):
        calibrate_threshold([0.1, 0.2, 0.3], [True, False])
    with pytest.raises(ValidationError, match="target_precision must be strictly between"):
        calibrate_threshold([0.1], [True], target_precision=1.0)
    with pytest.raises(ValidationError, match="booleans"):
        calibrate_threshold([0.1, 0.2], [0.5, 1])
    with pytest.raises(ValidationError, match="NaN"):
        calibrate_threshold([np.nan], [True])
    with pytest.raises(ValidationError, match="unknown method"):
        calibrate_threshold([0.1], [True], method="bayes")
    with pytest.raises(ValidationError, match="only 2 thresholds"):
        select_autolabels([0.9], [5], [0.5, 0.5])
