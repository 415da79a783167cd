"""labelloop.propagate: label propagation against closed forms, brute force and real data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labelloop.errors import NotReadyError, ValidationError
from labelloop.graph import KnnGraph, build_knn_graph
from labelloop.propagate import (
    LabelPropagation,
    PropagationConvergenceWarning,
    affinity_matrix,
    prediction_summary,
    sorted_unique,
)


def blobs(n: int, n_classes: int, dim: int, sep: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping Gaussian classes: propagation is good but not perfect."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, dim)) * sep
    y = rng.integers(0, n_classes, n)
    return (centres[y] + rng.standard_normal((n, dim))).astype(np.float32), y


def random_graph(n: int, k: int, seed: int) -> KnnGraph:
    """A kNN graph of random vectors (dense brute force, so no FAISS in property tests)."""
    X = np.random.default_rng(seed).standard_normal((n, 4))
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    sims = Xn @ Xn.T
    np.fill_diagonal(sims, -np.inf)
    idx = np.argsort(-sims, axis=1)[:, :k]
    return KnnGraph(idx.astype(np.int64), np.take_along_axis(sims, idx, 1).astype(np.float32))


def sample_labels(y_true: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = np.full_like(y_true, -1)
    for c in np.unique(y_true):
        pick = rng.choice(np.flatnonzero(y_true == c), per_class, replace=False)
        y[pick] = c
    return y


# ---------------------------------------------------------------- affinity


def test_affinity_matches_dense_formula():
    g = random_graph(30, 4, seed=0)
    T = 0.5  # large enough that exp(cos / T) is computed directly without overflow
    W = np.zeros((30, 30))
    for i in range(30):
        for s, j in zip(g.similarities[i], g.indices[i]):
            W[i, j] = np.exp(float(s) / T)  # W_ij = exp(cos_ij / T)
    W = (W + W.T) / 2
    d = W.sum(axis=1)
    S_ref = W / np.sqrt(np.outer(d, d))  # D^-1/2 W D^-1/2
    S = affinity_matrix(g, temperature=T)
    assert S.dtype == np.float32 and (S != S.T).nnz == 0
    np.testing.assert_allclose(S.toarray(), S_ref, rtol=2e-6, atol=1e-8)


def test_affinity_is_finite_at_paper_temperature_and_zero_vectors():
    X = np.random.default_rng(0).standard_normal((50, 8))
    X[:3] = 0.0  # cosine 0 to everything: exp(0 / 0.01) relative weights underflow float32
    S = affinity_matrix(build_knn_graph(X, 5), temperature=0.01)
    assert np.isfinite(S.data).all()
    # the largest eigenvalue of a normalised affinity is 1
    top = np.linalg.eigvalsh(S.toarray().astype(np.float64)).max()
    assert top == pytest.approx(1.0, abs=1e-5)


# ---------------------------------------------------------------- propagation


def test_spreading_converges_to_closed_form():
    g = random_graph(50, 5, seed=1)
    S = affinity_matrix(g, temperature=0.1)
    y = np.full(50, -1)
    y[[0, 7, 20, 33]] = [0, 1, 2, 1]
    w = np.ones(50)
    w[7] = 0.4
    a = 0.7
    m = LabelPropagation(alpha=a, n_iter=None, tol=1e-9, temperature=0.1, class_mass=False).fit(
        g, y, sample_weight=w)
    Y0 = np.zeros((50, 3))
    Y0[[0, 7, 20, 33], [0, 1, 2, 1]] = [1, 0.4, 1, 1]
    Y_ref = (1 - a) * np.linalg.solve(np.eye(50) - a * S.toarray().astype(np.float64), Y0)
    np.testing.assert_allclose(m.Y_, Y_ref, atol=1e-6)
    reached = Y_ref.sum(1) > 0
    np.testing.assert_allclose(
        m.label_distributions_[reached], Y_ref[reached] / Y_ref[reached].sum(1, keepdims=True), atol=1e-5
    )


def test_clamped_rows_never_change_and_rows_are_distributions():
    X, yt = blobs(300, 3, 8, 1.0, seed=2)
    y = sample_labels(yt, 4, seed=0)
    m = LabelPropagation().fit(build_knn_graph(X, 10), y)
    lab = np.flatnonzero(y >= 0)
    np.testing.assert_array_equal(m.Y_[lab], np.eye(3, dtype=np.float32)[y[lab]])
    np.testing.assert_array_equal(m.label_distributions_[lab], np.eye(3)[y[lab]])
    np.testing.assert_array_equal(m.transduction_[lab], y[lab])
    P = m.predict_proba()
    assert (P >= 0).all()
    np.testing.assert_allclose(P.sum(1), 1.0, atol=1e-6)
    assert 1 <= m.n_iter_ <= 100  # the default: at most 100 steps, fewer once converged


def test_one_step_by_hand():
    # path 0 - 1 - 2 with equal weights: S = D^-1/2 W D^-1/2, degrees (1, 2, 1)
    g = KnnGraph(np.array([[1], [0], [1]]), np.ones((3, 1), np.float32))
    m = LabelPropagation(n_iter=1, temperature=0.01, class_mass=False).fit(g, np.array([0, -1, 1]))
    # W = (A + A^T)/2: W01 = 1, W12 = 0.5 (2 -> 1 listed once); d = (1, 1.5, 0.5)
    y1 = np.array([1 / np.sqrt(1.5), 0.5 / np.sqrt(0.75)])  # S_10, S_12
    np.testing.assert_allclose(m.Y_[1], y1, rtol=1e-6)
    np.testing.assert_allclose(m.label_distributions_[1], y1 / y1.sum(), rtol=1e-6)


def test_component_without_labels_is_uniform_and_unreached():
    # two disconnected triangles; labels only in the first
    idx = np.array([[1, 2], [0, 2], [0, 1], [4, 5], [3, 5], [3, 4]])
    g = KnnGraph(idx, np.full((6, 2), 0.9, np.float32))
    m = LabelPropagation().fit(g, np.array([0, -1, 1, -1, -1, -1]), n_classes=3)
    np.testing.assert_array_equal(m.reached_, [True, True, True, False, False, False])
    np.testing.assert_allclose(m.label_distributions_[3:], 1 / 3)
    assert m.label_distributions_[1, 2] == 0  # class 2 has no label anywhere


def test_no_labels_at_all_needs_n_classes_then_is_uniform():
    g = random_graph(20, 3, seed=3)
    with pytest.raises(ValidationError, match="n_classes"):
        LabelPropagation().fit(g, np.full(20, -1))
    m = LabelPropagation().fit(g, np.full(20, -1), n_classes=4)
    assert not m.reached_.any()
    np.testing.assert_allclose(m.predict_proba(), 0.25)


def test_fit_accepts_precomputed_affinity():
    g = random_graph(40, 5, seed=4)
    y = np.full(40, -1)
    y[[1, 2, 3]] = [0, 1, 0]
    a = LabelPropagation(temperature=0.05).fit(g, y).predict_proba()
    b = LabelPropagation().fit(affinity_matrix(g, temperature=0.05), y).predict_proba()
    np.testing.assert_array_equal(a, b)


def test_zero_sample_weight_removes_a_label_in_spreading():
    g = random_graph(60, 5, seed=5)
    y = np.full(60, -1)
    y[[0, 1, 2, 3]] = [0, 1, 2, 0]
    w = np.ones(60)
    w[3] = 0.0
    with_w = LabelPropagation(alpha=0.9).fit(g, y, sample_weight=w)
    y_drop = y.copy()
    y_drop[3] = -1
    without = LabelPropagation(alpha=0.9).fit(g, y_drop, n_classes=3)
    np.testing.assert_allclose(with_w.Y_, without.Y_, atol=1e-7)


def test_convergence_warning_only_when_convergence_is_asked_for():
    g = random_graph(30, 3, seed=6)
    y = np.full(30, -1)
    y[0] = 0
    y[1] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        LabelPropagation(n_iter=3, tol=0.0).fit(g, y)  # a fixed step count: no warning
    with pytest.warns(PropagationConvergenceWarning):
        LabelPropagation(n_iter=None, tol=0.0, alpha=0.99, temperature=0.01).fit(g, y)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"alpha": 1.0}, "alpha"),
        ({"temperature": 0.0}, "temperature"),
        ({"n_iter": -1}, "n_iter"),
    ],
)
def test_bad_parameters(kwargs, match):
    g = random_graph(10, 2, seed=7)
    with pytest.raises(ValidationError, match=match):
        LabelPropagation(**kwargs).fit(g, np.array([0, 1] + [-1] * 8))


def test_bad_labels_and_weights():
    g = random_graph(10, 2, seed=7)
    with pytest.raises(ValidationError, match="shape"):
        LabelPropagation().fit(g, np.zeros(9, int))
    with pytest.raises(ValidationError, match="class id 5"):
        LabelPropagation().fit(g, np.array([5] + [-1] * 9), n_classes=3)
    with pytest.raises(ValidationError, match="sample_weight"):
        LabelPropagation().fit(g, np.array([0] + [-1] * 9), sample_weight=-np.ones(10))
    with pytest.raises(NotReadyError):
        LabelPropagation().update(np.zeros(10, int))


def test_digits_five_labels_per_class():
    from sklearn.datasets import load_digits

    X, yt = load_digits(return_X_y=True)
    y = sample_labels(yt, 5, seed=0)
    g = build_knn_graph(X, 10)
    unl = y < 0
    paper = LabelPropagation(temperature=0.01, n_iter=20, class_mass=False).fit(g, y)  # Bai et al.
    acc = (paper.transduction_[unl] == yt[unl]).mean()
    # measured 0.969 with this seed (DESIGN.md: 0.964 mean over 5 seeds); floor = that - 0.015
    assert acc >= 0.954, acc
    # the robust defaults lose a little here (0.942 vs 0.944 mean of 3 seeds in
    # benchmarks/results/robustness.md); measured 0.953 with this seed
    robust = LabelPropagation().fit(g, y)
    assert (robust.transduction_[unl] == yt[unl]).mean() >= 0.94


# ---------------------------------------------------------------- warm start


@pytest.mark.parametrize("class_mass", [True, "estimated", False])
def test_distributions_are_made_in_the_array_distributions_out_gives(class_mass):
    """``distributions_out`` (a refresh: a memory map of the run's proba file) is where a finish
    of every row makes the distributions: the same values as in a new array, in that array."""
    g = random_graph(60, 5, seed=6)
    y = np.full(60, -1)
    y[[1, 2, 3, 4]] = [0, 1, 2, 0]
    want = LabelPropagation(class_mass=class_mass).fit(g, y).predict_proba()
    given = []
    lp = LabelPropagation(class_mass=class_mass, residual_growth=None)
    lp.distributions_out = lambda shape: given.append(np.full(shape, np.nan, np.float32)) or given[-1]
    P = lp.fit(g, y).predict_proba()
    assert len(given) == 1 and P is given[0]
    np.testing.assert_array_equal(P, want)
    y[5] = 1
    lp.distributions_out = None
    Q = lp.update(y, n_iter=1).predict_proba()   # one step: the rows near item 5 change
    # class-mass normalisation rescales every row: a new array. Without it an update rewrites
    # the rows it changed in place, in that array: why a refresh makes the propagation forget
    # the map of its run's file once stored (project._RunFile.release)
    assert (Q is given[0]) == (class_mass is False)


@pytest.mark.parametrize("alpha", [None, 0.9])
def test_a_read_only_or_moved_state_is_updated_without_writing_where_it_must_not(alpha):
    """``restore`` holds a read-only state (a stored file memory-mapped) as it is and copies it
    before the first step that writes it; ``move_state`` copies it into a given array, which the
    update then writes in place; after ``freeze_state`` the next update copies it first."""
    g = random_graph(80, 5, seed=8)
    y = np.full(80, -1)
    y[[1, 2, 3, 4]] = [0, 1, 2, 0]
    fitted = LabelPropagation(alpha=alpha).fit(g, y)
    stored = fitted.Y_.copy()
    stored.flags.writeable = False
    y2 = y.copy()
    y2[[5, 6]] = [1, 2]
    # no error bound: no drain, whose steps make a new array on a graph this small
    want = LabelPropagation(alpha=alpha, residual_growth=None).restore(g, stored.copy(), y).update(y2).predict_proba()
    lp = LabelPropagation(alpha=alpha, residual_growth=None).restore(g, stored, y)
    assert lp.state()[0] is stored or np.shares_memory(lp.state()[0], stored)   # held as given
    np.testing.assert_array_equal(lp.update(y2).predict_proba(), want)
    np.testing.assert_array_equal(stored, fitted.Y_)   # not written
    out = np.full(stored.shape, np.nan, np.float32)
    lp.move_state(out)
    y2[7] = 0
    lp.update(y2, n_iter=2)
    assert lp.state()[0] is out and not np.isnan(out).any()   # updated there, in place
    lp.freeze_state()
    kept = out.copy()
    y2[8] = 1
    lp.update(y2, n_iter=2)
    np.testing.assert_array_equal(out, kept)
    with pytest.raises(ValidationError, match="writable C-contiguous"):
        lp.move_state(np.empty((80, 2), np.float32))


def test_class_distributions_refuses_an_out_array_of_another_shape():
    from labelloop.propagate import class_distributions

    Y = np.ones((4, 3), np.float32)
    with pytest.raises(ValidationError, match=r"writable \(4, 3\) float32"):
        class_distributions(Y, np.array([0, -1, -1, 1]), 3, out=np.empty((4, 2), np.float32))
    ro = np.empty((4, 3), np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValidationError, match="writable"):
        class_distributions(Y, np.array([0, -1, -1, 1]), 3, out=ro)


@pytest.fixture(scope="module")
def overlapping():
    X, yt = blobs(4000, 5, 16, 0.8, seed=0)
    return affinity_matrix(build_knn_graph(X, 10), temperature=0.01), yt


@pytest.mark.parametrize("alpha", [None, 0.9])
def test_warm_update_agrees_with_cold_fit(overlapping, alpha):
    S, yt = overlapping
    rng = np.random.default_rng(0)
    y = np.full(len(yt), -1)
    first = rng.choice(len(yt), 30, replace=False)
    y[first] = yt[first]
    # the paper's setting (20 steps, no class-mass normalisation): the warm start's own accuracy
    m = LabelPropagation(alpha=alpha, n_iter=20, class_mass=False).fit(S, y, n_classes=5)
    before = m.transduction_.copy()
    y2 = y.copy()
    new = rng.choice(np.flatnonzero(y < 0), 10, replace=False)
    y2[new] = yt[new]
    m.update(y2)
    cold = LabelPropagation(alpha=alpha, n_iter=20, class_mass=False).fit(S, y2, n_classes=5)
    P, Q = m.label_distributions_, cold.label_distributions_
    agree = (P.argmax(1) == Q.argmax(1)).mean()
    # the new labels moved (before != cold) far more predictions than warm and cold disagree on
    assert agree >= 0.99 and (before != cold.transduction_).mean() > 5 * (1 - agree)
    # measured: clamped agreement 0.9988, mean |P - Q| 0.0010, max 0.131 (a few boundary
    # rows: the cold fit is 20 steps from zero, not converged); spreading 1.0 / 1e-4 / 0.013
    assert np.abs(P - Q).mean() < 0.003
    assert np.abs(P - Q).max() < (0.2 if alpha is None else 0.03)
    np.testing.assert_allclose(P.sum(1), 1.0, atol=1e-5)
    assert (P >= 0).all()
    if alpha is None:
        np.testing.assert_array_equal(P[new], np.eye(5)[yt[new]])


def test_warm_update_removal_and_relabel_equal_cold_fit(overlapping):
    S, yt = overlapping
    y = sample_labels(yt, 6, seed=1)
    m = LabelPropagation().fit(S, y)
    lab = np.flatnonzero(y >= 0)
    y2 = y.copy()
    y2[lab[0]] = -1  # removed
    y2[lab[1]] = (y[lab[1]] + 1) % 5  # re-classed
    m.update(y2)
    cold = LabelPropagation().fit(S, y2, n_classes=5)
    np.testing.assert_array_equal(m.label_distributions_, cold.label_distributions_)


def test_spreading_update_is_exact_for_any_change(overlapping):
    S, yt = overlapping
    y = sample_labels(yt, 6, seed=2)
    m = LabelPropagation(alpha=0.5).fit(S, y)
    lab = np.flatnonzero(y >= 0)
    y2 = y.copy()
    y2[lab[0]] = -1
    y2[lab[1]] = (y[lab[1]] + 2) % 5
    y2[np.flatnonzero(y < 0)[:3]] = [0, 1, 2]
    w = np.ones(len(y))
    w[lab[2]] = 0.3
    m.update(y2, sample_weight=w)
    cold = LabelPropagation(alpha=0.5).fit(S, y2, n_classes=5, sample_weight=w)
    np.testing.assert_allclose(m.Y_, cold.Y_, atol=2e-3)
    assert (m.transduction_ == cold.transduction_).mean() >= 0.999


def test_update_without_changes_is_a_no_op(overlapping):
    S, yt = overlapping
    y = sample_labels(yt, 3, seed=3)
    m = LabelPropagation().fit(S, y)
    P = m.predict_proba().copy()
    m.update(y.copy())
    np.testing.assert_array_equal(m.predict_proba(), P)


def test_residual_falls_with_convergence_and_grows_with_warm_updates(overlapping):
    S, yt = overlapping
    y = sample_labels(yt, 3, seed=4)
    longer = LabelPropagation(n_iter=300, residual_growth=None).fit(S, y)
    m = LabelPropagation(n_iter=20, residual_growth=None).fit(S, y)
    assert longer.residual() < 0.5 * m.residual()   # it falls as the iteration converges
    assert m.residual_fit_ == m.residual_ == m.residual() > 0   # 20 steps: not converged
    rng = np.random.default_rng(0)
    y2 = y.copy()
    new = rng.choice(np.flatnonzero(y < 0), 10, replace=False)
    y2[new] = yt[new]
    m.update(y2, max_rows=50)   # a tight work cap: the update leaves a residual behind
    assert m.residual() > m.residual_fit_ and m.n_refits_ == 0


@pytest.mark.parametrize("action", ["drain", "refit"])
def test_warm_update_past_its_error_bound_drains_or_refits(overlapping, action):
    """Above ``residual_growth`` x the last full fit's residual, full steps continue from the warm
    result until it is within the bound ("drain"), or a full propagation replaces the update
    ("refit": the cold fit's result exactly)."""
    S, yt = overlapping
    y = sample_labels(yt, 3, seed=5)
    m = LabelPropagation(n_iter=20, residual_growth=1.05, residual_action=action, drain_steps=None).fit(S, y)
    y2 = y.copy()
    new = np.random.default_rng(1).choice(np.flatnonzero(y < 0), 10, replace=False)
    y2[new] = yt[new]
    m.update(y2, max_rows=50)
    cold = LabelPropagation(n_iter=20, residual_growth=None).fit(S, y2, n_classes=5)
    if action == "refit":
        assert m.n_refits_ == 1 and m.n_updates_ == 0
        np.testing.assert_array_equal(m.label_distributions_, cold.label_distributions_)
    else:
        assert m.drain_steps_ > 0 and m.residual_ <= 1.05 * m.residual_fit_
        unbounded = LabelPropagation(n_iter=20, residual_growth=None).fit(S, y)
        unbounded.update(y2, max_rows=50)
        # measured: 0.979 drained (20 steps) vs 0.903 without the bound
        assert (m.transduction_ == cold.transduction_).mean() > (unbounded.transduction_ == cold.transduction_).mean()
    np.testing.assert_allclose(m.predict_proba().sum(1), 1.0, atol=1e-5)


def _past_the_bound(overlapping, **kw) -> tuple[LabelPropagation, np.ndarray]:
    """A fit, then an update with a tight work cap that leaves its residual past the bound."""
    S, yt = overlapping
    y = sample_labels(yt, 3, seed=5)
    m = LabelPropagation(n_iter=20, residual_growth=1.05, **kw).fit(S, y)
    y2 = y.copy()
    y2[np.random.default_rng(1).choice(np.flatnonzero(y < 0), 10, replace=False)] = 1
    return m, y2


def test_drain_is_capped_per_update_and_what_is_left_carries_forward(overlapping):
    """``drain_steps``: at most that many full steps per update; the rest stays in Y, where the
    next drain (or update) measures it again and continues."""
    m, y2 = _past_the_bound(overlapping, drain_steps=2)
    m.update(y2, max_rows=50)
    assert m.drain_steps_ == 2 and m.residual_exceeded()   # capped, still past the bound
    left = m.residual_
    assert m.drain() == 2 and m.drain_steps_ == 4 and m.residual_ < left
    while m.drain():
        pass
    assert not m.residual_exceeded()   # back to the full fit's level, or n_iter steps: a new one
    assert m.drain() == 0   # nothing left to drain
    uncapped, _ = _past_the_bound(overlapping, drain_steps=None)
    uncapped.update(y2, max_rows=50)   # the same steps in one go: the same result
    assert uncapped.drain_steps_ == m.drain_steps_ <= 20 and uncapped.residual_fit_ == m.residual_fit_
    np.testing.assert_allclose(m.Y_, uncapped.Y_, rtol=1e-5, atol=1e-6)


def test_a_deferred_drain_stops_when_asked_and_a_step_cut_short_is_dropped(overlapping, monkeypatch):
    """``update(drain=False)`` leaves the steps to :meth:`drain` (unless the residual is past
    DEFERRED_DRAIN_LIMIT x the bound); with ``stop`` (asked every DRAIN_BLOCK_ROWS rows) a step
    gives the result it gives without, and a step stopped inside leaves Y as it was."""
    import labelloop.propagate as propagate

    monkeypatch.setattr(propagate, "DRAIN_BLOCK_ROWS", 1000)   # 4 blocks per step
    limit = propagate.DEFERRED_DRAIN_LIMIT
    monkeypatch.setattr(propagate, "DEFERRED_DRAIN_LIMIT", 1e9)   # this tight work cap leaves ~10x
    m, y2 = _past_the_bound(overlapping, drain_steps=None)
    m.update(y2, max_rows=50, drain=False)
    assert m.drain_steps_ == 0 and m.residual_exceeded()
    Y = m.Y_.copy()
    asked = []
    assert m.drain(stop=lambda: asked.append(1) or len(asked) > 2) == 0   # stopped in the first step
    np.testing.assert_array_equal(m.Y_, Y)
    assert m.drain_steps_ == 0 and m.residual_exceeded()
    whole, _ = _past_the_bound(overlapping, drain_steps=None)
    whole.update(y2, max_rows=50, drain=False)
    assert m.drain(stop=lambda: False) == whole.drain() > 0   # blocked steps: one product's result
    np.testing.assert_allclose(m.Y_, whole.Y_, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(m.transduction_, whole.transduction_)
    assert not m.residual_exceeded()
    m, y2 = _past_the_bound(overlapping, drain_steps=None)
    m.update(y2, max_rows=50, drain=False)
    asked.clear()   # stopped inside the second step: one step kept, its distributions made on use
    assert m.drain(stop=lambda: asked.append(1) or len(asked) > 6) == 1
    assert not hasattr(m, "label_distributions_")
    one, _ = _past_the_bound(overlapping, drain_steps=None)
    one.update(y2, max_rows=50, drain=False)
    assert one.drain(1) == 1
    np.testing.assert_array_equal(m.predict_proba(), one.predict_proba())
    monkeypatch.setattr(propagate, "DEFERRED_DRAIN_LIMIT", limit)
    far, y2 = _past_the_bound(overlapping, drain_steps=3)
    far.residual_fit_ /= 100   # far past the bound: drained now (capped), deferred or not
    far.update(y2, max_rows=50, drain=False)
    assert far.drain_steps_ == 3


def test_without_an_error_bound_the_warm_update_never_refits(overlapping):
    S, yt = overlapping
    y = sample_labels(yt, 3, seed=6)
    m = LabelPropagation(n_iter=20, residual_growth=None).fit(S, y)
    rng = np.random.default_rng(2)
    for _ in range(6):   # more than the old rule's 5
        y = y.copy()
        new = rng.choice(np.flatnonzero(y < 0), 5, replace=False)
        y[new] = yt[new]
        m.update(y, max_rows=50)
    assert m.n_refits_ == 0 and m.n_updates_ == 6 and getattr(m, "drain_steps_", 0) == 0


def test_a_capped_drain_that_cannot_gain_on_the_updates_moves_the_baseline_up(overlapping):
    """rebaseline="landing": a drain that ran its whole budget (1 step here) and left the residual
    above its target and no lower than the update found it moves the bound's baseline up to it,
    by at most residual_growth, instead of every later update paying the same drain until a full
    fit's work is spent ("work", the default); the bound still keeps the result closer to a cold
    fit than no bound, and "work" closer still (measured here: 3 drained updates of 20 instead of
    15; agreement with the cold fit 0.968, 0.986 with "work", 0.959 without a bound)."""
    S, yt = overlapping

    def run(**kw):
        y = sample_labels(yt, 3, seed=5)
        m = LabelPropagation(n_iter=20, drain_steps=1, **kw).fit(S, y)
        fit, rng, drained, moves = m.residual_fit_, np.random.default_rng(5), 0, []
        for _ in range(20):
            y = y.copy()
            new = rng.choice(np.flatnonzero(y < 0), 5, replace=False)
            y[new] = yt[new]
            before, base = getattr(m, "residual_", None), getattr(m, "residual_fit_", None)
            m.update(y, max_rows=1000, n_iter=3)
            drained += getattr(m, "drain_steps_", 0) > 0
            if base is not None and m.residual_fit_ != base:
                moves.append((m.residual_fit_ / base, m.drain_steps_, m.residual_ >= before, m.n_refits_))
        cold = LabelPropagation(n_iter=20).fit(S, y, n_classes=5)
        return drained, moves, (m.transduction_ == cold.transduction_).mean(), fit, m

    paid, moved, agree_work, _, _ = run(rebaseline="work")
    assert moved == []   # no full fit's work (20 steps) spent in 20 updates: the baseline stays
    drained, moves, agree, fit, m = run(rebaseline="landing")
    assert 0 < m.n_rebaselines_ == len(moves) and drained <= paid / 2
    for factor, steps, not_lower, refits in moves:   # each after a whole budget that did not gain
        assert 1 < factor <= 1.5 + 1e-9 and steps == 1 and not_lower and refits == 0
    assert m.residual_fit_ <= 1.5 ** m.n_rebaselines_ * fit * (1 + 1e-9)
    _, _, agree_none, _, _ = run(residual_growth=None)
    assert agree_none < agree <= agree_work


@pytest.mark.parametrize("bad", [{"residual_growth": 0.5}, {"residual_growth": float("nan")},
                                 {"residual_action": "restart"}, {"drain_steps": 0}, {"drain_steps": 2.5},
                                 {"rebaseline": "never"}])
def test_error_bound_parameters_are_validated(overlapping, bad):
    S, yt = overlapping
    with pytest.raises(ValidationError):
        LabelPropagation(**bad).fit(S, sample_labels(yt, 2, seed=0))


def test_row_products_without_scipy_equal_scipys(overlapping):
    """labelloop.csr's products (scipy's compiled kernels loaded without importing scipy.sparse,
    as in a new refresh process) give scipy's results; run where scipy.sparse is not imported.
    A later ``import scipy.sparse`` in that process works and gives the same products."""
    import json
    import os
    import subprocess
    import sys

    S, _ = overlapping
    rows = np.array([0, 5, 17, 1000, 3999])
    rng = np.random.default_rng(0)
    Y = rng.random((S.shape[0], 5), dtype=np.float32)
    v = rng.random((rows.size, 5), dtype=np.float32)
    code = (
        "import json, sys, numpy as np\n"
        "from labelloop.csr import CsrArrays, matmul, rows_dot, rows_dot_transposed\n"
        "a = json.load(sys.stdin)\n"
        "S = CsrArrays(np.array(a['data'], np.float32), np.array(a['indices'], np.int32), "
        "np.array(a['indptr'], np.int32), (a['n'], a['n']))\n"
        "rows, Y, v = np.array(a['rows']), np.array(a['Y'], np.float32), np.array(a['v'], np.float32)\n"
        "n = a['n']\n"
        "out, w = rows_dot_transposed(S, rows, v, np.zeros(n, bool), np.empty(n, np.int64))\n"
        "full, into = S @ Y, np.full(Y.shape, 7.0, np.float32)\n"
        "matmul(S, Y, out=into)\n"
        "scipy = 'scipy.sparse' in sys.modules\n"
        "import scipy.sparse as sp\n"
        "again = sp.csr_matrix((S.data, S.indices, S.indptr), shape=S.shape) @ Y\n"
        "print(json.dumps({'dot': rows_dot(S, rows, Y).tolist(), 'out': out.tolist(), 'w': w.tolist(),\n"
        "                  'full': full.tolist(), 'into': into.tolist(), 'vec': (S @ Y[:, 0]).tolist(),\n"
        "                  'again': again.tolist(), 'scipy': scipy}))\n")
    payload = json.dumps({"data": S.data.tolist(), "indices": S.indices.tolist(), "indptr": S.indptr.tolist(),
                          "n": S.shape[0], "rows": rows.tolist(), "Y": Y.tolist(), "v": v.tolist()})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    got = json.loads(subprocess.run([sys.executable, "-c", code], input=payload, env=env, check=True,
                                    capture_output=True, text=True).stdout)
    assert not got["scipy"]
    np.testing.assert_allclose(got["dot"], S[rows] @ Y, rtol=1e-5, atol=1e-6)
    for key in ("full", "into", "again"):   # the same kernel as scipy's: the same floats
        np.testing.assert_array_equal(np.array(got[key], np.float32), S @ Y)
    np.testing.assert_array_equal(np.array(got["vec"], np.float32), S @ Y[:, 0])
    G = S[rows]   # (S[rows]^T v) on the columns those rows reach
    want = np.asarray(G.T @ v)
    out = np.unique(G.indices)
    np.testing.assert_array_equal(got["out"], out)
    np.testing.assert_allclose(got["w"], want[out], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- properties


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    n=st.integers(3, 40),
    k=st.integers(1, 5),
    n_classes=st.integers(1, 4),
    n_labeled=st.integers(0, 6),
    alpha=st.sampled_from([None, 0.5, 0.9]),
    seed=st.integers(0, 10_000),
)
def test_property_distributions(n, k, n_classes, n_labeled, alpha, seed):
    k = min(k, n - 1)
    g = random_graph(n, k, seed)
    rng = np.random.default_rng(seed)
    y = np.full(n, -1)
    lab = rng.choice(n, min(n_labeled, n), replace=False)
    y[lab] = rng.integers(0, n_classes, lab.size)
    m = LabelPropagation(alpha=alpha, temperature=0.1).fit(g, y, n_classes=n_classes)
    P = m.predict_proba()
    assert P.shape == (n, n_classes)
    assert (P >= 0).all()
    np.testing.assert_allclose(P.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(P[~m.reached_], 1.0 / n_classes)
    if alpha is None:
        np.testing.assert_array_equal(P[lab], np.eye(n_classes)[y[lab]])
    # warm start keeps every invariant too
    y2 = y.copy()
    y2[rng.integers(0, n)] = rng.integers(0, n_classes)
    m.update(y2)
    P2 = m.predict_proba()
    assert (P2 >= 0).all()
    np.testing.assert_allclose(P2.sum(1), 1.0, atol=1e-5)
    np.testing.assert_allclose(P2[~m.reached_], 1.0 / n_classes)
    if alpha is None:
        lab2 = np.flatnonzero(y2 >= 0)
        np.testing.assert_array_equal(P2[lab2], np.eye(n_classes)[y2[lab2]])


# ---------------------------------------------------------------- summary


def test_prediction_summary_by_hand():
    P = np.array([[0.7, 0.2, 0.1], [1 / 3, 1 / 3, 1 / 3], [0.0, 0.0, 1.0]])
    s = prediction_summary(P)
    np.testing.assert_array_equal(s["label"], [0, 0, 2])
    np.testing.assert_allclose(s["confidence"], [0.7, 1 / 3, 1.0], rtol=1e-6)
    np.testing.assert_allclose(s["margin"], [0.5, 0.0, 1.0], atol=1e-7)
    h0 = -(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1))
    np.testing.assert_allclose(s["entropy"], [h0, np.log(3), 0.0], rtol=1e-6, atol=1e-7)
    with pytest.raises(ValidationError):
        prediction_summary(np.ones(3))


def test_prediction_summary_in_blocks_equals_one_block(monkeypatch):
    """prediction_summary works on SUMMARY_BLOCK_ROWS rows at a time: the same as one block,
    including a last short block, ties (the first largest) and a NaN row's block."""
    import labelloop.propagate as propagate

    rng = np.random.default_rng(0)
    P = rng.random((50, 4)).astype(np.float32)
    P[3] = [0.25, 0.25, 0.25, 0.25]
    P[40, 2] = np.nan
    whole = prediction_summary(P)
    monkeypatch.setattr(propagate, "SUMMARY_BLOCK_ROWS", 7)
    blocks = prediction_summary(P)
    for k in ("label", "confidence", "margin", "entropy"):
        assert blocks[k].dtype == whole[k].dtype
        np.testing.assert_array_equal(blocks[k], whole[k])
    assert whole["label"][3] == 0 and prediction_summary(np.zeros((0, 3)))["label"].shape == (0,)


def test_sparse_input_must_be_square():
    with pytest.raises(ValidationError, match="square"):
        LabelPropagation().fit(sp.csr_matrix(np.ones((3, 4))), np.array([0, -1, -1]))


def test_full_steps_in_locality_order_equal_the_items_order(overlapping, tmp_path, monkeypatch):
    """From LOCALITY_MIN_ROWS rows a full propagation and a drain run on S in reverse
    Cuthill-McKee order (labelloop.csr.CsrArrays.ordered), stored beside S and read back by the
    next process: the results are those of the items' order up to float rounding."""
    import labelloop.csr as csr
    from labelloop.csr import CsrArrays

    S, yt = overlapping
    monkeypatch.setattr(csr, "LOCALITY_MIN_ROWS", 100)
    y = sample_labels(yt, 3, seed=5)

    def arrays(order_dir):
        return CsrArrays(S.data.copy(), S.indices.copy(), S.indptr.copy(), S.shape, order_dir=order_dir)

    for alpha in (None, 0.9):
        plain = LabelPropagation(n_iter=20, alpha=alpha).fit(S, y)
        A = arrays(tmp_path / f"order-{alpha}")
        ordered = LabelPropagation(n_iter=20, alpha=alpha).fit(A, y)
        perm, inverse, Sp = A.ordered()
        np.testing.assert_array_equal(perm[inverse], np.arange(S.shape[0]))
        assert sorted(perm.tolist()) == list(range(S.shape[0])) and (tmp_path / f"order-{alpha}" / "perm.npy").exists()
        np.testing.assert_allclose((Sp @ np.eye(S.shape[0], 3, dtype=np.float32)[perm]),
                                   (S @ np.eye(S.shape[0], 3, dtype=np.float32))[perm], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(ordered.Y_, plain.Y_, rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(ordered.transduction_, plain.transduction_)
        again = arrays(tmp_path / f"order-{alpha}")   # another process: reads the stored order
        np.testing.assert_array_equal(again.ordered()[0], perm)
    # a capped drain of full (Jacobi) steps: the same steps and residual as in the items' order
    # (Gauss-Seidel sweeps, the default, go through the rows in the locality order by design)
    m1, y2 = _past_the_bound(overlapping, drain_steps=3, drain_sweep="jacobi")
    m1.update(y2, max_rows=50)
    A = arrays(None)
    m2 = LabelPropagation(n_iter=20, residual_growth=1.05, drain_steps=3, drain_sweep="jacobi").fit(
        A, sample_labels(yt, 3, seed=5))
    m2.update(y2, max_rows=50)
    assert m2.drain_steps_ == m1.drain_steps_ == 3
    np.testing.assert_allclose(m2.Y_, m1.Y_, rtol=1e-4, atol=1e-6)
    assert m2.residual_ == pytest.approx(m1.residual_, rel=1e-3)
    # a drain that can be stopped (a server's): its row blocks on the ordered S, the same steps
    import labelloop.propagate as propagate

    monkeypatch.setattr(propagate, "DEFERRED_DRAIN_LIMIT", 1e9)
    monkeypatch.setattr(propagate, "DRAIN_BLOCK_ROWS", 1000)
    m3 = LabelPropagation(n_iter=20, residual_growth=1.05, drain_steps=3, drain_sweep="jacobi").fit(
        arrays(None), sample_labels(yt, 3, seed=5))
    m3.update(y2, max_rows=50, drain=False)
    assert m3.drain_steps_ == 0 and m3.drain(stop=lambda: False) == 3
    np.testing.assert_allclose(m3.Y_, m1.Y_, rtol=1e-4, atol=1e-6)


def test_a_drain_sweeps_the_rows_in_blocks_gauss_seidel(overlapping, monkeypatch):
    """A drain's step (``drain_sweep="gauss-seidel"``, the default) updates the rows block by
    block, each block's product reading the rows before it as this sweep left them (labeled rows
    reset to their labels); with one block for all rows it is a full (Jacobi) step."""
    import labelloop.propagate as propagate

    S, yt = overlapping
    monkeypatch.setattr(propagate, "DEFERRED_DRAIN_LIMIT", 1e9)
    monkeypatch.setattr(propagate, "DRAIN_SWEEP_BLOCK_ROWS", 1000)
    m, y2 = _past_the_bound(overlapping, drain_steps=None)
    m.update(y2, max_rows=50, drain=False)
    Y = m.Y_.copy()
    assert m.drain(2) == 2
    want, lab = Y.copy(), np.flatnonzero(y2 >= 0)
    Y0 = m._seed(y2)
    for _ in range(2):
        for a in range(0, S.shape[0], 1000):
            want[a:a + 1000] = S[a:a + 1000] @ want
            fixed = lab[(lab >= a) & (lab < a + 1000)]
            want[fixed] = Y0[fixed]
    np.testing.assert_allclose(m.Y_, want, rtol=1e-5, atol=1e-7)
    monkeypatch.setattr(propagate, "DRAIN_SWEEP_BLOCK_ROWS", 10**9)   # one block: full steps
    steps = {}
    for sweep in propagate.DRAIN_SWEEPS:
        m, y2 = _past_the_bound(overlapping, drain_steps=None, drain_sweep=sweep)
        m.update(y2, max_rows=50, drain=False)
        steps[sweep] = (m.drain(3), m.Y_)
    assert steps["jacobi"][0] == steps["gauss-seidel"][0] == 3
    np.testing.assert_allclose(steps["gauss-seidel"][1], steps["jacobi"][1], rtol=1e-5, atol=1e-7)
    with pytest.raises(ValidationError):
        LabelPropagation(drain_sweep="sor").fit(S, y2)


def test_a_state_held_in_the_locality_order_gives_the_results_of_the_items_order(overlapping, monkeypatch, tmp_path):
    """After a drain's Gauss-Seidel sweeps on S in locality order the state stays in that order
    (no reorder back): the next update's push, its residual, its drain and the distributions
    work on it there, and a state saved that way (:meth:`LabelPropagation.state`) restores in
    another process; every result is the one of a state put back in the items' order after
    each step, up to float rounding."""
    import labelloop.csr as csr
    import labelloop.propagate as propagate
    from labelloop.csr import CsrArrays

    S, yt = overlapping
    monkeypatch.setattr(csr, "LOCALITY_MIN_ROWS", 100)
    monkeypatch.setattr(propagate, "DEFERRED_DRAIN_LIMIT", 1e9)
    y = sample_labels(yt, 3, seed=5)
    A = CsrArrays(S.data.copy(), S.indices.copy(), S.indptr.copy(), S.shape, order_dir=tmp_path / "order")
    held = LabelPropagation(n_iter=20, residual_growth=1.05, drain_steps=3).fit(A, y)
    items = LabelPropagation(n_iter=20, residual_growth=1.05, drain_steps=3).fit(A, y)
    rng = np.random.default_rng(3)
    for r in range(3):
        y = y.copy()
        y[rng.choice(np.flatnonzero(y < 0), 10, replace=False)] = rng.integers(0, 5, 10)
        for m in (held, items):
            m.update(y, max_rows=50)
        assert held.drain_steps_ == items.drain_steps_ == 3   # each update drained
        assert held.state()[1] and items.state()[1]
        items.Y_   # back in the items' order: the next update starts from there
        assert not items.state()[1]
        np.testing.assert_allclose(held.predict_proba(), items.predict_proba(), rtol=1e-4, atol=1e-6)
        assert held.residual_ == pytest.approx(items.residual_, rel=1e-4)
    Y, ordered = held.state()
    again = LabelPropagation(n_iter=20, residual_growth=1.05, drain_steps=3).restore(
        CsrArrays(S.data.copy(), S.indices.copy(), S.indptr.copy(), S.shape, order_dir=tmp_path / "order"),
        Y.copy(), held.y_, residual_fit=held.residual_fit_, ordered=ordered)
    np.testing.assert_allclose(again.predict_proba(), items.predict_proba(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(again.Y_, items.Y_, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValidationError):
        LabelPropagation().restore(S, Y, held.y_, ordered=True)   # a graph without a locality order


def test_released_distributions_are_made_again_on_the_next_use(overlapping):
    """``release_distributions(P)``: the caller may overwrite P; the estimator makes its
    distributions again, the same, when next asked (and after a warm update)."""
    S, yt = overlapping
    y = sample_labels(yt, 3, seed=5)
    m = LabelPropagation(n_iter=20, class_mass=False).fit(S, y)
    P = m.predict_proba()
    want = P.copy()
    m.release_distributions(P)
    P[:] = -1.0
    np.testing.assert_array_equal(m.predict_proba(), want)
    m.release_distributions(m.predict_proba())
    y2 = y.copy()
    y2[np.flatnonzero(y < 0)[:5]] = 0
    m.update(y2)   # a partial finish without them: every row made again
    cold = LabelPropagation(n_iter=20, class_mass=False).fit(S, y)
    cold.update(y2)
    np.testing.assert_array_equal(m.predict_proba(), cold.predict_proba())


@pytest.mark.parametrize("alpha", [None, 0.7])
@pytest.mark.parametrize("sweep", ["gauss-seidel", "jacobi"])
def test_one_drain_step_is_one_step_of_the_iteration(alpha, sweep):
    """A drain step, with ``stop`` or without, on a graph of one sweep block (no locality order):
    one step of the iteration from Y, F(Y) = S Y with the labeled rows reset (clamped) or
    alpha S Y + (1 - alpha) Y0 (spreading), computed here by hand."""
    X, yt = blobs(300, 3, 8, 0.8, seed=2)
    S = affinity_matrix(build_knn_graph(X, 8), temperature=0.05)
    y = sample_labels(yt, 2, seed=1)
    for stop in (None, lambda: False):
        m = LabelPropagation(alpha=alpha, n_iter=3, drain_sweep=sweep, class_mass=False).fit(S, y)
        Y = m.Y_.copy()
        m.residual_fit_ = m.residual_ / 10   # past any bound: the drain runs
        assert m.drain(1, stop=stop) == 1
        Y0 = np.zeros_like(Y)
        Y0[np.flatnonzero(y >= 0), y[y >= 0]] = 1.0
        want = np.asarray(S @ Y, dtype=np.float32)
        if alpha is None:
            want[y >= 0] = Y0[y >= 0]
        else:
            want = np.float32(alpha) * want + np.float32(1 - alpha) * Y0
        np.testing.assert_allclose(m.Y_, want, rtol=1e-5, atol=1e-7)


@given(st.lists(st.integers(-5, 40), max_size=60), st.sampled_from([np.int32, np.int64]))
def test_sorted_unique_equals_np_unique(values, dtype):
    """The refresh's np.unique without numpy.ma (test_startup_imports): the same values, dtype, order."""
    a = np.array(values, dtype=dtype)
    got = sorted_unique(a)
    assert got.dtype == dtype and np.array_equal(got, np.unique(a))
    assert np.array_equal(a, np.array(values, dtype=dtype))   # its input untouched
