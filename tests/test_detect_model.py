"""The detector: target assignment and decoding by hand, letterboxing, training determinism,
resuming, saving; an end-to-end run on synthetic scenes (slow, real weights)."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("efficientnet_lite_pytorch")

from labelloop.detect.boxes import ImageBoxes  # noqa: E402
from labelloop.detect.model import decode_detections, fcos_targets, letterbox, level_points  # noqa: E402
from labelloop.detect.train import (  # noqa: E402
    CHECKPOINT_FILE,
    DetectConfig,
    load_detector,
    schedule,
    train_detector,
)
from labelloop.errors import ValidationError  # noqa: E402


def test_fcos_assignment_by_hand():
    # a 64 px input: stride 8 grid 8 x 8 (centres 4, 12, ..., 60), stride 16 grid 4 x 4 (8, 24, 40, 56)
    pts, strides, levels = level_points([(8, 8), (4, 4)])
    gt = torch.tensor([[0, 0, 16, 16],      # A, class 1: the 4 stride-8 points inside it
                       [0, 0, 64, 64],      # B, class 0: every stride-8 point is >= 32 px from a side,
                                            #    out of that level's range: all 16 stride-16 points
                       [0, 0, 24, 24],      # C, class 2: shares A's 4 points, A is smaller and wins;
                                            #    keeps the 5 with a coordinate at 20
                       [41, 41, 44, 44]],   # D, class 3: 3 px, no centre inside: nearest point (44, 44)
                      dtype=torch.float32)
    labels, boxes, ctr = fcos_targets(pts, strides, levels, gt, torch.tensor([1, 0, 2, 3]), 4)
    l0 = labels[:64].reshape(8, 8)          # [row = y index, col = x index]
    want = torch.full((8, 8), 4)
    want[:2, :2] = 1
    want[2, :3] = 2
    want[:2, 2] = 2
    want[5, 5] = 3
    assert torch.equal(l0, want)
    assert torch.equal(labels[64:], torch.zeros(16, dtype=torch.long))
    # centerness: A at x 4 / 12 -> min/max(4, 12) = 1/3 in both axes: sqrt(1/9) = 1/3
    assert torch.allclose(ctr[:64].reshape(8, 8)[:2, :2], torch.full((2, 2), 1 / 3))
    # B at (8, 8): (8/56)^(1/2 + 1/2) = 1/7; at (24, 40): 24/40 = 0.6 in both axes
    c1 = ctr[64:].reshape(4, 4)
    assert c1[0, 0].item() == pytest.approx(1 / 7) and c1[2, 1].item() == pytest.approx(0.6)
    assert ctr[64 - 64 + 5 * 8 + 5].item() == 0.0              # D's point lies on its corner
    assert torch.equal(boxes[5 * 8 + 5], gt[3])
    assert (ctr[labels == 4] == 0).all()


def test_no_boxes_is_all_background():
    pts, strides, levels = level_points([(2, 2), (1, 1)])
    labels, boxes, ctr = fcos_targets(pts, strides, levels, torch.zeros(0, 4), torch.zeros(0, dtype=torch.long), 3)
    assert (labels == 3).all() and (ctr == 0).all() and boxes.shape == (5, 4)


def test_decoding_by_hand():
    # a 16 px input: stride 8 is 2 x 2, stride 16 is 1 x 1; the image was 40 x 30 px (scale 0.4)
    cls = [torch.full((1, 2, 2, 2), -20.0), torch.full((1, 2, 1, 1), -20.0)]
    ltrb = [torch.ones(1, 4, 2, 2), torch.ones(1, 4, 1, 1)]
    ctr = [torch.full((1, 1, 2, 2), 20.0), torch.full((1, 1, 1, 1), 20.0)]
    # point (12, 4) (row 0, col 1), class 1: distances (1, .5, .25, 1) strides = (8, 4, 2, 8) px
    # -> xyxy (4, 0, 14, 12) input px -> / 0.4 -> (10, 0, 35, 30) image px -> xywh (10, 0, 25, 30)
    cls[0][0, 1, 0, 1] = 20.0
    ltrb[0][0, :, 0, 1] = torch.tensor([1.0, 0.5, 0.25, 1.0])
    # point (12, 12), class 1, a bit less sure, same box: suppressed by NMS
    cls[0][0, 1, 1, 1] = 3.0
    ltrb[0][0, :, 1, 1] = torch.tensor([1.0, 1.5, 0.25, 0.0])
    # the stride-16 point (8, 8), class 0, distance 1 stride: (-8, -8, 24, 24) clipped to the image
    cls[1][0, 0, 0, 0] = 0.0
    out = decode_detections(list(zip(cls, ltrb, ctr, strict=True)), np.array([0.4]), [(40, 30)],
                            score_threshold=0.05)
    (d,) = out
    assert d.labels.tolist() == [1, 0]
    assert np.allclose(d.boxes, [[10, 0, 25, 30], [0, 0, 40, 30]], atol=1e-4)
    # score = sqrt(sigmoid(cls) * sigmoid(ctr)): sigmoid(20) ~ 1; sqrt(0.5) for the second
    assert d.scores[0] == pytest.approx(1.0, abs=1e-6) and d.scores[1] == pytest.approx(math.sqrt(0.5), abs=1e-6)


def test_letterbox_keeps_aspect_and_pads_grey():
    from PIL import Image

    x, scales = letterbox([Image.new("RGB", (20, 10), (255, 0, 0)), Image.new("L", (8, 16), 0)], 32)
    assert x.shape == (2, 3, 32, 32) and x.dtype == torch.uint8
    assert scales.tolist() == [1.6, 2.0]
    # 20 x 10 -> 32 x 16 at the top, grey below
    assert (x[0, 0, :16] == 255).all() and (x[0, 1, :16] == 0).all() and (x[0, :, 16:] == 128).all()
    # 8 x 16 -> 16 x 32 at the left, grey to the right
    assert (x[1, :, :, :16] == 0).all() and (x[1, :, :, 16:] == 128).all()


def test_schedule_by_data_size():
    # few images: frozen backbone, more epochs; more images: last blocks unfrozen, fewer epochs
    assert schedule(10) == (0, 300)
    assert schedule(25) == (0, 150)
    assert schedule(50) == (3, 75)
    assert schedule(100) == (3, 43)
    assert schedule(200) == (6, 24)
    assert DetectConfig(epochs=3).resolved(200).trainable_blocks == 6
    assert DetectConfig(trainable_blocks=1).resolved(10).epochs == 300


def _tiny(n=6, seed=0):
    """Bright squares (class 0) and bars (class 1) on dark noise, 48 x 40 px."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images, targets = [], []
    for _ in range(n):
        a = rng.integers(0, 40, (40, 48, 3)).astype(np.uint8)
        x, y = int(rng.integers(0, 30)), int(rng.integers(0, 22))
        a[y:y + 14, x:x + 14] = 250
        bx = int(rng.integers(0, 40))
        a[2:38, bx:bx + 6, 0] = 250
        images.append(Image.fromarray(a))
        targets.append(ImageBoxes([[x, y, 14, 14], [bx, 2, 6, 36]], [0, 1]))
    return images, targets


