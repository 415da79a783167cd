"""Self-supervised adaptation of an image encoder on unlabeled images (SimCLR, BYOL or SwAV).

The encoder is split in two: a frozen *trunk* (stem and early blocks, eval mode) and a
trainable *tail* (last blocks and head conv, global average pooled). A projection head (and
for BYOL a predictor and a momentum target, for SwAV the prototypes) is trained on top and
thrown away afterwards. SwAV also sees ``local_crops`` small, low-resolution crops of every
image (multi-crop); the trunk and tail take any input size.

CPU shortcut (``view_cache``): since the trunk is frozen, the trunk output of an augmented
view never changes. With ``view_cache = M`` every image gets M augmented views pushed through
the trunk once; each step then draws two different cached views per image and runs only the
tail. An epoch costs a tail pass instead of a whole network pass (the trunk is ~90 % of the
FLOPs at 64 px), at the price of a finite pool of M (M - 1) / 2 view pairs per image.
SwAV's small crops get a pool of their own (``AdaptConfig.local_views``).
``view_cache = 0`` draws fresh augmentations every step (the default on CUDA).

Checkpoints are written after every epoch (atomically); a run started again with the same
configuration, data and checkpoint folder continues where it stopped, with the same random
stream, so an interrupted run ends with the weights an uninterrupted one would have.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import MissingDependencyError, ValidationError
from .augment import AugmentConfig, augment_batch, augment_preset, choose_augment
from .losses import byol_loss, byol_momentum, ema_update, nt_xent_loss, swav_loss

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

__all__ = [
    "METHODS",
    "AdaptConfig",
    "AdaptResult",
    "SplitEncoder",
    "efficientnet_encoder",
    "images_to_tensor",
    "build_view_cache",
    "default_prototypes",
    "train_ssl",
    "CHECKPOINT_FILE",
    "VIEWS_FILE",
    "LOCAL_VIEWS_FILE",
]

METHODS = ("simclr", "byol", "swav")
CHECKPOINT_FILE = "checkpoint.pt"
VIEWS_FILE = "views.pt"
LOCAL_VIEWS_FILE = "local_views.pt"   # SwAV's small crops
_CHECKPOINT_FORMAT = 1
_MIN_INPUT = 32                        # px: smallest input EfficientNet-Lite0 split here takes
# fields that do not change the result: a run may be resumed with other values
_RUNTIME_FIELDS = ("device", "num_threads")
_SWAV_FIELDS = ("prototypes", "swav_temperature", "sinkhorn_epsilon", "sinkhorn_iterations", "local_crops",
                "local_size", "local_scale", "queue", "freeze_prototypes")


def _import_torch():
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError.for_extra("torch", "image") from exc
    return torch


class DictConfig:
    """A dataclass configuration saved beside its checkpoints as a dict; keys it no longer
    knows (from an older version) are dropped when it is read back."""

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict):
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class AdaptConfig(DictConfig):
    """Everything that determines an adaptation run. Validated on construction.

    Defaults are the CPU setting of ``benchmarks/adaptation.py``, chosen on digits (SimCLR,
    30 epochs; 10-NN / propagation at 1 label per class): batch 128 beat 256 at equal epochs
    (more steps: 0.969 / 0.847 vs 0.928 / 0.763 after 10 epochs of 256); 4 trainable blocks
    beat 2 (0.969 / 0.847 vs 0.962 / 0.800) at twice the CPU time; temperature 0.5 beat 0.2
    and 0.1 for propagation (0.867 vs 0.800 vs 0.735 at 1 label per class)."""

    method: str = "simclr"            # "simclr" | "byol" | "swav"
    epochs: int = 30
    batch_size: int = 128
    image_size: int = 64              # 64 px: 8x8 / 28x28 sources lose nothing, ~12x cheaper than 224
    trainable_blocks: int = 2         # last MBConv blocks trained (of 16), plus the head conv
    lr: float = 1e-3                  # AdamW, cosine decay after a 1-epoch linear warm-up
    weight_decay: float = 1e-5
    temperature: float = 0.5          # NT-Xent; SimCLR's CIFAR-10 value, best here (see above)
    momentum: float = 0.99            # BYOL target EMA base (see losses.byol_momentum)
    proj_hidden: int = 1024           # projection / prediction MLP width (BYOL: 4096 on ImageNet)
    proj_dim: int = 128               # SimCLR: 128; BYOL: 256 on ImageNet; SwAV: 128
    # SwAV only (Caron et al. 2020; the paper's ImageNet values unless said otherwise)
    prototypes: int | None = None     # None: default_prototypes(images, classes): 3 per class, else ~sqrt(images)
    swav_temperature: float = 0.1     # softmax temperature of the swapped prediction
    sinkhorn_epsilon: float = 0.05    # entropy weight of the equal-partition codes
    sinkhorn_iterations: int = 3
    local_crops: int = 6              # small crops per image besides the 2 global ones (2 x 224 + 6 x 96 px)
    local_size: int | None = None     # None: image_size * 96 / 224 to a multiple of 4, >= 32 (32 px at 64)
    local_scale: tuple[float, float] | None = None  # small crops' area fraction; None: (0.05, the
    #                                   preset's smallest global crop), as the paper's (0.05, 0.14) / (0.14, 1)
    queue: int = 0                    # earlier projections per global crop added to the codes'
    #                                   batch once full (paper: 3840 for batches < 256); 0: off, as K <= batch here
    freeze_prototypes: int | None = None  # steps the prototypes stay fixed; None: the first epoch (paper)
    view_cache: int | None = None     # cached views per image; None: 8 on CPU, 0 (fresh) on CUDA
    augment: str = "auto"             # preset name, or "auto": chosen from the data
    seed: int = 0
    device: str = "cpu"               # "cpu" | "cuda" | "cuda:N"
    num_threads: int | None = None    # torch CPU threads; None: torch's default

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValidationError(f"unknown method {self.method!r}; use one of {', '.join(METHODS)}")
        for name, lo in (("epochs", 1), ("batch_size", 2), ("proj_hidden", 1), ("proj_dim", 1)):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < lo:
                raise ValidationError(f"{name} must be an int >= {lo}, got {v!r}")
        if not isinstance(self.image_size, int) or not 16 <= self.image_size <= 1024:
            raise ValidationError(f"image_size must be an int in 16..1024, got {self.image_size!r}")
        if not isinstance(self.trainable_blocks, int) or self.trainable_blocks < 0:
            raise ValidationError(f"trainable_blocks must be an int >= 0, got {self.trainable_blocks!r}")
        if not (self.lr > 0 and self.weight_decay >= 0 and self.temperature > 0):
            raise ValidationError(
                f"lr and temperature must be > 0 and weight_decay >= 0, got lr={self.lr}, "
                f"temperature={self.temperature}, weight_decay={self.weight_decay}")
        if not 0 <= self.momentum < 1:
            raise ValidationError(f"momentum must be in [0, 1), got {self.momentum}")
        self._check_swav()
        if self.view_cache is not None and (not isinstance(self.view_cache, int) or self.view_cache == 1
                                            or self.view_cache < 0):
            raise ValidationError(f"view_cache must be 0 (off) or an int >= 2, got {self.view_cache!r}")
        if self.augment != "auto":
            augment_preset(self.augment)  # raises with the list of presets
        if not (self.device == "cpu" or self.device == "cuda" or self.device.startswith("cuda:")):
            raise ValidationError(f"device must be 'cpu' or 'cuda', got {self.device!r}")

    def _check_swav(self) -> None:
        def is_int(v, lo):
            return isinstance(v, int) and not isinstance(v, bool) and v >= lo

        for name, lo, optional in (("prototypes", 2, True), ("sinkhorn_iterations", 1, False),
                                   ("local_crops", 0, False), ("queue", 0, False),
                                   ("freeze_prototypes", 0, True)):
            v = getattr(self, name)
            if not (is_int(v, lo) or (optional and v is None)):
                raise ValidationError(f"{name} must be an int >= {lo}{' or None' if optional else ''}, got {v!r}")
        if not (self.swav_temperature > 0 and self.sinkhorn_epsilon > 0):
            raise ValidationError(f"swav_temperature and sinkhorn_epsilon must be > 0, got "
                                  f"{self.swav_temperature}, {self.sinkhorn_epsilon}")
        lo = min(_MIN_INPUT, self.image_size)
        if self.local_size is not None and not (is_int(self.local_size, lo) and self.local_size <= self.image_size):
            raise ValidationError(f"local_size must be an int in {lo}..image_size ({self.image_size}; "
                                  f"EfficientNet-Lite0 takes no input under {_MIN_INPUT} px), got {self.local_size!r}")
        if self.local_scale is not None:
            if len(self.local_scale) != 2 or not 0 < self.local_scale[0] <= self.local_scale[1] <= 1:
                raise ValidationError(f"local_scale must be (lo, hi) with 0 < lo <= hi <= 1, got {self.local_scale!r}")
            object.__setattr__(self, "local_scale", tuple(float(v) for v in self.local_scale))  # JSON gives a list

    @property
    def local_px(self) -> int:
        """SwAV's small-crop size in pixels (the paper's 96 / 224 of the global size, but at least
        32: EfficientNet-Lite0's 'same' padding, fixed for ``image_size``, fails below)."""
        if self.local_size is not None:
            return self.local_size
        return min(self.image_size, max(_MIN_INPUT, 4 * round(self.image_size * 96 / 224 / 4)))

    def local_augment(self, aug: AugmentConfig) -> AugmentConfig:
        """The global augmentation ``aug`` with the small crops' area range (flips, rotation and
        colour as in ``aug``: the characters preset stays unmirrored)."""
        lo_global = aug.crop_scale[0]
        scale = self.local_scale or (min(0.05, lo_global), lo_global)
        return dataclasses.replace(aug, crop_scale=scale)

    def freeze_steps(self, steps_per_epoch: int) -> int:
        """Steps the SwAV prototypes stay fixed (``freeze_prototypes``, default one epoch)."""
        return steps_per_epoch if self.freeze_prototypes is None else self.freeze_prototypes

    @property
    def local_views(self) -> int:
        """Cached small crops per image for SwAV (0: fresh crops every step): at least twice
        ``local_crops``, so the crops of a step vary."""
        if self.method != "swav" or not self.views or not self.local_crops:
            return 0
        return max(self.views, 2 * self.local_crops)

    @property
    def views(self) -> int:
        """Cached views per image (0: fresh augmentations every step)."""
        if self.view_cache is not None:
            return self.view_cache
        return 0 if self.device.startswith("cuda") else 8

    def run_key(self) -> dict:
        """The fields that change the result (not the device or thread count, nor SwAV's
        settings for the other methods)."""
        d = self.to_dict()
        for k in _RUNTIME_FIELDS + (() if self.method == "swav" else _SWAV_FIELDS):
            d.pop(k)
        d["view_cache"] = self.views
        return d


