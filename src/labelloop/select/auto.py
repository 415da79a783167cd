"""``auto``: typicality for the cold start, then margin with batch diversity.

Why two phases. Under clamped label propagation a class without a label has probability 0
everywhere, so uncertainty sampling can never ask about it; with one or two labels per class
the probabilities are also too rough to rank by. TypiClust (Hacohen et al. 2022) shows that
in this low-budget regime choosing typical, well-spread items beats uncertainty, and that
uncertainty wins once the budget grows. So:

- typicality while there are no probabilities yet, or some class has fewer than
  ``min_per_class`` labels (default 2: one label per class is the "1-shot" point of the
  propagation figures in DESIGN.md, two leaves margin a boundary to refine) -- but at most
  until ``cold_start_per_class * n_classes`` labels (default 5 per class): a class that
  typicality has not found by then is rare, and staying in cold start would stall the loop;
- afterwards margin, filtered for batch diversity (top 10 n candidates, one per k-means
  cluster), so one query does not return near-duplicates of one confusing pair;
- when labeling functions have voted (``rule_votes`` given) and ``conflict`` is on
  (:data:`CONFLICT_IN_AUTO`), that second phase ranks by :mod:`.conflict` instead of margin:
  items where the rules disagree first, then margin, with the same diversity filter.
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
    validate_inputs,
)
from .coverage import MAX_CLUSTERS, TYPICALITY_NEIGHBOURS, _typicality
from .diversity import DEFAULT_FACTOR, diversify
from .conflict import _conflict
from .uncertainty import _margin

__all__ = ["Auto", "auto_sampling", "auto_phase", "CONFLICT_IN_AUTO"]

MIN_PER_CLASS = 2
COLD_START_PER_CLASS = 5
#: after the cold start, rank rule conflicts first when rules exist (benchmarks/results/rules_al.md)
CONFLICT_IN_AUTO = True


def _labels_of_labeled(inp: SelectionInputs) -> np.ndarray:
    """Class of each labeled item: ``labels`` when given, else argmax of its probabilities
    (exact for clamped propagation, whose labeled rows are one-hot)."""
    if inp.labels is not None:
        return inp.labels
    return inp.probabilities[inp.labeled].argmax(axis=1)


def auto_phase(inp: SelectionInputs, *, min_per_class: int = MIN_PER_CLASS,
               cold_start_per_class: int = COLD_START_PER_CLASS) -> tuple[str, str]:
    """("typicality" | "margin", why) for validated inputs."""
    if inp.probabilities is None:
        return "typicality", "no predictions yet"
    n_classes = inp.probabilities.shape[1]
    counts = np.bincount(_labels_of_labeled(inp), minlength=n_classes)  # (C,)
    if inp.labeled.size >= cold_start_per_class * n_classes:
        return "margin", f"{inp.labeled.size} labels, past the cold start"
    short = np.flatnonzero(counts < min_per_class)
    if short.size:
        c = int(short[np.argmin(counts[short])])
        have = "no label" if counts[c] == 0 else f"only {counts[c]} label"
        more = f" (and {short.size - 1} more classes)" if short.size > 1 else ""
        return "typicality", f"class {inp.class_name(c)} has {have} yet{more}"
    return "margin", f"every class has at least {min_per_class} labels"


@register_strategy
class Auto(Strategy):
    """Typicality during the cold start, then margin + batch diversity (see module doc)."""

    name = "auto"
    requires = ("embeddings",)

    def __init__(self, *, min_per_class: int = MIN_PER_CLASS,
                 cold_start_per_class: int = COLD_START_PER_CLASS,
                 factor: int = DEFAULT_FACTOR, k: int = TYPICALITY_NEIGHBOURS,
                 max_clusters: int = MAX_CLUSTERS, conflict: bool = CONFLICT_IN_AUTO) -> None:
        for key, v in (("min_per_class", min_per_class),
                       ("cold_start_per_class", cold_start_per_class), ("factor", factor),
                       ("k", k), ("max_clusters", max_clusters)):
            lo = 0 if key.endswith("per_class") else 1
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ValidationError(f"{key} must be a whole number >= {lo}, got {v!r}")
        self.min_per_class = min_per_class
        self.cold_start_per_class = cold_start_per_class
        self.factor = factor
        self.k = k
        self.max_clusters = max_clusters
        self.conflict = bool(conflict)

    def _select(self, inputs: SelectionInputs) -> Selection:
        phase, why = auto_phase(inputs, min_per_class=self.min_per_class,
                                cold_start_per_class=self.cold_start_per_class)
        if phase == "typicality":
            sel = _typicality(inputs, self.k, self.max_clusters)
            prefix = "cold start"
        elif self.conflict and inputs.rule_votes is not None:
            sel = diversify(_conflict, inputs, factor=self.factor)
            prefix = "settling rule conflicts"
        else:
            sel = diversify(_margin, inputs, factor=self.factor)
            prefix = "refining boundaries"
        reasons = [f"{prefix} ({why}): {r}" for r in sel.reasons]
        details = dict(sel.details, phase=phase, why=why, delegate=sel.strategy)
        return Selection(sel.indices, sel.scores, reasons, "auto", details)


def auto_sampling(embeddings: np.ndarray, labeled: Any, unlabeled: Any, n: int, *,
                  probabilities: np.ndarray | None = None, graph: Any = None,
                  labels: Any = None, class_names: list[str] | None = None, seed: int = 0,
                  rule_votes: Any = None, rule_proba: Any = None, **options: Any) -> Selection:
    """Function form of :class:`Auto`; ``options`` go to its constructor."""
    strategy = Auto(**options)
    inputs = validate_inputs(strategy=strategy.name, requires=strategy.requires, n=n,
                             labeled=labeled, unlabeled=unlabeled, probabilities=probabilities,
                             graph=graph, embeddings=embeddings, labels=labels,
                             class_names=class_names, seed=seed, rule_votes=rule_votes,
                             rule_proba=rule_proba)
    return strategy._select(inputs)
