"""The whole-dataset accuracy estimate (loop.estimate): coverage of its interval in simulated
runs where the confidences are miscalibrated, and the edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from labelloop.loop.estimate import _t_quantile, estimate_dataset_accuracy


def _run(rng, m: int, n: int = 2000, n_human: int = 100):
    """One simulated project: calibrated-looking confidences that are off by a random bias (up
    to 0.1 either way); the held-out human labels come from the same distribution."""
    bias = rng.uniform(-0.1, 0.1)
    conf = rng.beta(5, 2, n)  # (n,)
    right = rng.uniform(size=n) < np.clip(conf - bias, 0, 1)  # the truth the estimate must find
    human = np.zeros(n, bool)
    human[:n_human] = True
    hc = rng.beta(5, 2, m)
    h_ok = rng.uniform(size=m) < np.clip(hc - bias, 0, 1)
    est = estimate_dataset_accuracy(conf, human, hc, h_ok)
    truth = float((right | human).mean())
    return est.lower <= truth <= est.upper, est.upper - est.lower, est


@pytest.mark.parametrize("m", [30, 100, 400])
def test_interval_covers_the_truth_in_simulated_runs(m):
    rng = np.random.default_rng(m)
    runs = [_run(rng, m) for _ in range(300)]
    coverage = np.mean([r[0] for r in runs])
    assert coverage >= 0.9
    width = np.mean([r[1] for r in runs])
    # as tight as the held-out labels allow: about 2 * 1.96 * sd(confidence - correct) / sqrt(m)
    assert width < 4.5 / np.sqrt(m)
    assert all(r[2].lower <= r[2].accuracy <= r[2].upper for r in runs)


def test_width_shrinks_with_more_heldout_labels():
    widths = [np.mean([_run(np.random.default_rng(s), m)[1] for s in range(40)]) for m in (30, 120, 480)]
    assert widths[0] > widths[1] > widths[2]


def test_the_correction_moves_the_estimate_toward_the_heldout_accuracy():
    conf = np.full(1000, 0.9)
    human = np.zeros(1000, bool)
    est = estimate_dataset_accuracy(conf, human, np.full(200, 0.9), np.arange(200) < 140)  # 70 % right
    assert est.accuracy == pytest.approx(0.7)
    assert est.calibration_gap == pytest.approx(0.2)
    assert est.lower < 0.7 < est.upper


def test_without_heldout_labels_anything_is_possible():
    conf = np.full(100, 0.8)
    human = np.arange(100) < 10
    est = estimate_dataset_accuracy(conf, human, np.zeros(0), np.zeros(0, bool))
    assert (est.lower, est.upper) == (0.1, 1.0)
    assert est.accuracy == pytest.approx((10 + 90 * 0.8) / 100)
    assert est.calibration_gap is None
    empty = estimate_dataset_accuracy(np.zeros(0), np.zeros(0, bool), np.zeros(0), np.zeros(0, bool))
    assert empty.n_items == 0 and np.isnan(empty.accuracy)


def test_t_quantile_matches_tables():
    for df, t in ((3, 3.1824), (5, 2.5706), (10, 2.2281), (30, 2.0423)):
        assert _t_quantile(0.975, df) == pytest.approx(t, rel=0.01)
    assert _t_quantile(0.975, float("inf")) == pytest.approx(1.95996, rel=1e-4)


def test_normal_quantile_equals_the_standard_librarys():
    """The estimate's normal quantile (Newton on math.erf, so no command imports statistics)
    equals statistics.NormalDist's where the intervals use it."""
    from statistics import NormalDist

    from labelloop.loop.estimate import _normal_quantile

    for p in (0.5, 0.8, 0.9, 0.95, 0.975, 0.99, 0.995, 0.999, 0.025, 0.001):
        assert abs(_normal_quantile(p) - NormalDist().inv_cdf(p)) < 1e-12, p
    with pytest.raises(ValueError):
        _normal_quantile(1.0)