def default_prototypes(n_images: int, n_classes: int | None = None) -> int:
    """SwAV's number of prototypes when not given: 3 per class when the classes are known (the
    paper's 3000 prototypes for ImageNet's 1000 classes), else ``sqrt(n_images)``; within
    [10, 3000]. Its results vary little with K from 300 to 30000 on ImageNet as long as there
    are more prototypes than classes."""
    k = 3 * n_classes if n_classes else round(math.sqrt(max(n_images, 1)))
    return int(min(3000, max(10, k)))


@dataclass
class AdaptResult:
    encoder: Any                      # the trained SplitEncoder (projection head discarded)
    config: AdaptConfig
    augment: dict                     # the augmentation parameters used
    history: list[float]              # mean loss per epoch
    steps: int                        # optimiser steps taken in total
    epochs: int                       # epochs completed
    resumed_from: int                 # epoch the run was resumed at (0: fresh start)
    seconds: float                    # wall time of this call (view cache included)
    step_losses: list[float] = field(default_factory=list)  # loss of every step of this call


# ----------------------------------------------------------------------------- encoders
def _split_classes():
    torch = _import_torch()
    from torch import nn

    class SplitEncoder(nn.Module):
        """``x -> tail(trunk(x))``: a frozen trunk and a trainable tail giving ``(B, dim)``.

        ``trunk`` is kept in eval mode with gradients off; ``net`` (optional) is the whole
        network both parts belong to, which is what gets saved."""

        def __init__(self, trunk: nn.Module, tail: nn.Module, dim: int, net: nn.Module | None = None):
            super().__init__()
            self.trunk = trunk
            self.tail = tail
            self.dim = dim
            self.__dict__["net"] = net  # not a submodule: its parameters are those of trunk + tail
            for p in self.trunk.parameters():
                p.requires_grad_(False)
            self.trunk.eval()

        def train(self, mode: bool = True):
            super().train(mode)
            self.trunk.eval()  # frozen BatchNorm statistics
            return self

        def forward_trunk(self, x):
            with torch.no_grad():
                return self.trunk(x)

        def forward(self, x):
            return self.tail(self.forward_trunk(x))

    class EffTrunk(nn.Module):
        def __init__(self, net, k: int):
            super().__init__()
            self.stem, self.bn0, self.act = net._conv_stem, net._bn0, net._swish
            self.blocks = nn.ModuleList(net._blocks[:k])

        def forward(self, x):
            x = self.act(self.bn0(self.stem(x)))
            for b in self.blocks:  # eval mode: drop-connect is off
                x = b(x)
            return x

    class EffTail(nn.Module):
        def __init__(self, net, k: int):
            super().__init__()
            n = len(net._blocks)
            self.blocks = nn.ModuleList(net._blocks[k:])
            # drop-connect rate scaled by block index, as EfficientNet.extract_features does
            rate = net._global_params.drop_connect_rate or 0.0
            self.rates = [rate * (k + i) / n for i in range(n - k)]
            self.head, self.bn1, self.act = net._conv_head, net._bn1, net._swish

        def forward(self, x):
            for b, r in zip(self.blocks, self.rates, strict=True):
                x = b(x, drop_connect_rate=r)
            x = self.act(self.bn1(self.head(x)))
            return x.mean((2, 3))  # (B, 1280) global average pool

    return SplitEncoder, EffTrunk, EffTail


