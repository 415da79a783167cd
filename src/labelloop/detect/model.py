"""A small anchor-free detector (FCOS-style) on the packaged ImageNet EfficientNet-Lite0.

Why this shape:
- **Anchor-free, points (FCOS, Tian et al. 2019)** rather than anchors: no anchor sizes or
  ratios to tune for a project's objects, and every feature-map point inside a box (near its
  centre) is a positive, so a handful of labeled images still gives many positives. Overlapping
  objects are handled (a point goes to the smallest box containing it), unlike a CenterNet
  heatmap that needs a Gaussian radius per object size; the price is NMS, which we need anyway.
- **Two strides, 8 and 16** (EfficientNet-Lite0 block 4: 40 channels, block 10: 112), joined
  top-down by a tiny FPN: small objects live on stride 8, large ones on stride 16. Stride 32
  is left out: at the 128-160 px images this is sized for it is a 4x4 / 5x5 grid.
- **Frozen trunk, optional trainable tail**: the stem and blocks 0-4 never train (their output
  is cached during training, see ``train.py``); blocks 5-10 can be unfrozen by the schedule.
  BatchNorm statistics stay frozen (eval mode): batches are small.

Inputs are letterboxed to ``image_size`` squared (aspect kept, padded right and bottom with
grey), so a box maps back to image pixels by one scale per image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..errors import MissingDependencyError, ValidationError
from .boxes import ImageBoxes, aligned_giou, batched_nms, decode_ltrb, encode_ltrb, xyxy_to_xywh

try:
    import torch
    import torch.nn.functional as F
    from torch import nn
except ImportError as exc:  # pragma: no cover - torch is part of the image extra
    raise MissingDependencyError.for_extra("torch", "image") from exc

__all__ = [
    "STRIDES",
    "FEATURE_BLOCKS",
    "MAX_TRAINABLE_BLOCKS",
    "FCOSDetector",
    "build_detector",
    "letterbox",
    "fcos_targets",
    "detection_loss",
]

STRIDES = (8, 16)
FEATURE_BLOCKS = (4, 10)          # EfficientNet-Lite0 blocks whose outputs are the stride 8 / 16 maps
FEATURE_CHANNELS = (40, 112)
MAX_TRAINABLE_BLOCKS = FEATURE_BLOCKS[1] - FEATURE_BLOCKS[0]   # blocks 5..10
# a point on level l predicts boxes whose largest side distance max(l, t, r, b) lies in
# RANGES[l] x stride 8: up to 32 px on stride 8 (objects up to ~64 px), beyond on stride 16
# (FCOS uses 64 px per level at 800 px images; these are scaled to 128-160 px images)
RANGES = ((0.0, 4.0), (4.0, math.inf))
CENTER_RADIUS = 1.5               # FCOS centre sampling, in strides
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0   # Lin et al. 2017
PRIOR = 0.01                      # initial foreground probability of the classifier (RetinaNet)
PAD_VALUE = 128                   # letterbox padding (grey, 0 after normalisation)


# ----------------------------------------------------------------------------- inputs
def letterbox(images: Sequence, size: int) -> tuple[torch.Tensor, np.ndarray]:
    """PIL images -> ``(N, 3, size, size)`` uint8 and ``(N,)`` scales (input px per image px).

    Each image is resized so its longer side is ``size`` (bilinear), placed at the top-left,
    and padded with grey; a box ``b`` in image pixels is ``b * scale`` in input pixels."""
    from PIL import Image

    from ..embed.base import to_rgb

    out = np.full((len(images), size, size, 3), PAD_VALUE, dtype=np.uint8)   # (N, S, S, 3)
    scales = np.empty(len(images), dtype=np.float64)
    for i, img in enumerate(images):
        img = to_rgb(img)
        w, h = img.size
        s = size / max(w, h)
        nw, nh = max(1, round(w * s)), max(1, round(h * s))
        out[i, :nh, :nw] = np.asarray(img.resize((nw, nh), Image.Resampling.BILINEAR))
        scales[i] = s
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous(), scales


def normalise(x: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, 3, S, S)`` -> float in [-1, 1] (the TF EfficientNet-Lite normalisation)."""
    return (x.float() / 255.0 - 0.5) / 0.5


