"""The embed stage: backbones that turn items into vectors, and their registry.

Built-in backbones: ``efficientnet-lite0`` (images, ImageNet), ``minilm-l6`` (text),
``pixels`` and ``tfidf`` (baselines). ``fake`` is a deterministic test double.
"""

from __future__ import annotations

from .base import (
    MODALITIES,
    Backbone,
    FakeBackbone,
    available_backbones,
    default_backbone,
    get_backbone,
    register_backbone,
    register_backbone_loader,
)

__all__ = [
    "MODALITIES",
    "Backbone",
    "FakeBackbone",
    "available_backbones",
    "default_backbone",
    "get_backbone",
    "register_backbone",
    "register_backbone_loader",
]
