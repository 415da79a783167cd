"""Active learning and the image-level accept bar for detection, on hand-built cases."""

from __future__ import annotations

import numpy as np
import pytest

from labelloop.autolabel import min_verified_count, precision_lower_bound
from labelloop.detect.accept import DEFAULT_BOX_THRESHOLD, certify_images, choose_box_threshold
from labelloop.detect.boxes import ImageBoxes
from labelloop.detect.select import image_uncertainty, select_images


def _pred(*boxes):
    """ImageBoxes from (x, y, w, h, class, score) tuples."""
    return ImageBoxes([b[:4] for b in boxes], [b[4] for b in boxes], [b[5] for b in boxes])


def _truth(*boxes):
    return ImageBoxes([b[:4] for b in boxes], [b[4] for b in boxes])


def test_uncertainty_is_the_least_sure_decision():
    preds = [
        _pred((0, 0, 10, 10, 0, 0.9), (20, 20, 5, 5, 1, 0.3)),   # kept 0.9, dropped 0.3: min(0.9, 0.7) = 0.7
        _pred((0, 0, 10, 10, 0, 0.55)),                           # kept just above the threshold: 0.55
        _pred((0, 0, 10, 10, 0, 0.45)),                           # dropped just below: 1 - 0.45 = 0.55
        _pred(),                                                  # nothing either way: sure
        None,                                                     # never pre-labeled: nothing known
    ]
    got = image_uncertainty(preds, box_threshold=0.5)
    np.testing.assert_allclose(got, [0.3, 0.45, 0.45, 0.0, 1.0])


def _two_clusters(n_per=6, seed=0):
    rng = np.random.default_rng(seed)
    a = np.array([1.0, 0.0, 0.0]) + 0.01 * rng.standard_normal((n_per, 3))
    b = np.array([0.0, 1.0, 0.0]) + 0.01 * rng.standard_normal((n_per, 3))
    return np.vstack([a, b])                                      # rows 0..5 cluster A, 6..11 cluster B


def test_uncertain_picks_are_spread_over_clusters():
    X = _two_clusters()
    unc = np.array([0.9, 0.8, 0.7, 0.1, 0.1, 0.1, 0.5, 0.2, 0.2, 0.2, 0.2, 0.2])
    # plain top-2 would be rows 0 and 1, both in cluster A; the diverse pick takes A's and B's best
    sel = select_images(X, np.array([], dtype=np.int64), np.arange(12), 2, uncertainty=unc, seed=0)
    assert sorted(sel.indices.tolist()) == [0, 6]
    assert list(sel.indices) == [0, 6]                            # most uncertain first
    np.testing.assert_allclose(sel.scores, [0.9, 0.5])
    assert all("least sure decision" in r for r in sel.reasons)


def test_images_without_prelabel_come_first_anddone_images_never():
    X = _two_clusters()
    unc = np.full(12, 0.2)
    known = np.ones(12, dtype=bool)
    known[9] = False
    unc[9] = 1.0                                                  # image_uncertainty gives 1 to None
    unc[1] = 0.95                                                 # the most uncertain, but already reviewed
    unlabeled = np.setdiff1d(np.arange(12), [1])
    sel = select_images(X, np.array([1]), unlabeled, 1, uncertainty=unc, prelabeled=known, seed=0)
    assert sel.indices.tolist() == [9] and "not pre-labeled yet" in sel.reasons[0]


def test_cold_start_picks_typical_images_of_uncovered_clusters():
    X = _two_clusters()
    sel = select_images(X, np.array([0]), np.arange(1, 12), 1, uncertainty=None, seed=0)
    assert sel.indices[0] >= 6                                    # cluster A already has a reviewed image
    assert sel.reasons[0].startswith("no pre-labels yet")


def test_box_threshold_makes_the_most_images_right():
    truth = _truth((0, 0, 10, 10, 0))
    preds = [_pred((0, 0, 10, 10, 0, 0.7), (30, 30, 10, 10, 0, 0.4))] * 3   # an extra box at 0.4
    # below 0.4 the extra box is kept (deleted by the reviewer); from 0.45 to 0.7 all three are right
    assert choose_box_threshold(preds, [truth] * 3) == 0.45
    assert choose_box_threshold([], []) == DEFAULT_BOX_THRESHOLD


def test_bar_certified_when_the_confident_images_are_right():
    good = [_pred((0, 0, 10, 10, 0, 0.95))] * 40                 # right, image confidence 0.95
    bad = [_pred((0, 0, 10, 10, 1, 0.6))] * 5                    # wrong class, confidence 0.6
    truths = [_truth((0, 0, 10, 10, 0))] * 45
    bar = certify_images(good + bad, truths, target_precision=0.9)
    assert bar.box_threshold == 0.2 and bar.right == 40 and bar.reviewed == 45
    assert bar.certified and bar.bar == pytest.approx(0.95)
    assert (bar.correct, bar.checked) == (40, 40) and bar.precision_estimate == 1.0
    assert bar.precision_lower == pytest.approx(float(precision_lower_bound(40, 40)))   # 0.05 ** (1 / 40)
    assert bar.precision_lower == pytest.approx(0.05 ** (1 / 40))


def test_bar_says_how_many_more_reviews_it_needs():
    preds = [_pred((0, 0, 10, 10, 0, 0.95))] * 10 + [_pred((0, 0, 10, 10, 1, 0.6))] * 3
    truths = [_truth((0, 0, 10, 10, 0))] * 13
    bar = certify_images(preds, truths, target_precision=0.9)
    # 10 of 10 right above 0.95: 0.05 ** (1 / 29) is the first bound above 0.9, so 19 more right ones
    assert not bar.certified and bar.candidate == pytest.approx(0.95)
    assert (bar.correct, bar.checked, bar.more_needed) == (10, 10, 19)
    assert "19 more right reviews" in bar.reason and bar.to_dict()["bar"] is None
    empty = certify_images([], [], target_precision=0.9)
    assert empty.more_needed == min_verified_count(0.9) == 29 and "review at least 29" in empty.reason
    hopeless = certify_images([_pred((0, 0, 10, 10, 1, 0.9))] * 5, [_truth((0, 0, 10, 10, 0))] * 5,
                              target_precision=0.9)
    assert not hopeless.certified and hopeless.more_needed is None and "train on more images" in hopeless.reason