# ------------------------------------------------------------------------------ network
class _Trunk(nn.Module):
    """Stem and blocks ``0 .. k-1`` (frozen): ``x -> (c3, h)`` with c3 the stride-8 map and
    h the input of the first trainable block (c3 itself when k = 5)."""

    def __init__(self, net, k: int):
        super().__init__()
        self.stem, self.bn0, self.act = net._conv_stem, net._bn0, net._swish
        self.blocks = nn.ModuleList(net._blocks[:k])

    def forward(self, x):
        x = self.act(self.bn0(self.stem(normalise(x))))
        c3 = None
        for i, b in enumerate(self.blocks):
            x = b(x)          # no drop-connect: the backbone always runs in eval mode
            if i == FEATURE_BLOCKS[0]:
                c3 = x
        return c3, x


class _Head(nn.Module):
    """Shared FCOS head: classification and regression towers, centerness on the regression
    tower, one learnable scale per level for the box distances."""

    def __init__(self, width: int, num_classes: int, levels: int, depth: int = 2):
        super().__init__()

        def tower():
            layers = []
            for _ in range(depth):
                layers += [nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(8, width), nn.ReLU(inplace=True)]
            return nn.Sequential(*layers)

        self.cls_tower, self.reg_tower = tower(), tower()
        self.cls = nn.Conv2d(width, num_classes, 3, padding=1)
        self.reg = nn.Conv2d(width, 4, 3, padding=1)
        self.ctr = nn.Conv2d(width, 1, 3, padding=1)
        self.scales = nn.Parameter(torch.ones(levels))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.01)
                nn.init.zeros_(m.bias)
        # p(foreground) = PRIOR at the start: bias = -log((1 - p) / p)
        nn.init.constant_(self.cls.bias, -math.log((1 - PRIOR) / PRIOR))

    def forward(self, feats):
        out = []
        for lvl, f in enumerate(feats):
            c, r = self.cls_tower(f), self.reg_tower(f)
            # distances in strides: exp(scale * t); clamped so exp cannot overflow
            out.append((self.cls(c), torch.exp((self.scales[lvl] * self.reg(r)).clamp(max=8.0)), self.ctr(r)))
        return out


class FCOSDetector(nn.Module):
    """EfficientNet-Lite0 trunk (frozen) + trainable tail blocks + FPN (strides 8, 16) + head."""

    def __init__(self, net, num_classes: int, *, trainable_blocks: int = 0, width: int = 64):
        super().__init__()
        if not 0 <= trainable_blocks <= MAX_TRAINABLE_BLOCKS:
            raise ValidationError(f"trainable_blocks must be in 0..{MAX_TRAINABLE_BLOCKS}, got {trainable_blocks}")
        k = FEATURE_BLOCKS[1] + 1 - trainable_blocks
        self.num_classes = num_classes
        self.trainable_blocks = trainable_blocks
        self.trunk = _Trunk(net, k)
        self.tail = nn.ModuleList(net._blocks[k:FEATURE_BLOCKS[1] + 1])
        self.lat3 = nn.Conv2d(FEATURE_CHANNELS[0], width, 1)
        self.lat4 = nn.Conv2d(FEATURE_CHANNELS[1], width, 1)
        self.out3 = nn.Conv2d(width, width, 3, padding=1)
        self.out4 = nn.Conv2d(width, width, 3, padding=1)
        self.head = _Head(width, num_classes, len(STRIDES))
        for p in self.trunk.parameters():
            p.requires_grad_(False)
        self._frozen_bn()

    def _frozen_bn(self):
        self.trunk.eval()
        self.tail.eval()     # BatchNorm statistics frozen; weights of the tail still train

    def train(self, mode: bool = True):
        super().train(mode)
        self._frozen_bn()
        return self

    def trainable_state(self) -> dict:
        """Everything that training changes (tail blocks, FPN, head): what a checkpoint holds."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith("trunk.")}

    def forward_trunk(self, x: torch.Tensor):
        with torch.no_grad():
            return self.trunk(x)

    def forward_rest(self, c3: torch.Tensor, h: torch.Tensor):
        for b in self.tail:
            h = b(h)
        p4 = self.lat4(h)
        p3 = self.lat3(c3) + F.interpolate(p4, size=c3.shape[-2:], mode="nearest")
        return self.head([self.out3(p3), self.out4(p4)])

    def forward(self, x: torch.Tensor):
        """uint8 ``(B, 3, S, S)`` -> per level ``(cls (B, C, H, W), ltrb (B, 4, H, W), ctr (B, 1, H, W))``."""
        return self.forward_rest(*self.forward_trunk(x))


def build_detector(num_classes: int, *, trainable_blocks: int = 0, image_size: int = 128, width: int = 64,
                   pretrained: bool = True) -> FCOSDetector:
    """A fresh detector on the packaged ImageNet EfficientNet-Lite0 (random head)."""
    from ..embed.efficientnet import load_efficientnet_lite0

    net = load_efficientnet_lite0(pretrained=pretrained, image_size=image_size)
    return FCOSDetector(net, num_classes, trainable_blocks=trainable_blocks, width=width)


# ------------------------------------------------------------------------------- points
def level_points(sizes: Sequence[tuple[int, int]], device=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Centres of every feature cell, all levels concatenated: ``points (P, 2)`` (x, y) input
    pixels, ``strides (P,)``, ``levels (P,)``. Cell (i, j) of stride s is at ((j + .5) s, (i + .5) s)."""
    pts, strides, levels = [], [], []
    for lvl, ((h, w), s) in enumerate(zip(sizes, STRIDES, strict=True)):
        ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        pts.append(torch.stack([(xs.flatten() + 0.5) * s, (ys.flatten() + 0.5) * s], 1).float())
        strides.append(torch.full((h * w,), float(s), device=device))
        levels.append(torch.full((h * w,), lvl, dtype=torch.long, device=device))
    return torch.cat(pts), torch.cat(strides), torch.cat(levels)


