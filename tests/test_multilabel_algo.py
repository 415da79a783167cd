"""Multi-label algorithms (labelloop.loop.multilabel): propagation one-vs-rest, calibration,
certification per (class, side), accepted pairs, choice of items, audit."""

from __future__ import annotations

import numpy as np
import pytest

from labelloop.errors import ValidationError
from labelloop.graph import build_knn_graph
from labelloop.loop.multilabel import (
    ClassBar,
    MultiLabelPrediction,
    accepted_pairs,
    audit_multilabel,
    certify_multilabel,
    check_decisions,
    choose_multilabel,
    predict_multilabel,
    propagate_multilabel,
)
from labelloop.propagate import LabelPropagation, affinity_matrix


def blobs(n=600, C=3, p=0.3, seed=0, spread=1.0):
    """Items whose embedding is the sum of the centres of the classes they carry, plus noise:
    (X, true (n, C) bool)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(C, 8)) * 3
    T = rng.random((n, C)) < p
    X = T.astype(float) @ centres + spread * rng.normal(size=(n, 8))
    return X, T


def decisions(T, rows):
    Y = np.full(T.shape, -1, np.int8)
    Y[rows] = T[rows]
    return Y


@pytest.fixture(scope="module")
def easy():
    X, T = blobs(n=900, C=3)
    g = build_knn_graph(X, k=10)
    rows = np.random.default_rng(1).choice(len(T), 300, replace=False)
    Y = decisions(T, rows)
    return X, T, g, Y, predict_multilabel(g, Y)


def test_batched_propagation_equals_one_two_class_propagation_per_class():
    X, T = blobs(n=300, C=3, seed=2)
    S = affinity_matrix(build_knn_graph(X, k=8))
    rng = np.random.default_rng(0)
    Y = np.full(T.shape, -1, np.int8)
    Y[rng.choice(300, 40, replace=False)] = T[rng.choice(300, 40, replace=False)]
    Y[rng.choice(300, 30, replace=False), 1] = 1  # partly decided items: class 1 only
    raw, reached = propagate_multilabel(S, Y, n_iter=50, tol=0.0)
    for c in range(3):
        y = np.where(Y[:, c] == 1, 0, np.where(Y[:, c] == 0, 1, -1))  # class 0 "applies", 1 "does not"
        q = ((Y[:, c] == 1).sum() + 1) / ((Y[:, c] >= 0).sum() + 2)
        lp = LabelPropagation(n_iter=50, tol=0.0, class_prior=np.array([q, 1 - q])).fit(S, y, n_classes=2)
        np.testing.assert_allclose(raw[:, c], lp.label_distributions_[:, 0], atol=1e-5)
    assert reached.all()


def test_two_separate_clusters_get_the_classes_of_their_own_decisions():
    # cluster A carries class 0, cluster B class 1; both carry class 2; one decided item each
    rng = np.random.default_rng(0)
    X = np.r_[rng.normal(size=(40, 4)) + [10, 0, 0, 0], rng.normal(size=(40, 4)) + [0, 10, 0, 0]]
    g = build_knn_graph(X, k=5)
    Y = np.full((80, 3), -1, np.int8)
    Y[[0, 1, 2]] = [1, 0, 1]
    Y[[40, 41, 42]] = [0, 1, 1]
    pred = predict_multilabel(g, Y)
    A, B = np.arange(3, 40), np.arange(43, 80)
    assert (pred.scores[A, 0] > 0.5).all() and (pred.scores[B, 0] < 0.5).all()
    assert (pred.scores[A, 1] < 0.5).all() and (pred.scores[B, 1] > 0.5).all()
    assert (pred.scores[:, 2] > 0.5).all()
    assert pred.reached.all()


def test_shapes_and_the_decision_contract(easy):
    X, T, g, Y, pred = easy
    n, C = Y.shape
    assert isinstance(pred, MultiLabelPrediction)
    assert pred.scores.shape == (n, C) and pred.scores.dtype == np.float32
    assert pred.reached.shape == (n,) and pred.reached.dtype == bool
    assert ((pred.scores >= 0) & (pred.scores <= 1)).all()
    decided = Y >= 0
    np.testing.assert_array_equal(pred.scores[decided], Y[decided])  # a person's decision stands
    assert pred.heldout_scores.shape == (len(pred.heldout_rows), C)
    assert (Y[pred.heldout_rows] >= 0).any(axis=1).all()
    # the calibrated scores separate: most undecided pairs right at 0.5
    u = ~decided
    assert ((pred.scores >= 0.5) == T)[u].mean() > 0.9


def test_bad_decisions_are_refused_with_the_item_and_the_fix():
    with pytest.raises(ValidationError, match="item row 1, class 2 is 2"):
        check_decisions(np.array([[0, 1, -1], [1, 0, 2]]))
    with pytest.raises(ValidationError, match="2-D"):
        check_decisions(np.array([1, 0]))
    X, T = blobs(n=50, C=2)
    g = build_knn_graph(X, k=5)
    with pytest.raises(ValidationError, match="one row per graph item"):
        predict_multilabel(g, np.full((49, 2), -1))


def test_no_decisions_at_all_gives_the_prior_and_nothing_certified():
    X, _ = blobs(n=60, C=2)
    Y = np.full((60, 2), -1, np.int8)
    pred = predict_multilabel(build_knn_graph(X, k=5), Y)
    assert not pred.reached.any()
    np.testing.assert_allclose(pred.scores, 0.5)
    bars = certify_multilabel(pred, Y)
    assert all(b.upper is None and b.lower is None for b in bars)
    assert accepted_pairs(pred, Y, bars).shape == (0, 3)


def test_certify_refuses_with_a_reason_when_too_few_decisions():
    X, T = blobs(n=400, C=2, seed=3)
    g = build_knn_graph(X, k=10)
    Y = decisions(T, np.random.default_rng(0).choice(400, 12, replace=False))
    pred = predict_multilabel(g, Y)
    bars = certify_multilabel(pred, Y, class_names=["urgent", "billing"])
    assert [b.cls for b in bars] == [0, 1]
    for b in bars:
        assert isinstance(b, ClassBar)
        assert b.upper is None and b.lower is None
        assert b.checked <= 12
        assert b.name in b.reason and "label" in b.reason
        assert b.to_dict()["upper"] is None
    assert any(b.more_needed is not None and b.more_needed > 0 for b in bars)
    assert "class urgent" in bars[0].reason


def test_certified_bars_hold_on_the_undecided_pairs(easy):
    X, T, g, Y, pred = easy
    bars = certify_multilabel(pred, Y, target_precision=0.9)
    assert any(b.upper is not None for b in bars) and any(b.lower is not None for b in bars)
    for b in bars:
        if b.upper is not None:
            assert b.precision_lower_bound >= 0.9 and b.precision_estimate >= 0.9
        if b.lower is not None:
            assert b.negative_precision_lower_bound >= 0.9
    acc = accepted_pairs(pred, Y, bars)
    assert acc.shape[1] == 3 and acc.dtype == np.int64 and len(acc) > 0
    realised = (acc[:, 2] == T[acc[:, 0], acc[:, 1]]).mean()
    assert realised >= 0.9


def test_only_random_rows_count_when_given(easy):
    X, T, g, Y, pred = easy
    none_random = np.zeros(len(Y), bool)
    bars = certify_multilabel(pred, Y, random_rows=none_random)
    assert all(b.upper is None and b.lower is None and b.checked == 0 for b in bars)


def test_accepted_pairs_never_touch_decided_pairs(easy):
    X, T, g, Y, pred = easy
    # bars that would accept everything: only undecided pairs may come back
    bars = [ClassBar(cls=c, upper=0.0, lower=None, checked=0, precision_estimate=1.0,
                     precision_lower_bound=1.0, more_needed=None, reason="") for c in range(Y.shape[1])]
    acc = accepted_pairs(pred, Y, bars)
    assert len(acc) == int((Y < 0).sum())
    assert (Y[acc[:, 0], acc[:, 1]] == -1).all()
    assert (acc[:, 2] == 1).all()


def test_choose_never_returns_fully_decided_items(easy):
    X, T, g, Y, pred = easy
    Y = Y.copy()
    Y[:850] = np.where(Y[:850] < 0, T[:850], Y[:850])  # all but the last 50 items fully decided
    Y[860, 0] = 1  # partly decided: still eligible
    rows = choose_multilabel(pred, Y, 10, seed=0)
    assert len(rows) == 10 and len(set(rows.tolist())) == 10
    assert ((Y[rows] < 0).any(axis=1)).all()
    diverse = choose_multilabel(pred, Y, 10, X=X, seed=0)
    assert len(diverse) == 10 and ((Y[diverse] < 0).any(axis=1)).all()
    left = int((Y < 0).any(axis=1).sum())
    assert left < 60
    assert len(choose_multilabel(pred, Y, 500)) == left  # fewer items left than asked


def test_choose_prefers_uncertain_items(easy):
    X, T, g, Y, pred = easy
    rows = choose_multilabel(pred, Y, 20)
    open_ = Y < 0
    p = np.clip(pred.scores.astype(np.float64), 1e-9, 1 - 1e-9)
    H = (-(p * np.log(p) + (1 - p) * np.log(1 - p)) * open_).sum(axis=1)
    eligible = open_.any(axis=1)
    assert H[rows].mean() > np.median(H[eligible])


def test_audit_ranks_an_injected_wrong_decision_first(easy):
    X, T, g, Y, pred = easy
    Y = Y.copy()
    # the item whose held-out class-0 score agrees most confidently with its decision
    agree = np.where(pred.heldout_decisions[:, 0] == 1, pred.heldout_scores[:, 0], 1 - pred.heldout_scores[:, 0])
    i = int(pred.heldout_rows[np.argmax(agree)])
    Y[i, 0] = 1 - Y[i, 0]
    pred2 = predict_multilabel(g, Y)
    out = audit_multilabel(pred2, Y)
    assert out.shape[1] == 3
    assert (int(out[0, 0]), int(out[0, 1])) == (i, 0)
    assert (np.diff(out[:, 2]) <= 0).all()
    assert (out[:, 2] < 1.0).all()


def test_audit_does_not_flag_correct_decisions_with_certainty(easy):
    X, T, g, Y, pred = easy
    out = audit_multilabel(pred, Y)
    assert (out[:, 2] < 0.99).all()  # the prior that people are right keeps p_wrong below certainty
    # the few flagged among clean decisions stay a small share
    assert len(out) <= 0.05 * int((Y >= 0).sum())
    with pytest.raises(ValidationError, match="label_accuracy"):
        audit_multilabel(pred, Y, label_accuracy=1.0)


# --------------------------------------------------------------------------- the multi-label dataset


def test_wordnet_senses_reader_on_a_hand_written_index(tmp_path):
    from labelloop.datasets import read_wordnet_noun_senses

    data = tmp_path / "data.noun"
    data.write_text("  1 licence line\n"
                    "00000010 06 n 01 bank 0 000 | sloping land\n"
                    "00000020 14 n 01 bank 0 000 | a financial institution\n"
                    "00000030 06 n 01 bank 0 000 | a building\n"
                    "00000040 05 n 01 dog 0 000 | a canine\n")
    index = tmp_path / "index.noun"
    index.write_text("  1 licence line\n"
                     "bank n 3 1 @ 3 0 00000010 00000020 00000030\n"
                     "dog n 1 1 @ 1 0 00000040\n"
                     "river_bank n 2 0 2 0 00000010 00000030\n")
    texts, senses = read_wordnet_noun_senses(index, data)
    assert texts == ["bank", "river bank"]  # monosemous lemmas are left out
    assert senses == [[3, 11], [3]]  # lex_filenum - 3: artifact, group
    index.write_text("bank n 3 1 @ 3 0 00000010 00000099 00000030\n")
    with pytest.raises(ValidationError, match="index.noun:1"):
        read_wordnet_noun_senses(index, data)


def test_wordnet_multilabel_dataset():
    from labelloop.datasets import WORDNET_DIR, load_multilabel_dataset

    if not (WORDNET_DIR / "index.noun").exists():
        pytest.skip("WordNet is not installed (apt-get install -y wordnet-base)")
    ds = load_multilabel_dataset("wordnet-nouns-multilabel", n=2000, seed=1)
    assert len(ds) == 2000 and ds.labels.shape == (2000, 24) and ds.labels.dtype == np.int8
    assert ds.labels.any(axis=1).all() and (ds.labels.sum(axis=1) >= 2).mean() > 0.5
    assert "artifact" in ds.class_names and "Tops" not in ds.class_names
    # the text is the lemma: no class name is spelt out in it as a label would be
    assert all(isinstance(t, str) and ":" not in t for t in ds.items)
    with pytest.raises(ValidationError, match="unknown multi-label dataset"):
        load_multilabel_dataset("nope")


# --------------------------------------------------------------------------- thresholds and the head


def test_the_head_weight_follows_the_evidence():
    # the graph is built on noise, the embeddings carry the classes: auto leans on the head
    X, T = blobs(n=400, C=2, seed=5)
    noise = np.random.default_rng(1).normal(size=X.shape)
    rows = np.random.default_rng(2).choice(400, 120, replace=False)
    Y = decisions(T, rows)
    pred = predict_multilabel(build_knn_graph(noise, k=10), Y, X=X)
    assert pred.head_weight >= 0.5
    u = Y < 0
    assert (pred.labels() == T)[u].mean() > 0.9
    # and the other way round: informative graph, noise embeddings -> little or no head
    pred = predict_multilabel(build_knn_graph(X, k=10), Y, X=noise)
    assert pred.head_weight <= 0.25
    assert predict_multilabel(build_knn_graph(X, k=10), Y, X=noise, head_weight=0).head_weight == 0


def test_digit_pairs_dataset_labels_are_the_digits_shown():
    from sklearn.datasets import load_digits

    from labelloop.datasets import load_multilabel_dataset

    ds = load_multilabel_dataset("digits-pairs-multilabel", n=50, seed=0)
    assert len(ds) == 50 and ds.labels.shape == (50, 10) and ds.modality == "image"
    assert set(ds.labels.sum(axis=1).tolist()) <= {1, 2}
    img = np.asarray(ds.items[0])
    assert img.shape == (8, 16)
    # each half is one of scikit-learn's digits, of a class the label set holds
    d = load_digits()
    ref = np.rint(d.images * (255.0 / 16.0)).astype(np.uint8)
    for half in (img[:, :8], img[:, 8:]):
        match = np.flatnonzero((ref == half).all(axis=(1, 2)))
        assert match.size and ds.labels[0, d.target[match[0]]] == 1


def test_prediction_round_trips_through_array_files(easy, tmp_path):
    X, T, g, Y, pred = easy
    for name, arr in pred.arrays().items():
        np.save(tmp_path / f"{name}.npy", arr)
    back = MultiLabelPrediction.from_arrays({p.stem: np.load(p) for p in tmp_path.glob("*.npy")})
    np.testing.assert_array_equal(back.scores, pred.scores)
    np.testing.assert_array_equal(back.labels(), pred.labels())
    assert back.calibration.slope == pred.calibration.slope
    a = [b.to_dict() for b in certify_multilabel(pred, Y)]
    assert a == [b.to_dict() for b in certify_multilabel(back, Y)]
    np.testing.assert_array_equal(audit_multilabel(back, Y), audit_multilabel(pred, Y))


def test_predicted_sets_hold_about_the_labeled_share():
    # even with one positive per class (never held out: no held-out bar could be fitted)
    X, T = blobs(n=300, C=3, seed=7)
    rows = [int(np.flatnonzero(T[:, c])[0]) for c in range(3)] + [int(i) for i in np.flatnonzero(~T.any(axis=1))[:9]]
    Y = decisions(T, np.unique(rows))
    pred = predict_multilabel(build_knn_graph(X, k=10), Y)
    share = pred.labels()[(Y < 0).all(axis=1)].mean(axis=0)  # (C,) predicted share among undecided items
    q = ((Y == 1).sum(0) + 1) / ((Y >= 0).sum(0) + 2)
    np.testing.assert_allclose(share, q, atol=0.05)
    known = np.array([0.3, 0.2, 0.1])  # a share known from elsewhere wins
    pred = predict_multilabel(build_knn_graph(X, k=10), Y, positive_share=known)
    np.testing.assert_allclose(pred.labels()[(Y < 0).all(axis=1)].mean(axis=0), known, atol=0.05)
    with pytest.raises(ValidationError, match="positive_share"):
        predict_multilabel(build_knn_graph(X, k=10), Y, positive_share=[0.3, 0.2])
