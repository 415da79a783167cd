"""Box arithmetic against numbers worked out by hand (comments show the working)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from labelloop.detect import boxes as B  # noqa: E402


def T(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def close(a, b, tol=1e-9):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64),
                          atol=tol, rtol=0)


def test_conversions_by_hand():
    xywh = T([1, 2, 3, 4])                 # x 1..4, y 2..6, centre (2.5, 4)
    assert close(B.xywh_to_xyxy(xywh), T([1, 2, 4, 6]))
    assert close(B.xywh_to_cxcywh(xywh), T([2.5, 4, 3, 4]))
    assert close(B.xyxy_to_xywh(T([1, 2, 4, 6])), xywh)
    assert close(B.xyxy_to_cxcywh(T([1, 2, 4, 6])), T([2.5, 4, 3, 4]))
    assert close(B.cxcywh_to_xyxy(T([2.5, 4, 3, 4])), T([1, 2, 4, 6]))
    assert close(B.cxcywh_to_xywh(T([2.5, 4, 3, 4])), xywh)
    # leading dimensions are kept
    assert B.xywh_to_xyxy(torch.zeros(2, 3, 4)).shape == (2, 3, 4)


def test_area_and_pairwise_iou_by_hand():
    a = T([0, 0, 2, 2], [0, 0, 1, 1])
    b = T([1, 1, 3, 3], [5, 5, 6, 6], [2, 0, 3, 2], [0, 0, 2, 2])
    assert close(B.box_area(a), [4, 1])
    assert close(B.box_area(T([3, 3, 1, 1])), [0])          # degenerate: x2 < x1
    iou = B.box_iou(a, b)
    assert iou.shape == (2, 4)
    # [0,0,2,2] vs [1,1,3,3]: overlap 1x1 = 1, union 4 + 4 - 1 = 7
    # vs [5,5,6,6]: disjoint; vs [2,0,3,2]: touching edge, overlap 0; vs itself: 1
    # [0,0,1,1] vs [1,1,3,3]: touching corner 0; vs [0,0,2,2]: inside, 1 / 4
    assert close(iou, [[1 / 7, 0, 0, 1], [0, 0, 0, 0.25]])
    # two empty boxes: union 0 -> IoU 0, not nan
    assert close(B.box_iou(T([1, 1, 1, 1]), T([1, 1, 1, 1])), [[0]])


def test_aligned_iou_and_giou_by_hand():
    a = T([0, 0, 2, 2], [0, 0, 1, 1], [0, 0, 4, 4])
    b = T([1, 1, 3, 3], [2, 0, 3, 1], [0, 0, 4, 4])
    assert close(B.aligned_iou(a, b), [1 / 7, 0, 1])
    # 1: hull [0,0,3,3] = 9, union 7: 1/7 - (9 - 7)/9
    # 2: disjoint, hull [0,0,3,1] = 3, union 2: 0 - 1/3
    # 3: identical: 1
    assert close(B.aligned_giou(a, b), [1 / 7 - 2 / 9, -1 / 3, 1])


def test_point_coding_by_hand():
    pts = T([4, 4], [6, 3])
    gt = T([2, 1, 10, 5], [2, 1, 10, 5])
    # (4,4): l = 4-2 = 2, t = 4-1 = 3, r = 10-4 = 6, b = 5-4 = 1; / stride 2
    # (6,3): l = 4, t = 2, r = 4, b = 2; / stride 4
    enc = B.encode_ltrb(pts, gt, torch.tensor([2.0, 4.0], dtype=torch.float64))
    assert close(enc, [[1, 1.5, 3, 0.5], [1, 0.5, 1, 0.5]])
    assert close(B.decode_ltrb(pts, enc, torch.tensor([2.0, 4.0], dtype=torch.float64)), gt)
    assert close(B.encode_ltrb(T([4, 4]), T([2, 1, 10, 5]), 2.0), [[1, 1.5, 3, 0.5]])


def test_anchor_coding_by_hand():
    anchor = T([0, 0, 4, 4])               # centre (2, 2), 4 x 4
    gt = T([1, 1, 9, 3])                   # centre (5, 2), 8 x 2
    # dx = (5 - 2) / 4, dy = 0, dw = log(8 / 4), dh = log(2 / 4)
    enc = B.encode_anchor(anchor, gt)
    assert close(enc, [[0.75, 0, math.log(2), math.log(0.5)]])
    assert close(B.decode_anchor(anchor, enc), gt)


def _nms_case():
    boxes = T([0, 0, 10, 10],     # 0: score .9
              [1, 1, 11, 11],     # 1: .8, IoU with 0 = 81 / (100 + 100 - 81) = 0.68
              [20, 20, 30, 30],   # 2: .7, far away
              [0, 0, 10, 5])      # 3: .85, IoU with 0 = 50 / 100 = 0.5 exactly; with 1: 36/114
    scores = torch.tensor([0.9, 0.8, 0.7, 0.85], dtype=torch.float64)
    return boxes, scores


def test_nms_by_hand():
    boxes, scores = _nms_case()
    # threshold 0.5: 1 goes (0.68 > 0.5), 3 stays (0.5 is not > 0.5); order by score
    assert B.nms(boxes, scores, 0.5).tolist() == [0, 3, 2]
    # threshold 0.4: 3 goes too
    assert B.nms(boxes, scores, 0.4).tolist() == [0, 2]
    # threshold 0.7: nothing overlaps that much
    assert B.nms(boxes, scores, 0.7).tolist() == [0, 3, 1, 2]
    assert B.nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []


def test_nms_ties_keep_the_lower_index():
    boxes = T([0, 0, 10, 10], [0, 0, 10, 10])
    assert B.nms(boxes, torch.tensor([0.5, 0.5]), 0.5).tolist() == [0]


def test_batched_nms_per_class_threshold_and_caps():
    boxes, scores = _nms_case()
    same = torch.tensor([0, 0, 0, 0])
    assert B.batched_nms(boxes, scores, same, iou_threshold=0.5).tolist() == [0, 3, 2]
    # box 1 in another class is not suppressed by box 0
    cls = torch.tensor([0, 1, 0, 0])
    assert B.batched_nms(boxes, scores, cls, iou_threshold=0.5).tolist() == [0, 3, 1, 2]
    # score threshold drops 2 (0.7) and 1 (0.8)
    assert B.batched_nms(boxes, scores, cls, iou_threshold=0.5, score_threshold=0.81).tolist() == [0, 3]
    # top-k before NMS keeps the two best (0 and 3); max_detections after
    assert B.batched_nms(boxes, scores, cls, pre_nms_top_k=2).tolist() == [0, 3]
    assert B.batched_nms(boxes, scores, cls, max_detections=3).tolist() == [0, 3, 1]
    # negative coordinates: the class offset still separates classes
    neg = boxes - 50
    assert B.batched_nms(neg, scores, cls, iou_threshold=0.5).tolist() == [0, 3, 1, 2]
    assert B.batched_nms(boxes, scores, cls, score_threshold=0.95).tolist() == []


def test_public_names_resolve_without_importing_torch_eagerly():
    import subprocess
    import sys

    import labelloop.detect as det

    assert det.__all__ == sorted(set(det.__all__))
    for name in det.__all__:
        assert getattr(det, name) is not None
    code = "import sys, labelloop.detect; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
