"""The one k-fold helper: every held-out score in labelloop comes through here.

Calibration (``Project.autolabel`` / ``simulate``), the propagation diagnostic
(``adapt.diagnose``) and the audit's out-of-fold classifier (``audit.label_errors``) all need
"the prediction for a labeled item from a model that never saw its label". They split the
labeled items with :func:`fold_ids` and predict with :func:`heldout_proba`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["fold_ids", "heldout_proba"]


def fold_ids(labels: np.ndarray, n_folds: int = 5, *, seed: int = 0, keep_one_per_class: bool = False) -> np.ndarray:
    """(L,) fold number of each of the ``labels`` (class ids of the labeled items), -1 = never
    held out.

    ``keep_one_per_class``: no fold hides every label of a class (a held-out item of a class
    the model cannot know is a forced error, not evidence): a class's labels are dealt
    round-robin over the folds, and a class with a single label is never held out. With
    ``n_folds`` >= the number of labels this is leave-one-out over the classes with >= 2 labels.
    """
    labels = np.asarray(labels, dtype=np.int64)
    L = labels.size
    order = np.random.default_rng(seed).permutation(L)
    out = np.full(L, -1, dtype=np.int64)
    if not keep_one_per_class:
        out[order] = np.arange(L) % n_folds
        return out
    nxt = 0
    for c in np.unique(labels):
        members = order[labels[order] == c]  # (m_c,) this class, in random order
        if members.size < 2:
            continue
        out[members] = (nxt + np.arange(members.size)) % n_folds
        nxt += members.size
    return out


def heldout_proba(y: np.ndarray, labeled: np.ndarray, n_classes: int,
                  fit_predict: Callable[[np.ndarray, np.ndarray], np.ndarray], *, folds: int = 5,
                  seed: int = 0, keep_one_per_class: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Class distributions of labeled items from models that never saw their labels.

    ``y`` (n,) labels (-1 none), ``labeled`` (L,) the rows to score. Each fold's labels are
    hidden (set to -1) and ``fit_predict(y_without_the_fold, rows_of_the_fold) -> (m, C)``
    predicts them. Returns ``(rows, P)``: the scored rows (a subset of ``labeled`` when
    ``keep_one_per_class`` keeps some back) and their (m, C) held-out distributions.
    """
    labeled = np.asarray(labeled, dtype=np.int64)
    if labeled.size < 2:
        return labeled[:0], np.zeros((0, n_classes), np.float32)
    fid = fold_ids(y[labeled], min(folds, labeled.size), seed=seed, keep_one_per_class=keep_one_per_class)
    rows, parts = [], []
    for f in range(int(fid.max()) + 1 if (fid >= 0).any() else 0):
        hold = labeled[fid == f]
        if hold.size == 0:
            continue
        y_f = np.array(y, copy=True)
        y_f[hold] = -1
        if not (y_f >= 0).any():
            continue
        rows.append(hold)
        parts.append(np.asarray(fit_predict(y_f, hold), dtype=np.float32))
    if not rows:
        return labeled[:0], np.zeros((0, n_classes), np.float32)
    return np.concatenate(rows), np.concatenate(parts)