FAST = dict(image_size=32, epochs=4, batch_size=4, pretrained=False, device="cpu", num_threads=1, width=16)


def _weights(det):
    return {k: v.clone() for k, v in det.model.trainable_state().items()}


def test_training_is_deterministic_and_resumes_exactly(tmp_path):
    images, targets = _tiny()
    cfg = DetectConfig(**FAST, trainable_blocks=2)
    a = train_detector(images, targets, 2, cfg)
    b = train_detector(images, targets, 2, cfg)
    assert a.history == b.history and len(a.history) == 4
    wa, wb = _weights(a), _weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(k.startswith("tail.") for k in wa)            # the unfrozen blocks are in the state

    class Stop(Exception):
        pass

    def stop_after_2(epoch, loss):
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        train_detector(images, targets, 2, cfg, checkpoint_dir=tmp_path, on_epoch_end=stop_after_2)
    assert (tmp_path / CHECKPOINT_FILE).is_file()
    c = train_detector(images, targets, 2, cfg, checkpoint_dir=tmp_path)
    assert c.resumed_from == 2 and c.history == a.history
    wc = _weights(c)
    assert all(torch.equal(wa[k], wc[k]) for k in wa)
    # other data: the checkpoint does not apply, training starts afresh
    d = train_detector(images[:5], targets[:5], 2, cfg, checkpoint_dir=tmp_path)
    assert d.resumed_from == 0


