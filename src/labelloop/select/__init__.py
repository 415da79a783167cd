"""Active learning: which items a human should label next.

Every strategy is a stateless function of (class probabilities, kNN graph, embeddings,
labeled ids, unlabeled ids, n, seed; the rules' votes for ``conflict``) returning a
:class:`Selection`; a class per strategy holds its configuration, and a registry maps names
to classes::

    sel = get_strategy("margin", diverse=True).select(
        probabilities=P, embeddings=X, labeled=L, unlabeled=U, n=20, seed=0)
    sel.indices, sel.reasons

Adding a strategy: subclass :class:`Strategy`, set ``name`` / ``requires``, implement
``_select(inputs)``, decorate with :func:`register_strategy`.
"""

from .auto import Auto, auto_phase, auto_sampling
from .conflict import Conflict, conflict_sampling, rule_conflicts
from .base import (
    Selection,
    SelectionInputs,
    Strategy,
    available_strategies,
    get_strategy,
    register_strategy,
    validate_inputs,
)
from .coverage import (
    KCenterGreedy,
    Random,
    Typicality,
    kcenter_greedy,
    random_sampling,
    typicality_sampling,
    typicality_scores,
)
from .diversity import Diverse, diverse_sampling, diversify
from .uncertainty import (
    Entropy,
    LeastConfidence,
    Margin,
    MediumConfidence,
    entropy_sampling,
    least_confidence_sampling,
    margin_sampling,
    medium_confidence_sampling,
)

__all__ = [
    "Selection",
    "SelectionInputs",
    "Strategy",
    "register_strategy",
    "get_strategy",
    "available_strategies",
    "validate_inputs",
    "random_sampling",
    "least_confidence_sampling",
    "margin_sampling",
    "entropy_sampling",
    "medium_confidence_sampling",
    "kcenter_greedy",
    "typicality_sampling",
    "typicality_scores",
    "diverse_sampling",
    "diversify",
    "auto_sampling",
    "auto_phase",
    "conflict_sampling",
    "rule_conflicts",
    "Random",
    "LeastConfidence",
    "Margin",
    "Entropy",
    "MediumConfidence",
    "KCenterGreedy",
    "Typicality",
    "Diverse",
    "Auto",
    "Conflict",
]
