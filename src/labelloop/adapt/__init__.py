"""The adapt stage: make the embeddings fit the user's own data.

- :func:`diagnose` -- how well the current embeddings separate the labeled classes, with advice;
- :func:`adapt_backbone` / :func:`train_ssl` -- self-supervised training (SimCLR, BYOL, SwAV) of the
  ImageNet backbone on the project's unlabeled images, saved as a new backbone id
  (``adapted-<method>-<hash>``) that ``labelloop.embed.get_backbone(id, project_dir=...)``
  resolves (importing this package registers the loader);
- :class:`FineTuneClassifier`, :class:`LinearHead`, :class:`PrototypeClassifier` -- heads
  trained on the human labels (transfer learning; few-shot prototypes).

Importing this package is cheap: torch is imported only when training or embedding.
"""

from __future__ import annotations

from .augment import AugmentConfig, augment_batch, augment_preset
from .backbone import (
    AdaptedBackbone,
    AdaptOutcome,
    adapt_backbone,
    list_adapted_backbones,
    load_adapted_backbone,
    save_adapted_backbone,
)
from .diagnose import Diagnosis, diagnose, wilson_interval
from .finetune import FineTuneClassifier, LinearHead, PrototypeClassifier, choose_schedule, fit_head
from .losses import byol_loss, ema_update, nt_xent_loss, sinkhorn_knopp, swav_loss
from .train import (
    METHODS,
    AdaptConfig,
    AdaptResult,
    build_view_cache,
    default_prototypes,
    efficientnet_encoder,
    images_to_tensor,
    train_ssl,
)

__all__ = [
    "METHODS",
    "AdaptConfig",
    "AdaptResult",
    "AdaptOutcome",
    "AdaptedBackbone",
    "AugmentConfig",
    "Diagnosis",
    "FineTuneClassifier",
    "LinearHead",
    "PrototypeClassifier",
    "adapt_backbone",
    "augment_batch",
    "augment_preset",
    "byol_loss",
    "choose_schedule",
    "default_prototypes",
    "diagnose",
    "efficientnet_encoder",
    "fit_head",
    "ema_update",
    "images_to_tensor",
    "build_view_cache",
    "list_adapted_backbones",
    "load_adapted_backbone",
    "nt_xent_loss",
    "save_adapted_backbone",
    "sinkhorn_knopp",
    "swav_loss",
    "train_ssl",
    "wilson_interval",
]
