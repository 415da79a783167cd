"""``conflict``: ask first about the items where the labeling functions (rules) disagree.

An item is in conflict when the active rules vote for different classes on it, or when the
rules' label model and the graph's prediction name different classes. Either way the cheap
evidence contradicts itself there: a person's label settles it, overrules the rule seeds
around it (a human label outweighs a rule seed in propagation), and measures the rules that
voted on it (``labelloop rules report``). Conflicts come first, the most uncertain (margin)
first; once they are used up the rest follow by margin, so a batch is always full.

Score: ``conflict + (1 - margin)`` with ``conflict`` 0 or 1, so every conflict ranks above
every other item. Needs the rules' votes (``rule_votes``, (n_items, C) counts per class) and
the probabilities; ``rule_proba`` (the label model, zero rows where no rule voted) defaults to
the share of the votes (the ``majority`` label model).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import Selection, SelectionInputs, register_strategy, top_n, validate_inputs
from .uncertainty import _top2, _Uncertainty

__all__ = ["Conflict", "conflict_sampling", "rule_conflicts"]


def rule_conflicts(probabilities: np.ndarray, rule_votes: np.ndarray, rule_proba: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``(split, disagree)``, (m,) bool each, for rows given as (m, C) arrays: ``split`` = the
    rules voted for two or more classes; ``disagree`` = the label model's class is not the
    predicted one (rows some rule voted on only)."""
    votes = np.asarray(rule_votes)
    total = votes.sum(axis=1)                                            # (m,)
    split = (votes > 0).sum(axis=1) >= 2                                 # (m,)
    Q = rule_proba if rule_proba is not None else votes / np.where(total > 0, total, 1.0)[:, None]
    disagree = (total > 0) & (Q.argmax(axis=1) != probabilities.argmax(axis=1))
    return split, disagree


def _conflict(inp: SelectionInputs) -> Selection:
    U = inp.unlabeled
    P, V = inp.probabilities[U], inp.rule_votes[U]                      # (U, C) each
    Q = inp.rule_proba[U] if inp.rule_proba is not None else None
    split, disagree = rule_conflicts(P, V, Q)
    conflict = split | disagree                                          # (U,)
    p1, p2 = _top2(P)
    score = conflict.astype(np.float64) + 1.0 - (p1 - p2)                # (U,) conflicts first
    pos = top_n(score, inp.n, inp.rng())
    Qs = Q if Q is not None else V / np.maximum(V.sum(axis=1, keepdims=True), 1.0)
    reasons = []
    for p in pos:
        guess = inp.class_name(int(P[p].argmax()))
        if split[p]:
            votes = ", ".join(f"{inp.class_name(int(c))} {int(V[p, c])}" for c in np.flatnonzero(V[p] > 0))
            reasons.append(f"rules disagree (votes: {votes}); the graph says {guess} ({P[p].max():.2f})")
        elif disagree[p]:
            c = int(Qs[p].argmax())
            reasons.append(f"rules say {inp.class_name(c)} ({Qs[p, c]:.2f}), the graph says {guess} "
                           f"({P[p].max():.2f})")
        else:
            reasons.append(f"no rule conflict left: margin {p1[p] - p2[p]:.2f}, best guess {guess}")
    details = {"conflicts": int(conflict.sum()), "chosen_conflicts": int(conflict[pos].sum())}
    return Selection(U[pos], score[pos], reasons, "conflict", details)


@register_strategy
class Conflict(_Uncertainty):
    """Items where the rules disagree (with each other or with the graph) first, then margin."""

    name = "conflict"
    requires = ("probabilities", "rule_votes")

    def _rank(self, inputs: SelectionInputs) -> Selection:
        return _conflict(inputs)


def conflict_sampling(probabilities: np.ndarray, rule_votes: np.ndarray, labeled: Any, unlabeled: Any, n: int, *,
                      rule_proba: np.ndarray | None = None, seed: int = 0,
                      class_names: list[str] | None = None) -> Selection:
    """Function form of :class:`Conflict`: rule conflicts first, most uncertain first, then margin."""
    strategy = Conflict()
    inputs = validate_inputs(strategy=strategy.name, requires=strategy.requires, n=n, labeled=labeled,
                             unlabeled=unlabeled, probabilities=probabilities, rule_votes=rule_votes,
                             rule_proba=rule_proba, class_names=class_names, seed=seed)
    return strategy._select(inputs)
