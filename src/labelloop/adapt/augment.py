"""Batched image augmentations for contrastive learning, in plain torch (no torchvision).

Every function takes a float batch ``(B, 3, H, W)`` in ``[0, 1]`` and a ``torch.Generator``
(all randomness comes from it, so a run is reproducible and resumable) and returns a new batch.
:func:`augment_batch` chains them the SimCLR way (Chen et al. 2020, appendix A): random
resized crop (+ flip, + optional small rotation) -> colour jitter (p=0.8) -> grayscale
(p=0.2) -> Gaussian blur (p=0.5). :func:`choose_augment` picks a preset from the data.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from ..errors import ValidationError

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "AugmentConfig",
    "AUGMENT_PRESETS",
    "augment_preset",
    "choose_augment",
    "augment_batch",
    "random_resized_crop",
    "color_jitter",
    "random_grayscale",
    "gaussian_blur",
    "to_grayscale",
]


@dataclass(frozen=True)
class AugmentConfig:
    """Parameters of :func:`augment_batch`; the defaults are SimCLR's ImageNet recipe."""

    crop_scale: tuple[float, float] = (0.2, 1.0)    # area fraction kept (SimCLR: 0.08-1; 0.2 as in MoCo v2 / Lightly for small data)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip: float = 0.5                               # probability of a horizontal flip
    rotation: float = 0.0                           # max |angle| in degrees (0: none, as SimCLR)
    jitter: float = 0.8                             # probability of colour jitter
    brightness: float = 0.4                         # SimCLR strength s = 1: 0.8 s, 0.8 s, 0.8 s, 0.2 s
    contrast: float = 0.4                           # (torchvision's ColorJitter(0.4, 0.4, 0.4, 0.1) in practice)
    saturation: float = 0.4
    hue: float = 0.1
    grayscale: float = 0.2                          # probability of dropping colour
    blur: float = 0.5                               # probability of a Gaussian blur
    blur_sigma: tuple[float, float] = (0.1, 2.0)    # SimCLR, in pixels of a 224 px image (scaled with size)

    def __post_init__(self) -> None:
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValidationError(f"crop_scale must satisfy 0 < lo <= hi <= 1, got {self.crop_scale}")
        if not 0 < self.crop_ratio[0] <= self.crop_ratio[1]:
            raise ValidationError(f"crop_ratio must satisfy 0 < lo <= hi, got {self.crop_ratio}")
        for name in ("flip", "jitter", "grayscale", "blur"):
            p = getattr(self, name)
            if not 0 <= p <= 1:
                raise ValidationError(f"{name} is a probability in [0, 1], got {p}")
        for name in ("brightness", "contrast", "saturation"):
            if not 0 <= getattr(self, name) < 1:
                raise ValidationError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if not 0 <= self.hue <= 0.5:
            raise ValidationError(f"hue must be in [0, 0.5], got {self.hue}")
        if not 0 <= self.rotation <= 180:
            raise ValidationError(f"rotation must be in [0, 180] degrees, got {self.rotation}")
        if not 0 < self.blur_sigma[0] <= self.blur_sigma[1]:
            raise ValidationError(f"blur_sigma must satisfy 0 < lo <= hi, got {self.blur_sigma}")

    def to_dict(self) -> dict:
        return asdict(self)


AUGMENT_PRESETS: dict[str, AugmentConfig] = {
    # photographs: the full SimCLR recipe
    "photo": AugmentConfig(),
    # grayscale sources (scans, Fashion-MNIST, digits): colour ops are meaningless, so
    # jitter only brightness/contrast; milder crops keep small objects recognisable; a small
    # rotation replaces some of the lost variety.
    "grayscale": AugmentConfig(
        crop_scale=(0.3, 1.0), saturation=0.0, hue=0.0, grayscale=0.0, rotation=10.0,
    ),
    # characters, digits, documents: grayscale, but a mirror image is a different symbol, so
    # no flip (digits, SimCLR: 10-NN 0.977 without flips against 0.963 with them)
    "characters": AugmentConfig(
        crop_scale=(0.3, 1.0), flip=0.0, saturation=0.0, hue=0.0, grayscale=0.0, rotation=10.0,
    ),
}


def augment_preset(name: str) -> AugmentConfig:
    """The preset ``name`` ("photo", "grayscale" or "characters")."""
    if name not in AUGMENT_PRESETS:
        raise ValidationError(f"unknown augmentation preset {name!r}; use one of {', '.join(AUGMENT_PRESETS)}")
    return AUGMENT_PRESETS[name]


