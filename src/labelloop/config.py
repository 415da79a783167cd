"""Settings in one declarative place.

Each setting has a default (with where it comes from), may be overridden per project
(``labelloop config -p P KEY VALUE`` / ``Project.set_setting``) and, above that, by an
environment variable ``LABELLOOP_<KEY upper-cased>``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from .errors import ValidationError


@dataclass(frozen=True)
class Setting:
    default: Any
    type: type
    help: str


SETTINGS: dict[str, Setting] = {
    "k": Setting(10, int, "neighbours per item in the kNN graph (Bai et al.: 10–15)"),
    "temperature": Setting(0.01, float, "affinity temperature T in exp(cos/T) (Bai et al., CIFAR-10)"),
    "n_iter": Setting(20, int, "propagation steps of a full refresh (Bai et al.: ~20)"),
    "warm_iter": Setting(5, int, "propagation steps of a warm-start refresh after new labels"),
    "exact_threshold": Setting(20_000, int, "above this many items the kNN graph is approximate "
                               "(benchmarks/results/knn_backends.md)"),
    "import_trust": Setting(1.0, float,
                            "weight of imported labels: 1 clamps them like human labels; "
                            "below 1 they are soft evidence the neighbours can overrule"),
    "batch_size": Setting(0, int, "embedding batch size; 0 = the backbone's own default"),
    "head_weight": Setting(0.0, float,
                           "weight of a classifier head on the embeddings (prototypes up to 5 labels "
                           "per class, then linear) averaged into the propagated predictions; 0 = "
                           "propagation only. `labelloop diagnose` measures whether it helps "
                           "(it did on EfficientNet features from 5-10 labels per class, not on "
                           "digits pixels: benchmarks/results/label_efficiency.md)"),
}


def setting(name: str, project_values: dict | None = None) -> Any:
    """The value of a setting: environment over project over default."""
    if name not in SETTINGS:
        raise ValidationError(f"unknown setting {name!r}; known: {', '.join(SETTINGS)}")
    spec = SETTINGS[name]
    env = os.environ.get(f"LABELLOOP_{name.upper()}")
    if env is not None:
        return coerce(name, env, source=f"environment variable LABELLOOP_{name.upper()}")
    if project_values and name in project_values:
        return spec.type(project_values[name])
    return spec.default


def coerce(name: str, value: Any, *, source: str = "value") -> Any:
    spec = SETTINGS[name]
    try:
        out = spec.type(value)
    except (TypeError, ValueError):
        raise ValidationError(f"{source} for {name!r} must be a {spec.type.__name__}, got {value!r}") from None
    if isinstance(out, (int, float)) and out < 0:
        raise ValidationError(f"{source} for {name!r} must not be negative, got {value!r}")
    if name == "head_weight" and out > 1:
        raise ValidationError(f"{source} for 'head_weight' is a weight in [0, 1], got {value!r}")
    return out
