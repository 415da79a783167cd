"""Uncertainty sampling: ask about the items whose class distribution is least decided.

Every strategy here reads only the class probabilities of the unlabeled items (from label
propagation or a classifier) and ranks them; ``diverse=True`` wraps the ranking in the
batch-diversity filter of :mod:`labelloop.select.diversity` (then embeddings are needed).
Scores: higher = asked first.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ValidationError
from .base import (
    Selection,
    SelectionInputs,
    Strategy,
    register_strategy,
    top_n,
    validate_inputs,
)
from .diversity import DEFAULT_FACTOR, diversify

__all__ = [
    "least_confidence_sampling",
    "margin_sampling",
    "entropy_sampling",
    "medium_confidence_sampling",
    "LeastConfidence",
    "Margin",
    "Entropy",
    "MediumConfidence",
]

# Medium confidence skips this fraction of the least confident items as likely outliers.
# Karamcheti et al. 2021 ("Mind Your Outliers!", ACL) show that uncertainty sampling keeps
# spending its budget on collective outliers the model cannot learn, and that removing the
# hardest 10-50 % of the pool restores its advantage; 10 % is the conservative end.
DEFAULT_SKIP_FRACTION = 0.10


def _top2(P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Largest and second largest probability per row, (m,) each (second = 0 with one class)."""
    if P.shape[1] == 1:
        return P[:, 0], np.zeros(P.shape[0], dtype=P.dtype)
    part = np.partition(P, P.shape[1] - 2, axis=1)[:, -2:]  # (m, 2)
    return part[:, 1], part[:, 0]


def _ranked_classes(inp: SelectionInputs, row: np.ndarray, k: int) -> list[tuple[str, float]]:
    order = np.argsort(-row, kind="stable")[:k]
    return [(inp.class_name(int(c)), float(row[c])) for c in order]


def _least_confidence(inp: SelectionInputs) -> Selection:
    P = inp.probabilities[inp.unlabeled]  # (U, C)
    # score = 1 - max_c p(c | x)
    score = 1.0 - P.max(axis=1)  # (U,)
    pos = top_n(score, inp.n, inp.rng())
    reasons = []
    for p in pos:
        top, conf = _ranked_classes(inp, P[p], 1)[0]
        reasons.append(f"least confident: only {conf:.2f} for its best guess {top}")
    return Selection(inp.unlabeled[pos], score[pos].astype(np.float64), reasons, "least-confidence")


def _margin(inp: SelectionInputs) -> Selection:
    P = inp.probabilities[inp.unlabeled]  # (U, C)
    # margin = p(c1 | x) - p(c2 | x) for the two most likely classes; score = 1 - margin
    p1, p2 = _top2(P)
    score = 1.0 - (p1 - p2)  # (U,)
    pos = top_n(score, inp.n, inp.rng())
    reasons = []
    for p in pos:
        ranked = _ranked_classes(inp, P[p], 2)
        if len(ranked) == 2:
            (a, pa), (b, pb) = ranked
            reasons.append(f"margin {pa - pb:.2f} between {a} ({pa:.2f}) and {b} ({pb:.2f})")
        else:
            reasons.append(f"margin {ranked[0][1]:.2f} for the only class {ranked[0][0]}")
    return Selection(inp.unlabeled[pos], score[pos].astype(np.float64), reasons, "margin")


def _entropy(inp: SelectionInputs) -> Selection:
    P = inp.probabilities[inp.unlabeled].astype(np.float64)  # (U, C)
    # H(x) = -sum_c p_c log p_c  (0 log 0 = 0), in nats
    logP = np.log(P, out=np.zeros_like(P), where=P > 0)
    score = -(P * logP).sum(axis=1)  # (U,)
    h_max = np.log(P.shape[1]) if P.shape[1] > 1 else 1.0
    pos = top_n(score, inp.n, inp.rng())
    reasons = []
    for p in pos:
        spread = ", ".join(f"{c} {v:.2f}" for c, v in _ranked_classes(inp, P[p], 3))
        reasons.append(f"entropy {score[p] / h_max:.2f} of the maximum, spread over {spread}")
    return Selection(inp.unlabeled[pos], score[pos], reasons, "entropy")


def _medium_confidence(inp: SelectionInputs, skip_fraction: float) -> Selection:
    P = inp.probabilities[inp.unlabeled]  # (U, C)
    conf = P.max(axis=1)  # (U,)
    U = conf.size
    rng = inp.rng()
    # Rank by confidence ascending (seeded tie-break); the lowest skip_fraction are skipped,
    # the rest are asked in least-confidence order, then the skipped ones, least outlying first.
    asc = np.lexsort((rng.random(U), conf))
    n_skip = int(np.floor(skip_fraction * U))
    order = np.concatenate([asc[n_skip:], asc[:n_skip][::-1]])
    pos = order[: inp.n]
    skipped = np.zeros(U, dtype=bool)
    skipped[asc[:n_skip]] = True
    pct = f"{skip_fraction:.0%}"
    reasons = []
    for p in pos:
        top, c = _ranked_classes(inp, P[p], 1)[0]
        if skipped[p]:
            reasons.append(
                f"confidence {c:.2f} for {top}; among the {pct} least confident, "
                f"asked because the rest of the pool ran out"
            )
        else:
            reasons.append(
                f"confidence {c:.2f} for {top}, the least confident once the {pct} "
                f"least confident (likely outliers) are skipped"
            )
    score = (1.0 - conf[pos]).astype(np.float64)
    return Selection(inp.unlabeled[pos], score, reasons, "medium-confidence")


