"""Classifiers trained on the human labels: a second opinion next to label propagation.

- :class:`PrototypeClassifier` -- few-shot head (1-5 labels per class): class means of the
  L2-normalised embeddings, softmax over cosine / temperature (Snell et al. 2017, cosine form).
- :class:`LinearHead` -- softmax regression on frozen embeddings, with mixup for small data.
- :class:`FineTuneClassifier` -- transfer learning from images: picks a schedule from the
  amount of labeled data (:func:`choose_schedule`): prototype head, linear head on frozen
  features, or a linear head plus the last blocks of the backbone unfrozen.

All are estimators: keyword-only ``__init__``, ``fit(X, y)`` with ``-1`` = unlabeled
(ignored), ``predict_proba`` giving ``(n, C)`` rows that sum to one, where column ``c`` is
class ``c`` (``C = n_classes`` or ``max(y) + 1``). Classes without any label get probability 0.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import NotReadyError, ValidationError

__all__ = [
    "SCHEDULES",
    "FEW_SHOT_MAX_PER_CLASS",
    "FINETUNE_MIN_PER_CLASS",
    "choose_schedule",
    "fit_head",
    "PrototypeClassifier",
    "LinearHead",
    "FineTuneClassifier",
]

SCHEDULES = ("prototype", "linear", "finetune")
FEW_SHOT_MAX_PER_CLASS = 5     # the issue: prototypes are the head for 1-5 labels per class
# Unfreezing conv blocks pays off only with enough labels per class; below this a linear probe
# on frozen features is as good and far cheaper (Kornblith et al. 2019 show fine-tuning's edge
# shrinking with small training sets). 50 is a conservative choice, not a measurement here.
FINETUNE_MIN_PER_CLASS = 50
MIXUP_BELOW = 1000             # labeled items under which mixup regularises (Zhang et al. 2018)


def _check_xy(X: Any, y: Any, n_classes: int | None) -> tuple[np.ndarray, np.ndarray, int]:
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y)
    if X.ndim != 2:
        raise ValidationError(f"X must be a 2-d array (n, d), got shape {X.shape}")
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ValidationError(f"y must be 1-d with one entry per row of X ({X.shape[0]}), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValidationError(f"y must hold integer class indices (-1 = unlabeled), got {y.dtype}")
    if (y < -1).any():
        raise ValidationError(f"y has value {int(y.min())}; use class indices >= 0 and -1 for unlabeled")
    if not (y >= 0).any():
        raise ValidationError("no labeled items (all y are -1): label some items first")
    c = int(y.max()) + 1
    if n_classes is not None:
        if n_classes < c:
            raise ValidationError(f"n_classes={n_classes} but y contains class {c - 1}")
        c = n_classes
    return X, y, c


def _unit(X: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(X, axis=1, keepdims=True)
    return X / np.where(n > 0, n, 1.0)


def choose_schedule(y: np.ndarray) -> str:
    """"prototype" when the rarest labeled class has <= 5 labels, "finetune" when every
    labeled class has >= 50, else "linear". ``y``: ``(n,)``, -1 = unlabeled."""
    y = np.asarray(y)
    counts = np.bincount(y[y >= 0])
    counts = counts[counts > 0]
    if counts.size == 0:
        raise ValidationError("no labeled items: label some items first")
    if counts.min() <= FEW_SHOT_MAX_PER_CLASS:
        return "prototype"
    if counts.min() >= FINETUNE_MIN_PER_CLASS:
        return "finetune"
    return "linear"


def fit_head(X: np.ndarray, y: np.ndarray, *, n_classes: int | None = None, seed: int = 0):
    """A head on cached embeddings, chosen by :func:`choose_schedule`: a fitted
    :class:`PrototypeClassifier` for 1-5 labels per class, else a fitted :class:`LinearHead`
    (fine-tuning needs the images: use :class:`FineTuneClassifier` for that)."""
    if choose_schedule(y) == "prototype":
        return PrototypeClassifier(n_classes=n_classes).fit(X, y)
    return LinearHead(n_classes=n_classes, seed=seed).fit(X, y)


def _softmax_masked(logits: np.ndarray, present: np.ndarray) -> np.ndarray:
    logits = np.where(present[None, :], logits, -np.inf)                 # (n, C)
    logits = logits - logits.max(1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(1, keepdims=True)).astype(np.float32)


class PrototypeClassifier:
    """Nearest class mean under cosine similarity, as probabilities.

    ``p(c | x) = softmax_c( cos(x, mu_c) / temperature )`` with ``mu_c`` the mean of the
    normalised embeddings labeled ``c``. ``temperature = 0.1``: a cosine scale of 10, the
    usual choice for cosine prototype heads (e.g. Chen et al. 2019, "A Closer Look at
    Few-shot Classification")."""

    def __init__(self, *, temperature: float = 0.1, n_classes: int | None = None) -> None:
        self.temperature = temperature
        self.n_classes = n_classes

    def fit(self, X: np.ndarray, y: np.ndarray) -> PrototypeClassifier:
        if not self.temperature > 0:
            raise ValidationError(f"temperature must be > 0, got {self.temperature}")
        X, y, c = _check_xy(X, y, self.n_classes)
        Z = _unit(X)
        lab = y >= 0
        proto = np.zeros((c, X.shape[1]), dtype=np.float32)              # (C, d)
        np.add.at(proto, y[lab], Z[lab])
        counts = np.bincount(y[lab], minlength=c)
        self.class_counts_ = counts
        self.present_ = counts > 0
        self.prototypes_ = _unit(proto)
        self.n_classes_ = c
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        """Cosine similarity to each prototype, ``(n, C)``."""
        if not hasattr(self, "prototypes_"):
            raise NotReadyError("PrototypeClassifier is not fitted: call fit(X, y) first")
        return _unit(np.asarray(X, dtype=np.float32)) @ self.prototypes_.T

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return _softmax_masked(self.decision_function(X) / self.temperature, self.present_)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X).argmax(1)


