"""The statistics of auto-labeling: bounds against scipy and the closed form. (The accept
decision and its promise -- realised precision meets the target in most repetitions -- are
tested in tests/test_loop.py.)"""

from __future__ import annotations

import math

import pytest
from scipy.stats import binomtest

from labelloop.autolabel import min_verified_count, precision_lower_bound
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




def test_validation():
    with pytest.raises(ValidationError, match="target_precision must be strictly between"):
        min_verified_count(1.0)
    with pytest.raises(ValidationError, match="unknown method"):
        min_verified_count(0.95, method="bayes")