def SplitEncoder(trunk: "nn.Module", tail: "nn.Module", dim: int, net: "nn.Module | None" = None):
    """Build a :class:`SplitEncoder` module (class defined lazily: torch is imported on use)."""
    cls, _, _ = _split_classes()
    return cls(trunk, tail, dim, net)


def efficientnet_encoder(*, trainable_blocks: int = 4, image_size: int = 64,
                         pretrained: bool = True, net: "nn.Module | None" = None):
    """EfficientNet-Lite0 split after block ``16 - trainable_blocks``: trunk = stem and the
    first blocks (frozen), tail = the last ``trainable_blocks`` blocks + head conv + pooling.

    ``net``: an existing network to split (else the packaged ImageNet one, or random weights
    with ``pretrained=False``)."""
    from ..embed.efficientnet import FEATURE_DIM, load_efficientnet_lite0

    cls, trunk_cls, tail_cls = _split_classes()
    if net is None:
        net = load_efficientnet_lite0(pretrained=pretrained, image_size=image_size)
    n = len(net._blocks)
    if trainable_blocks > n:
        raise ValidationError(f"trainable_blocks must be <= {n} for EfficientNet-Lite0, got {trainable_blocks}")
    k = n - trainable_blocks
    return cls(trunk_cls(net, k), tail_cls(net, k), FEATURE_DIM, net)


