"""Batch diversity: one query must not return n near-duplicates.

Take the top ``m = factor * n`` candidates of any base strategy, cluster them into ``n``
clusters in embedding space and keep the best-ranked candidate of each cluster (the
pre-filter + k-means scheme of Zhdanov 2019, "Diverse mini-batch active learning", keeping
the base strategy's best item per cluster instead of the one nearest the centroid, so every
returned item is still one the base strategy ranks highly).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..errors import ValidationError
from .base import (
    Selection,
    SelectionInputs,
    Strategy,
    get_strategy,
    kmeans_labels,
    register_strategy,
    unit_rows,
    validate_inputs,
)

__all__ = ["diversify", "diverse_sampling", "Diverse"]

# Candidates per returned item: Zhdanov 2019 pre-filters beta*k items with beta = 10.
DEFAULT_FACTOR = 10


def diversify(
    base: Callable[[SelectionInputs], Selection],
    inputs: SelectionInputs,
    *,
    factor: int = DEFAULT_FACTOR,
) -> Selection:
    """Run ``base`` for ``factor * n`` candidates, return the best-ranked one per k-means cluster.

    ``inputs`` must hold embeddings. Items come back in the base strategy's priority order;
    when duplicates leave fewer than n distinct clusters, the remaining slots are filled with
    the next candidates in that order.
    """
    n = inputs.n
    m = min(inputs.unlabeled.size, factor * n)
    cand = base(inputs.with_n(m))
    name = f"{cand.strategy}+diverse"
    if m == n:
        return Selection(cand.indices, cand.scores, cand.reasons, name, cand.details)
    X = unit_rows(inputs.embeddings[cand.indices])  # (m, d)
    cluster = kmeans_labels(X, n, inputs.seed)  # (m,)
    sizes = np.bincount(cluster)
    # candidates are in priority order, so the first position of each cluster is its best
    _, first = np.unique(cluster, return_index=True)
    keep = np.sort(first)
    if keep.size < n:  # fewer distinct clusters than n: fill by rank
        rest = np.setdiff1d(np.arange(m), keep)[: n - keep.size]
        keep = np.sort(np.concatenate([keep, rest]))
    reasons = [
        f"{cand.reasons[p]}; best of {sizes[cluster[p]]} similar candidates" for p in keep
    ]
    details = dict(cand.details, candidates=m, clusters=int(np.unique(cluster).size))
    return Selection(cand.indices[keep], cand.scores[keep], reasons, name, details)


@register_strategy
class Diverse(Strategy):
    """Batch-diversity wrapper around any registered strategy (default: margin)."""

    name = "diverse"

    def __init__(self, *, base: str | Strategy = "margin", factor: int = DEFAULT_FACTOR,
                 **base_options: Any) -> None:
        if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
            raise ValidationError(f"factor must be a whole number >= 1, got {factor!r}")
        self.base = get_strategy(base, **base_options) if isinstance(base, str) else base
        self.factor = factor

    def required_inputs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.base.required_inputs(), "embeddings")))

    def _select(self, inputs: SelectionInputs) -> Selection:
        return diversify(self.base._select, inputs, factor=self.factor)


def diverse_sampling(
    embeddings: np.ndarray,
    labeled: Any,
    unlabeled: Any,
    n: int,
    *,
    base: str | Strategy = "margin",
    factor: int = DEFAULT_FACTOR,
    probabilities: np.ndarray | None = None,
    graph: Any = None,
    labels: Any = None,
    class_names: list[str] | None = None,
    seed: int = 0,
) -> Selection:
    """Function form of :class:`Diverse`: ``base``'s top ``factor*n``, one per cluster."""
    strategy = Diverse(base=base, factor=factor)
    inputs = validate_inputs(
        strategy=strategy.name, requires=strategy.required_inputs(), n=n, labeled=labeled,
        unlabeled=unlabeled, probabilities=probabilities, graph=graph, embeddings=embeddings,
        labels=labels, class_names=class_names, seed=seed,
    )
    return strategy._select(inputs)