def test_predict_save_and_load(tmp_path):
    images, targets = _tiny()
    det = train_detector(images, targets, 2, DetectConfig(**FAST), class_names=["square", "bar"])
    assert det.config.trainable_blocks == 0 and det.config.epochs == 4
    preds = det.predict(images, score_threshold=0.0)
    assert len(preds) == len(images)
    for p in preds:
        assert len(p) > 0 and np.all(np.diff(p.scores) <= 0)
        x1, y1, w, h = p.boxes.T
        assert (x1 >= 0).all() and (y1 >= 0).all() and (x1 + w <= 48 + 1e-4).all() and (y1 + h <= 40 + 1e-4).all()
        assert set(p.labels.tolist()) <= {0, 1}
    path = det.save(tmp_path / "detector.pt")
    again = load_detector(path, device="cpu")
    assert again.class_names == ["square", "bar"] and again.config == det.config
    for p, q in zip(preds, again.predict(images, score_threshold=0.0), strict=True):
        assert np.allclose(p.boxes, q.boxes) and np.array_equal(p.labels, q.labels)


def test_bad_training_input_is_named(tmp_path):
    images, targets = _tiny(2)
    with pytest.raises(ValidationError, match="image 1 .*outside the image"):
        train_detector(images, [targets[0], ImageBoxes([[100, 5, 4, 4]], [0])], 2, DetectConfig(**FAST))
    with pytest.raises(ValidationError, match="image 0: class index 1"):
        train_detector(images, targets, 1, DetectConfig(**FAST))
    with pytest.raises(ValidationError, match="one per image"):
        train_detector(images, targets[:1], 2, DetectConfig(**FAST))
    with pytest.raises(ValidationError, match="multiple of 16"):
        DetectConfig(image_size=100)
    with pytest.raises(ValidationError, match="no detector file"):
        load_detector(tmp_path / "none.pt")


@pytest.mark.slow
def test_end_to_end_on_synthetic_scenes():
    """Real packaged weights: 60 synthetic scenes of 5 Fashion-MNIST classes (or digits if
    Fashion-MNIST is not installed); held-out mAP@0.5 well above chance."""
    from labelloop.detect.metrics import evaluate_detections
    from labelloop.detect.synthetic import make_scenes, object_pool
    from labelloop.errors import MissingDependencyError

    try:
        pool = object_pool("fashion-mnist", classes=["T-shirt-top", "Trouser", "Sneaker", "Bag", "Ankle-boot"],
                           n_per_class=60)
    except MissingDependencyError:
        pool = object_pool("digits", classes=["0", "1", "4", "7", "8"], n_per_class=60)
    train = make_scenes(*pool, 60, seed=1)
    test = make_scenes(*pool, 30, seed=2)
    det = train_detector(train.images, train.targets, 5, DetectConfig(epochs=40, device="cpu", num_threads=1))
    m = evaluate_detections(det.predict(test.images), test.targets, num_classes=5)
    assert m.map50 > 0.35 and m.map > 0.15, m.to_dict()