# ---------------------------------------------------------------- configurable classes


class _Uncertainty(Strategy):
    requires = ("probabilities",)

    def __init__(self, *, diverse: bool = False, factor: int = DEFAULT_FACTOR) -> None:
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise ValidationError(f"factor must be a whole number >= 1, got {factor!r}")
        self.diverse = bool(diverse)
        self.factor = factor

    def required_inputs(self) -> tuple[str, ...]:
        return (*self.requires, "embeddings") if self.diverse else self.requires

    def _rank(self, inputs: SelectionInputs) -> Selection:
        raise NotImplementedError

    def _select(self, inputs: SelectionInputs) -> Selection:
        if self.diverse:
            return diversify(self._rank, inputs, factor=self.factor)
        return self._rank(inputs)


@register_strategy
class LeastConfidence(_Uncertainty):
    """Lowest top-class probability first (score = 1 - max p)."""

    name = "least-confidence"

    def _rank(self, inputs: SelectionInputs) -> Selection:
        return _least_confidence(inputs)


@register_strategy
class Margin(_Uncertainty):
    """Smallest gap between the two most likely classes first (score = 1 - margin)."""

    name = "margin"

    def _rank(self, inputs: SelectionInputs) -> Selection:
        return _margin(inputs)


@register_strategy
class Entropy(_Uncertainty):
    """Highest entropy of the class distribution first (score = entropy in nats)."""

    name = "entropy"

    def _rank(self, inputs: SelectionInputs) -> Selection:
        return _entropy(inputs)


@register_strategy
class MediumConfidence(_Uncertainty):
    """Least confidence after skipping the ``skip_fraction`` least confident (outliers)."""

    name = "medium-confidence"

    def __init__(self, *, skip_fraction: float = DEFAULT_SKIP_FRACTION, diverse: bool = False,
                 factor: int = DEFAULT_FACTOR) -> None:
        super().__init__(diverse=diverse, factor=factor)
        if not 0.0 <= float(skip_fraction) < 1.0:
            raise ValidationError(f"skip_fraction must be in [0, 1), got {skip_fraction!r}")
        self.skip_fraction = float(skip_fraction)

    def _rank(self, inputs: SelectionInputs) -> Selection:
        return _medium_confidence(inputs, self.skip_fraction)


# ---------------------------------------------------------------- function forms


def _run(strategy: Strategy, probabilities: Any, labeled: Any, unlabeled: Any, n: Any,
         seed: int, class_names: list[str] | None) -> Selection:
    inputs = validate_inputs(
        strategy=strategy.name, requires=("probabilities",), n=n, labeled=labeled,
        unlabeled=unlabeled, probabilities=probabilities, class_names=class_names, seed=seed,
    )
    return strategy._select(inputs)


def least_confidence_sampling(probabilities: np.ndarray, labeled: Any, unlabeled: Any, n: int,
                              *, seed: int = 0, class_names: list[str] | None = None
                              ) -> Selection:
    """The n unlabeled items with the lowest top-class probability."""
    return _run(LeastConfidence(), probabilities, labeled, unlabeled, n, seed, class_names)


def margin_sampling(probabilities: np.ndarray, labeled: Any, unlabeled: Any, n: int,
                    *, seed: int = 0, class_names: list[str] | None = None) -> Selection:
    """The n unlabeled items with the smallest top-1 minus top-2 probability."""
    return _run(Margin(), probabilities, labeled, unlabeled, n, seed, class_names)


def entropy_sampling(probabilities: np.ndarray, labeled: Any, unlabeled: Any, n: int,
                     *, seed: int = 0, class_names: list[str] | None = None) -> Selection:
    """The n unlabeled items with the highest entropy of the class distribution."""
    return _run(Entropy(), probabilities, labeled, unlabeled, n, seed, class_names)


def medium_confidence_sampling(probabilities: np.ndarray, labeled: Any, unlabeled: Any, n: int,
                               *, skip_fraction: float = DEFAULT_SKIP_FRACTION, seed: int = 0,
                               class_names: list[str] | None = None) -> Selection:
    """Least-confidence order after skipping the ``skip_fraction`` least confident items."""
    strategy = MediumConfidence(skip_fraction=skip_fraction)
    return _run(strategy, probabilities, labeled, unlabeled, n, seed, class_names)
