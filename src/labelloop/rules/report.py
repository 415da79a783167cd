"""Per-rule statistics: coverage, overlap, conflict, estimated and measured accuracy."""

from __future__ import annotations

import numpy as np

from .label_model import LabelModel

__all__ = ["rule_stats"]


def rule_stats(votes: np.ndarray, *, n_rules: int, n_items: int, model: LabelModel,
               y_human: np.ndarray) -> tuple[list[dict], dict]:
    """``votes`` (V, 3): rule, row, class; ``y_human`` (n,) human class per row (-1 none).

    Per rule: ``votes``; ``coverage`` (share of all items it votes on); ``overlap`` (share of
    its items another rule also votes on); ``conflict`` (share of its items another rule votes
    a different class on); ``estimated_accuracy`` (label model); ``measured_accuracy`` on the
    ``measured_n`` items it votes on that have a human label (None without any).
    Totals: coverage of any rule, share of covered items with a conflict."""
    votes = np.asarray(votes, dtype=np.int64).reshape(-1, 3)
    r, i, c = votes.T
    per_item = np.bincount(i, minlength=n_items)               # (n,) votes per item
    classes_of = {}                                            # row -> set of classes voted
    for row, k in zip(i.tolist(), c.tolist()):
        classes_of.setdefault(row, set()).add(k)
    conflicted = np.zeros(n_items, dtype=bool)                 # (n,) rules disagree on the item
    for row, ks in classes_of.items():
        conflicted[row] = len(ks) > 1
    stats = []
    for a in range(n_rules):
        mine = r == a
        rows, cls = i[mine], c[mine]
        n = len(rows)
        human = y_human[rows]
        known = human >= 0
        # conflict: some other rule voted another class here (another vote than mine differs)
        other_class = np.array([len(classes_of[row] - {k}) > 0 for row, k in zip(rows.tolist(), cls.tolist())],
                               dtype=bool)
        stats.append(dict(
            votes=int(n),
            coverage=n / n_items if n_items else 0.0,
            overlap=float((per_item[rows] > 1).mean()) if n else None,
            conflict=float(other_class.mean()) if n else None,
            estimated_accuracy=None if np.isnan(model.rule_accuracy[a]) else float(model.rule_accuracy[a]),
            measured_accuracy=float((human[known] == cls[known]).mean()) if known.any() else None,
            measured_n=int(known.sum()),
        ))
    covered = per_item > 0
    totals = dict(items=int(n_items), covered=int(covered.sum()),
                  coverage=float(covered.mean()) if n_items else 0.0,
                  conflicted=int(conflicted.sum()),
                  conflict=float(conflicted[covered].mean()) if covered.any() else None)
    return stats, totals
