"""COCO-style AP against cases worked out by hand (comments show the working)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from labelloop.detect.boxes import ImageBoxes  # noqa: E402
from labelloop.detect.metrics import average_precision, evaluate_detections  # noqa: E402
from labelloop.errors import ValidationError  # noqa: E402

# Two ground-truth boxes; detections: exact hit (0.9), a miss (0.8), the second box (0.7).
# Pooled: TP, FP, TP -> recall .5 .5 1, precision 1 .5 2/3 -> envelope 1 2/3 2/3.
# Recall points 0..0.50 (51 of them) read precision 1, 0.51..1 (50) read 2/3:
# AP = (51 + 50 * 2/3) / 101 = 253 / 303.
AP_HIT_MISS_HIT = 253 / 303
# If the third detection is a false positive: TP FP FP, recall stays .5:
# 51 points read 1, the other 50 read 0: AP = 51 / 101.
AP_HIT_MISS_MISS = 51 / 101


def test_average_precision_by_hand():
    tp = np.array([True, False, True])
    assert average_precision(tp, np.array([0.9, 0.8, 0.7]), 2) == pytest.approx(AP_HIT_MISS_HIT, abs=1e-12)
    assert average_precision(np.array([True, False, False]), np.array([0.9, 0.8, 0.7]), 2) == \
        pytest.approx(AP_HIT_MISS_MISS, abs=1e-12)
    # the scores decide the order, not the input order
    assert average_precision(tp[::-1].copy(), np.array([0.7, 0.8, 0.9]), 2) == pytest.approx(AP_HIT_MISS_HIT)
    # every box found by the first detections: AP 1; nothing found: 0
    assert average_precision(np.array([True, True]), np.array([0.5, 0.4]), 2) == 1.0
    assert average_precision(np.zeros(0, bool), np.zeros(0), 3) == 0.0


def test_map_over_iou_thresholds_by_hand():
    gt = ImageBoxes([[0, 0, 10, 10], [20, 20, 10, 10]], [0, 0])
    # the third detection is the second box shifted down by 2: overlap 10 x 8 = 80,
    # union 100 + 100 - 80 = 120, IoU 2/3: a hit at t = .50 .55 .60 .65, a miss at .70 ... .95
    pred = ImageBoxes([[0, 0, 10, 10], [50, 50, 10, 10], [20, 22, 10, 10]], [0, 0, 0], [0.9, 0.8, 0.7])
    m = evaluate_detections([pred], [gt])
    assert m.map50 == pytest.approx(AP_HIT_MISS_HIT, abs=1e-12)
    assert m.ap[:, 0] == pytest.approx([AP_HIT_MISS_HIT] * 4 + [AP_HIT_MISS_MISS] * 6, abs=1e-12)
    # (4 * 253/303 + 6 * 153/303) / 10 = 1930 / 3030
    assert m.map == pytest.approx(1930 / 3030, abs=1e-12)


def test_classes_images_duplicates_and_max_detections_by_hand():
    gts = [ImageBoxes([[0, 0, 10, 10]], [0]),
           ImageBoxes([[0, 0, 10, 10], [30, 30, 10, 10]], [0, 1])]
    preds = [
        # image A, class 0: exact (0.9) and a duplicate shifted by 1 (IoU 90/110, but the box
        # is taken: a false positive at every threshold)
        ImageBoxes([[0, 0, 10, 10], [1, 0, 10, 10]], [0, 0], [0.9, 0.8]),
        # image B: class 0 exact (0.7); class 1's box found but called class 2 (0.95)
        ImageBoxes([[0, 0, 10, 10], [30, 30, 10, 10]], [0, 2], [0.7, 0.95]),
    ]
    m = evaluate_detections(preds, gts, num_classes=3)
    # class 0 pooled: .9 TP, .8 FP, .7 TP of 2 boxes -> 253/303 at every threshold;
    # class 1: 1 box, no detection -> 0; class 2: no ground truth -> left out of the mean
    assert m.ap[0, 0] == pytest.approx(AP_HIT_MISS_HIT)
    assert m.ap[0, 1] == 0.0 and np.isnan(m.ap[0, 2])
    assert m.map50 == pytest.approx(AP_HIT_MISS_HIT / 2) and m.map == pytest.approx(AP_HIT_MISS_HIT / 2)
    assert m.n_ground_truth.tolist() == [2, 1, 0]
    # one detection per image and class: the duplicate goes, class 0 is found perfectly
    m1 = evaluate_detections(preds, gts, num_classes=3, max_detections=1)
    assert m1.ap[0, 0] == 1.0 and m1.map50 == pytest.approx(0.5)
    assert m.to_dict()["ap50_per_class"][2] is None


def test_bad_input_is_named():
    with pytest.raises(ValidationError, match="one label"):
        ImageBoxes([[0, 0, 1, 1]], [0, 1])
    with pytest.raises(ValidationError, match="w, h >= 0"):
        ImageBoxes([[0, 0, -1, 1]], [0])
    with pytest.raises(ValidationError, match="no scores"):
        evaluate_detections([ImageBoxes([[0, 0, 1, 1]], [0])], [ImageBoxes([[0, 0, 1, 1]], [0])])
    with pytest.raises(ValidationError, match="same order"):
        evaluate_detections([], [ImageBoxes([], [])])
    with pytest.raises(ValidationError, match="no boxes"):
        evaluate_detections([ImageBoxes([], [], [])], [ImageBoxes([], [])])
