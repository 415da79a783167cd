"""labelloop.graph's "ivf-blas" search (IVF lists scored block by block with BLAS), its
top-k selection and the reverse-neighbour pass, checked against brute force."""

from __future__ import annotations

import numpy as np
import pytest

import labelloop.graph as graph_mod
from labelloop.graph import (_inverse_norms, _refine_neighbours, _reverse_merge, _topk_rows, build_knn_graph,
                             choose_method)
from test_graph import brute_force, check_invariants, clustered


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found, truth)]))


def test_topk_rows_equals_a_full_sort_with_ties_floors_and_short_rows():
    rng = np.random.default_rng(0)
    S = rng.standard_normal((50, 300)).astype(np.float32)
    S[3] = 0.5                      # a row of ties
    S[4, :20] = 9.0                 # more equal maxima than k
    cols, vals = _topk_rows(S, 11)
    np.testing.assert_array_equal(vals, -np.sort(-S, axis=1)[:, :11])
    np.testing.assert_array_equal(np.take_along_axis(S, cols, 1), vals)
    assert all(len(set(r)) == 11 for r in cols.tolist())
    # a floor leaves the slots below it empty (-1 / -inf)
    floor = np.full(50, 2.0, np.float32)
    cols, vals = _topk_rows(S, 11, floor)
    assert ((vals >= 2.0) | (cols == -1)).all() and (np.isinf(vals) == (cols == -1)).all()
    # fewer columns than k
    cols, vals = _topk_rows(S[:, :5], 11)
    assert (cols[:, 5:] == -1).all() and (cols[:, :5] >= 0).all()


def test_ivf_blas_recall_and_invariants_against_brute_force():
    X = clustered(4000, dim=32, n_clusters=40, seed=7)
    g = build_knn_graph(X, 10, method="ivf-blas")
    assert g.method == "ivf-blas" and g.centroids is not None
    check_invariants(X, g, 10)
    assert recall(g.indices, brute_force(X, 10)[0]) >= 0.95


def test_ivf_blas_is_deterministic_for_a_seed_and_reads_a_read_only_memory_map(tmp_path):
    X = clustered(3000, dim=24, seed=8) * 3.0       # not normalised: normalised as read
    np.save(tmp_path / "x.npy", X)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    a = build_knn_graph(X, 8, method="ivf-blas", seed=1)
    b = build_knn_graph(mapped, 8, method="ivf-blas", seed=1)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.similarities, b.similarities)
    np.testing.assert_array_equal(a.centroids, b.centroids)


def test_ivf_blas_duplicates_and_zero_rows():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((500, 8)).astype(np.float32)
    X[:30] = X[0]        # 30 identical rows
    X[40:45] = 0.0       # zero rows: similarity 0 to everything
    g = build_knn_graph(X, 5, method="ivf-blas")
    check_invariants(X, g, 5)
    np.testing.assert_allclose(g.similarities[:30], 1.0, atol=1e-6)
    assert (g.indices[:30] < 30).all()


def test_reverse_merge_adds_a_missing_reverse_edge():
    # 0's list holds 1 at 0.9; 1's list lacks 0 although 0 beats 1's last neighbour
    idx = np.array([[1, 2], [2, 3], [1, 0], [0, 2]])
    sim = np.array([[0.9, 0.5], [0.8, 0.1], [0.8, 0.5], [0.2, 0.1]], np.float32)
    i2, s2 = _reverse_merge(idx, sim)
    assert i2[1].tolist() == [0, 2] and s2[1].tolist() == pytest.approx([0.9, 0.8])
    assert i2[0].tolist() == [1, 2]                # rows already complete stay as they were
    assert (np.diff(s2, axis=1) <= 0).all()


