"""Annotator quality: kappas against hand-worked examples, Dawid–Skene against brute force."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from labelloop.audit.annotators import (
    Annotations,
    annotator_confusion,
    annotator_report,
    as_annotations,
    cohen_kappa,
    consensus_sample,
    dawid_skene,
    fleiss_kappa,
    fleiss_kappa_from_annotations,
    honeypot_schedule,
    majority_vote,
    pairwise_cohen_kappa,
)
from labelloop.errors import ValidationError

# Wikipedia, "Fleiss' kappa", worked example: 10 subjects, 14 raters, 5 categories -> 0.210
FLEISS_TABLE = np.array(
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
)


def _wikipedia_cohen_pair() -> tuple[np.ndarray, np.ndarray]:
    """Wikipedia, "Cohen's kappa": 50 items; yes/yes 20, yes/no 5, no/yes 10, no/no 15."""
    yes, no = 1, 0
    cells = [((yes, yes), 20), ((yes, no), 5), ((no, yes), 10), ((no, no), 15)]
    pairs = [pair for pair, n in cells for _ in range(n)]
    a, b = np.array(pairs).T
    return a, b


# --------------------------------------------------------------------------- kappas


def test_cohen_kappa_wikipedia_example():
    a, b = _wikipedia_cohen_pair()
    # p_o = 35/50 = 0.7; p_e = 0.5*0.6 + 0.5*0.4 = 0.5; kappa = 0.2 / 0.5 = 0.4
    assert cohen_kappa(a, b) == pytest.approx(0.4, abs=1e-12)


def test_cohen_kappa_perfect_and_undefined():
    assert cohen_kappa([0, 1, 2, 1], [0, 1, 2, 1]) == pytest.approx(1.0)
    assert math.isnan(cohen_kappa([1, 1, 1], [1, 1, 1]))  # p_e = 1: undefined
    assert math.isnan(cohen_kappa([], []))
    with pytest.raises(ValidationError):
        cohen_kappa([0, 1], [0])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3)), min_size=2, max_size=40))
def test_cohen_kappa_matches_sklearn(pairs):
    from sklearn.metrics import cohen_kappa_score

    a, b = np.array(pairs).T
    ours = cohen_kappa(a, b)
    if len(set(a) | set(b)) == 1:  # both raters used a single class: kappa undefined
        assert math.isnan(ours)
    else:
        assert ours == pytest.approx(cohen_kappa_score(a, b), abs=1e-9)


def test_fleiss_kappa_wikipedia_example():
    # P_bar = 0.378, P_e = 0.213 -> kappa = 0.210 (Wikipedia rounds to 3 decimals)
    kappa = fleiss_kappa(FLEISS_TABLE)
    assert kappa == pytest.approx(0.20993, abs=5e-5)
    assert round(kappa, 3) == 0.210


def test_fleiss_kappa_from_annotations_matches_count_table():
    rows = []
    for item, counts in enumerate(FLEISS_TABLE):
        rater = 0
        for c, n in enumerate(counts):
            for _ in range(n):
                rows.append((f"s{item}", f"r{rater}", c))
                rater += 1
    assert fleiss_kappa_from_annotations(rows) == pytest.approx(fleiss_kappa(FLEISS_TABLE), abs=1e-12)


def test_fleiss_two_raters_is_scotts_pi():
    # with 2 raters per item Fleiss' kappa is Scott's pi: pooled marginals yes .55 / no .45,
    # p_e = .55^2 + .45^2 = .505, pi = (.7 - .505) / (1 - .505) = 0.39394
    a, b = _wikipedia_cohen_pair()
    counts = np.zeros((len(a), 2))
    np.add.at(counts, (np.arange(len(a)), a), 1)
    np.add.at(counts, (np.arange(len(b)), b), 1)
    assert fleiss_kappa(counts) == pytest.approx((0.7 - 0.505) / 0.495, abs=1e-12)


def test_fleiss_unequal_raters_drops_single_ratings():
    extra = np.vstack([FLEISS_TABLE, [[0, 1, 0, 0, 0], [0, 0, 0, 0, 0]]])  # 1 and 0 raters
    assert fleiss_kappa(extra) == pytest.approx(fleiss_kappa(FLEISS_TABLE), abs=1e-12)
    assert math.isnan(fleiss_kappa(np.array([[3, 0], [2, 0]])))  # every rating the same class


def test_pairwise_cohen_kappa_uses_shared_items_only():
    a, b = _wikipedia_cohen_pair()
    rows = [(i, "ann", int(x)) for i, x in enumerate(a)] + [(i, "bob", int(x)) for i, x in enumerate(b)]
    rows += [(100 + i, "cat", i % 2) for i in range(10)]  # cat shares nothing with ann / bob
    rows += [(i, "cat", int(x)) for i, x in enumerate(a[:10])]  # ... except these 10
    kappas = pairwise_cohen_kappa(rows, min_shared=5)
    assert kappas[("ann", "bob")][0] == pytest.approx(0.4)
    assert kappas[("ann", "bob")][1] == 50
    assert kappas[("ann", "cat")][1] == 10
    assert pairwise_cohen_kappa(rows, min_shared=11).keys() == {("ann", "bob")}


# --------------------------------------------------------------------------- consensus


def test_majority_vote_and_deterministic_ties():
    rows = [
        ("x", "a", 2), ("x", "b", 2), ("x", "c", 1),  # clear winner 2
        ("y", "a", 0), ("y", "b", 1),  # tie 0 / 1
        ("z", "a", 1), ("z", "b", 1), ("z", "c", 1),
    ]
    cons = majority_vote(rows)
    assert cons.item_ids == ["x", "y", "z"]
    # class totals: 0 -> 1, 1 -> 5, 2 -> 2: the tie at y goes to the more frequent class 1
    assert cons.labels.tolist() == [2, 1, 1]
    assert cons.tied.tolist() == [False, True, False]
    assert cons.agreement.tolist() == pytest.approx([2 / 3, 0.5, 1.0])
    assert cons.n_votes.tolist() == [3, 2, 3]
    # same input in another order: same answer
    again = majority_vote(list(reversed(rows)))
    assert again.as_dict() == cons.as_dict()


def test_repeated_annotation_keeps_the_latest_row():
    ann = as_annotations([("x", "a", 0), ("x", "a", 1)])
    assert len(ann) == 1 and ann.label.tolist() == [1]


def test_bad_rows_raise_validation_error():
    with pytest.raises(ValidationError):
        as_annotations([("x", "a")])
    with pytest.raises(ValidationError):
        as_annotations([("x", "a", -1)])
    with pytest.raises(ValidationError):
        as_annotations([("x", "a", 3)], n_classes=2)


# --------------------------------------------------------------------------- Dawid–Skene


def _brute_force_log_likelihood(ann: Annotations, priors, theta) -> float:
    """log p(all labels) = log sum over every joint assignment of true classes."""
    total = 0.0
    for truth in itertools.product(range(ann.n_classes), repeat=ann.n_items):
        p = np.prod([priors[c] for c in truth])
        for r in range(len(ann)):
            p *= theta[ann.annotator[r], truth[ann.item[r]], ann.label[r]]
        total += p
    return math.log(total)


TINY = [
    (0, "a", 0), (0, "b", 0), (0, "c", 1),
    (1, "a", 1), (1, "b", 1), (1, "c", 1),
    (2, "a", 0), (2, "b", 1), (2, "c", 0),
    (3, "a", 2), (3, "b", 2), (3, "c", 0),
    (4, "a", 1), (4, "c", 2),
]


def test_dawid_skene_tiny_table_against_brute_force():
    res = dawid_skene(TINY, tol=1e-10, max_iter=500)
    ann = as_annotations(TINY)
    assert res.converged
    # the reported marginal likelihood equals the sum over all 3^5 assignments of true labels
    # (up to the last iteration's parameter update, which the brute force uses directly)
    from labelloop.audit.annotators import _ds_e_step

    T, ll = _ds_e_step(ann, res.priors, res.confusion)
    assert ll == pytest.approx(_brute_force_log_likelihood(ann, res.priors, res.confusion), abs=1e-9)
    # posteriors are Bayes' rule by brute force: p(truth_i = c | labels) for every item
    for i in range(ann.n_items):
        post = np.zeros(ann.n_classes)
        for c in range(ann.n_classes):
            p = res.priors[c]
            for r in np.flatnonzero(ann.item == i):
                p *= res.confusion[ann.annotator[r], c, ann.label[r]]
            post[c] = p
        np.testing.assert_allclose(res.posteriors[i], post / post.sum(), atol=1e-6)
    np.testing.assert_allclose(res.posteriors.sum(axis=1), 1.0)
    np.testing.assert_allclose(res.confusion.sum(axis=2), 1.0)
    assert res.priors.sum() == pytest.approx(1.0)


# pure-noise tables converge slowly; monotonicity holds at every iteration whether or not EM
# converged within max_iter, so the non-convergence warning is irrelevant here
@pytest.mark.filterwarnings("ignore:Dawid:RuntimeWarning")
@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_dawid_skene_em_never_decreases_likelihood(seed):
    rng = np.random.default_rng(seed)
    rows = [(int(i), int(a), int(rng.integers(0, 3))) for i in range(12) for a in range(3) if rng.random() < 0.8]
    if not rows:
        return
    res = dawid_skene(rows, n_classes=3, smoothing=0.0, tol=1e-9, max_iter=200)
    ll = np.array(res.log_likelihood)
    assert (np.diff(ll) >= -1e-8).all()


def _simulate_crowd(rng, n_items=300, n_classes=4, accuracies=(0.85, 0.85, 0.85, 0.3)):
    truth = rng.integers(0, n_classes, n_items)
    rows = []
    for a, acc in enumerate(accuracies):
        for i in range(n_items):
            if rng.random() < acc:
                lab = truth[i]
            else:  # a wrong class uniformly
                lab = (truth[i] + rng.integers(1, n_classes)) % n_classes
            rows.append((i, f"ann{a}", int(lab)))
    return truth, rows


def test_dawid_skene_finds_planted_bad_annotator_and_beats_majority():
    rng = np.random.default_rng(0)
    # two reliable annotators, one mediocre, one that is almost random: majority vote ties often
    truth, rows = _simulate_crowd(rng, accuracies=(0.9, 0.85, 0.6, 0.3))
    res = dawid_skene(rows)
    assert res.converged
    acc = res.annotator_accuracy()
    assert int(np.argmin(acc)) == 3
    assert acc[3] == pytest.approx(0.3, abs=0.08)
    assert acc[0] == pytest.approx(0.9, abs=0.05)
    order = np.array(res.item_ids)
    ds_acc = (res.labels == truth[order]).mean()
    mv_acc = (majority_vote(rows).labels == truth[order]).mean()
    assert ds_acc > mv_acc
    assert ds_acc >= 0.9  # measured: Dawid–Skene 0.92, majority vote 0.88


def test_dawid_skene_warns_when_not_converged():
    rng = np.random.default_rng(1)
    _, rows = _simulate_crowd(rng)
    with pytest.warns(RuntimeWarning, match="did not converge"):
        dawid_skene(rows, max_iter=1)


# --------------------------------------------------------------------------- per annotator


def test_annotator_report_gold_and_leave_one_out_consensus():
    rows = [
        ("g1", "a", 0), ("g1", "b", 1),  # gold item: truth 0
        ("x", "a", 1), ("x", "b", 1), ("x", "c", 1),
        ("y", "a", 2), ("y", "b", 0), ("y", "c", 0),
        ("z", "c", 2),  # c alone: not compared
    ]
    stats = {s.annotator: s for s in annotator_report(rows, gold={"g1": 0})}
    a, b, c = stats["a"], stats["b"], stats["c"]
    assert (a.n_gold, a.gold_accuracy) == (1, 1.0)
    assert (b.n_gold, b.gold_accuracy) == (1, 0.0)
    assert c.n_gold == 0 and math.isnan(c.gold_accuracy)
    # a vs others: g1 (others say 1; a says 0) wrong, x right, y (others 0,0) wrong -> 1/3
    assert (a.n_compared, a.consensus_accuracy) == (3, pytest.approx(1 / 3))
    # c vs others: x right, y: others a=2, b=0 tie -> class totals 0:4, 1:4, 2:2, tie 0/2 -> 0: right
    assert (c.n_compared, c.consensus_accuracy) == (2, 1.0)
    # confusion of c is against consensus (no gold): truth 1 -> said 1, truth 0 -> said 0
    assert c.confusion[1, 1] == 1 and c.confusion[0, 0] == 1 and c.confusion.sum() == 2
    # confusion of b is against gold
    assert b.confusion[0, 1] == 1 and b.confusion.sum() == 1
    conf = annotator_confusion(rows, {"x": 1, "y": 0})
    assert conf["a"][0, 2] == 1 and conf["a"][1, 1] == 1 and conf["a"].sum() == 2


# --------------------------------------------------------------------------- routing


@settings(max_examples=40, deadline=None)
@given(
    n_items=st.integers(0, 60),
    fraction=st.floats(0, 1),
    times=st.integers(1, 4),
    n_ann=st.integers(4, 7),
    seed=st.integers(0, 100),
)
def test_consensus_sample_properties(n_items, fraction, times, n_ann, seed):
    items = [f"i{j}" for j in range(n_items)]
    people = [f"p{j}" for j in range(n_ann)]
    queues = consensus_sample(items, fraction, times, people, seed=seed)
    assert set(queues) == set(people)
    for q in queues.values():
        assert len(q) == len(set(q))  # distinct annotators per item
    per_item = Counter(it for q in queues.values() for it in q)
    assert set(per_item) == set(items)
    n_multi = sum(1 for it in items if per_item[it] == times) if times > 1 else round(fraction * n_items)
    assert n_multi == round(fraction * n_items)
    assert all(per_item[it] in (1, times) for it in items)
    lengths = [len(q) for q in queues.values()]
    assert max(lengths) - min(lengths) <= 1
    assert consensus_sample(items, fraction, times, people, seed=seed) == queues


def test_consensus_sample_rejects_too_few_annotators():
    with pytest.raises(ValidationError, match="times=3"):
        consensus_sample(range(5), 0.5, 3, ["a", "b"])


def test_honeypot_schedule_rate_and_spread():
    queue = list(range(90))
    gold = [f"g{j}" for j in range(20)]
    out = honeypot_schedule(queue, gold, 0.1, seed=3, already_seen={"g0", "g1"})
    assert [it for it, is_gold in out if not is_gold] == queue  # order of real items kept
    golds = [it for it, is_gold in out if is_gold]
    assert len(golds) == 10  # 90 * 0.1 / 0.9
    assert len(set(golds)) == 10 and not {"g0", "g1"} & set(golds)  # unseen gold first
    positions = [p for p, (_, is_gold) in enumerate(out) if is_gold]
    assert max(np.diff(positions)) <= 2 * 10  # spread over the queue, not bunched
    assert honeypot_schedule(queue, gold, 0.0) == [(it, False) for it in queue]
    many = honeypot_schedule(list(range(10)), ["g"], 0.5)
    assert [it for it, g in many if g] == ["g"] * 10  # repeats only once all gold was used
    with pytest.raises(ValidationError):
        honeypot_schedule(queue, gold, 1.0)