class LinearHead:
    """Softmax regression on (normalised) frozen embeddings, full-batch AdamW.

    ``mixup_alpha``: mix pairs of labeled embeddings and their one-hot labels with weight
    ``lambda ~ Beta(alpha, alpha)``; ``None`` = 0.2 below 1000 labeled items, else off
    (alpha 0.2: Zhang et al. 2018, ImageNet setting).

    ``num_threads``: torch intra-op threads while fitting (the caller's count restored after).
    1: a full-batch step of one linear layer is too small to split, and a second thread mostly
    waits (benchmarks/results/head_threads.md)."""

    def __init__(self, *, epochs: int = 300, lr: float = 0.05, weight_decay: float = 1e-4,
                 mixup_alpha: float | None = None, normalize: bool = True,
                 n_classes: int | None = None, seed: int = 0, num_threads: int = 1) -> None:
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.mixup_alpha = mixup_alpha
        self.normalize = normalize
        self.n_classes = n_classes
        self.seed = seed
        self.num_threads = num_threads

    def _prep(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float32)
        return _unit(X) if self.normalize else X

    def fit(self, X: np.ndarray, y: np.ndarray) -> LinearHead:
        import torch

        from .train import seeded_threads

        if self.epochs < 1 or not self.lr > 0 or self.weight_decay < 0:
            raise ValidationError(f"need epochs >= 1, lr > 0, weight_decay >= 0; got {self.epochs}, "
                                  f"{self.lr}, {self.weight_decay}")
        X, y, c = _check_xy(X, y, self.n_classes)
        lab = y >= 0
        Xl = torch.from_numpy(self._prep(X[lab]))                       # (L, d)
        yl = torch.from_numpy(y[lab].astype(np.int64))
        alpha = self.mixup_alpha if self.mixup_alpha is not None else (0.2 if lab.sum() < MIXUP_BELOW else 0.0)
        g = torch.Generator().manual_seed(self.seed)
        with seeded_threads(self.seed, self.num_threads):
            head = torch.nn.Linear(X.shape[1], c)
            self._train(head, Xl, yl, c, y[lab], alpha, g)
        self.head_ = head.eval()
        self.present_ = np.bincount(y[lab], minlength=c) > 0
        self.n_classes_ = c
        self.mixup_alpha_ = alpha
        return self

    def _train(self, head, Xl, yl, c: int, y_lab: np.ndarray, alpha: float, g) -> None:
        """:meth:`fit`'s epochs of full-batch AdamW on ``head`` (mixup at ``alpha``)."""
        import torch

        opt = torch.optim.AdamW(head.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        onehot = torch.nn.functional.one_hot(yl, c).float()                # (L, C)
        absent = torch.from_numpy(np.bincount(y_lab, minlength=c) == 0)  # (C,) classes without labels
        losses = []
        for _ in range(self.epochs):
            xb, tb = Xl, onehot
            if alpha > 0:
                # x~ = lam x_i + (1 - lam) x_j, t~ = lam t_i + (1 - lam) t_j (one lam per row)
                lam = _beta(g, alpha, Xl.shape[0])                       # (L, 1)
                j = torch.randperm(Xl.shape[0], generator=g)
                xb = lam * Xl + (1 - lam) * Xl[j]
                tb = lam * onehot + (1 - lam) * onehot[j]
            logits = head(xb)
            logits = logits.masked_fill(absent, -1e9)
            loss = -(tb * torch.log_softmax(logits, 1)).sum(1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        self.loss_history_ = losses

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        import torch

        if not hasattr(self, "head_"):
            raise NotReadyError("LinearHead is not fitted: call fit(X, y) first")
        with torch.no_grad():
            return self.head_(torch.from_numpy(self._prep(X))).numpy()

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        return _softmax_masked(self.decision_function(X), self.present_)

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.predict_proba(X).argmax(1)


def _beta(g, alpha: float, n: int):
    """``(n, 1)`` draws of Beta(alpha, alpha) from generator ``g`` (via two Gamma draws:
    torch's Beta sampler takes no generator)."""
    import torch

    # Joehnk (1964): X = U^(1/a), W = V^(1/a) with U, V uniform; given X + W <= 1,
    # X / (X + W) ~ Beta(a, a). Exact; acceptance rate is high for small a (mixup's 0.2).
    out = torch.empty(n)
    filled = 0
    while filled < n:
        u = torch.rand(2 * (n - filled) + 8, generator=g)
        v = torch.rand(2 * (n - filled) + 8, generator=g)
        x, w = u ** (1 / alpha), v ** (1 / alpha)
        ok = (x + w) <= 1
        draws = (x[ok] / (x[ok] + w[ok]))[: n - filled]
        out[filled : filled + draws.numel()] = draws
        filled += draws.numel()
    return out.view(n, 1)


class FineTuneClassifier:
    """Transfer learning on images with an EfficientNet-Lite0 backbone (ImageNet or adapted).

    ``schedule``: "auto" (:func:`choose_schedule`), "prototype", "linear" (heads on frozen
    features) or "finetune": a linear head plus the last ``unfreeze_blocks`` blocks (default:
    2 below 2000 labels, else 4), trained on cached augmented views of the labeled images
    (crop + flip, see ``train.py``'s view cache) with mixup of the trunk features below 1000
    labels (Manifold Mixup, Verma et al. 2019).

    ``network``: the ``nn.Module`` to start from (default: packaged ImageNet weights);
    ``image_size``: input size (default 224, or the adapted backbone's when given one through
    :meth:`from_backbone`)."""

    def __init__(self, *, schedule: str = "auto", network: Any = None, image_size: int = 224,
                 epochs: int = 30, lr: float = 1e-3, backbone_lr: float = 1e-4,
                 weight_decay: float = 1e-4, unfreeze_blocks: int | None = None,
                 mixup_alpha: float | None = None, views: int = 4, batch_size: int = 64,
                 temperature: float = 0.1, n_classes: int | None = None, device: str = "cpu",
                 seed: int = 0, progress: bool = False) -> None:
        self.schedule = schedule
        self.network = network
        self.image_size = image_size
        self.epochs = epochs
        self.lr = lr
        self.backbone_lr = backbone_lr
        self.weight_decay = weight_decay
        self.unfreeze_blocks = unfreeze_blocks
        self.mixup_alpha = mixup_alpha
        self.views = views
        self.batch_size = batch_size
        self.temperature = temperature
        self.n_classes = n_classes
        self.device = device
        self.seed = seed
        self.progress = progress

    @classmethod
    def from_backbone(cls, backbone: Any, **params: Any) -> FineTuneClassifier:
        """Start from an :class:`~labelloop.adapt.backbone.AdaptedBackbone` (its network and
        image size) or the ImageNet ``efficientnet-lite0`` backbone object."""
        if hasattr(backbone, "network"):
            params.setdefault("network", backbone.network())
        params.setdefault("image_size", getattr(backbone, "image_size", 224))
        return cls(**params)

    # ------------------------------------------------------------------------------ fit
    def _base_network(self):
        from ..embed.efficientnet import load_efficientnet_lite0

        if self.network is not None:
            return copy.deepcopy(self.network)
        return load_efficientnet_lite0(pretrained=True, image_size=self.image_size)

    def _features(self, net, images: Sequence) -> np.ndarray:
        import torch

        from ..embed.efficientnet import features, preprocess_images

        net.eval()
        out = []
        with torch.inference_mode():
            for lo in range(0, len(images), self.batch_size):
                x = preprocess_images(list(images[lo : lo + self.batch_size]), self.image_size)
                out.append(features(net, x.to(self.device)).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 1280), np.float32)  # (n, 1280)

    def fit(self, images: Sequence, y: np.ndarray) -> FineTuneClassifier:
        """``images``: PIL images; ``y``: ``(n,)`` class indices, -1 = unlabeled (ignored)."""
        import torch

        y = np.asarray(y)
        images = list(images)
        if y.ndim != 1 or y.shape[0] != len(images):
            raise ValidationError(f"y must have one entry per image ({len(images)}), got shape {y.shape}")
        if self.schedule not in ("auto", *SCHEDULES):
            raise ValidationError(f"unknown schedule {self.schedule!r}; use auto, {', '.join(SCHEDULES)}")
        if self.device != "cpu" and not torch.cuda.is_available():
            raise ValidationError(f"device {self.device!r} requested but torch sees no CUDA device; use cpu")
        schedule = choose_schedule(y) if self.schedule == "auto" else self.schedule
        lab = np.flatnonzero(y >= 0)
        _, _, c = _check_xy(np.zeros((len(images), 1)), y, self.n_classes)
        self.schedule_ = schedule
        self.n_classes_ = c
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            net = self._base_network().to(self.device)
            if schedule in ("prototype", "linear"):
                X = self._features(net, [images[i] for i in lab])              # (L, 1280)
                head = (PrototypeClassifier(temperature=self.temperature, n_classes=c) if schedule == "prototype"
                        else LinearHead(mixup_alpha=self.mixup_alpha, n_classes=c, seed=self.seed))
                self.head_ = head.fit(X, y[lab])
                self.net_ = net
                self.history_: list[float] = list(getattr(head, "loss_history_", []))
            else:
                self._fit_finetune(net, [images[i] for i in lab], y[lab], c)
        return self

    def _fit_finetune(self, net, images: list, y: np.ndarray, c: int) -> None:
        import torch
        from tqdm.auto import tqdm

        from .augment import AugmentConfig
        from .train import AdaptConfig, build_view_cache, efficientnet_encoder, images_to_tensor

        n = len(images)
        unfreeze = self.unfreeze_blocks if self.unfreeze_blocks is not None else (2 if n < 2000 else 4)
        alpha = self.mixup_alpha if self.mixup_alpha is not None else (0.2 if n < MIXUP_BELOW else 0.0)
        enc = efficientnet_encoder(trainable_blocks=unfreeze, net=net)
        g = torch.Generator().manual_seed(self.seed)
        # mild, label-preserving augmentation for supervised fine-tuning: crop + flip only
        aug = AugmentConfig(crop_scale=(0.6, 1.0), jitter=0.0, grayscale=0.0, blur=0.0)
        x = images_to_tensor(images, self.image_size)                           # (L, 3, S, S)

        bs = min(self.batch_size, n)
        cache_cfg = AdaptConfig(image_size=self.image_size, batch_size=max(2, bs), view_cache=max(2, self.views),
                                seed=self.seed)
        views = build_view_cache(x, cache_cfg, enc, aug=aug, progress=self.progress)  # (L, M, C, h, w)
        head = torch.nn.Linear(enc.dim, c).to(self.device)
        opt = torch.optim.AdamW([
            {"params": [p for p in enc.tail.parameters() if p.requires_grad], "lr": self.backbone_lr},
            {"params": head.parameters(), "lr": self.lr},
        ], weight_decay=self.weight_decay)
        yt = torch.from_numpy(y.astype(np.int64))
        onehot = torch.nn.functional.one_hot(yt, c).float()                     # (L, C)
        present = torch.from_numpy(np.bincount(y, minlength=c) > 0).to(self.device)
        history = []
        enc.train()
        steps = max(1, n // bs) if n >= 2 * bs else 1
        bar = tqdm(total=self.epochs * steps, desc="fine-tune", unit="step", disable=not self.progress, leave=False)
        for _ in range(self.epochs):
            perm = torch.randperm(n, generator=g)
            for s in range(steps):
                idx = perm[s * bs : (s + 1) * bs] if steps > 1 else perm
                v = torch.randint(0, views.shape[1], (idx.numel(),), generator=g)
                h = views[idx, v].to(self.device, torch.float32)                # (B, C', h, w)
                t = onehot[idx].to(self.device)
                if alpha > 0:
                    lam = _beta(g, alpha, idx.numel()).to(self.device)          # (B, 1)
                    j = torch.randperm(idx.numel(), generator=g)
                    h = lam.view(-1, 1, 1, 1) * h + (1 - lam.view(-1, 1, 1, 1)) * h[j]
                    t = lam * t + (1 - lam) * t[j]
                logits = head(enc.tail(h)).masked_fill(~present, -1e9)
                loss = -(t * torch.log_softmax(logits, 1)).sum(1).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                history.append(float(loss.detach()))
                bar.update(1)
                bar.set_postfix(loss=f"{history[-1]:.3f}")
        bar.close()
        enc.eval()
        self.net_ = net
        self.head_ = head.eval()
        self.present_ = present.cpu().numpy()
        self.unfreeze_blocks_ = unfreeze
        self.mixup_alpha_ = alpha
        self.history_ = history

    # -------------------------------------------------------------------------- predict
    def predict_proba(self, images: Sequence) -> np.ndarray:
        """``(n, C)`` class probabilities for PIL images."""
        import torch

        if not hasattr(self, "net_"):
            raise NotReadyError("FineTuneClassifier is not fitted: call fit(images, y) first")
        X = self._features(self.net_, list(images))                           # (n, 1280)
        if self.schedule_ in ("prototype", "linear"):
            return self.head_.predict_proba(X)
        with torch.no_grad():
            logits = self.head_(torch.from_numpy(X).to(self.device)).cpu().numpy()
        return _softmax_masked(logits, self.present_)

    def predict(self, images: Sequence) -> np.ndarray:
        return self.predict_proba(images).argmax(1)