def images_to_tensor(images: Sequence, size: int, *, batch_size: int = 256) -> "torch.Tensor":
    """PIL images -> ``(N, 3, size, size)`` uint8, prepared exactly as the embedding step
    prepares them (:func:`labelloop.embed.efficientnet.preprocess_images`)."""
    torch = _import_torch()
    from ..embed.efficientnet import preprocess_images

    parts = []
    for lo in range(0, len(images), batch_size):
        x = preprocess_images(list(images[lo : lo + batch_size]), size)   # (B, 3, S, S) in [-1, 1]
        parts.append((x * 0.5 + 0.5).mul_(255.0).round_().clamp_(0, 255).to(torch.uint8).contiguous())
    if not parts:
        return torch.zeros((0, 3, size, size), dtype=torch.uint8)
    return torch.cat(parts)                                                 # (N, 3, S, S)


# ------------------------------------------------------------------------------- models
def _mlp(in_dim: int, hidden: int, out_dim: int):
    from torch import nn

    # SimCLR / BYOL projection head: Linear - BN - ReLU - Linear
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
                         nn.Linear(hidden, out_dim))


def _build_model(tail: "nn.Module", dim: int, cfg: AdaptConfig):
    from torch import nn

    class SimCLRModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.tail = tail
            self.projector = _mlp(dim, cfg.proj_hidden, cfg.proj_dim)

        def loss(self, h1, h2):
            import torch

            # both views in one pass: larger matrix products, BatchNorm over the 2B views
            z1, z2 = self.projector(self.tail(torch.cat([h1, h2]))).chunk(2)    # (B, d) each
            return nt_xent_loss(z1, z2, cfg.temperature)

        def after_step(self, step: int, total: int) -> None:
            pass

    class BYOLModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.tail = tail
            self.projector = _mlp(dim, cfg.proj_hidden, cfg.proj_dim)
            self.predictor = _mlp(cfg.proj_dim, cfg.proj_hidden, cfg.proj_dim)
            self.target_tail = copy.deepcopy(tail)
            self.target_projector = copy.deepcopy(self.projector)
            for p in (*self.target_tail.parameters(), *self.target_projector.parameters()):
                p.requires_grad_(False)

        def loss(self, h1, h2):
            import torch

            h = torch.cat([h1, h2])                                             # (2B, ...)
            p1, p2 = self.predictor(self.projector(self.tail(h))).chunk(2)      # (B, d) each
            with torch.no_grad():
                z1, z2 = self.target_projector(self.target_tail(h)).chunk(2)
            return byol_loss(p1, z2, p2, z1)

        def after_step(self, step: int, total: int) -> None:
            tau = byol_momentum(step, total, cfg.momentum)
            ema_update(self.target_tail, self.tail, tau)
            ema_update(self.target_projector, self.projector, tau)

    class SwAVModel(nn.Module):
        def __init__(self):
            import torch

            super().__init__()
            self.tail = tail
            self.projector = _mlp(dim, cfg.proj_hidden, cfg.proj_dim)
            self.prototypes = nn.Linear(cfg.proj_dim, cfg.prototypes, bias=False)  # rows: prototypes c_k
            self.normalize_prototypes()
            # queue[i]: the latest projections of global crop i, newest first; used once full
            self.register_buffer("queue", torch.zeros(2, cfg.queue, cfg.proj_dim))
            self.register_buffer("queue_seen", torch.zeros((), dtype=torch.long))

        def normalize_prototypes(self) -> None:
            import torch
            import torch.nn.functional as F

            with torch.no_grad():
                self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

        def loss(self, h1, h2, local=None, frozen: bool = False):
            import torch
            import torch.nn.functional as F

            b = h1.shape[0]
            feats = [self.tail(torch.cat([h1, h2]))]                            # (2B, dim)
            if local is not None and len(local):
                # the small crops normalise with their own batch statistics but leave the
                # running ones alone: those serve embedding at the global size
                with _frozen_running_stats(self.tail):
                    feats.append(self.tail(local))                              # (V B, dim), crop-major
            z = F.normalize(self.projector(torch.cat(feats)), dim=1)            # ((2 + V) B, d)
            c = self.prototypes.weight.detach() if frozen else self.prototypes.weight  # (K, d)
            scores = (z @ c.T).split(b)                                         # 2 + V of (B, K)
            queue_scores = None
            if cfg.queue:
                with torch.no_grad():
                    if int(self.queue_seen) >= cfg.queue:
                        queue_scores = [self.queue[i] @ c.T for i in range(2)]  # (L, K) each
                    zg = z[: 2 * b].detach().view(2, b, -1)
                    self.queue.copy_(torch.cat([zg, self.queue], dim=1)[:, : cfg.queue])
                    self.queue_seen += b
            return swav_loss(scores, n_assign=2, temperature=cfg.swav_temperature,
                             epsilon=cfg.sinkhorn_epsilon, iterations=cfg.sinkhorn_iterations,
                             queue_scores=queue_scores)

        def after_step(self, step: int, total: int) -> None:
            self.normalize_prototypes()   # back on the unit sphere after every update (paper)

    return {"simclr": SimCLRModel, "byol": BYOLModel, "swav": SwAVModel}[cfg.method]()


