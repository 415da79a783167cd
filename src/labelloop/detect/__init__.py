"""Object detection: box arithmetic, COCO-style metrics, image-level review and accept, and a
small anchor-free detector on the packaged ImageNet EfficientNet-Lite0, trained on a
project's own boxes.

- :mod:`.boxes` -- conversions (xywh, xyxy, cxcywh), IoU / GIoU, point and anchor coding, NMS;
  :class:`ImageBoxes` (the boxes of one image: xywh pixels, class, score);
- :mod:`.metrics` -- mAP@0.5 and mAP@0.5:0.95 (COCO-style, 101 recall points);
- :mod:`.accept` -- review counts, image confidence, the Clopper-Pearson accept bar;
- :mod:`.select` -- which images to review next: image uncertainty with diversity;
- :mod:`.model`, :mod:`.train` -- the FCOS-style detector, its schedule, training, prediction;
- :mod:`.synthetic` -- synthetic scenes from bundled datasets (benchmark, tests).

Names are imported on first use: ``import labelloop.detect`` does not import torch.
"""

from __future__ import annotations

from importlib import import_module

_LAZY = {
    "ImageBoxes": ".boxes",
    "box_iou": ".boxes",
    "batched_nms": ".boxes",
    "nms": ".boxes",
    "DetectionMetrics": ".metrics",
    "evaluate_detections": ".metrics",
    "Review": ".accept",
    "review_image": ".accept",
    "image_confidence": ".accept",
    "accept_threshold": ".accept",
    "choose_box_threshold": ".accept",
    "certify_images": ".accept",
    "ImageBar": ".accept",
    "image_uncertainty": ".select",
    "select_images": ".select",
    "DetectConfig": ".train",
    "Detector": ".train",
    "schedule": ".train",
    "train_detector": ".train",
    "load_detector": ".train",
    "make_scenes": ".synthetic",
    "object_pool": ".synthetic",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'labelloop.detect' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
