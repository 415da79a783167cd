"""Train the detector of :mod:`labelloop.detect.model` on a project's own boxes; predict.

Schedule by data size (:func:`schedule`, the one home of that decision): few images train
only the FPN and head on the frozen ImageNet features; more images also unfreeze the last
backbone blocks under the stride-16 map. Epochs are set so every run takes about the same
number of optimiser steps.

CPU shortcut: the frozen trunk (stem and blocks up to the first trainable one) never changes,
so its outputs are computed once per image and per flip and cached; a step runs only the
trainable tail, FPN and head. The only augmentation is a horizontal flip (``hflip``); turn it
off for classes a mirror changes (digits, text).

Determinism and resuming: the head is initialised from ``seed``; each epoch's order and flips
come from a generator seeded by (seed, epoch), and the backbone runs in eval mode (no
drop-connect), so a run resumed from its checkpoint ends with the weights an uninterrupted
run would have (bit for bit on CPU).
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# one home for the cosine schedule, atomic writes and the CUDA check
from ..adapt.train import DictConfig, _atomic_save, _lr_at, _resolve_device, seeded_threads
from ..errors import ValidationError
from .boxes import ImageBoxes, xywh_to_xyxy
from .model import (
    MAX_TRAINABLE_BLOCKS,
    FCOSDetector,
    build_detector,
    decode_detections,
    detection_loss,
    fcos_targets,
    letterbox,
    level_points,
)

import torch  # noqa: E402  (model.py has already turned a missing torch into a clear error)

__all__ = ["DetectConfig", "Detector", "schedule", "train_detector", "load_detector", "resolve_device",
           "CHECKPOINT_FILE"]

CHECKPOINT_FILE = "checkpoint.pt"
_FORMAT = 1
_RUNTIME_FIELDS = ("device", "num_threads", "score_threshold", "nms_iou", "max_detections")
# schedule: (fewest images, trainable backbone blocks). Chosen, not measured: below 50 images
# the 3 blocks under the stride-16 map (~0.4 M weights) would outnumber the labels by far.
UNFREEZE = ((0, 0), (50, 3), (150, MAX_TRAINABLE_BLOCKS))
TARGET_STEPS = 300        # optimiser steps per run, whatever the data size
MIN_EPOCHS, MAX_EPOCHS = 12, 300


def schedule(n_images: int, batch_size: int = 16) -> tuple[int, int]:
    """``(trainable_blocks, epochs)`` for a training set of ``n_images`` images."""
    blocks = max(b for lo, b in UNFREEZE if n_images >= lo)
    per_epoch = math.ceil(n_images / batch_size)
    return blocks, int(min(MAX_EPOCHS, max(MIN_EPOCHS, math.ceil(TARGET_STEPS / per_epoch))))


def resolve_device(name: str) -> torch.device:
    """``"auto"``: CUDA when torch sees a GPU, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return _resolve_device(name)