class _frozen_running_stats:
    """Within the block, BatchNorm layers of ``module`` use batch statistics (train mode) but
    do not update their running mean and variance (momentum 0)."""

    def __init__(self, module):
        from torch import nn

        self.bns = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def __enter__(self):
        self.saved = [(m.momentum, m.num_batches_tracked.clone() if m.num_batches_tracked is not None else None)
                      for m in self.bns]
        for m in self.bns:
            m.momentum = 0.0
        return self

    def __exit__(self, *exc):
        for m, (mom, nbt) in zip(self.bns, self.saved, strict=True):
            m.momentum = mom
            if nbt is not None:
                m.num_batches_tracked.copy_(nbt)
        return False


# ------------------------------------------------------------------------------ helpers
def _lr_at(step: int, total: int, warmup: int, base: float) -> float:
    # linear warm-up, then lr = base * (1 + cos(pi t)) / 2 with t the post-warm-up fraction
    if step < warmup:
        return base * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return base * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))


def _fingerprint(x: "torch.Tensor") -> str:
    """sha256 of the training tensor (shape and bytes): a checkpoint only resumes on it."""
    h = hashlib.sha256(str(tuple(x.shape)).encode())
    h.update(x.contiguous().numpy().tobytes())
    return h.hexdigest()


def _atomic_save(obj: Any, path: Path) -> None:
    torch = _import_torch()
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _resolve_device(name: str):
    torch = _import_torch()
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValidationError(f"device {name!r} requested but torch sees no CUDA device; use --device cpu")
    return torch.device(name)


