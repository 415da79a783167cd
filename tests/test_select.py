"""Query strategies: the registry contract, then each strategy against hand-made truths."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import labelloop.select as sel
from labelloop.errors import PoolExhaustedError, ValidationError
from labelloop.select import (
    Auto,
    KCenterGreedy,
    Margin,
    Selection,
    Strategy,
    available_strategies,
    get_strategy,
    kcenter_greedy,
    register_strategy,
    typicality_sampling,
    typicality_scores,
)

try:
    from labelloop.graph import KnnGraph
except ImportError:  # the graph stage is written in parallel; only two arrays are read
    from dataclasses import dataclass

    @dataclass
    class KnnGraph:  # type: ignore[no-redef]
        indices: np.ndarray
        similarities: np.ndarray
        method: str = "exact"


def unit(X):
    X = np.asarray(X, dtype=np.float64)
    return X / np.linalg.norm(X, axis=1, keepdims=True)


def brute_graph(X, k):
    """Exact cosine kNN graph by brute force, self excluded."""
    Xn = unit(X)
    S = Xn @ Xn.T
    np.fill_diagonal(S, -np.inf)
    idx = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return KnnGraph(idx.astype(np.int64), np.take_along_axis(S, idx, 1).astype(np.float32))


def blobs(n_per=40, n_blobs=3, dim=6, noise=0.05, seed=0):
    """Gaussian blobs around orthogonal unit directions; row b*n_per is exactly a centre."""
    rng = np.random.default_rng(seed)
    centres = np.eye(dim)[:n_blobs]
    X = np.concatenate([c + noise * rng.normal(size=(n_per, dim)) for c in centres])
    X[np.arange(n_blobs) * n_per] = centres
    y = np.repeat(np.arange(n_blobs), n_per)
    return X, y


@pytest.fixture(scope="module")
def pool():
    X, y = blobs(n_per=40, n_blobs=3, seed=1)
    rng = np.random.default_rng(2)
    P = rng.dirichlet(np.ones(3), size=len(X))
    labeled = np.array([1, 45, 90, 100, 110, 2])
    unlabeled = np.setdiff1d(np.arange(len(X)), labeled)
    V = np.zeros((len(X), 3))                 # rule votes: a third of the items, some split
    V[::3, 0] = 1
    V[::6, 1] = 1
    V[1::9, 2] = 2
    return dict(probabilities=P, embeddings=X, graph=brute_graph(X, 10), labeled=labeled,
                unlabeled=unlabeled, labels=y[labeled], class_names=["a", "b", "c"], rule_votes=V)


# ---------------------------------------------------------------- contract of every strategy

ALL = available_strategies()


def test_registry_lists_every_strategy():
    assert set(ALL) >= {"random", "least-confidence", "margin", "entropy", "medium-confidence",
                        "coreset", "typicality", "diverse", "auto"}


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("n", [1, 7])
def test_contract_returns_n_distinct_unlabeled(name, n, pool):
    s = get_strategy(name).select(n=n, seed=3, **pool)
    assert isinstance(s, Selection)
    assert s.indices.shape == (n,) and s.indices.dtype == np.int64
    assert len(set(s.indices.tolist())) == n
    assert set(s.indices.tolist()) <= set(pool["unlabeled"].tolist())
    assert s.scores.shape == (n,) and np.isfinite(s.scores).all()
    assert len(s.reasons) == n and all(isinstance(r, str) and r for r in s.reasons)
    assert name in s.strategy  # "diverse" reports its base too: "margin+diverse"


@pytest.mark.parametrize("name", ALL)
def test_contract_deterministic_under_seed(name, pool):
    a = get_strategy(name).select(n=9, seed=5, **pool)
    b = get_strategy(name).select(n=9, seed=5, **pool)
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.scores, b.scores)
    assert a.reasons == b.reasons


@pytest.mark.parametrize("name", ALL)
def test_contract_whole_pool_and_cold_start(name, pool):
    few = pool["unlabeled"][:12]
    s = get_strategy(name).select(n=12, **dict(pool, unlabeled=few))
    assert sorted(s.indices.tolist()) == sorted(few.tolist())
    empty = dict(pool, labeled=np.array([], dtype=np.int64), labels=None,
                 unlabeled=np.arange(len(pool["embeddings"])))
    cold = get_strategy(name).select(n=5, **empty)
    assert len(set(cold.indices.tolist())) == 5


@pytest.mark.parametrize("name", ALL)
def test_contract_pool_exhausted(name, pool):
    strategy = get_strategy(name)
    with pytest.raises(PoolExhaustedError, match="only 3 unlabeled"):
        strategy.select(n=4, **dict(pool, unlabeled=pool["unlabeled"][:3]))
    everything = np.arange(len(pool["embeddings"]))
    with pytest.raises(PoolExhaustedError, match="no unlabeled"):
        strategy.select(n=1, **dict(pool, labeled=everything, labels=None, unlabeled=[]))


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("bad", [0, -1, 1.5, "2", True, None])
def test_contract_invalid_n(name, bad, pool):
    with pytest.raises(ValidationError, match="n must"):
        get_strategy(name).select(n=bad, **pool)


@pytest.mark.parametrize("name", ALL)
def test_contract_missing_input_says_what_to_run(name, pool):
    strategy = get_strategy(name)
    for key in strategy.required_inputs():
        with pytest.raises(ValidationError, match=r"labelloop refresh"):
            strategy.select(n=2, **dict(pool, **{key: None}))


@settings(max_examples=30, deadline=None)
@given(n_items=st.integers(2, 60), data=st.data())
def test_property_margin_and_coreset_pick_distinct_pool_items(n_items, data):
    rng = np.random.default_rng(n_items)
    ids = rng.permutation(n_items)
    n_lab = data.draw(st.integers(0, n_items - 1))
    labeled, unlabeled = ids[:n_lab], ids[n_lab:]
    n = data.draw(st.integers(1, unlabeled.size))
    P = rng.dirichlet(np.ones(4), size=n_items).round(2)  # rounding makes many ties
    P /= P.sum(axis=1, keepdims=True)
    X = rng.normal(size=(n_items, 3))
    for s in (get_strategy("margin"), KCenterGreedy()):
        out = s.select(probabilities=P, embeddings=X, labeled=labeled, unlabeled=unlabeled, n=n)
        assert len(set(out.indices.tolist())) == n
        assert set(out.indices.tolist()) <= set(unlabeled.tolist())


# ---------------------------------------------------------------- validation at the boundary


def test_validation_errors_name_the_problem(pool):
    m = get_strategy("margin")
    with pytest.raises(ValidationError, match="disagree on the number of items"):
        m.select(n=1, **dict(pool, embeddings=pool["embeddings"][:-1]))
    with pytest.raises(ValidationError, match="both in labeled and in unlabeled"):
        m.select(n=1, **dict(pool, unlabeled=np.r_[pool["unlabeled"], 1]))
    with pytest.raises(ValidationError, match="repeated"):
        m.select(n=1, **dict(pool, unlabeled=np.r_[pool["unlabeled"], pool["unlabeled"][0]]))
    with pytest.raises(ValidationError, match=r"ids must lie in \[0, 120\)"):
        m.select(n=1, **dict(pool, unlabeled=np.r_[pool["unlabeled"], 500]))
    with pytest.raises(ValidationError, match="not scores or logits"):
        m.select(n=1, **dict(pool, probabilities=pool["probabilities"] * 3))
    with pytest.raises(ValidationError, match="integer item ids"):
        m.select(n=1, **dict(pool, unlabeled=pool["unlabeled"] + 0.5))
    with pytest.raises(ValidationError, match="one class per labeled item"):
        m.select(n=1, **dict(pool, labels=[0]))
    with pytest.raises(ValidationError, match="unknown strategy 'nope'; choose one of: auto"):
        get_strategy("nope")
    with pytest.raises(ValidationError, match="bad option"):
        get_strategy("margin", colour="red")


def test_register_a_new_strategy(monkeypatch):
    import labelloop.select.base as base

    monkeypatch.setattr(base, "_REGISTRY", dict(base._REGISTRY))

    @register_strategy
    class Last(Strategy):
        name = "last"

        def _select(self, inputs):
            ids = inputs.unlabeled[-inputs.n :][::-1]
            return Selection(ids, np.zeros(inputs.n), ["last"] * inputs.n, self.name)

    assert "last" in available_strategies()
    out = get_strategy("last").select(labeled=[0], unlabeled=[1, 2, 3], n=2)
    assert out.indices.tolist() == [3, 2]


def test_public_surface():
    for name in sel.__all__:
        assert hasattr(sel, name), name


# ---------------------------------------------------------------- uncertainty strategies

# rows:            0 confident            1 X: lowest max       2 Y: most spread
#                  3 Z: smallest margin    4.. confident
HAND = np.array([
    [0.97, 0.01, 0.01, 0.01],
    [0.36, 0.34, 0.30, 0.00],   # max 0.36 (lowest), margin 0.02, entropy 1.096
    [0.40, 0.20, 0.20, 0.20],   # max 0.40, margin 0.20, entropy 1.332 (highest)
    [0.50, 0.495, 0.005, 0.0],  # max 0.50, margin 0.005 (smallest), entropy 0.72
    [0.10, 0.85, 0.05, 0.00],
    [0.90, 0.05, 0.05, 0.00],
    [0.00, 0.00, 0.20, 0.80],
    [0.05, 0.05, 0.85, 0.05],
    [0.92, 0.08, 0.00, 0.00],
    [0.01, 0.01, 0.01, 0.97],
])
NAMES = ["cat", "dog", "owl", "fox"]


@pytest.mark.parametrize("name, first, score", [
    ("least-confidence", 1, 1 - 0.36),
    ("margin", 3, 1 - 0.005),
    ("entropy", 2, -(0.4 * np.log(0.4) + 3 * 0.2 * np.log(0.2))),
    # the least confident 10 % (row 1) is skipped; then the least confident is row 2
    ("medium-confidence", 2, 1 - 0.40),
])
def test_uncertainty_picks_hand_made_item(name, first, score):
    out = get_strategy(name).select(probabilities=HAND, labeled=[], unlabeled=np.arange(10),
                                    n=10, class_names=NAMES)
    assert out.indices[0] == first
    assert out.scores[0] == pytest.approx(score)
    assert np.all(np.diff(out.scores) <= 1e-12) or name == "medium-confidence"


def test_uncertainty_reasons_are_readable():
    kw = dict(probabilities=HAND, labeled=[], unlabeled=np.arange(10), n=1, class_names=NAMES)
    assert get_strategy("margin").select(**kw).reasons[0] == (
        "margin 0.01 between 'cat' (0.50) and 'dog' (0.49)")
    least = get_strategy("least-confidence").select(**kw)
    assert "0.36 for its best guess 'cat'" in least.reasons[0]


def test_medium_confidence_asks_skipped_outliers_last():
    out = get_strategy("medium-confidence").select(
        probabilities=HAND, labeled=[], unlabeled=np.arange(10), n=10)
    assert out.indices[-1] == 1  # the least confident row, skipped as an outlier
    assert "ran out" in out.reasons[-1]
    kept = out.scores[:-1]
    assert np.all(np.diff(kept) <= 1e-12)  # least-confidence order among the kept ones


def test_margin_breaks_ties_by_seed_not_by_position():
    P = np.full((50, 2), 0.5)
    firsts = {int(get_strategy("margin").select(probabilities=P, labeled=[],
                                                unlabeled=np.arange(50), n=1,
                                                seed=s).indices[0]) for s in range(10)}
    assert len(firsts) > 3


# ---------------------------------------------------------------- coverage strategies


def test_coreset_picks_farthest_point_on_toy_2d():
    deg = np.array([0, 10, 20, 90, 170, 180])
    X = np.c_[np.cos(np.radians(deg)), np.sin(np.radians(deg))] * np.arange(1, 7)[:, None]
    out = kcenter_greedy(X, labeled=[0], unlabeled=[1, 2, 3, 4, 5], n=3)
    # 180 deg is farthest from 0 deg; then 90 deg (farthest from both 0 and 180); then 10 or 170
    assert out.indices[:2].tolist() == [5, 3]
    assert out.scores[0] == pytest.approx(2.0)  # antipodal unit vectors
    assert out.scores[1] == pytest.approx(np.sqrt(2.0))
    assert "farthest from every labeled item (distance 2.00)" == out.reasons[0]


def brute_kcenter(X, labeled, unlabeled, n):
    Xn = unit(X)
    D = np.linalg.norm(Xn[:, None] - Xn[None], axis=2)
    centres = list(labeled)
    picks = []
    for _ in range(n):
        d = D[np.ix_(unlabeled, centres)].min(axis=1)
        d[np.isin(unlabeled, picks)] = -1
        picks.append(int(unlabeled[np.argmax(d)]))
        centres.append(picks[-1])
    return picks


def test_coreset_matches_brute_force_and_chunking(monkeypatch):
    import labelloop.select.base as base
    import labelloop.select.coverage as coverage

    rng = np.random.default_rng(4)
    X = rng.normal(size=(150, 5))
    labeled, unlabeled = np.arange(10), np.arange(10, 150)
    want = brute_kcenter(X, labeled, unlabeled, 8)
    assert kcenter_greedy(X, labeled, unlabeled, 8).indices.tolist() == want
    monkeypatch.setattr(coverage, "CHUNK_BYTES", 4 * 10 * 3)  # blocks of 3 rows
    monkeypatch.setattr(base, "CHUNK_BYTES", 4 * 10 * 3)
    assert kcenter_greedy(X, labeled, unlabeled, 8).indices.tolist() == want


def test_coreset_cold_start_begins_nearest_the_mean():
    X, _ = blobs(n_per=30, n_blobs=3, seed=5)
    out = kcenter_greedy(X, labeled=[], unlabeled=np.arange(90), n=1)
    Xn = unit(X)
    centre = Xn.mean(axis=0)
    assert out.indices[0] == np.argmax(Xn @ centre)
    r1 = kcenter_greedy(X, labeled=[], unlabeled=np.arange(90), n=3, start="random", seed=1)
    r2 = kcenter_greedy(X, labeled=[], unlabeled=np.arange(90), n=3, start="random", seed=1)
    assert r1.indices.tolist() == r2.indices.tolist()


@pytest.mark.parametrize("use_graph", [False, True])
def test_typicality_picks_cluster_centres(use_graph):
    X, y = blobs(n_per=40, n_blobs=3, noise=0.05, seed=6)
    graph = brute_graph(X, 20) if use_graph else None
    centres = {0, 40, 80}
    out = typicality_sampling(X, labeled=[], unlabeled=np.arange(120), n=3, graph=graph)
    assert set(out.indices.tolist()) == centres
    assert "uncovered cluster of 40 items" in out.reasons[0]
    # blob 0 is covered by a label: the two other centres, nothing from blob 0
    out = typicality_sampling(X, labeled=[5], unlabeled=np.setdiff1d(np.arange(120), [5]), n=2,
                              graph=graph)
    assert set(out.indices.tolist()) == {40, 80}


def test_typicality_scores_match_brute_force():
    rng = np.random.default_rng(7)
    X = unit(rng.normal(size=(60, 4)))
    D = np.linalg.norm(X[:, None] - X[None], axis=2)
    np.fill_diagonal(D, np.inf)
    want = 1.0 / np.sort(D, axis=1)[:, :20].mean(axis=1)
    got = typicality_scores(np.arange(60), X=X.astype(np.float32), k=20)
    np.testing.assert_allclose(got, want, rtol=1e-4)
    got_graph = typicality_scores(np.arange(60), graph=brute_graph(X, 20), k=20)
    np.testing.assert_allclose(got_graph, want, rtol=1e-4)


# ---------------------------------------------------------------- batch diversity


def duplicate_clusters(seed):
    """8 tight clusters of 15 near-duplicates, all very uncertain; 200 confident items."""
    rng = np.random.default_rng(seed)
    dim = 16
    centres = unit(rng.normal(size=(8, dim)))
    tight = np.repeat(centres, 15, axis=0) + 1e-3 * rng.normal(size=(120, dim))
    spread = rng.normal(size=(200, dim))
    X = np.vstack([tight, spread])
    cluster = np.r_[np.repeat(np.arange(8), 15), np.full(200, -1)]
    # cluster 0 is the most uncertain, so plain margin returns several of its duplicates
    margin = np.r_[rng.uniform(0, 0.01, 15), rng.uniform(0.005, 0.05, 105),
                   rng.uniform(0.6, 0.9, 200)]
    p1 = (1 + margin) / 2
    P = np.c_[p1, 1 - p1]
    return X, P, cluster


@pytest.mark.parametrize("seed", range(5))
def test_diversity_never_returns_two_items_of_one_tight_cluster(seed):
    X, P, cluster = duplicate_clusters(seed)
    kw = dict(probabilities=P, embeddings=X, labeled=[], unlabeled=np.arange(320), n=5,
              seed=seed)
    plain = Margin().select(**kw)
    assert len(set(cluster[plain.indices])) < 5  # without the wrapper: near-duplicates
    for strategy in (Margin(diverse=True), get_strategy("diverse"),
                     get_strategy("diverse", base="entropy")):
        out = strategy.select(**kw)
        picked = cluster[out.indices]
        assert len(set(picked.tolist())) == 5 and (picked >= 0).all(), strategy
        assert out.strategy.endswith("+diverse")
        assert "best of" in out.reasons[0]


def test_diversity_fills_when_fewer_distinct_points_than_n():
    X = np.repeat(np.eye(3), 10, axis=0)  # only 3 distinct points
    P = np.tile([0.5, 0.5], (30, 1))
    out = Margin(diverse=True).select(probabilities=P, embeddings=X, labeled=[],
                                      unlabeled=np.arange(30), n=6)
    assert len(set(out.indices.tolist())) == 6


# ---------------------------------------------------------------- auto


def test_auto_phases():
    X, y = blobs(n_per=40, n_blobs=3, seed=8)
    P = np.eye(3)[y] * 0.6 + 0.4 / 3
    kw = dict(embeddings=X, unlabeled=np.arange(10, 120), n=3, class_names=["a", "b", "c"])
    cold = Auto().select(labeled=[], **kw)
    assert cold.details["phase"] == "typicality" and "no predictions yet" in cold.reasons[0]
    # labels only in blob 0: class 'b' and 'c' have none
    lab = np.arange(10)
    missing = Auto().select(labeled=lab, labels=y[lab], probabilities=P, **kw)
    assert missing.details["phase"] == "typicality"
    assert "class 'b' has no label yet (and 1 more classes)" in missing.reasons[0]
    # two labels per class; labels inferred from the (clamped-like) probabilities
    lab = np.array([0, 1, 40, 41, 80, 81])
    warm = Auto().select(labeled=lab, probabilities=P,
                         **dict(kw, unlabeled=np.setdiff1d(np.arange(120), lab)))
    assert warm.details["phase"] == "margin" and warm.details["delegate"] == "margin+diverse"
    assert warm.reasons[0].startswith("refining boundaries (every class has at least 2 labels)")
    # cold start ends after cold_start_per_class labels per class even if a class is missing
    lab = np.arange(15)
    capped = Auto(cold_start_per_class=5).select(labeled=lab, labels=y[lab], probabilities=P,
                                                 **dict(kw, unlabeled=np.arange(15, 120)))
    assert capped.details["phase"] == "margin"


def test_typicality_large_data_paths(monkeypatch):
    """k-means fitted on a subsample then assigned, and sampled typicality in huge clusters."""
    import labelloop.select.coverage as coverage

    X, _ = blobs(n_per=40, n_blobs=3, noise=0.05, seed=6)
    monkeypatch.setattr(coverage, "KMEANS_FIT_MIN", 30)
    monkeypatch.setattr(coverage, "KMEANS_FIT_PER_CLUSTER", 1)
    out = typicality_sampling(X, labeled=[], unlabeled=np.arange(120), n=3)
    assert set(out.indices.tolist()) == {0, 40, 80}
    monkeypatch.setattr(coverage, "TYPICALITY_EXACT_MAX", 8)
    out = typicality_sampling(X, labeled=[], unlabeled=np.arange(120), n=40, max_clusters=3)
    blob = out.indices // 40
    assert len(set(out.indices.tolist())) == 40
    assert sorted(np.bincount(blob, minlength=3).tolist()) == [13, 13, 14]  # round robin


# ---------------------------------------------------------------- conflict (labeling functions)
def test_conflict_asks_where_rules_disagree_first_then_by_margin():
    from labelloop.select import conflict_sampling, rule_conflicts

    P = np.array([[0.9, 0.1], [0.8, 0.2], [0.55, 0.45], [0.6, 0.4], [0.7, 0.3], [0.51, 0.49]])
    V = np.array([[1, 1],      # 0: two rules vote different classes (split)
                  [0, 2],      # 1: the rules say class 1, the graph says 0 (disagree)
                  [0, 0],      # 2: no vote, margin 0.10
                  [1, 0],      # 3: rules agree with the graph
                  [0, 0],      # 4
                  [0, 0]])     # 5: no vote, margin 0.02: the most uncertain
    split, disagree = rule_conflicts(P, V)
    assert split.tolist() == [True, False, False, False, False, False]
    assert disagree.tolist() == [False, True, False, False, False, False]   # row 0: a tie, class 0 first
    s = conflict_sampling(P, V, labeled=[], unlabeled=np.arange(6), n=4, class_names=["ham", "spam"])
    # conflicts first, the more uncertain of them first (margin 0.6 < 0.8), then margin order
    assert s.indices.tolist() == [1, 0, 5, 2]
    np.testing.assert_allclose(s.scores, [1 + 0.4, 1 + 0.2, 0.98, 0.9])
    assert s.reasons[0] == "rules say 'spam' (1.00), the graph says 'ham' (0.80)"
    assert s.reasons[1] == "rules disagree (votes: 'ham' 1, 'spam' 1); the graph says 'ham' (0.90)"
    assert s.reasons[2].startswith("no rule conflict left: margin 0.02")
    assert s.details == {"conflicts": 2, "chosen_conflicts": 2}
    # the label model's distribution, when given, decides which class the rules say
    Q = np.zeros((6, 2))
    Q[[0, 1, 3]] = [[0.9, 0.1], [0.3, 0.7], [1.0, 0.0]]
    assert rule_conflicts(P, V, Q)[1].tolist() == [False, True, False, False, False, False]


def test_auto_settles_rule_conflicts_after_the_cold_start():
    X, y = blobs(n_per=40, n_blobs=3, seed=8)
    P = np.eye(3)[y] * 0.6 + 0.4 / 3
    V = np.zeros((120, 3))
    V[[50, 90], 0] = 1                                  # rules say 'a' where the graph says 'b' / 'c'
    lab = np.array([0, 1, 40, 41, 80, 81])
    kw = dict(embeddings=X, labeled=lab, probabilities=P, unlabeled=np.setdiff1d(np.arange(120), lab), n=3,
              class_names=["a", "b", "c"])
    with_rules = Auto().select(rule_votes=V, **kw)
    assert with_rules.details["delegate"] == "conflict+diverse"
    assert set(with_rules.indices[:2].tolist()) == {50, 90}
    assert with_rules.reasons[0].startswith("settling rule conflicts (every class has at least 2 labels): rules say 'a'")
    assert Auto().select(**kw).details["delegate"] == "margin+diverse"               # no rules: as before
    assert Auto(conflict=False).select(rule_votes=V, **kw).details["delegate"] == "margin+diverse"
    # the cold start is not changed by rules
    cold = Auto().select(rule_votes=V, **dict(kw, labeled=lab[:2], labels=y[lab[:2]]))
    assert cold.details["phase"] == "typicality"


def test_rule_inputs_are_validated():
    P = np.full((4, 2), 0.5)
    with pytest.raises(ValidationError, match=r"rule_votes must have shape \(n_items, n_classes\)"):
        get_strategy("conflict").select(n=1, labeled=[], unlabeled=[0, 1], probabilities=P, rule_votes=np.ones((4, 3)))
    with pytest.raises(ValidationError, match="inputs disagree on the number of items"):
        get_strategy("conflict").select(n=1, labeled=[], unlabeled=[0, 1], probabilities=P, rule_votes=np.ones((3, 2)))
    with pytest.raises(ValidationError, match="finite and non-negative"):
        get_strategy("conflict").select(n=1, labeled=[], unlabeled=[0], probabilities=P, rule_votes=-np.ones((4, 2)))
    with pytest.raises(ValidationError, match="labelloop rules add"):
        get_strategy("conflict").select(n=1, labeled=[], unlabeled=[0], probabilities=P)