def choose_augment(images: "torch.Tensor") -> tuple[str, AugmentConfig]:
    """Pick a preset from the data: "grayscale" when every image has equal R, G, B channels,
    else "photo". ``images``: ``(N, 3, H, W)`` (uint8 or float)."""
    x = images.float()
    gray = bool((x[:, 0] == x[:, 1]).all() and (x[:, 1] == x[:, 2]).all())
    name = "grayscale" if gray else "photo"
    return name, AUGMENT_PRESETS[name]


# ---------------------------------------------------------------------------------- helpers
def _uniform(g: "torch.Generator", n: int, lo: float, hi: float) -> "torch.Tensor":
    import torch

    return lo + (hi - lo) * torch.rand(n, generator=g)  # (n,)


def _coin(g: "torch.Generator", n: int, p: float) -> "torch.Tensor":
    import torch

    return torch.rand(n, generator=g) < p  # (n,) bool


def to_grayscale(x: "torch.Tensor") -> "torch.Tensor":
    """ITU-R 601 luma ``0.299 R + 0.587 G + 0.114 B``, repeated on 3 channels."""
    w = x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True).expand_as(x)


def _blend(a: "torch.Tensor", b: "torch.Tensor", factor: "torch.Tensor") -> "torch.Tensor":
    # factor * a + (1 - factor) * b, clamped to the valid range (torchvision's _blend)
    f = factor.view(-1, 1, 1, 1)
    return (f * a + (1.0 - f) * b).clamp_(0.0, 1.0)


# ---------------------------------------------------------------------------- augmentations
def random_resized_crop(x: "torch.Tensor", size: int, g: "torch.Generator", *,
                        scale: tuple[float, float] = (0.2, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3),
                        flip: float = 0.5, rotation: float = 0.0) -> "torch.Tensor":
    """Crop a random box of area fraction in ``scale`` and aspect ratio in ``ratio``, resize
    it to ``size`` x ``size`` (bilinear), flip it horizontally with probability ``flip`` and
    rotate it by a uniform angle in ``[-rotation, rotation]`` degrees; one affine resampling."""
    import torch
    import torch.nn.functional as F

    b = x.shape[0]
    area = _uniform(g, b, *scale)                                        # (B,)
    log_r = _uniform(g, b, math.log(ratio[0]), math.log(ratio[1]))
    r = torch.exp(log_r)
    # box width/height as fractions of the image: w h = area, w / h = r; clipped to the image
    w = torch.sqrt(area * r).clamp(max=1.0)
    h = torch.sqrt(area / r).clamp(max=1.0)
    # centre in normalised coordinates [-1, 1] such that the box stays inside the image
    cx = (2 * torch.rand(b, generator=g) - 1) * (1 - w)
    cy = (2 * torch.rand(b, generator=g) - 1) * (1 - h)
    sign = torch.where(_coin(g, b, flip), -1.0, 1.0)
    angle = _uniform(g, b, -rotation, rotation) * (math.pi / 180.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    # source = [[w s cos, -h sin], [w s sin, h cos]] @ output + centre  (s = flip sign)
    theta = torch.stack([
        torch.stack([w * sign * cos, -h * sin, cx], dim=1),
        torch.stack([w * sign * sin, h * cos, cy], dim=1),
    ], dim=1).to(dtype=x.dtype, device=x.device)                        # (B, 2, 3)
    grid = F.affine_grid(theta, [b, x.shape[1], size, size], align_corners=False)  # (B, S, S, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def color_jitter(x: "torch.Tensor", g: "torch.Generator", *, p: float = 0.8,
                 brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4,
                 hue: float = 0.1) -> "torch.Tensor":
    """With probability ``p`` per image: brightness, contrast, saturation, hue jitter (in this
    fixed order; factors uniform in ``[1 - v, 1 + v]``, hue shift uniform in ``[-hue, hue]``
    of a full turn)."""
    import torch

    b = x.shape[0]
    apply = _coin(g, b, p).to(x.device)
    fb = _uniform(g, b, 1 - brightness, 1 + brightness).to(x)
    fc = _uniform(g, b, 1 - contrast, 1 + contrast).to(x)
    fs = _uniform(g, b, 1 - saturation, 1 + saturation).to(x)
    fh = _uniform(g, b, -hue, hue).to(x)
    y = x
    if brightness > 0:
        y = _blend(y, torch.zeros_like(y), fb)
    if contrast > 0:
        mean = to_grayscale(y)[:, :1].mean((1, 2, 3), keepdim=True).expand_as(y)  # (B, 3, H, W)
        y = _blend(y, mean, fc)
    if saturation > 0:
        y = _blend(y, to_grayscale(y), fs)
    if hue > 0:
        # rotate the chroma (I, Q) plane of YIQ by 2 pi h
        yiq = x.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
        rgb = torch.linalg.inv(yiq)
        c = torch.einsum("ij,bjhw->bihw", yiq, y)                       # (B, 3, H, W)
        a = 2 * math.pi * fh
        cos, sin = torch.cos(a).view(-1, 1, 1), torch.sin(a).view(-1, 1, 1)
        i, q = c[:, 1], c[:, 2]
        c = torch.stack([c[:, 0], cos * i - sin * q, sin * i + cos * q], dim=1)
        y = torch.einsum("ij,bjhw->bihw", rgb, c).clamp_(0.0, 1.0)
    return torch.where(apply.view(-1, 1, 1, 1), y, x)