@dataclass(frozen=True)
class DetectConfig(DictConfig):
    """Everything that determines a detector run. Validated on construction."""

    image_size: int = 128             # letterboxed input side; a multiple of 16
    epochs: int | None = None         # None: schedule(n_images)
    trainable_blocks: int | None = None   # backbone blocks trained (0..6); None: schedule(n_images)
    batch_size: int = 16
    lr: float = 2e-3                  # AdamW, cosine decay after a linear warm-up
    backbone_lr_mult: float = 0.1     # the unfrozen backbone blocks learn 10x slower
    weight_decay: float = 1e-4
    width: int = 64                   # FPN / head channels
    hflip: bool = True
    pretrained: bool = True           # packaged ImageNet weights (False: random, for tests)
    seed: int = 0
    device: str = "auto"              # "auto" | "cpu" | "cuda" | "cuda:N"
    num_threads: int | None = None
    score_threshold: float = 0.05     # predictions below this are dropped
    nms_iou: float = 0.5
    max_detections: int = 100         # per image

    def __post_init__(self) -> None:
        if not isinstance(self.image_size, int) or self.image_size % 16 or not 32 <= self.image_size <= 1024:
            raise ValidationError(f"image_size must be a multiple of 16 in 32..1024, got {self.image_size!r}")
        for name, lo in (("epochs", 1), ("batch_size", 1), ("width", 8)):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < lo):
                raise ValidationError(f"{name} must be an int >= {lo}, got {v!r}")
        if self.width % 8:
            raise ValidationError(f"width must be a multiple of 8 (GroupNorm groups), got {self.width}")
        tb = self.trainable_blocks
        if tb is not None and (not isinstance(tb, int) or not 0 <= tb <= MAX_TRAINABLE_BLOCKS):
            raise ValidationError(f"trainable_blocks must be None or an int in 0..{MAX_TRAINABLE_BLOCKS}, got {tb!r}")
        if not (self.lr > 0 and self.weight_decay >= 0 and self.backbone_lr_mult >= 0):
            raise ValidationError("lr must be > 0, weight_decay and backbone_lr_mult >= 0")
        if not (0 <= self.score_threshold < 1 and 0 < self.nms_iou <= 1 and self.max_detections >= 1):
            raise ValidationError("score_threshold must be in [0, 1), nms_iou in (0, 1], max_detections >= 1")
        if not (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")):
            raise ValidationError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")

    def resolved(self, n_images: int) -> DetectConfig:
        """This configuration with ``epochs`` and ``trainable_blocks`` filled in by the schedule."""
        blocks, epochs = schedule(n_images, self.batch_size)
        return DetectConfig.from_dict({**self.to_dict(),
                                       "epochs": self.epochs if self.epochs is not None else epochs,
                                       "trainable_blocks": (self.trainable_blocks if self.trainable_blocks
                                                            is not None else blocks)})


@dataclass
class Detector:
    """A trained detector: the network and what it was trained with."""

    model: FCOSDetector
    config: DetectConfig              # resolved (epochs and trainable blocks filled in)
    num_classes: int
    class_names: list[str] | None = None
    history: list[float] = field(default_factory=list)   # mean loss per epoch
    epochs: int = 0                   # epochs completed
    resumed_from: int = 0             # epoch this call resumed at (0: fresh)
    seconds: float = 0.0              # wall time of the training call
    n_images: int = 0

    def predict(self, images: Sequence, *, batch_size: int = 32, score_threshold: float | None = None) -> list[ImageBoxes]:
        """Boxes (xywh, image pixels, top-left origin), class and score for each image."""
        cfg = self.config
        device = next(self.model.parameters()).device
        self.model.eval()
        out: list[ImageBoxes] = []
        images = list(images)
        for lo in range(0, len(images), batch_size):
            chunk = images[lo:lo + batch_size]
            x, scales = letterbox(chunk, cfg.image_size)
            with torch.inference_mode():
                outputs = self.model(x.to(device))
            out += decode_detections(
                outputs, scales, [im.size for im in chunk],
                score_threshold=cfg.score_threshold if score_threshold is None else score_threshold,
                iou_threshold=cfg.nms_iou, max_detections=cfg.max_detections)
        return out

    def save(self, path: Path | str) -> Path:
        """Write the trained part (tail blocks, FPN, head) and its provenance to ``path``;
        the frozen trunk is the packaged ImageNet network and is not copied."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_save({"format": _FORMAT, "base_backbone": "efficientnet-lite0", "config": self.config.to_dict(),
                      "num_classes": self.num_classes, "class_names": self.class_names,
                      "history": self.history, "epochs": self.epochs, "n_images": self.n_images,
                      "state": {k: v.detach().cpu() for k, v in self._saved_state().items()},
                      "torch_version": str(torch.__version__)}, path)
        return path

    def _saved_state(self) -> dict:
        # a trunk with the packaged weights is rebuilt from the package; a random one is kept
        return self.model.trainable_state() if self.config.pretrained else self.model.state_dict()


def load_detector(path: Path | str, *, device: str = "auto") -> Detector:
    """A detector written by :meth:`Detector.save`."""
    path = Path(path)
    if not path.is_file():
        raise ValidationError(f"no detector file at {path}; train one first (labelloop train)")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != _FORMAT:
        raise ValidationError(f"{path} is not a labelloop detector file (format {_FORMAT})")
    cfg = DetectConfig.from_dict({**blob["config"], "device": device})
    model = build_detector(blob["num_classes"], trainable_blocks=cfg.trainable_blocks,
                           image_size=cfg.image_size, width=cfg.width, pretrained=cfg.pretrained)
    missing, unexpected = model.load_state_dict(blob["state"], strict=False)
    if unexpected or any(not k.startswith("trunk.") for k in missing):   # the trunk may come from the package
        raise ValidationError(f"{path} does not fit this detector (missing {missing[:3]}, unexpected {unexpected[:3]})")
    return Detector(model=model.to(resolve_device(device)), config=cfg, num_classes=blob["num_classes"],
                    class_names=blob["class_names"], history=blob["history"], epochs=blob["epochs"],
                    n_images=blob["n_images"])


# ------------------------------------------------------------------------------ training
def _check_targets(images: Sequence, targets: Sequence[ImageBoxes], num_classes: int) -> None:
    if len(images) != len(targets):
        raise ValidationError(f"{len(images)} images but {len(targets)} box lists; give one per image")
    if not images:
        raise ValidationError("training a detector needs at least one image with boxes")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValidationError(f"num_classes must be an int >= 1, got {num_classes!r}")
    for i, (im, t) in enumerate(zip(images, targets, strict=True)):
        if len(t) and (t.labels.min() < 0 or t.labels.max() >= num_classes):
            raise ValidationError(f"image {i}: class index {int(t.labels.max())} is outside 0..{num_classes - 1}")
        w, h = im.size
        b = t.boxes
        outside = (b[:, 0] >= w) | (b[:, 1] >= h) | (b[:, 0] + b[:, 2] <= 0) | (b[:, 1] + b[:, 3] <= 0) | \
                  (b[:, 2] <= 0) | (b[:, 3] <= 0)
        if outside.any():
            raise ValidationError(f"image {i} ({w}x{h} px): box {b[outside][0].tolist()} (x, y, w, h) is empty "
                                  "or outside the image; fix or delete it")


def _run_key(cfg: DetectConfig, num_classes: int, x: torch.Tensor, targets: list[ImageBoxes]) -> str:
    h = hashlib.sha256(json.dumps({k: v for k, v in cfg.to_dict().items() if k not in _RUNTIME_FIELDS},
                                  sort_keys=True).encode())
    h.update(f"{num_classes}|{tuple(x.shape)}".encode())
    h.update(x.numpy().tobytes())
    for t in targets:
        h.update(t.boxes.tobytes() + t.labels.tobytes())
    return h.hexdigest()


def _cache(model: FCOSDetector, x: torch.Tensor, gts: list[tuple[torch.Tensor, torch.Tensor]], flips: int,
           device, batch: int = 64):
    """Trunk outputs and FCOS targets for every image and flip: ``(V, N, ...)`` tensors."""
    size = x.shape[-1]
    c3s, hs, labels, boxes, ctrs = [], [], [], [], []
    sizes = None
    for v in range(flips):
        xv = torch.flip(x, dims=[-1]) if v else x
        c3v, hv = [], []
        for lo in range(0, x.shape[0], batch):
            c3, h = model.forward_trunk(xv[lo:lo + batch].to(device))
            c3v.append(c3)
            hv.append(h)
        c3s.append(torch.cat(c3v))
        hs.append(torch.cat(hv))
        if sizes is None:
            with torch.no_grad():
                outs = model.forward_rest(c3s[0][:1], hs[0][:1])
            sizes = [tuple(c.shape[-2:]) for c, _, _ in outs]
            points, strides, levels = level_points(sizes, device=device)
        lv, bv, cv = [], [], []
        for gb, gl in gts:
            if v:  # mirrored: x1' = S - x2, x2' = S - x1
                gb = torch.stack([size - gb[:, 2], gb[:, 1], size - gb[:, 0], gb[:, 3]], 1)
            lab, box, ctr = fcos_targets(points, strides, levels, gb.to(device), gl.to(device), model.num_classes)
            lv.append(lab)
            bv.append(box)
            cv.append(ctr)
        labels.append(torch.stack(lv))
        boxes.append(torch.stack(bv))
        ctrs.append(torch.stack(cv))
    return [torch.stack(t) for t in (c3s, hs, labels, boxes, ctrs)]


def train_detector(images: Sequence, targets: Sequence[ImageBoxes], num_classes: int,
                   config: DetectConfig | None = None, *, class_names: Sequence[str] | None = None,
                   checkpoint_dir: Path | str | None = None, resume: bool = True,
                   on_epoch_end: Callable[[int, float], None] | None = None) -> Detector:
    """Fit a detector on ``images`` (PIL) and their boxes (``targets``, xywh in image pixels).

    ``checkpoint_dir``: a checkpoint is written there during training; with ``resume`` a
    checkpoint of the same configuration and data is continued (a finished one returns at once).
    ``on_epoch_end(epoch, mean_loss)``: called after each epoch (and its checkpoint, if due)."""
    targets = [t if isinstance(t, ImageBoxes) else ImageBoxes(*t) for t in targets]
    images = list(images)
    _check_targets(images, targets, num_classes)
    cfg = (config or DetectConfig()).resolved(len(images))
    device = resolve_device(cfg.device)
    start = time.perf_counter()
    with seeded_threads(cfg.seed, cfg.num_threads):
        return _train(images, targets, num_classes, cfg, device, class_names, checkpoint_dir, resume,
                      on_epoch_end, start)


def _train(images, targets, num_classes, cfg, device, class_names, checkpoint_dir, resume, on_epoch_end, start):
    x, scales = letterbox(images, cfg.image_size)                       # (N, 3, S, S) uint8
    gts = []
    for t, s in zip(targets, scales, strict=True):
        gts.append((xywh_to_xyxy(torch.from_numpy(t.boxes * s).float()).clamp(0, cfg.image_size),
                    torch.from_numpy(t.labels)))
    model = build_detector(num_classes, trainable_blocks=cfg.trainable_blocks, image_size=cfg.image_size,
                           width=cfg.width, pretrained=cfg.pretrained).to(device)
    key = _run_key(cfg, num_classes, x, targets)
    head = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("tail.")]
    tail = [p for n, p in model.named_parameters() if p.requires_grad and n.startswith("tail.")]
    groups = [{"params": head, "lr_mult": 1.0}]
    if tail:
        groups.append({"params": tail, "lr_mult": cfg.backbone_lr_mult})
    opt = torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = x.shape[0]
    per_epoch = math.ceil(n / cfg.batch_size)
    total = cfg.epochs * per_epoch
    warmup = min(50, max(1, total // 10))
    history: list[float] = []
    first = 0
    ckpt = Path(checkpoint_dir) / CHECKPOINT_FILE if checkpoint_dir is not None else None
    if ckpt is not None and resume and ckpt.is_file():
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        if state.get("key") == key:
            model.load_state_dict(state["model"], strict=False)
            opt.load_state_dict(state["optim"])
            history, first = list(state["history"]), int(state["epoch"])
    views = 2 if cfg.hflip else 1
    c3s, hs, labels, boxes, ctrs = _cache(model, x, gts, views, device)
    every = max(1, cfg.epochs // 10)
    model.train()
    for epoch in range(first, cfg.epochs):
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        perm = torch.randperm(n, generator=g)
        flip = torch.randint(0, views, (n,), generator=g)
        losses = []
        for b in range(per_epoch):
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            v = flip[idx]
            step = epoch * per_epoch + b
            for grp in opt.param_groups:
                grp["lr"] = _lr_at(step, total, warmup, cfg.lr) * grp["lr_mult"]
            outputs = model.forward_rest(c3s[v, idx], hs[v, idx])
            loss, _ = detection_loss(outputs, (labels[v, idx], boxes[v, idx], ctrs[v, idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for grp in groups for p in grp["params"]], 10.0)
            opt.step()
            losses.append(loss.item())
        history.append(float(np.mean(losses)))
        done = epoch + 1
        if ckpt is not None and (done % every == 0 or done == cfg.epochs):
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            _atomic_save({"key": key, "epoch": done, "history": history, "optim": opt.state_dict(),
                          "model": {k: v.detach().cpu() for k, v in model.trainable_state().items()}}, ckpt)
        if on_epoch_end is not None:
            on_epoch_end(done, history[-1])
    model.eval()
    return Detector(model=model, config=cfg, num_classes=num_classes,
                    class_names=list(class_names) if class_names is not None else None, history=history,
                    epochs=cfg.epochs, resumed_from=first, seconds=time.perf_counter() - start, n_images=n)
