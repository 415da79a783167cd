"""labelloop.graph: the shared cosine kNN graph, checked against brute force."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from labelloop.errors import ValidationError
from labelloop.graph import KnnGraph, build_knn_graph, normalize_rows


def clustered(n: int, dim: int = 32, n_clusters: int = 20, seed: int = 0) -> np.ndarray:
    """Gaussian blobs around random unit centres: neighbours are found but not trivially."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    X = centres[rng.integers(0, n_clusters, n)] + 0.15 * rng.standard_normal((n, dim))
    return X.astype(np.float32)


def brute_force(X: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k cosine neighbours by a dense numpy product, self excluded. (n, k) each."""
    norms = np.linalg.norm(X.astype(np.float64), axis=1, keepdims=True)
    Xn = np.divide(X, norms, out=np.zeros(X.shape), where=norms > 0)
    sims = Xn @ Xn.T  # (n, n)
    np.fill_diagonal(sims, -np.inf)
    idx = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    return idx, np.take_along_axis(sims, idx, 1)


def true_cos(X: np.ndarray, graph: KnnGraph) -> np.ndarray:
    Xn = normalize_rows(X).astype(np.float64)
    return np.einsum("nd,nkd->nk", Xn, Xn[graph.indices])  # (n, k)


def check_invariants(X: np.ndarray, graph: KnnGraph, k: int, atol: float = 1e-5) -> None:
    """``atol``: how far the similarities may be from the float32 cosines (float16 rows: 1e-3)."""
    n = X.shape[0]
    assert graph.indices.shape == (n, k) and graph.indices.dtype == np.int64
    assert graph.similarities.shape == (n, k) and graph.similarities.dtype == np.float32
    assert ((graph.indices >= 0) & (graph.indices < n)).all()
    assert not (graph.indices == np.arange(n)[:, None]).any(), "self is a neighbour"
    for row in graph.indices:
        assert len(set(row.tolist())) == k, "a neighbour repeats within a row"
    assert (np.diff(graph.similarities, axis=1) <= 1e-6).all(), "rows not sorted descending"
    assert (np.abs(graph.similarities) <= 1.0).all()
    np.testing.assert_allclose(graph.similarities, true_cos(X, graph), atol=atol)


def test_normalize_rows_unit_norm_and_zero_rows():
    X = np.array([[3.0, 4.0], [0.0, 0.0], [1e-30, 0.0], [-2.0, 0.0]])
    Xn = normalize_rows(X)
    assert Xn.dtype == np.float32
    np.testing.assert_allclose(Xn, [[0.6, 0.8], [0, 0], [1, 0], [-1, 0]], atol=1e-7)
    with pytest.raises(ValidationError, match="2-D"):
        normalize_rows(np.ones(3))


def test_exact_graph_equals_brute_force_allowing_ties():
    X = clustered(400, dim=16)
    X[10] = X[11]  # an exact duplicate pair: a tie at similarity 1
    k = 8
    g = build_knn_graph(X, k, method="exact")
    assert g.method == "exact"
    check_invariants(X, g, k)
    bf_idx, bf_sim = brute_force(X, k)
    # same similarity profile per row (ties may swap ids, never values)
    np.testing.assert_allclose(g.similarities, bf_sim, atol=1e-5)
    # ids agree wherever the value is not tied with another candidate
    same = (g.indices == bf_idx).mean()
    assert same > 0.99
    assert g.indices[10, 0] == 11 and g.indices[11, 0] == 10
    assert g.similarities[10, 0] == pytest.approx(1.0, abs=1e-6)


def test_many_duplicates_and_zero_vectors_do_not_break_anything():
    rng = np.random.default_rng(1)
    X = rng.standard_normal((60, 8)).astype(np.float32)
    X[:25] = X[0]  # 25 identical rows: more than k + 1 ties at similarity 1
    X[40:45] = 0.0  # zero vectors: cosine 0 with everything
    k = 6
    g = build_knn_graph(X, k, method="exact")
    check_invariants(X, g, k)
    np.testing.assert_allclose(g.similarities[:25], 1.0, atol=1e-6)
    assert (g.indices[:25] < 25).all()  # duplicates find each other, never themselves
    np.testing.assert_allclose(g.similarities[40:45], 0.0, atol=1e-6)


@pytest.mark.parametrize("method", ["ivf", "hnsw"])
def test_approximate_recall_at_least_095(method):
    X = clustered(3000, dim=32, n_clusters=30, seed=2)
    k = 10
    g = build_knn_graph(X, k, method=method)
    assert g.method == method
    check_invariants(X, g, k)
    bf_idx, _ = brute_force(X, k)
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(g.indices, bf_idx)])
    assert recall >= 0.95, recall


@pytest.mark.slow  # pynndescent's numba JIT compiles for ~1 minute in a fresh process
def test_nndescent_recall_at_least_095():
    pytest.importorskip("pynndescent")
    X = clustered(3000, dim=32, n_clusters=30, seed=2)
    g = build_knn_graph(X, 10, method="nndescent")
    check_invariants(X, g, 10)
    bf_idx, _ = brute_force(X, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(g.indices, bf_idx)])
    assert recall >= 0.95, recall


def test_auto_switches_method_at_threshold():
    X = clustered(300, dim=8)
    assert build_knn_graph(X, 5, exact_threshold=300).method == "exact"
    assert build_knn_graph(X, 5, exact_threshold=299).method != "exact"


def test_save_load_roundtrip_and_truncate(tmp_path):
    X = clustered(200, dim=8)
    g = build_knn_graph(X, 7)
    g.save(tmp_path / "g.npz")
    h = KnnGraph.load(tmp_path / "g.npz")
    assert h.method == g.method and (h.n, h.k) == (200, 7)
    np.testing.assert_array_equal(h.indices, g.indices)
    np.testing.assert_array_equal(h.similarities, g.similarities)
    t = g.truncate(3)
    assert t.k == 3
    np.testing.assert_array_equal(t.indices, g.indices[:, :3])
    with pytest.raises(ValidationError):
        g.truncate(8)


@pytest.mark.parametrize(
    "X, k, kwargs, match",
    [
        (np.ones((5, 3)), 5, {}, "at least 6 items"),
        (np.ones((5, 3)), 0, {}, "positive integer"),
        (np.ones(5), 2, {}, "2-D"),
        (np.array([[1.0, np.nan], [1.0, 2.0], [0.0, 1.0]]), 1, {}, "NaN"),
        (np.ones((5, 3)), 2, {"method": "annoy"}, "unknown kNN method"),
    ],
)
def test_bad_input_raises_validation_error(X, k, kwargs, match):
    with pytest.raises(ValidationError, match=match):
        build_knn_graph(X, k, **kwargs)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.data(),
    n=st.integers(2, 25),
    d=st.integers(1, 4),
)
def test_property_exact_graph_invariants(data, n, d):
    # small integers: many exact duplicates, zero rows and ties
    X = data.draw(arrays(np.float32, (n, d), elements=st.integers(-2, 2).map(float)))
    k = data.draw(st.integers(1, n - 1))
    g = build_knn_graph(X, k, method="exact")
    check_invariants(X, g, k)
    _, bf_sim = brute_force(X, k)
    np.testing.assert_allclose(g.similarities, bf_sim, atol=1e-5)


# ---------------------------------------------------------------- adding items (extend_knn_graph)


def test_extend_exact_equals_brute_force_of_all_items():
    """Appending items to an exact graph gives the brute-force graph of every item (ties aside)."""
    from labelloop.graph import extend_knn_graph

    X = clustered(500, dim=16, seed=3)
    k = 8
    old = build_knn_graph(X[:420], k, method="exact")
    g, changed = extend_knn_graph(old, X[:420], X[420:], method="exact")
    check_invariants(X, g, k)
    bf_idx, bf_sim = brute_force(X, k)
    np.testing.assert_allclose(g.similarities, bf_sim, atol=1e-5)
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(g.indices, bf_idx)])
    assert recall == pytest.approx(1.0)
    assert g.method == "exact" and g.n == 500
    # the reverse-neighbour update: exactly the old rows that gained a new neighbour changed
    gained = (bf_idx[:420] >= 420).any(axis=1)
    assert changed == int(gained.sum()) > 0
    assert np.array_equal(g.indices[:420][~gained], old.indices[~gained])


def test_extend_reverse_update_puts_a_new_twin_first():
    """A new item identical to an old one becomes that old item's nearest neighbour, and
    items far from every old one change no old row."""
    from labelloop.graph import extend_knn_graph

    X = clustered(200, dim=16, seed=4)
    X[:, 12:] = 0.0   # old items in the first 12 dimensions, the far ones in the last 4
    k = 5
    old = build_knn_graph(X, k, method="exact")
    far = np.zeros((3, 16), np.float32)
    far[:, 12] = 1.0
    far[1, 13] = far[2, 14] = 1.0
    twin = X[7:8] * 2.0                          # same direction as item 7
    g, changed = extend_knn_graph(old, X, np.vstack([twin, far]), method="exact")
    assert g.indices[7, 0] == 200 and g.similarities[7, 0] == pytest.approx(1.0, abs=1e-6)
    assert g.indices[200, 0] == 7
    assert not np.isin(g.indices[:200], [201, 202, 203]).any()
    assert changed == int((g.indices[:200] != old.indices).any(axis=1).sum()) >= 1
    assert set(g.indices[202, :2].tolist()) == {201, 203}   # the far items are each other's nearest


def test_extend_approximate_recall_and_centroids_grow(tmp_path):
    from labelloop.graph import extend_knn_graph

    X = clustered(3000, dim=32, seed=5)
    k = 10
    old = build_knn_graph(X[:2700], k, method="ivf")
    assert old.centroids is not None
    old.save(tmp_path / "g.npz")
    old = KnnGraph.load(tmp_path / "g.npz")
    g, _ = extend_knn_graph(old, X[:2700], X[2700:], exact_threshold=1000)
    check_invariants(X, g, k)
    bf_idx, _ = brute_force(X, k)
    recall = np.mean([len(set(a) & set(b)) / k for a, b in zip(g.indices, bf_idx)])
    assert recall >= 0.95
    # the full build's centroids kept, centroids of the new items added
    assert g.method == "ivf" and np.array_equal(g.centroids[: len(old.centroids)], old.centroids)
    assert len(g.centroids) > len(old.centroids)


def test_extend_rejects_mismatched_vectors():
    from labelloop.graph import extend_knn_graph

    X = clustered(100, dim=8)
    g = build_knn_graph(X, 4, method="exact")
    with pytest.raises(ValidationError, match="100 items but 90"):
        extend_knn_graph(g, X[:90], X[90:])
    with pytest.raises(ValidationError, match="new vectors"):
        extend_knn_graph(g, X, np.ones((3, 5), np.float32))