def _as_uint8_images(source) -> "torch.Tensor":
    torch = _import_torch()
    if isinstance(source, torch.Tensor):
        if source.ndim != 4 or source.shape[1] != 3:
            raise ValidationError(f"training images must be a (N, 3, H, W) tensor, got shape {tuple(source.shape)}")
        if source.dtype != torch.uint8:
            raise ValidationError(f"training tensor must be uint8 (0..255), got {source.dtype}")
        return source.contiguous()
    raise ValidationError(
        f"train_ssl takes a (N, 3, H, W) uint8 tensor; got {type(source).__name__} "
        "(convert PIL images with images_to_tensor(images, size))")


# -------------------------------------------------------------------------------- trainer
def train_ssl(images: "torch.Tensor", config: AdaptConfig | None = None, *,
              encoder: Any = None,
              checkpoint_dir: Path | str | None = None,
              resume: bool = True,
              progress: bool = True,
              on_epoch_end: Callable[[int, float], None] | None = None,
              views: "torch.Tensor | None" = None,
              local_views: "torch.Tensor | None" = None,
              n_classes: int | None = None) -> AdaptResult:
    """Train ``encoder`` (default: ImageNet EfficientNet-Lite0, see :func:`efficientnet_encoder`)
    on ``images`` with ``config.method``; the projection head is discarded.

    ``images``: ``(N, 3, H, W)`` uint8 (:func:`images_to_tensor`); views are cropped from it
    and resized to ``config.image_size``.
    ``checkpoint_dir``: written after every epoch; with ``resume`` an existing checkpoint of
    the same configuration and data is continued (a finished one returns at once).
    ``on_epoch_end(epoch, mean_loss)``: called after each epoch's checkpoint is written.
    ``views``: a prebuilt :func:`build_view_cache` for these images and this configuration;
    ``local_views``: SwAV's small crops, ``build_view_cache(..., local=True)``.
    ``n_classes``: the number of classes, if known: sets SwAV's default number of prototypes
    (:func:`default_prototypes`) when ``config.prototypes`` is None.
    """
    _import_torch()   # a clear error when torch is missing, before any work
    cfg = config or AdaptConfig()
    x_all = _as_uint8_images(images)
    n = x_all.shape[0]
    if n < 2:
        raise ValidationError(f"self-supervised training needs at least 2 images, got {n}")
    if cfg.method == "swav" and cfg.prototypes is None:
        cfg = dataclasses.replace(cfg, prototypes=default_prototypes(n, n_classes))
    device = _resolve_device(cfg.device)
    if cfg.augment == "auto":
        aug_name, aug = choose_augment(x_all)
    else:
        aug_name, aug = cfg.augment, augment_preset(cfg.augment)
    ckdir = Path(checkpoint_dir) if checkpoint_dir is not None else None
    start = time.perf_counter()

    with seeded_threads(cfg.seed, cfg.num_threads):
        if encoder is None:
            encoder = efficientnet_encoder(trainable_blocks=cfg.trainable_blocks,
                                           image_size=cfg.image_size)
        return _train(x_all, cfg, aug_name, aug, encoder, device, ckdir, resume, progress,
                      on_epoch_end, start, views, local_views)


@contextlib.contextmanager
def seeded_threads(seed: int, num_threads: int | None):
    """Train inside this: torch's global RNG seeded with ``seed`` (the caller's RNG state is
    restored after) and ``num_threads`` intra-op threads when given (the caller's count
    restored after). Used by every training loop (adaptation, the detector)."""
    torch = _import_torch()

    threads_before = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(num_threads)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            yield
    finally:
        torch.set_num_threads(threads_before)


