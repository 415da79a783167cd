"""Object detection: box arithmetic, COCO-style metrics, a small anchor-free detector on the
packaged ImageNet EfficientNet-Lite0, trained on a project's own boxes.

Heavy modules (torch) are imported on first use of the names below.
"""

from __future__ import annotations