def fcos_targets(points: torch.Tensor, strides: torch.Tensor, levels: torch.Tensor,
                 gt_xyxy: torch.Tensor, gt_labels: torch.Tensor, num_classes: int):
    """FCOS assignment for one image: ``labels (P,)`` (``num_classes`` = background),
    ``boxes (P, 4)`` xyxy of the assigned box, ``centerness (P,)``.

    A point is positive for a box when it lies inside the box, within ``CENTER_RADIUS``
    strides of its centre, and the box's largest distance from it is in the level's range;
    of several such boxes it takes the smallest. A box that gets no point this way (too small
    for the grid) takes the nearest point of its level."""
    P, G = points.shape[0], gt_xyxy.shape[0]
    labels = torch.full((P,), num_classes, dtype=torch.long, device=points.device)
    boxes = torch.zeros((P, 4), device=points.device)
    if G == 0:
        return labels, boxes, torch.zeros(P, device=points.device)
    ltrb = encode_ltrb(points[:, None, :].expand(P, G, 2), gt_xyxy[None].expand(P, G, 4), 1.0)  # (P, G, 4) px
    inside = ltrb.min(-1).values > 0
    centre = (gt_xyxy[:, :2] + gt_xyxy[:, 2:]) / 2                              # (G, 2)
    r = CENTER_RADIUS * strides[:, None]                                        # (P, 1)
    near = ((points[:, None, :] - centre[None]).abs() <= r[..., None]).all(-1)   # (P, G)
    lo = torch.tensor([a for a, _ in RANGES], device=points.device)[levels] * STRIDES[0]
    hi = torch.tensor([b for _, b in RANGES], device=points.device)[levels] * STRIDES[0]
    far = ltrb.max(-1).values
    in_range = (far >= lo[:, None]) & (far <= hi[:, None])
    area = (gt_xyxy[:, 2] - gt_xyxy[:, 0]) * (gt_xyxy[:, 3] - gt_xyxy[:, 1])    # (G,)
    cost = torch.where(inside & near & in_range, area[None].expand(P, G), torch.full((P, G), math.inf))
    best = cost.argmin(1)                                                        # (P,)
    pos = torch.isfinite(cost.gather(1, best[:, None]).squeeze(1))
    # boxes without any point: the nearest point of the level their half-size belongs to
    half = torch.maximum(gt_xyxy[:, 2] - gt_xyxy[:, 0], gt_xyxy[:, 3] - gt_xyxy[:, 1]) / 2
    for g in torch.nonzero(~(pos[:, None] & (best[:, None] == torch.arange(G, device=points.device))).any(0)).flatten():
        lvl = next(i for i, (_, b) in enumerate(RANGES) if half[g] <= b * STRIDES[0])
        d = ((points - centre[g]) ** 2).sum(1) + torch.where(levels == lvl, 0.0, math.inf)
        p = int(d.argmin())
        if not pos[p] or area[g] < area[best[p]]:
            best[p], pos[p] = g, True
    labels[pos] = gt_labels[best[pos]]
    boxes[pos] = gt_xyxy[best[pos]]
    d = encode_ltrb(points, boxes, 1.0).clamp(min=0)                             # (P, 4)
    lr, tb = d[:, [0, 2]], d[:, [1, 3]]
    # centerness = sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b))
    ctr = torch.sqrt((lr.min(1).values / lr.max(1).values.clamp(min=1e-6))
                     * (tb.min(1).values / tb.max(1).values.clamp(min=1e-6)))
    return labels, boxes, torch.where(pos, ctr, torch.zeros_like(ctr))


