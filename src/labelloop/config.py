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
    type: Any  # a type, "temperature" ("auto" or a positive number) or "weight" ("auto" or [0, 1])
    help: str


def _temperature(value: Any) -> str | float:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    t = float(value)
    if not (t > 0 and t != float("inf")):
        raise ValueError(value)
    return t


def _weight_or_auto(value: Any) -> str | float:
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    w = float(value)
    if not 0.0 <= w <= 1.0:
        raise ValueError(value)
    return w


SETTINGS: dict[str, Setting] = {
    "k": Setting(10, int, "neighbours per item in the kNN graph (Bai et al.: 10–15)"),
    "temperature": Setting("auto", "temperature",
                           "affinity temperature: 'auto' = local scaling, T from the spread of "
                           "neighbour similarities (labelloop.propagate); a number = the paper's fixed "
                           "T in exp(cos/T) (Bai et al.: 0.01 on CIFAR-10; it failed on TF-IDF texts)"),
    "n_iter": Setting(100, int, "propagation steps of a full refresh, fewer once converged "
                      "(Bai et al.: ~20; 100 measured in benchmarks/robustness.py)"),
    "warm_iter": Setting(5, int, "propagation steps of a warm-start refresh after new labels"),
    "exact_threshold": Setting(20_000, int, "above this many items the kNN graph is approximate "
                               "(benchmarks/results/knn_backends.md)"),
    "import_trust": Setting(1.0, float,
                            "weight of imported labels: 1 clamps them like human labels; "
                            "below 1 they are soft evidence the neighbours can overrule"),
    "rule_trust": Setting(0.5, float,
                          "weight of labeling-function (rule) evidence: an item the rules cover seeds "
                          "propagation with weight rule_trust x the label model's confidence, soft and "
                          "overrulable like import_trust below 1; human labels always win; 0 = rules "
                          "only reported, never used (benchmarks/results/rules.md)"),
    "label_model": Setting("majority", str,
                           "how rule votes are combined without ground truth: 'majority' (share of the "
                           "votes) or 'dawid-skene' (each rule an annotator, EM): majority was far more "
                           "accurate on keyword rules (benchmarks/results/rules.md)"),
    "class_prior": Setting("auto", str, "class-mass normalisation of the propagated labels: 'labels' (class "
                           "shares among 30+ labels drawn at random by `next`, else among the labels no "
                           "query strategy chose), 'estimated' (pulled toward the shares the graph "
                           "predicts: much better on imbalanced texts, can flip on hub-like data), 'auto' "
                           "(whichever of the two held-out human labels support, per refresh; with fewer than 10 "
                           "held-out labels the mean of the two unless they favour 'labels'; labels drawn at random "
                           "still win) or 'none' "
                           "(benchmarks/results/robustness.md)"),
    "target_precision": Setting(0.95, float, "precision auto-labeling must certify (DESIGN.md: e.g. 95 %); "
                                "`labelloop autolabel --target-precision` overrides it once"),
    "human_label_accuracy": Setting(0.95, float,
                                    "prior probability that a person's label is right, used by the audit "
                                    "where no gold items or overlapping annotations measure it"),
    "batch_size": Setting(0, int, "embedding batch size; 0 = the backbone's own default"),
    "head_weight": Setting("auto", "weight",
                           "weight of a classifier head on the embeddings (prototypes up to 5 labels "
                           "per class, then logistic regression) averaged into the propagated predictions: 'auto' "
                           "= the weight of 0, 0.25, 0.5, 0.75, 1 that the held-out human labels find likeliest "
                           "at refresh, taken only where it clearly beats propagation alone and gets more of "
                           "them right, else 0; a number in [0, 1] fixes it (it helped on weak text features and "
                           "EfficientNet features from 5-10 labels per class, not on digits pixels: "
                           "benchmarks/results/robustness.md, label_efficiency.md)"),
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
        return coerce(name, project_values[name])
    return spec.default


def coerce(name: str, value: Any, *, source: str = "value") -> Any:
    spec = SETTINGS[name]
    convert = {"temperature": _temperature, "weight": _weight_or_auto}.get(spec.type, spec.type)
    try:
        out = convert(value)
    except (TypeError, ValueError):
        kind = {"temperature": "'auto' or a positive number", "weight": "'auto' or a weight in [0, 1]"}.get(
            spec.type) or f"a {spec.type.__name__}"
        raise ValidationError(f"{source} for {name!r} must be {kind}, got {value!r}") from None
    if isinstance(out, (int, float)) and out < 0:
        raise ValidationError(f"{source} for {name!r} must not be negative, got {value!r}")
    if name == "class_prior" and out not in ("auto", "labels", "estimated", "none"):
        raise ValidationError(f"{source} for 'class_prior' must be auto, labels, estimated or none, got {value!r}")
    if name == "human_label_accuracy" and not 0.5 <= out < 1:
        raise ValidationError(f"{source} for 'human_label_accuracy' must be in [0.5, 1), got {value!r}")
    if name == "target_precision" and not 0.5 <= out < 1:
        raise ValidationError(f"{source} for 'target_precision' must be in [0.5, 1), got {value!r}")
    if name == "rule_trust" and out > 1:
        raise ValidationError(f"{source} for 'rule_trust' is a weight in [0, 1], got {value!r}")
    if name == "label_model" and out not in ("dawid-skene", "majority"):
        raise ValidationError(f"{source} for 'label_model' must be dawid-skene or majority, got {value!r}")
    return out
