"""Label-error audit: injected noise with a known flipped set, closed forms, hand-worked CL."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import labelloop.audit as audit
from labelloop.audit import (
    audit_labels,
    confident_joint,
    confident_learning_issues,
    graph_label_distribution,
    noise_aware_posterior,
    out_of_fold_probabilities,
    smooth_labels,
)
from labelloop.errors import ValidationError
from labelloop.graph import KnnGraph, build_knn_graph, normalize_rows
from labelloop.propagate import affinity_matrix

C_DIGITS = 10


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    X = normalize_rows(d.data)  # raw pixels, L2-normalised
    return X, d.target.astype(np.int64), build_knn_graph(X, k=10)


def inject_symmetric_noise(y: np.ndarray, rate: float, seed: int, n_classes: int):
    """Flip exactly round(rate * n) labels, each to a uniformly drawn OTHER class."""
    rng = np.random.default_rng(seed)
    n = len(y)
    idx = rng.choice(n, int(round(rate * n)), replace=False)
    noisy = y.copy()
    noisy[idx] = (y[idx] + rng.integers(1, n_classes, len(idx))) % n_classes
    flipped = np.zeros(n, dtype=bool)
    flipped[idx] = True
    return noisy, flipped


_OOF: dict = {}


def noisy_case(digits, rate: float, seed: int):
    """Noisy digits labels, the flipped mask and out-of-fold probabilities (computed once)."""
    X, y, _ = digits
    if (rate, seed) not in _OOF:
        noisy, flipped = inject_symmetric_noise(y, rate, seed, C_DIGITS)
        _OOF[(rate, seed)] = noisy, flipped, out_of_fold_probabilities(X, noisy, C_DIGITS)
    return _OOF[(rate, seed)]


def precision_recall(flags: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    tp = int((flags & truth).sum())
    return tp / max(int(flags.sum()), 1), tp / max(int(truth.sum()), 1)


def test_public_surface():
    assert set(audit.__all__) == {
        "AuditResult", "ConfidentJoint", "LabelAudit", "LabelIssue", "audit_labels",
        "confident_joint", "confident_learning_issues", "graph_label_distribution",
        "noise_aware_posterior", "out_of_fold_probabilities", "smooth_labels",
        "decoy_scores_of", "two_groups_p_wrong",
        "Annotations", "AnnotatorStats", "Consensus", "DawidSkeneResult", "annotator_confusion",
        "annotator_report", "as_annotations", "cohen_kappa", "consensus_sample", "dawid_skene",
        "fleiss_kappa", "fleiss_kappa_from_annotations", "honeypot_schedule", "majority_vote",
        "pairwise_cohen_kappa",
    }
    for name in audit.__all__:
        assert getattr(audit, name) is not None


# --------------------------------------------------------------------------- digits, injected noise

# measured on seeds 0-4 (tests print nothing; see benchmarks/label_noise.py for the full study):
#   10 %: precision 0.957-0.978, recall 0.950-1.000;  40 %: precision 0.989-0.997, recall 0.968-0.989
FLOORS = {0.10: (0.92, 0.92), 0.40: (0.95, 0.94)}


@pytest.mark.parametrize("rate", sorted(FLOORS))
def test_audit_finds_injected_noise_on_digits(digits, rate):
    X, y, graph = digits
    noisy, flipped = inject_symmetric_noise(y, rate, seed=0, n_classes=C_DIGITS)
    res = audit_labels(X, graph, noisy, C_DIGITS)  # default head: 5-fold logistic regression
    _OOF[(rate, 0)] = noisy, flipped, res.classifier_proba
    p, r = precision_recall(res.flagged, flipped)
    p_floor, r_floor = FLOORS[rate]
    assert p >= p_floor, f"precision {p:.3f} < {p_floor}"
    assert r >= r_floor, f"recall {r:.3f} < {r_floor}"
    # the estimated noise rate is close to the injected one
    assert res.noise_rate == pytest.approx(rate, abs=0.03)
    # suggestions for the flagged flipped items are mostly the true class
    hit = res.flagged & flipped
    assert (res.suggested[hit] == y[hit]).mean() >= 0.95
    # issues are sorted by score, carry their evidence, and match the flag mask
    assert [i.item for i in res.issues] == sorted(np.flatnonzero(res.flagged), key=lambda i: -res.scores[i])
    scores = [i.score for i in res.issues]
    assert scores == sorted(scores, reverse=True)
    first = res.issues[0]
    assert first.given_label == noisy[first.item] and first.suggested_label != first.given_label
    assert all(noisy[j] == lab != first.given_label for j, lab in zip(first.evidence, first.evidence_labels))
    assert set(first.evidence) <= set(graph.indices[first.item].tolist())
    assert 0.0 <= first.graph_score <= 1.0 and 0.0 <= first.classifier_score <= 1.0


def test_smoothed_labels_recover_truth_at_half_noise(digits):
    X, y, graph = digits
    noisy, _ = inject_symmetric_noise(y, 0.5, seed=1, n_classes=C_DIGITS)
    smoothed = smooth_labels(graph, noisy).argmax(axis=1)
    # measured 0.97+ (noisy labels: 0.50); neighbours alone with the clean labels: ~0.98
    assert (smoothed == y).mean() >= 0.95


def test_confirmed_item_is_not_flagged_again_for_the_same_label(digits):
    X, y, graph = digits
    noisy, _, P = noisy_case(digits, 0.1, 0)
    first = audit_labels(X, graph, noisy, C_DIGITS, classifier=P)
    confirmed_issue = first.issues[0]
    item = confirmed_issue.item
    assert confirmed_issue.fingerprint == (noisy[item], confirmed_issue.suggested_label)
    # the person says "the label is right": same label, same evidence -> not raised again
    again = audit_labels(X, graph, noisy, C_DIGITS, classifier=P,
                         confirmed={(item, int(noisy[item]))})
    assert item not in {i.item for i in again.issues}
    assert again.n_confirmed_skipped == 1
    assert again.flagged[item]  # the model still thinks so; only the review queue skips it
    assert len(again.issues) == len(first.issues) - 1
    # a dict {item: label} works the same way
    as_dict = audit_labels(X, graph, noisy, C_DIGITS, classifier=P, confirmed={item: int(noisy[item])})
    assert [i.item for i in as_dict.issues] == [i.item for i in again.issues]
    # if the given label changes, the old confirmation no longer applies
    relabeled = noisy.copy()
    relabeled[item] = (noisy[item] + 1) % C_DIGITS
    if relabeled[item] == y[item]:
        relabeled[item] = (noisy[item] + 2) % C_DIGITS
    third = audit_labels(X, graph, relabeled, C_DIGITS, classifier=P,
                         confirmed={(item, int(noisy[item]))})
    assert item in {i.item for i in third.issues}


def test_unlabeled_items_are_not_audited(digits):
    X, y, graph = digits
    labels = y.copy()
    labels[::3] = -1
    res = audit_labels(X, graph, labels, C_DIGITS)
    assert np.isnan(res.scores[::3]).all()
    assert not res.flagged[::3].any()
    # they still get a suggestion from the graph and the classifier
    assert (res.suggested[::3] == y[::3]).mean() > 0.9


# --------------------------------------------------------------------------- graph signal


def _toy_graph(seed: int = 0, n: int = 40, k: int = 5) -> KnnGraph:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    X[: n // 2] += 3.0
    return build_knn_graph(X, k=k)


def test_graph_distribution_matches_closed_form():
    graph = _toy_graph()
    rng = np.random.default_rng(1)
    y = rng.integers(-1, 3, graph.n)
    y[:3] = [0, 1, 2]
    T, alpha, steps = 0.05, 0.9, 20
    S = affinity_matrix(graph, temperature=T).toarray().astype(np.float64)
    Y0 = np.zeros((graph.n, 3))
    Y0[y >= 0, y[y >= 0]] = 1.0
    # F_T = (alpha S)^T Y0 + (1 - alpha) sum_{t<T} (alpha S)^t Y0
    F, term = np.zeros_like(Y0), Y0.copy()
    for _ in range(steps):
        F += (1 - alpha) * term
        term = alpha * S @ term
    F += term
    self_dist = F / F.sum(axis=1, keepdims=True)
    nbr = S @ F
    nbr_dist = nbr / nbr.sum(axis=1, keepdims=True)
    got_self = graph_label_distribution(graph, y, 3, temperature=T, alpha=alpha, n_iter=steps, exclude_self=False)
    got_nbr = graph_label_distribution(graph, y, 3, temperature=T, alpha=alpha, n_iter=steps)
    np.testing.assert_allclose(got_self, self_dist, atol=1e-5)
    np.testing.assert_allclose(got_nbr, nbr_dist, atol=1e-5)


def test_a_larger_shared_graph_is_truncated_to_k():
    rng = np.random.default_rng(4)
    X = rng.normal(size=(60, 5))
    y = rng.integers(0, 3, 60)
    big, small = build_knn_graph(X, k=20), build_knn_graph(X, k=10)
    np.testing.assert_allclose(graph_label_distribution(big, y, 3), graph_label_distribution(small, y, 3))
    a = audit.LabelAudit(classifier="none").run(None, big, y, 3)
    b = audit_labels(None, small, y, 3, classifier="none")
    np.testing.assert_array_equal(a.flagged, b.flagged)
    assert a.params["k"] == 10
    wide = graph_label_distribution(big, y, 3, k=None)
    assert not np.allclose(wide, graph_label_distribution(small, y, 3))


def test_own_label_does_not_vote_for_itself_in_one_step():
    graph = _toy_graph(2)
    y = np.zeros(graph.n, dtype=np.int64)
    y[graph.n // 2:] = 1
    flipped = y.copy()
    flipped[0] = 1
    # one step, neighbours only: item 0's distribution ignores its own label entirely
    a = graph_label_distribution(graph, y, 2, n_iter=1)
    b = graph_label_distribution(graph, flipped, 2, n_iter=1)
    # (S F_1)_0 does contain item 0's label through 2-step return paths; with n_iter=0 it does not
    a0 = graph_label_distribution(graph, y, 2, n_iter=0)
    b0 = graph_label_distribution(graph, flipped, 2, n_iter=0)
    np.testing.assert_allclose(a0[0], b0[0], atol=1e-7)
    assert b[0, 1] > a[0, 1]  # the return paths are small but real


# --------------------------------------------------------------------------- confident learning


def test_confident_joint_hand_example():
    # 6 items, 2 classes. thresholds: t_0 = mean(p_0 | g=0) = (.9+.8+.3)/3 = 2/3,
    #                                 t_1 = mean(p_1 | g=1) = (.9+.6+.2)/3 = 17/30
    labels = np.array([0, 0, 0, 1, 1, 1])
    P = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.1, 0.9], [0.4, 0.6], [0.8, 0.2]])
    cj = confident_joint(labels, P)
    np.testing.assert_allclose(cj.thresholds, [2 / 3, 17 / 30])
    # item 2 (g=0): p_1 = .7 >= 17/30 -> counts[0, 1]; item 4 (g=1): p_1 = .6 >= .567 -> [1, 1];
    # item 5 (g=1): p_0 = .8 >= 2/3 -> [1, 0]
    np.testing.assert_array_equal(cj.counts, [[2, 1], [1, 2]])
    np.testing.assert_allclose(cj.joint, [[2, 1], [1, 2]])  # rows already sum to 3 items each
    assert cj.noise_rate == pytest.approx(2 / 6)
    flags, score = confident_learning_issues(labels, P)
    # prune by noise rate: one item per off-diagonal cell, the largest margin -> items 2 and 5
    assert np.flatnonzero(flags).tolist() == [2, 5]
    np.testing.assert_allclose(score, [-0.8, -0.6, 0.4, -0.8, -0.2, 0.6])


def test_confident_joint_calibration_and_unlabeled():
    labels = np.array([0, 0, 0, 0, 1, 1, -1])
    P = np.array([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.5, 0.5], [0.1, 0.9], [0.2, 0.8], [0.5, 0.5]])
    cj = confident_joint(labels, P)
    # t_0 = (.9+.9+.1+.5)/4 = .6, t_1 = (.9+.8)/2 = .85 (the unlabeled row is ignored);
    # items 3 and 5 reach no threshold -> not counted; row 0 counts [2, 1] rescaled to the
    # 4 items labeled 0 -> [8/3, 4/3]; row 1 counts [0, 1] rescaled to 2 -> [0, 2]
    np.testing.assert_allclose(cj.joint[0], [8 / 3, 4 / 3])
    np.testing.assert_allclose(cj.joint[1], [0, 2])
    np.testing.assert_allclose(cj.noise_matrix.sum(axis=1), 1.0)


def test_noise_aware_posterior_is_bayes_rule():
    labels = np.array([0, 1])
    P = np.array([[0.6, 0.4], [0.5, 0.5]])
    N = np.array([[0.9, 0.1], [0.2, 0.8]])  # [true, given]
    post, beta = noise_aware_posterior(labels, P, N, betas=[1.0])
    assert beta == 1.0
    pi = P @ np.linalg.inv(N)  # P(true | x) = P(given | x) N^-1 (both rows stay positive here)
    pi /= pi.sum(axis=1, keepdims=True)
    expect = pi * N[:, labels].T
    expect /= expect.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(post, expect, atol=1e-9)


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 5))
def test_posterior_rows_are_distributions(seed, C):
    rng = np.random.default_rng(seed)
    n = 30
    P = rng.dirichlet(np.ones(C), n)
    labels = rng.integers(-1, C, n)
    labels[:C] = np.arange(C)
    cj = confident_joint(labels, P)
    post, beta = noise_aware_posterior(labels, P, cj.noise_matrix)
    assert np.all(post >= 0)
    np.testing.assert_allclose(post.sum(axis=1), 1.0, atol=1e-9)
    assert 0.25 <= beta <= 16.0
    assert 0.0 <= cj.noise_rate <= 1.0


def test_out_of_fold_probabilities_never_see_their_item():
    # a mislabeled item deep inside the other cluster: a model that had seen it could fit its
    # label; out of fold it is predicted from its neighbours' class only
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(0, 0.1, (30, 2)) + [2, 0], rng.normal(0, 0.1, (30, 2)) - [2, 0]])
    y = np.array([0] * 30 + [1] * 30)
    y[0] = 1  # a mislabeled item deep in class 0
    P = out_of_fold_probabilities(X, y, 2, n_folds=5)
    assert P[0, 1] < 0.5  # out of fold, its own (wrong) label cannot pull it over
    np.testing.assert_allclose(P.sum(axis=1), 1.0)


# --------------------------------------------------------------------------- smoothing, errors


def test_trusted_labels_survive_smoothing():
    graph = _toy_graph(3)
    y = np.zeros(graph.n, dtype=np.int64)
    y[graph.n // 2:] = 1
    odd = y.copy()
    odd[0] = 1  # a human says item 0 (inside cluster 0) is class 1
    trust = np.ones(graph.n)
    assert smooth_labels(graph, odd, trust).argmax(axis=1)[0] == 0  # soft: outvoted
    trust[0] = 1000.0
    assert smooth_labels(graph, odd, trust).argmax(axis=1)[0] == 1  # high trust: kept


def test_validation_errors(digits):
    X, y, graph = digits
    with pytest.raises(ValidationError, match="shape"):
        audit_labels(X, graph, y[:-1], C_DIGITS)
    with pytest.raises(ValidationError, match="class id"):
        audit_labels(X, graph, np.full_like(y, 12), C_DIGITS)
    with pytest.raises(ValidationError, match="unknown classifier"):
        audit_labels(X, graph, y, C_DIGITS, classifier="forest")
    with pytest.raises(ValidationError, match="needs embeddings"):
        audit_labels(None, graph, y, C_DIGITS)
    with pytest.raises(ValidationError, match="must have shape"):
        audit_labels(X, graph, y, C_DIGITS, classifier=np.ones((3, 3)))
    with pytest.raises(ValidationError, match="confirmed"):
        audit_labels(X, graph, y, C_DIGITS, classifier="none", confirmed=[1, 2])
    with pytest.raises(ValidationError, match="trust"):
        smooth_labels(graph, y, np.ones(3))


def test_a_prior_that_people_are_usually_right_lowers_p_wrong():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(40, 8)) + 4 * np.eye(8)[0], rng.normal(size=(40, 8)) + 4 * np.eye(8)[1]])
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.r_[np.zeros(40, int), np.ones(40, int)]
    y[3] = 1  # one label its neighbourhood contradicts
    g = build_knn_graph(X, k=10)
    plain = audit_labels(X, g, y, 2, classifier="none")
    trusted = audit_labels(X, g, y, 2, classifier="none", label_accuracy=np.full(80, 0.99))
    doubted = audit_labels(X, g, y, 2, classifier="none", label_accuracy=np.full(80, 0.6))
    assert doubted.scores[3] > trusted.scores[3]
    assert trusted.scores[3] <= plain.scores[3] + 1e-9 or trusted.scores[3] < 0.99
    assert np.nanmean(trusted.scores) <= np.nanmean(doubted.scores)
    with pytest.raises(ValidationError, match="label_accuracy"):
        audit_labels(X, g, y, 2, classifier="none", label_accuracy=np.full(80, 1.5))


def _weak_blobs(seed: int, *, C: int = 20, per: int = 60, dim: int = 16, sep: float = 0.4, labeled: int = 20):
    """Overlapping Gaussian classes (a classifier is 30-60 % accurate) with clean labels on
    ``labeled`` random items per class."""
    rng = np.random.default_rng(seed)
    yt = np.repeat(np.arange(C), per)
    X = normalize_rows(rng.normal(size=(C, dim))[yt] * sep + rng.normal(size=(yt.size, dim)))
    lab = np.concatenate([rng.choice(np.flatnonzero(yt == c), labeled, replace=False) for c in range(C)])
    y = np.full(yt.size, -1)
    y[lab] = yt[lab]
    return X, y, lab, C


@pytest.mark.parametrize("sep", [0.4, 0.6])
def test_clean_human_labels_on_weak_features_are_not_certain_errors(sep):
    # before the decoy calibration 8-15 % of these correct labels scored P(wrong) >= 0.9 (a model
    # 30-60 % accurate overturned a 0.95 prior on one disagreement)
    X, y, lab, C = _weak_blobs(0, sep=sep)
    res = audit_labels(X, build_knn_graph(X, k=10), y, C, label_accuracy=np.where(y >= 0, 0.95, np.nan))
    assert (res.scores[lab] >= 0.9).mean() < 0.01
    assert res.params["decoys"] == lab.size  # every human label carried a decoy once
    np.testing.assert_allclose(res.posterior[lab, y[lab]], 1.0 - res.scores[lab])  # one probability
    assert np.array_equal(res.flagged[lab], res.scores[lab] > 0.5)


def test_two_groups_p_wrong_by_hand():
    from labelloop.audit import two_groups_p_wrong

    # decoys all score 0.9; observed: 8 low (0.1) and 2 at 0.9 -> f0/f at 0.9 = (10/10) / (2/10) = 5
    obs = np.array([0.1] * 8 + [0.9] * 2)
    p = two_groups_p_wrong(obs, np.full(10, 0.95), np.full(10, 0.9))
    np.testing.assert_allclose(p, [0.0] * 8 + [0.05 * 5] * 2)
    # a weak model: decoys and correct labels score alike -> nobody is likely wrong
    rng = np.random.default_rng(0)
    same = two_groups_p_wrong(rng.uniform(size=500), np.full(500, 0.95), rng.uniform(size=500))
    assert same.max() < 0.5


def test_planted_decoys_flag_real_errors_on_strong_features(digits):
    X, y, graph = digits
    rng = np.random.default_rng(1)
    noisy = y.copy()
    lab = rng.choice(len(y), 400, replace=False)
    flip = lab[:20]
    noisy[flip] = (y[flip] + 1 + rng.integers(0, C_DIGITS - 1, flip.size)) % C_DIGITS
    labels = np.full(len(y), -1)
    labels[lab] = noisy[lab]
    res = audit_labels(X, graph, labels, C_DIGITS, classifier="none", label_accuracy=np.where(labels >= 0, 0.95, np.nan))
    top = lab[np.argsort(-res.scores[lab])[:20]]
    assert np.isin(top, flip).mean() >= 0.6  # the most suspicious are mostly the planted errors
    assert res.scores[flip].mean() > 10 * res.scores[lab[20:]].mean()


def test_decoys_are_planted_once_each_in_capped_rounds():
    from labelloop.audit import decoy_scores_of

    y = np.repeat(np.arange(4), 25)
    seen, calls = [], []

    def score(yy):  # the planted rows are the ones whose label changed; score = 1 there
        calls.append(1)
        seen.append(np.flatnonzero(yy != y))
        return (yy != y).astype(float)

    rows, s = decoy_scores_of(y, np.arange(100), 4, score, max_decoys=60)
    assert len(calls) == 20 and rows.size == 60 and np.all(s == 1.0)  # 5 % of 60 = 3 per round
    assert np.array_equal(np.sort(np.concatenate(seen)), np.sort(rows))  # each planted exactly once
    calls.clear()
    decoy_scores_of(y, np.arange(100), 4, score, max_rounds=2)
    assert len(calls) == 2
