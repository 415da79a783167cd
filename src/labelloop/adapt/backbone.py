"""Adapted backbones: EfficientNet-Lite0 weights trained on a project's own images.

Each lives in ``<project>/backbones/<id>/`` as ``weights.pt`` (the whole network's state
dict) and ``provenance.json`` (method, epochs, parameters, data hash, base backbone, losses).
The id is ``adapted-<method>-<first 8 hex of the weights' sha256>``, so the embedding cache,
which is keyed by backbone id, can never mix vectors of two different networks.

Importing this module registers the loader that makes these ids work with
``labelloop.embed.get_backbone(id, project_dir=...)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..embed.base import Backbone, content_digest, register_backbone_loader
from ..errors import ValidationError
from .train import AdaptConfig, AdaptResult, config_hash, default_prototypes, images_to_tensor, train_ssl

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = [
    "ADAPTED_PREFIX",
    "BACKBONES_DIR",
    "AdaptedBackbone",
    "AdaptOutcome",
    "adapt_backbone",
    "save_adapted_backbone",
    "load_adapted_backbone",
    "list_adapted_backbones",
    "data_hash",
]

ADAPTED_PREFIX = "adapted-"
BACKBONES_DIR = "backbones"
RUNS_DIR = ".runs"                  # checkpoints of unfinished runs, under BACKBONES_DIR
WEIGHTS_FILE = "weights.pt"
PROVENANCE_FILE = "provenance.json"
BASE_BACKBONE = "efficientnet-lite0"

_NETS: dict[tuple[str, str], Any] = {}     # (weights path, sha) -> loaded network
_NETS_LOCK = threading.Lock()


def data_hash(images: Sequence) -> str:
    """sha256 over the sorted content digests of the images (order does not matter)."""
    h = hashlib.sha256()
    for d in sorted(content_digest(im) for im in images):
        h.update(d)
    return h.hexdigest()


def _state_sha256(state: dict) -> str:
    """sha256 of a state dict: every tensor's name, dtype, shape and bytes in key order."""
    h = hashlib.sha256()
    for k in sorted(state):
        t = state[k].detach().cpu().contiguous()
        h.update(f"{k}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def _backbones_dir(project_dir: Path | str) -> Path:
    return Path(project_dir) / BACKBONES_DIR


def save_adapted_backbone(project_dir: Path | str, result: AdaptResult, *, data_sha256: str,
                          n_images: int, extra: dict | None = None) -> str:
    """Write the encoder of ``result`` to ``<project>/backbones/<id>/``; returns the id."""
    import torch

    net = getattr(result.encoder, "net", None)
    if net is None:
        raise ValidationError("only an EfficientNet-Lite0 encoder (efficientnet_encoder) can be saved "
                              "as an adapted backbone")
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    sha = _state_sha256(state)
    cfg = result.config
    backbone_id = f"{ADAPTED_PREFIX}{cfg.method}-{sha[:8]}"
    provenance = {
        "id": backbone_id,
        "base_backbone": BASE_BACKBONE,
        "method": cfg.method,
        "epochs": result.epochs,
        "steps": result.steps,
        "image_size": cfg.image_size,
        "parameters": cfg.to_dict(),
        "augment": result.augment,
        "data_hash": data_sha256,
        "n_images": n_images,
        "loss_history": [round(v, 6) for v in result.history],
        "train_seconds": round(result.seconds, 2),
        "weights_sha256": sha,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "torch_version": torch.__version__,
        **(extra or {}),
    }
    root = _backbones_dir(project_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / backbone_id
    tmp = root / f".tmp-{backbone_id}-{time.monotonic_ns()}"
    tmp.mkdir()
    torch.save(state, tmp / WEIGHTS_FILE)
    (tmp / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
    if final.exists():  # same id = same weights: replace the old copy
        shutil.rmtree(final)
    tmp.rename(final)
    return backbone_id


def list_adapted_backbones(project_dir: Path | str) -> list[dict]:
    """Provenance of every adapted backbone stored in the project, oldest first."""
    root = _backbones_dir(project_dir)
    out = []
    if root.is_dir():
        for d in sorted(root.iterdir()):
            pf = d / PROVENANCE_FILE
            if d.name.startswith(ADAPTED_PREFIX) and pf.is_file() and (d / WEIGHTS_FILE).is_file():
                out.append(json.loads(pf.read_text()))
    return sorted(out, key=lambda p: (p.get("created", ""), p["id"]))


def load_adapted_backbone(backbone_id: str, project_dir: Path | str | None) -> AdaptedBackbone:
    """The adapted backbone ``backbone_id`` of the project in ``project_dir``."""
    if project_dir is None:
        raise ValidationError(
            f"{backbone_id!r} is an adapted backbone stored inside a project; open it with the "
            "project (labelloop embed -p PROJECT --backbone ...) or pass project_dir")
    folder = _backbones_dir(project_dir) / backbone_id
    if not (folder / WEIGHTS_FILE).is_file() or not (folder / PROVENANCE_FILE).is_file():
        known = ", ".join(p["id"] for p in list_adapted_backbones(project_dir)) or "(none yet: run labelloop adapt)"
        raise ValidationError(f"no adapted backbone {backbone_id!r} in {Path(project_dir)}; "
                              f"adapted backbones of this project: {known}")
    return AdaptedBackbone(folder=folder)


register_backbone_loader(ADAPTED_PREFIX, load_adapted_backbone)


class AdaptedBackbone(Backbone):
    """An EfficientNet-Lite0 adapted to a project: 1280-d pooled features at the image size
    it was trained at. Built by :func:`load_adapted_backbone`, not by the registry."""

    id = ADAPTED_PREFIX.rstrip("-")   # replaced per instance by the stored id
    modality = "image"
    batch_size = 64
    dim = 1280

    def __init__(self, *, folder: Path | str) -> None:
        self.folder = Path(folder)
        self.provenance = json.loads((self.folder / PROVENANCE_FILE).read_text())
        self.id = self.provenance["id"]
        self.image_size = int(self.provenance["image_size"])

    @property
    def cache_id(self) -> str:
        return f"{self.id}-{self.image_size}"

    def network(self) -> "torch.nn.Module":
        """The adapted EfficientNet-Lite0 (eval mode, channels_last), loaded once per process."""
        import torch

        from ..embed.efficientnet import load_efficientnet_lite0

        key = (str(self.folder.resolve()), self.provenance["weights_sha256"])
        with _NETS_LOCK:
            if key not in _NETS:
                net = load_efficientnet_lite0(pretrained=False, image_size=self.image_size)
                state = torch.load(self.folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
                net.load_state_dict(state, strict=True)
                _NETS[key] = net.eval().to(memory_format=torch.channels_last)
            return _NETS[key]

    def embed_batch(self, inputs: list) -> np.ndarray:
        import torch

        from ..embed.efficientnet import features, preprocess_images

        images = self._check_inputs(inputs)
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        x = preprocess_images(images, self.image_size)   # (B, 3, S, S)
        with torch.inference_mode():
            f = features(self.network(), x)              # (B, 1280)
        return f.float().numpy().astype(np.float32, copy=True)


@dataclass
class AdaptOutcome:
    backbone_id: str
    provenance: dict
    result: AdaptResult


def adapt_backbone(images: Sequence, project_dir: Path | str, config: AdaptConfig | None = None, *,
                   max_images: int | None = None, progress: bool = True,
                   resume: bool = True, n_classes: int | None = None) -> AdaptOutcome:
    """Adapt ImageNet EfficientNet-Lite0 to ``images`` (PIL, unlabeled) and save it in the
    project; what ``labelloop adapt`` runs.

    ``max_images``: train on a random subset of this size (seeded by ``config.seed``).
    ``n_classes``: the project's number of classes, if any: sets SwAV's default number of
    prototypes (:func:`~labelloop.adapt.train.default_prototypes`), recorded in the provenance.
    Checkpoints go to ``<project>/backbones/.runs/<run hash>/``: running the same command
    again after an interruption resumes there; the folder is removed once the backbone is saved.
    """
    cfg = config or AdaptConfig()
    images = list(images)
    if len(images) < 2:
        raise ValidationError(f"adaptation needs at least 2 images in the project, got {len(images)}")
    if max_images is not None:
        if max_images < 2:
            raise ValidationError(f"max_images must be >= 2, got {max_images}")
        if len(images) > max_images:
            pick = np.random.default_rng(cfg.seed).choice(len(images), max_images, replace=False)
            images = [images[i] for i in sorted(pick)]
    if cfg.method == "swav" and cfg.prototypes is None:
        cfg = dataclasses.replace(cfg, prototypes=default_prototypes(len(images), n_classes))
    dh = data_hash(images)
    run_dir = _backbones_dir(project_dir) / RUNS_DIR / config_hash(cfg, dh, BASE_BACKBONE)
    x = images_to_tensor(images, cfg.image_size)                           # (N, 3, S, S) uint8
    result = train_ssl(x, cfg, checkpoint_dir=run_dir, resume=resume, progress=progress)
    bid = save_adapted_backbone(project_dir, result, data_sha256=dh, n_images=len(images))
    shutil.rmtree(run_dir, ignore_errors=True)
    return AdaptOutcome(backbone_id=bid, provenance=json.loads(
        (_backbones_dir(project_dir) / bid / PROVENANCE_FILE).read_text()), result=result)