def _train(x_all, cfg: AdaptConfig, aug_name: str, aug: AugmentConfig, encoder, device, ckdir,
           resume: bool, progress: bool, on_epoch_end, start: float, views, local_views) -> AdaptResult:
    import torch
    from tqdm.auto import tqdm

    n = x_all.shape[0]
    bs = min(cfg.batch_size, n)
    steps_per_epoch = n // bs                     # drop the ragged last batch (BatchNorm)
    total = cfg.epochs * steps_per_epoch
    warmup = min(steps_per_epoch, max(1, total // 10))
    fingerprint = _fingerprint(x_all)

    encoder = encoder.to(device)
    model = _build_model(encoder.tail, encoder.dim, cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(2 * cfg.seed)   # the view cache uses 2 * seed + 1

    # ------------------------------------------------------------------ resume
    epoch0, step, history = 0, 0, []
    ck_path = ckdir / CHECKPOINT_FILE if ckdir else None
    if ck_path is not None and resume and ck_path.exists():
        ck = torch.load(ck_path, map_location="cpu", weights_only=False)  # RNG states live on CPU
        if ck.get("format") != _CHECKPOINT_FORMAT:
            raise ValidationError(f"{ck_path}: unknown checkpoint format; delete it or pass resume=False")
        old = AdaptConfig.from_dict(ck["config"]).run_key()
        if old != cfg.run_key() or ck["fingerprint"] != fingerprint:
            what = "configuration" if old != cfg.run_key() else "training images"
            raise ValidationError(
                f"{ck_path} belongs to a run with other {what}; use another checkpoint folder "
                "or start over with resume=False")
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        g.set_state(ck["generator"])
        torch.set_rng_state(ck["torch_rng"])
        epoch0, step, history = ck["epoch"], ck["step"], list(ck["history"])
    resumed_from = epoch0

    # -------------------------------------------------------------- view cache
    def view_cache(given, m: int, file: str, local: bool, what: str):
        if given is not None:
            if given.shape[:2] != (n, m):
                raise ValidationError(f"{what} has shape {tuple(given.shape)}; expected ({n}, {m}, ...) "
                                      f"from build_view_cache(..., local={local}) with this configuration")
            return given
        if not m or epoch0 >= cfg.epochs:
            return None
        vpath = ckdir / file if ckdir else None
        if vpath is not None and resume and vpath.exists() and epoch0 > 0:
            return torch.load(vpath, map_location="cpu", weights_only=True)
        if epoch0 > 0:
            raise ValidationError(f"{ckdir}: the view cache {file} is missing; start over with resume=False")
        built = build_view_cache(x_all, cfg, encoder, aug=aug, progress=progress, local=local)
        if ckdir is not None:
            ckdir.mkdir(parents=True, exist_ok=True)
            _atomic_save(built, ckdir / file)
        return built

    m, ml = cfg.views, cfg.local_views
    views = view_cache(views, m, VIEWS_FILE, False, "views")
    local_views = view_cache(local_views, ml, LOCAL_VIEWS_FILE, True, "local_views")
    swav = cfg.method == "swav"
    n_local = cfg.local_crops if swav else 0
    local_aug = cfg.local_augment(aug)
    freeze = cfg.freeze_steps(steps_per_epoch)

    # ------------------------------------------------------------------ epochs
    step_losses: list[float] = []
    model.train()
    encoder.train()
    bar = tqdm(total=total, initial=step, desc=f"adapt {cfg.method}", unit="step",
               disable=not progress, leave=False)
    try:
        for epoch in range(epoch0, cfg.epochs):
            perm = torch.randperm(n, generator=g)
            losses = []
            for b in range(steps_per_epoch):
                idx = perm[b * bs : (b + 1) * bs]
                if views is not None:
                    # two different cached views of every image: a, then a + [1, M) mod M
                    a = torch.randint(0, m, (len(idx),), generator=g)
                    c = (a + torch.randint(1, m, (len(idx),), generator=g)) % m
                    h1 = views[idx, a].to(device, torch.float32)                 # (B, C, h, w)
                    h2 = views[idx, c].to(device, torch.float32)
                else:
                    xb = x_all[idx].to(device)
                    h1 = encoder.forward_trunk(_trunk_input(xb, cfg.image_size, g, aug))
                    h2 = encoder.forward_trunk(_trunk_input(xb, cfg.image_size, g, aug))
                if not swav:
                    loss = model.loss(h1, h2)
                else:
                    local = None
                    if n_local and local_views is not None:
                        # n_local different cached small crops of every image
                        pick = torch.rand(len(idx), ml, generator=g).argsort(dim=1)[:, :n_local]  # (B, V)
                        local = local_views[idx.unsqueeze(1), pick]                # (B, V, C, h, w)
                        local = local.transpose(0, 1).flatten(0, 1).to(device, torch.float32)  # (V B, ...)
                    elif n_local:
                        local = torch.cat([encoder.forward_trunk(_trunk_input(xb, cfg.local_px, g, local_aug))
                                           for _ in range(n_local)])               # (V B, C, h, w)
                    loss = model.loss(h1, h2, local, frozen=step < freeze)
                for group in opt.param_groups:
                    group["lr"] = _lr_at(step, total, warmup, cfg.lr)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                model.after_step(step, total)
                lv = float(loss.detach())
                losses.append(lv)
                step_losses.append(lv)
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{lv:.3f}")
            history.append(sum(losses) / max(1, len(losses)))
            if ck_path is not None:
                ckdir.mkdir(parents=True, exist_ok=True)
                _atomic_save({
                    "format": _CHECKPOINT_FORMAT, "config": cfg.to_dict(), "fingerprint": fingerprint,
                    "epoch": epoch + 1, "step": step, "history": history,
                    "model": model.state_dict(), "optimizer": opt.state_dict(),
                    "generator": g.get_state(), "torch_rng": torch.get_rng_state(),
                }, ck_path)
            if on_epoch_end is not None:
                on_epoch_end(epoch + 1, history[-1])
    finally:
        bar.close()
    encoder.eval()
    return AdaptResult(encoder=encoder, config=cfg, augment={"preset": aug_name, **aug.to_dict()},
                       history=history, steps=step, epochs=len(history), resumed_from=resumed_from,
                       seconds=time.perf_counter() - start, step_losses=step_losses)


def _trunk_input(x_uint8, size: int, g, aug: AugmentConfig):
    """One augmented view, in the EfficientNet-Lite input range, channels_last."""
    import torch

    v = augment_batch(x_uint8, size, g, aug)          # (B, 3, S, S) in [0, 1]
    v = (v - 0.5) / 0.5                               # [-1, 1]
    return v.contiguous(memory_format=torch.channels_last)


def build_view_cache(images: "torch.Tensor", config: AdaptConfig, encoder: Any, *,
                     aug: AugmentConfig | None = None, progress: bool = True,
                     local: bool = False) -> "torch.Tensor":
    """``(N, M, C, h, w)`` float16 trunk outputs of ``M = config.views`` augmented views of
    every image, drawn from a generator seeded ``2 * seed + 1`` (so a cache built here and
    passed to :func:`train_ssl` gives the run it would have built itself; SimCLR, BYOL and
    SwAV runs with the same seed and augmentation can share one).

    ``local``: SwAV's small crops instead, ``M = config.local_views`` of ``config.local_px``
    pixels (seed ``2 * seed + 1 + 2**32``)."""
    import torch
    from tqdm.auto import tqdm

    x_all = _as_uint8_images(images)
    if aug is None:
        aug = choose_augment(x_all)[1] if config.augment == "auto" else augment_preset(config.augment)
    m, size = (config.local_views, config.local_px) if local else (config.views, config.image_size)
    if m < 2:
        raise ValidationError(f"a view cache needs view_cache >= 2 (and for small crops method swav "
                              f"with local_crops >= 1), got {m} views")
    if local:
        aug = config.local_augment(aug)
    device = next(encoder.parameters()).device
    g = torch.Generator().manual_seed(2 * config.seed + 1 + (2**32 if local else 0))
    n = x_all.shape[0]
    bs = min(config.batch_size, n)
    cache = None
    bar = tqdm(total=n * m, desc="adapt: caching " + ("small crops" if local else "views"), unit="view",
               disable=not progress, leave=False)
    try:
        for j in range(m):
            for lo in range(0, n, bs):
                xb = x_all[lo : lo + bs].to(device)
                h = encoder.forward_trunk(_trunk_input(xb, size, g, aug))     # (B, C, h, w)
                if cache is None:
                    cache = torch.empty((n, m, *h.shape[1:]), dtype=torch.float16)
                cache[lo : lo + bs, j] = h.to("cpu", torch.float16)
                bar.update(h.shape[0])
    finally:
        bar.close()
    return cache


def config_hash(cfg: AdaptConfig, data_hash: str, base: str) -> str:
    """Short stable hash of (run configuration, data, base backbone): a run's folder name."""
    blob = json.dumps({"config": cfg.run_key(), "data": data_hash, "base": base}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