def _flatten(outputs):
    """Per-level head outputs -> ``cls (B, P, C)``, ``ltrb (B, P, 4)``, ``ctr (B, P)``, sizes."""
    cls = torch.cat([c.flatten(2).transpose(1, 2) for c, _, _ in outputs], 1)
    reg = torch.cat([r.flatten(2).transpose(1, 2) for _, r, _ in outputs], 1)
    ctr = torch.cat([t.flatten(1) for _, _, t in outputs], 1)
    return cls, reg, ctr, [tuple(c.shape[-2:]) for c, _, _ in outputs]


def detection_loss(outputs, targets: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, dict]:
    """FCOS loss of a batch: sigmoid focal loss over all points and classes, GIoU loss and
    centerness BCE over positive points; each divided by the number of positives.

    ``targets``: ``labels (B, P)``, ``boxes (B, P, 4)``, ``centerness (B, P)`` from
    :func:`fcos_targets` on :func:`level_points` of the same sizes."""
    cls, ltrb, ctr, sizes = _flatten(outputs)
    labels, boxes, ctr_t = targets
    B, P, C = cls.shape
    points, strides, _ = level_points(sizes, device=cls.device)
    pos = labels < C                                                  # (B, P)
    n_pos = max(1.0, float(pos.sum()))
    onehot = F.one_hot(labels, C + 1)[..., :C].to(cls.dtype)          # (B, P, C)
    # focal: -alpha_t (1 - p_t)^gamma log(p_t)
    p = torch.sigmoid(cls)
    ce = F.binary_cross_entropy_with_logits(cls, onehot, reduction="none")
    p_t = p * onehot + (1 - p) * (1 - onehot)
    a_t = FOCAL_ALPHA * onehot + (1 - FOCAL_ALPHA) * (1 - onehot)
    l_cls = (a_t * (1 - p_t) ** FOCAL_GAMMA * ce).sum() / n_pos
    if pos.any():
        pts = points[None].expand(B, P, 2)[pos]
        st = strides[None].expand(B, P)[pos]
        pred = decode_ltrb(pts, ltrb[pos], st)
        l_box = (1 - aligned_giou(pred, boxes[pos])).sum() / n_pos
        l_ctr = F.binary_cross_entropy_with_logits(ctr[pos], ctr_t[pos], reduction="sum") / n_pos
    else:
        l_box = l_ctr = cls.sum() * 0.0
    total = l_cls + l_box + l_ctr
    return total, {"cls": l_cls.detach().item(), "box": l_box.detach().item(), "ctr": l_ctr.detach().item()}


@torch.no_grad()
def decode_detections(outputs, scales: np.ndarray, image_sizes: Sequence[tuple[int, int]], *,
                      score_threshold: float = 0.05, iou_threshold: float = 0.5,
                      pre_nms_top_k: int = 1000, max_detections: int = 100) -> list[ImageBoxes]:
    """Head outputs -> one :class:`ImageBoxes` per image, in image pixels (xywh).

    score = sqrt(p(class) * centerness), the geometric mean, so it stays on the scale of a
    probability; per-class NMS; boxes clipped to the image."""
    cls, ltrb, ctr, sizes = _flatten(outputs)
    points, strides, _ = level_points(sizes, device=cls.device)
    scores = torch.sqrt(torch.sigmoid(cls) * torch.sigmoid(ctr)[..., None])   # (B, P, C)
    B, P, C = scores.shape
    out = []
    for i in range(B):
        s = scores[i].flatten()                                   # (P * C,) point-major
        idx = torch.nonzero(s >= score_threshold).flatten()
        if idx.numel() > pre_nms_top_k:
            idx = idx[torch.topk(s[idx], pre_nms_top_k).indices]
        s, pi, ci = s[idx], idx // C, idx % C
        boxes = decode_ltrb(points[pi], ltrb[i][pi], strides[pi]) / float(scales[i])
        w, h = image_sizes[i]
        boxes = torch.stack([boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h),
                             boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)], 1)
        keep = batched_nms(boxes, s, ci, iou_threshold=iou_threshold, pre_nms_top_k=None,
                           max_detections=max_detections)
        out.append(ImageBoxes(xyxy_to_xywh(boxes[keep]).cpu().double().numpy(), ci[keep].cpu().numpy(),
                              s[keep].cpu().double().numpy()))
    return out
