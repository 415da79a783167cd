"""The label model: combine the rules' votes into one class distribution per covered item,
without ground truth, and turn it into soft seeds for propagation.

Votes are a long table ``(rule, row, class)``; a rule that abstains on an item has no row.

- ``dawid-skene``: each rule is an annotator (:func:`labelloop.audit.annotators.dawid_skene`);
  its confusion matrix and the class priors are learned by EM from the votes alone.
- ``majority``: the share of the votes each class got (ties split evenly).

A rule's estimated accuracy is the mean probability the model gives the class it voted for,
over the items it voted on: its expected precision if the model is right.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..audit.annotators import dawid_skene
from ..errors import ValidationError

__all__ = ["METHODS", "LabelModel", "fit_label_model", "seed_with_rules"]

METHODS = ("dawid-skene", "majority")


@dataclass
class LabelModel:
    method: str
    rows: np.ndarray            # (m,) rows (items) at least one active rule voted on, ascending
    proba: np.ndarray           # (m, C) class distribution of each covered row
    rule_accuracy: np.ndarray   # (R,) estimated accuracy per rule (NaN: no votes)
    converged: bool = True

    @property
    def label(self) -> np.ndarray:
        return self.proba.argmax(axis=1)                       # (m,)

    @property
    def confidence(self) -> np.ndarray:
        return self.proba.max(axis=1)                          # (m,)


def fit_label_model(votes: np.ndarray, *, n_rules: int, n_classes: int, method: str = "dawid-skene"
                    ) -> LabelModel:
    """``votes`` (V, 3) int: rule index, row, class index. Returns the :class:`LabelModel`."""
    if method not in METHODS:
        raise ValidationError(f"label model must be one of {', '.join(METHODS)}, not {method!r}")
    votes = np.asarray(votes, dtype=np.int64).reshape(-1, 3)
    rows = np.unique(votes[:, 1])                              # (m,)
    if not len(rows):
        return LabelModel(method, rows, np.zeros((0, n_classes)), np.full(n_rules, np.nan))
    at = np.searchsorted(rows, votes[:, 1])                    # (V,) position of each vote's row
    converged = True
    if method == "majority":
        # P(c | votes of i) = votes for c / votes of i
        counts = np.zeros((len(rows), n_classes))              # (m, C)
        np.add.at(counts, (at, votes[:, 2]), 1.0)
        proba = counts / counts.sum(axis=1, keepdims=True)
    else:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", RuntimeWarning)
            ds = dawid_skene(zip(at.tolist(), votes[:, 0].tolist(), votes[:, 2].tolist()),
                             n_classes=n_classes)
        converged = ds.converged and not caught
        proba = np.empty((len(rows), n_classes))               # (m, C) back in row order
        proba[np.asarray(ds.item_ids, dtype=np.int64)] = ds.posteriors
    # estimated accuracy of rule a: mean over its votes of P(voted class | votes)
    hit = proba[at, votes[:, 2]]                               # (V,)
    total = np.bincount(votes[:, 0], weights=hit, minlength=n_rules)
    n = np.bincount(votes[:, 0], minlength=n_rules)
    accuracy = np.divide(total, n, out=np.full(n_rules, np.nan), where=n > 0)
    return LabelModel(method, rows, proba, accuracy, converged)


def seed_with_rules(y: np.ndarray, weight: np.ndarray, model: LabelModel, trust: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Soft seeds for spreading propagation: every row without a label (``y`` (n,) -1) that
    rules cover gets the label model's class with weight ``trust`` x its confidence; a row
    with a label (human or imported) keeps its label and weight: rules never overrule them."""
    y, weight = np.array(y, dtype=np.int64), np.array(weight, dtype=np.float64)
    free = y[model.rows] < 0                                   # (m,)
    rows = model.rows[free]
    y[rows] = model.label[free]
    weight[rows] = trust * model.confidence[free]
    return y, weight
