"""Image-level review counts, image confidence and the certified accept bar, by hand."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from labelloop.detect.accept import accept_threshold, image_confidence, review_image  # noqa: E402
from labelloop.detect.boxes import ImageBoxes  # noqa: E402

TRUTH = ImageBoxes([[0, 0, 10, 10], [20, 0, 10, 10], [40, 0, 10, 10]], [0, 1, 0])


def test_review_counts_by_hand():
    pred = ImageBoxes([[0, 0, 10, 10],     # .9 exact, right class: unchanged
                       [20, 0, 10, 10],    # .8 exact, wrong class: corrected
                       [44, 0, 10, 10],    # .7 IoU with the third = 60 / 140 = .43: corrected (moved)
                       [80, 80, 5, 5],     # .6 nothing there: deleted
                       [0, 0, 10, 10]],    # .3 below the box threshold: not a pre-label
                      [0, 0, 0, 0, 0], [0.9, 0.8, 0.7, 0.6, 0.3])
    r = review_image(pred, TRUTH, box_threshold=0.5)
    assert (r.unchanged, r.corrected, r.drawn, r.deleted) == (1, 2, 0, 1) and not r.right
    empty = ImageBoxes(np.zeros((0, 4)), [], [])
    r = review_image(empty, TRUTH, box_threshold=0.5)
    assert (r.unchanged, r.corrected, r.drawn, r.deleted) == (0, 0, 3, 0)
    assert review_image(empty, ImageBoxes(np.zeros((0, 4)), []), box_threshold=0.5).right
    perfect = ImageBoxes(TRUTH.boxes, TRUTH.labels, [0.9, 0.8, 0.7])
    assert review_image(perfect, TRUTH, box_threshold=0.5).right


def test_image_confidence_by_hand():
    pred = ImageBoxes(np.zeros((5, 4)), [0] * 5, [0.9, 0.8, 0.7, 0.6, 0.3])
    # least sure kept: .6; least sure dropped: 1 - .3 = .7
    assert image_confidence(pred, box_threshold=0.5) == pytest.approx(0.6)
    assert image_confidence(pred, box_threshold=0.65) == pytest.approx(0.4)   # dropped .6 -> 1 - .6
    assert image_confidence(ImageBoxes(np.zeros((0, 4)), [], []), box_threshold=0.5) == 1.0


def test_accept_threshold_by_hand():
    # n right images out of n give a 95 % Clopper-Pearson lower bound of 0.05^(1/n):
    # 0.05^(1/29) = 0.9019 >= 0.9 but 0.05^(1/28) = 0.8985 < 0.9
    conf = np.linspace(1.0, 0.61, 40)
    right = np.r_[np.ones(30, bool), np.zeros(10, bool)]
    # 30 / 30 passes; 30 / 31: Beta(30, 2) has CDF 31 x^30 - 30 x^31 = 0.17 at 0.9 > 0.05, fails
    assert accept_threshold(conf, right, target_precision=0.9) == pytest.approx(conf[29])
    assert accept_threshold(conf, np.r_[np.ones(28, bool), np.zeros(12, bool)], target_precision=0.9) == np.inf
    # a tie between the 30th (right) and 31st (wrong) image: the cut falls before the 30th
    tied = conf.copy()
    tied[30] = tied[29]
    assert accept_threshold(tied, right, target_precision=0.9) == pytest.approx(conf[28])
    # order of the input does not matter
    p = np.random.default_rng(0).permutation(40)
    assert accept_threshold(conf[p], right[p], target_precision=0.9) == pytest.approx(conf[29])
