"""The embedding diagnostic: its parts against brute force, and its advice on toy data."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelloop.adapt.diagnose import (
    diagnose,
    graph_loo_knn_accuracy,
    head_helps,
    label_homophily,
    loo_knn_accuracy,
    propagation_cv_accuracy,
    wilson_interval,
)
from labelloop.errors import ValidationError
from labelloop.graph import build_knn_graph


def clusters(n_per: int = 50, c: int = 4, d: int = 8, spread: float = 0.3, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(c, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    X = np.concatenate([centres[k] * 3 + spread * rng.normal(size=(n_per, d)) for k in range(c)])
    return X.astype(np.float32), np.repeat(np.arange(c), n_per)


def some_labeled(y: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = np.full_like(y, -1)
    for c in np.unique(y):
        pick = rng.choice(np.flatnonzero(y == c), per_class, replace=False)
        out[pick] = c
    return out


# ------------------------------------------------------------------------------ Wilson
def test_wilson_interval_known_value():
    # 8 of 10, 95 %: (0.4902, 0.9433) -- Wilson (1927), as tabulated by Newcombe (1998)
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-4) and hi == pytest.approx(0.9433, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(10 / (10 + 1.959964**2), abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 500), frac=st.floats(0, 1), conf=st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_wilson_interval_contains_estimate_and_narrows(n, frac, conf):
    k = int(round(frac * n))
    lo, hi = wilson_interval(k, n, conf)
    assert 0 <= lo <= k / n + 1e-12 and k / n - 1e-12 <= hi <= 1
    lo4, hi4 = wilson_interval(4 * k, 4 * n, conf)
    assert hi4 - lo4 <= hi - lo + 1e-12


# ------------------------------------------------------------------------- parts vs brute
def brute_loo(X, y, k):
    lab = np.flatnonzero(y >= 0)
    Z = X / np.linalg.norm(X, axis=1, keepdims=True)
    correct = checked = 0
    for i in lab:
        if (y[lab] == y[i]).sum() < 2:
            continue
        others = [j for j in lab if j != i]
        sims = sorted(((float(Z[i] @ Z[j]), j) for j in others), reverse=True)[:k]
        score: dict[int, float] = {}
        for s, j in sims:
            score[y[j]] = score.get(y[j], 0.0) + max(s, 0) + 1e-6
        pred = max(score, key=lambda c: (score[c], -c))
        correct += int(pred == y[i])
        checked += 1
    return correct, checked


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loo_knn_matches_brute_force(seed):
    X, y = clusters(n_per=15, c=3, spread=1.5, seed=seed)
    y_part = some_labeled(y, 6, seed)
    y_part[np.flatnonzero(y_part == 2)[:5]] = -1  # class 2 keeps one label: not checkable
    assert loo_knn_accuracy(X, y_part, k=4) == brute_loo(X, y_part, 4)


def test_homophily_matches_brute_force():
    X, y = clusters(n_per=20, c=3, spread=1.5, seed=4)
    g = build_knn_graph(X, k=5)
    yl = some_labeled(y, 10, 1)
    pairs = set()
    for i in range(len(y)):
        for j in g.indices[i]:
            if yl[i] >= 0 and yl[j] >= 0 and i != j:
                pairs.add((min(i, j), max(i, j)))
    same = sum(yl[a] == yl[b] for a, b in pairs)
    assert label_homophily(g, yl) == (same, len(pairs))


def test_graph_loo_matches_brute_force():
    X, y = clusters(n_per=20, c=3, spread=1.5, seed=5)
    g = build_knn_graph(X, k=6)
    yl = some_labeled(y, 12, 2)
    correct = checked = 0
    for i in np.flatnonzero(yl >= 0):
        score: dict[int, float] = {}
        for j, s in zip(g.indices[i], g.similarities[i]):
            if yl[j] >= 0:
                score[yl[j]] = score.get(yl[j], 0.0) + max(float(s), 0) + 1e-6
        if score:
            checked += 1
            correct += int(max(score, key=lambda c: (score[c], -c)) == yl[i])
    assert graph_loo_knn_accuracy(g, yl) == (correct, checked)


def test_propagation_cv_matches_explicit_leave_one_out():
    from labelloop.propagate import LabelPropagation

    X, y = clusters(n_per=15, c=3, spread=2.0, seed=6)
    g = build_knn_graph(X, k=5)
    yl = some_labeled(y, 4, 3)
    correct = checked = 0
    for i in np.flatnonzero(yl >= 0):  # every class has 4 labels: all checkable
        y_i = yl.copy()
        y_i[i] = -1
        lp = LabelPropagation().fit(g, y_i, n_classes=3)  # the refresh's defaults
        correct += int(lp.reached_[i] and lp.predict_proba()[i].argmax() == yl[i])
        checked += 1
    assert propagation_cv_accuracy(g, yl, folds=1000) == (correct, checked)


# ------------------------------------------------------------------------------- advice
def test_separable_clusters_give_good_advice():
    X, y = clusters()
    g = build_knn_graph(X, k=10)
    d = diagnose(g, some_labeled(y, 10), X)
    assert d.loo_accuracy == 1.0 and d.loo_checked == 40 and d.loo_k == 9
    assert d.propagation_accuracy == 1.0 and d.propagation_checked == 40
    assert d.verdict == "good" and "well" in d.advice
    assert d.homophily == 1.0 and d.homophily_expected == pytest.approx(0.25)
    assert d.silhouette > 0.5
    lo, hi = d.propagation_interval
    assert lo > 0.9 and hi == 1.0
    json.dumps(d.to_dict())  # JSON-ready for --json
    assert "verdict:           good" in d.summary()


def test_random_labels_give_advice_to_adapt():
    X, _ = clusters(seed=1)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=X.shape[0])
    g = build_knn_graph(X, k=10)
    d = diagnose(g, some_labeled(y, 15), X)
    assert d.loo_accuracy < 0.5 and d.propagation_accuracy < 0.5
    assert d.verdict == "poor" and "labelloop adapt" in d.advice
    assert d.homophily < 0.5 and abs(d.silhouette) < 0.2


def test_graph_only_diagnosis():
    X, y = clusters()
    g = build_knn_graph(X, k=10)
    d = diagnose(g, np.where(np.arange(len(y)) % 2 == 0, y, -1))
    assert d.loo_method == "graph" and d.loo_accuracy == 1.0 and d.silhouette is None
    assert d.verdict == "good"
    e = diagnose(None, np.where(np.arange(len(y)) % 2 == 0, y, -1), X)  # embeddings only
    assert e.propagation_accuracy is None and e.homophily is None and e.verdict == "good"


def test_too_few_labels_says_so():
    X, y = clusters()
    g = build_knn_graph(X, k=10)
    few = some_labeled(y, 1)
    d = diagnose(g, few, X)
    assert d.verdict == "too few labels" and d.loo_checked == 0 and "label about" in d.advice
    one_class = np.full_like(y, -1)
    one_class[:5] = 0
    assert diagnose(g, one_class, X).verdict == "too few labels"
    assert diagnose(g, np.full_like(y, -1), X).loo_accuracy is None


def test_uncertainty_is_reported_with_few_labels():
    X, y = clusters(spread=2.2, seed=3)
    g = build_knn_graph(X, k=10)
    d = diagnose(g, some_labeled(y, 3), X)
    lo, hi = d.propagation_interval
    assert hi - lo > 0.2
    if d.verdict in ("good", "fair", "poor") and (lo < 0.9 <= hi or lo < 0.8 <= hi):
        assert "uncertain" in d.advice


def test_diagnose_validates_input():
    X, y = clusters()
    g = build_knn_graph(X, k=5)
    with pytest.raises(ValidationError):
        diagnose(g, y[:-1], X)
    with pytest.raises(ValidationError):
        diagnose(None, y)
    with pytest.raises(ValidationError):
        diagnose(g, y.astype(float))
    assert math.isfinite(diagnose(None, y, X).loo_accuracy)


def test_representative_labels_drive_the_propagation_estimate():
    X, y = clusters(n_per=40, c=4, spread=1.5, seed=4)
    g = build_knn_graph(X, k=10)
    yl = some_labeled(y, 10)
    rep = np.zeros(len(y), dtype=bool)
    rep[np.flatnonzero(yl >= 0)[::2]] = True          # 20 of the 40 labels are "random"
    d = diagnose(g, yl, X, representative=rep)
    assert d.propagation_checked == 20 and d.propagation_scope == "labels not chosen by active learning"
    assert (d.propagation_accuracy * 20, 20) == propagation_cv_accuracy(g, np.where(rep, yl, -1))
    few = np.zeros(len(y), dtype=bool)
    few[np.flatnonzero(yl >= 0)[:4]] = True           # too few to score: all labels, said so
    e = diagnose(g, yl, X, representative=few)
    assert e.propagation_checked == 40 and "may be pessimistic" in e.propagation_scope
    assert diagnose(g, yl, X).propagation_scope == "all labels"


def test_head_helps_needs_a_clear_gain():
    assert head_helps(40, 42, 50)            # +2 labels, +4 points
    assert not head_helps(40, 41, 50)        # one label is noise
    assert not head_helps(180, 182, 200)     # +1 point
    assert not head_helps(0, 0, 0)


def test_diagnose_advises_the_head_when_the_graph_misleads_but_the_embeddings_do_not():
    """A graph built from unrelated vectors propagates noise; a head on the (separable)
    embeddings does not, and the advice says how to average it in."""
    X, y = clusters(n_per=40, c=4, spread=0.3, seed=8)
    noise = np.random.default_rng(8).normal(size=X.shape)
    g = build_knn_graph(noise, k=10)
    d = diagnose(g, some_labeled(y, 10), X)
    assert d.propagation_accuracy < 0.3 and d.propagation_with_head_accuracy > d.propagation_accuracy + 0.1
    assert "labelloop config head_weight 0.5" in d.advice
    tidy = diagnose(build_knn_graph(X, k=10), some_labeled(y, 10), X)
    assert tidy.propagation_with_head_accuracy == 1.0 and "head_weight" not in tidy.advice


def test_text_projects_are_not_advised_to_adapt():
    """`adapt` trains image backbones: a text project gets advice it can follow."""
    X, _ = clusters(seed=1)
    y = np.random.default_rng(0).integers(0, 4, size=X.shape[0])
    g = build_knn_graph(X, k=10)
    d = diagnose(g, some_labeled(y, 15), X, modality="text")
    assert d.verdict == "poor" and "adapt" not in d.advice
    assert "another text backbone" in d.advice and "--modality text" in d.advice