def test_refinement_never_lowers_a_row_and_lifts_a_one_probe_graph(monkeypatch):
    X = clustered(3000, dim=32, n_clusters=30, seed=3) * 2.0     # not normalised: normalised as read
    monkeypatch.setattr(graph_mod, "IVF_BLAS_NPROBE", 1)
    monkeypatch.setattr(graph_mod, "IVF_BLAS_REFINE_PASSES", 0)
    weak = build_knn_graph(X, 10, method="ivf-blas")
    idx, sim = _refine_neighbours(X, _inverse_norms(X), weak.indices, weak.similarities)
    refined = graph_mod.KnnGraph(idx, sim, "ivf-blas")
    check_invariants(X, refined, 10)
    # each row keeps the k best of its old list and its new candidates: no slot gets worse
    assert (sim >= weak.similarities - 1e-6).all()
    truth = brute_force(X, 10)[0]
    before, after = recall(weak.indices, truth), recall(idx, truth)
    assert before < 0.9 and after >= before + 0.05, (before, after)
    # an exact graph is a fixed point
    exact = build_knn_graph(X, 10, method="exact")
    i2, s2 = _refine_neighbours(X, _inverse_norms(X), exact.indices, exact.similarities)
    np.testing.assert_allclose(s2, exact.similarities, atol=1e-5)


def test_choose_method_thresholds():
    assert choose_method(20_000, 20_000) == "exact"
    assert choose_method(20_001, 20_000) == "ivf-blas"
    assert choose_method(1_000_000, 20_000) == "ivf-blas"


def low_rank(n: int, dim: int = 64, rank: int = 8, seed: int = 0) -> np.ndarray:
    """Rows near a ``rank``-dimensional subspace (Gaussian clusters there) plus a little noise."""
    rng = np.random.default_rng(seed)
    Z = 2.0 * rng.standard_normal((20, rank))[rng.integers(0, 20, n)] + rng.standard_normal((n, rank))
    R = np.linalg.qr(rng.standard_normal((dim, rank)))[0].T
    return (Z @ R + 0.05 * rng.standard_normal((n, dim))).astype(np.float32)


def test_reduced_space_only_for_nearly_low_rank_rows():
    V = graph_mod._reduced_basis(low_rank(2000), seed=0)
    assert V.shape == (64, 16)                                # 8 directions, rounded up to 16
    np.testing.assert_allclose(V.T @ V, np.eye(16), atol=1e-4)
    full = np.random.default_rng(0).standard_normal((2000, 64)).astype(np.float32)
    assert graph_mod._reduced_basis(full, seed=0) is None      # energy spread: the full space


def test_reduced_space_search_scores_in_the_full_space_and_finds_the_neighbours(monkeypatch, tmp_path):
    monkeypatch.setattr(graph_mod, "_PCA_SAMPLE", 500)         # the reduced path from 500 rows on
    monkeypatch.setattr(graph_mod, "IVF_BLAS_REDUCED_MIN_N", 500)
    X = low_rank(3000, seed=4) * 3.0                           # not normalised: normalised as read
    np.save(tmp_path / "x.npy", X)
    g = build_knn_graph(np.load(tmp_path / "x.npy", mmap_mode="r"), 10, method="ivf-blas")
    assert g.method == "ivf-blas" and g.centroids.shape[1] == 64
    check_invariants(X, g, 10, atol=1e-3)                      # full-space cosines of float16 rows
    assert recall(g.indices, brute_force(X, 10)[0]) >= 0.95


def test_full_space_search_of_the_float16_copy_matches_the_rows_read_in_place(monkeypatch, tmp_path):
    X = clustered(3000, dim=32, n_clusters=30, seed=9) * 2.0   # not normalised: normalised as read
    np.save(tmp_path / "x.npy", X)
    mapped = np.load(tmp_path / "x.npy", mmap_mode="r")
    in_place = build_knn_graph(mapped, 10, method="ivf-blas")
    monkeypatch.setattr(graph_mod, "IVF_BLAS_HALF_MIN_N", 500)   # the float16 copy from 500 rows on
    half = build_knn_graph(mapped, 10, method="ivf-blas")
    check_invariants(X, half, 10, atol=1e-3)
    truth = brute_force(X, 10)[0]
    assert recall(half.indices, truth) >= recall(in_place.indices, truth) - 0.01 >= 0.94