def random_grayscale(x: "torch.Tensor", g: "torch.Generator", *, p: float = 0.2) -> "torch.Tensor":
    """With probability ``p`` per image, replace it by its luma on all 3 channels."""
    import torch

    apply = _coin(g, x.shape[0], p).to(x.device)
    return torch.where(apply.view(-1, 1, 1, 1), to_grayscale(x), x)


def gaussian_blur(x: "torch.Tensor", g: "torch.Generator", *, p: float = 0.5,
                  sigma: tuple[float, float] = (0.1, 2.0)) -> "torch.Tensor":
    """With probability ``p`` per image, a separable Gaussian blur with ``sigma`` uniform in
    the range given for a 224 px image (scaled to this size); kernel ~10 % of the image
    (SimCLR), reflect padding."""
    import torch
    import torch.nn.functional as F

    b, c, h, w = x.shape
    apply = _coin(g, b, p).to(x.device)
    scale = min(h, w) / 224.0
    s = (_uniform(g, b, *sigma) * scale).clamp(min=1e-3).to(x)         # (B,)
    radius = max(1, int(round(0.05 * min(h, w))))
    if radius >= min(h, w):  # reflect padding needs radius < size
        radius = min(h, w) - 1
    if radius < 1:
        return x
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)  # (K,)
    # k(t) = exp(-t^2 / (2 sigma^2)), normalised to sum 1
    k = torch.exp(-(t.view(1, -1) ** 2) / (2 * s.view(-1, 1) ** 2))      # (B, K)
    k = k / k.sum(1, keepdim=True)
    k = k.repeat_interleave(c, dim=0)                                    # (B*3, K)
    y = x.reshape(1, b * c, h, w)
    y = F.pad(y, (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(y, k.view(b * c, 1, 1, -1), groups=b * c)               # horizontal
    y = F.conv2d(y, k.view(b * c, 1, -1, 1), groups=b * c)               # vertical
    y = y.view(b, c, h, w)
    return torch.where(apply.view(-1, 1, 1, 1), y, x)


def augment_batch(x: "torch.Tensor", size: int, g: "torch.Generator",
                  config: AugmentConfig | None = None) -> "torch.Tensor":
    """One random view of every image: ``(B, 3, H, W)`` in [0, 1] -> ``(B, 3, size, size)``.

    Inputs may be uint8 (0..255); they are converted to float first."""
    import torch

    cfg = config or AugmentConfig()
    if x.dtype == torch.uint8:
        x = x.float().div_(255.0)
    y = random_resized_crop(x, size, g, scale=cfg.crop_scale, ratio=cfg.crop_ratio,
                            flip=cfg.flip, rotation=cfg.rotation)
    if cfg.jitter > 0 and (cfg.brightness or cfg.contrast or cfg.saturation or cfg.hue):
        y = color_jitter(y, g, p=cfg.jitter, brightness=cfg.brightness, contrast=cfg.contrast,
                         saturation=cfg.saturation, hue=cfg.hue)
    if cfg.grayscale > 0:
        y = random_grayscale(y, g, p=cfg.grayscale)
    if cfg.blur > 0:
        y = gaussian_blur(y, g, p=cfg.blur, sigma=cfg.blur_sigma)
    return y.clamp_(0.0, 1.0)  # interpolation and blur can overshoot by a rounding error

