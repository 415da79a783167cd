"""New batches and drift (issue 14, part 2): the batch column and its migration, batch-restricted
commands, novelty on a planted new cluster, the drift report's numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from labelloop.errors import NotReadyError, ValidationError

TOPICS = {
    "billing": "invoice payment charged account billing money card bank".split(),
    "bug": "crash error freeze screen button broken slow update".split(),
    "shipping": "parcel courier delivery tracking shipped warehouse late package".split(),   # arrives in w2
}


def _csv(path, rows):
    path.write_text("id,text\n" + "".join(f"{i},{t}\n" for i, t in rows))
    return path


def _texts(topic: str, n: int, seed: int, prefix: str = "") -> list[tuple[str, str]]:
    rng = np.random.default_rng(seed)
    return [(f"{prefix}{topic}{i}", " ".join(rng.choice(TOPICS[topic], size=6))) for i in range(n)]


@pytest.fixture
def batched(project_factory, tmp_path):
    """w1: billing and bug; w2: billing, bug and 15 texts of a new topic (shipping)."""
    p = project_factory("text", classes=["billing", "bug"])
    w1 = _csv(tmp_path / "w1.csv", _texts("billing", 20, 0) + _texts("bug", 20, 1))
    w2 = _csv(tmp_path / "w2.csv", _texts("billing", 10, 2, "n") + _texts("bug", 10, 3, "n")
              + _texts("shipping", 15, 4))
    p.import_(w1, batch="w1")
    p.import_(w2, batch="w2")
    p.embed("tfidf")
    p.label([(f"{c}{i}", c) for c in ("billing", "bug") for i in range(3)])
    p.refresh(full=True)
    return p


def _ids(p, prefix: str) -> list[int]:
    return [it.id for it in p.store.items() if it.external_id.rstrip("0123456789") == prefix]


# ------------------------------------------------------------------ storage
def test_migration_5_an_old_project_opens_and_its_items_are_unbatched(tmp_path, monkeypatch):
    from labelloop import Project
    from labelloop import store as store_mod

    monkeypatch.setattr(store_mod, "MIGRATIONS", store_mod.MIGRATIONS[:4])
    s = store_mod.Store(tmp_path / "p", create=True)
    s.set_meta("modality", "text")
    s.conn.execute("INSERT INTO items (content_hash, modality, text, added) VALUES ('h1', 'text', 'old', 0)")
    s.conn.commit()
    assert s.schema_version() == 4
    s.close()
    monkeypatch.undo()
    with Project(tmp_path / "p") as p:
        assert p.store.schema_version() == max(v for v, _, _ in store_mod.MIGRATIONS)
        assert p.store.item_batches()[1] == [None]
        assert [(b["name"], b["items"]) for b in p.batches()] == [("unbatched", 1)]
        assert p.in_batch(p.store.item_ids(), "unbatched").tolist() == [True]


def test_import_batch_names_and_reimport_keeps_the_first_batch(project_factory, tmp_path):
    p = project_factory("text")
    p.import_(_csv(tmp_path / "a.csv", [("a1", "one two"), ("a2", "three four")]))
    r = p.import_(_csv(tmp_path / "b.csv", [("b1", "five six"), ("a2", "three four")]), batch=" week-48 ")
    assert (r.added, r.unchanged) == (1, 1)
    assert [(b["name"], b["items"]) for b in p.batches()] == [("unbatched", 2), ("week-48", 1)]
    assert p.store.last_run("import")["params"]["batch"] == "week-48"
    for bad, match in (("unbatched", "reserved|names the items"), ("", "non-empty"), ("a\nb", "control")):
        with pytest.raises(ValidationError, match=match):
            p.import_(tmp_path / "b.csv", batch=bad)
    with pytest.raises(ValidationError, match="batches: unbatched, week-48"):
        p.in_batch(p.store.item_ids(), "week-49")


# ------------------------------------------------------------------ commands restricted to a batch
def test_next_status_export_stay_in_their_batch(batched, tmp_path):
    p = batched
    w2 = set(_ids(p, "nbilling") + _ids(p, "nbug") + _ids(p, "shipping"))
    for strategy in ("auto", "margin", "random"):
        rows = p.next(10, strategy=strategy, batch="w2", record=False)
        assert len(rows) == 10 and {r["item"] for r in rows} <= w2, strategy
    rows = p.next(35, batch="w2")   # the whole batch: its random share is not a project-wide check
    assert {r["item"] for r in rows} == w2
    assert p.store.last_run("query")["summary"]["checks"] == []
    with pytest.raises(ValidationError, match="drop --batch"):
        p.next(5, strategy="verify", batch="w2")

    st = p.status(batch="w2")
    assert (st["batch"], st["items"], st["predicted"], st["labeled"]["human"]) == ("w2", 35, 35, 0)
    assert sum(c["predicted"] for c in st["per_class"].values()) == 35
    assert st["estimate"]["needs_person"] == 35 and "drift" not in st
    whole = p.status()
    assert whole["items"] == 75 and [d["batch"] for d in whole["drift"]] == ["w1", "w2"]

    out = p.export(tmp_path / "w2.jsonl", format="jsonl", batch="w2")
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert {x["item"] for x in lines} == w2 and {x["batch"] for x in lines} == {"w2"}


def test_autolabel_reports_per_batch(batched):
    s = batched.autolabel(target_precision=0.9)
    per = s["per_batch"]
    assert list(per) == ["w1", "w2"] and per["w1"]["items"] == 40 and per["w2"]["items"] == 35
    assert sum(v["accepted"] for v in per.values()) == s["accepted"]


# ------------------------------------------------------------------ novelty
def _blobs(seed=0, planted=True):
    """Three known classes (8-d Gaussian blobs) and, with ``planted``, a fourth nobody labeled."""
    rng = np.random.default_rng(seed)
    centres = np.eye(8)[:4] * 6.0
    n_per = 60
    X = np.concatenate([c + rng.normal(size=(n_per, 8)) for c in centres[: 4 if planted else 3]])
    y = np.repeat(np.arange(4 if planted else 3), n_per)
    return X.astype(np.float32), y


def test_novelty_finds_the_planted_cluster_and_nothing_without_it():
    from labelloop.graph import build_knn_graph
    from labelloop.novelty import find_novel_clusters

    for planted in (True, False):
        X, y = _blobs(planted=planted)
        g = build_knn_graph(X, k=10)
        rng = np.random.default_rng(1)
        labeled = np.concatenate([rng.choice(np.flatnonzero(y == c), 5, replace=False) for c in range(3)])
        res = find_novel_clusters(X, g, labeled, y[labeled], np.ones(len(y), bool))
        assert np.isnan(res.score[labeled]).all() and not res.novel[labeled].any()
        if planted:
            top = res.clusters[0]
            assert (y[top.rows] == 3).mean() == 1.0 and top.size >= 45          # most of the 60
            assert (y[top.examples] == 3).all() and len(top.examples) == 5
            assert sum(cl.size for cl in res.clusters[1:]) < 10                  # few false alarms
        else:
            assert sum(cl.size for cl in res.clusters) < 10
    with pytest.raises(NotReadyError, match="two labels"):
        find_novel_clusters(X, g, np.array([0, 70]), np.array([0, 1]), np.ones(len(y), bool))


def test_novelty_against_earlier_batches_exact_and_from_the_graph():
    """One label per class is too few to calibrate on labels alone; the earlier batch is the
    reference. The graph-only path (large projects) finds the same cluster."""
    from labelloop import novelty
    from labelloop.graph import build_knn_graph

    X, y = _blobs(seed=2)
    rng = np.random.default_rng(0)
    first = np.zeros(len(y), bool)
    for c in range(3):
        first[rng.choice(np.flatnonzero(y == c), 40, replace=False)] = True   # batch 1: no class 3
    g = build_knn_graph(X, k=20)
    labeled = np.array([np.flatnonzero(first & (y == c))[0] for c in range(3)])
    with pytest.raises(NotReadyError):
        novelty.find_novel_clusters(X, g, labeled, y[labeled], ~first)
    for exact_max in (novelty.EXACT_MAX, 0):
        scores = novelty.novelty_scores(X, g, np.flatnonzero(~first), labeled, y[labeled], reference=first,
                                        exact_max=exact_max)[0]
        new = y[~first] == 3
        assert scores[new].min() > np.median(scores[~new]), exact_max
    res = novelty.find_novel_clusters(X, g, labeled, y[labeled], ~first, reference=first)
    assert (y[res.clusters[0].rows] == 3).all() and res.clusters[0].size >= 45
    assert sum(cl.size for cl in res.clusters[1:]) < 10


def test_novel_then_add_class_queues_its_examples_without_labeling_them(batched):
    p = batched
    assert p.novel(batch="w1")["clusters"] == []    # the first batch: against its labels alone
    r = p.novel(batch="w2")
    top = r["clusters"][0]
    shipping = set(_ids(p, "shipping"))
    assert {e["item"] for e in top["examples"]} <= shipping and top["size"] >= 10
    now = top["predicted_now"]   # the model calls them something it knows, or nothing (no label reaches them)
    assert now["class"] in ("billing", "bug") or (now["class"] is None and now["unreached"] == 1.0)
    n_labels = len(p.store.annotations())
    a = p.add_class_from_cluster("shipping", top["cluster"])
    assert "shipping" in p.classes and len(p.store.annotations()) == n_labels   # nothing labeled
    q = p.store.run(a["query_run"])
    assert q["params"]["strategy"] == "novel" and set(q["summary"]["items"]) == {e["item"] for e in a["examples"]}
    assert set(q["summary"]["items"]) <= p.actively_chosen()          # a biased pick, not a random check
    with pytest.raises(ValidationError, match="exists already"):
        p.add_class_from_cluster("shipping", top["cluster"])
    with pytest.raises(ValidationError, match="has no cluster 99"):
        p.add_class_from_cluster("other", 99)


# ------------------------------------------------------------------ drift
def test_batch_drift_numbers_by_hand():
    from labelloop.drift import batch_drift

    codes = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    pred = np.array([0, 0, 0, 1, 1, 1, 1, 2])
    human = np.array([1, 0, 0, 0, 1, 0, 0, 0], bool)
    machine = np.array([0, 1, 1, 0, 0, 0, 0, 0], bool)
    b0, b1 = batch_drift(codes, pred, 3, human=human, machine=machine)
    assert b0["predicted_shares"].tolist() == [0.75, 0.25, 0.0] and b0["shift"] is None
    assert (b0["human_share"], b0["auto_labeled_share"]) == (0.25, 0.5)
    assert b1["predicted_shares"].tolist() == [0.0, 0.75, 0.25]
    # TV = (|0 - .75| + |.75 - .25| + |.25 - 0|) / 2 = 0.75; class 0 moved most (.75 -> 0)
    assert b1["shift"] == 0.75 and b1["largest_change"] == (0, 0.75, 0.0)
    assert (b1["human_share"], b1["auto_labeled_share"]) == (0.25, 0.0)


def test_project_drift_matches_the_estimate_of_each_batch(batched):
    from labelloop.loop.calibrate import prediction_weights
    from labelloop.loop.estimate import estimate_dataset_accuracy

    p = batched
    d = p.drift()
    assert [b["batch"] for b in d["batches"]] == ["w1", "w2"]
    w1, w2 = d["batches"]
    assert (w1["items"], w1["human"], w2["items"], w2["human"]) == (40, 6, 35, 0)
    pred = p.predictions()
    rows = p.in_batch(pred.item_ids, "w2")
    # no human label in w2: the estimate is its items' calibrated confidences, corrected by the
    # held-out human labels (weighted to the batch's predicted class shares)
    conf, _, correct, truth = p._heldout(pred)
    w = prediction_weights(truth, pred.label[rows], len(pred.classes))
    est = estimate_dataset_accuracy(pred.confidence[rows], np.zeros(rows.sum(), bool), conf, correct,
                                    heldout_weights=w)
    assert w2["estimate"]["accuracy"] == round(est.accuracy, 4)
    shares = np.bincount(pred.label[rows], minlength=2) / rows.sum()
    assert w2["predicted_shares"] == {c: round(float(s), 4) for c, s in zip(pred.classes, shares)}
    assert w2["shift"] == round(0.5 * sum(abs(w2["predicted_shares"][c] - w2["earlier_shares"][c])
                                          for c in pred.classes), 4)


# ------------------------------------------------------------------ CLI
def test_cli_batches_novel_drift(batched, tmp_path):
    from labelloop.cli import cli

    p = batched
    root = str(p.root)
    run = CliRunner().invoke
    r = run(cli, ["status", "-p", root, "--batch", "w2", "--json"])
    assert r.exit_code == 0 and json.loads(r.output)["items"] == 35
    r = run(cli, ["status", "-p", root])
    assert r.exit_code == 0 and "w2" in r.output and "shift" in r.output
    r = run(cli, ["next", "-p", root, "--batch", "w2", "--n", "3", "--json"])
    assert r.exit_code == 0 and len(json.loads(r.output)) == 3
    r = run(cli, ["next", "-p", root, "--batch", "nope"])
    assert r.exit_code != 0 and "no batch named 'nope'" in r.output and "Traceback" not in r.output
    r = run(cli, ["export", "-p", root, "--batch", "w1", "--out", str(tmp_path / "w1.csv")])
    assert r.exit_code == 0 and len((tmp_path / "w1.csv").read_text().splitlines()) == 41
    r = run(cli, ["drift", "-p", root])
    assert r.exit_code == 0 and r.output.count("\n") == 3
    r = run(cli, ["novel", "-p", root, "--batch", "w2"])
    assert r.exit_code == 0 and "cluster 1:" in r.output and "--add-class" in r.output
    r = run(cli, ["novel", "-p", root, "--add-class", "shipping"])
    assert r.exit_code != 0 and "go together" in r.output
    r = run(cli, ["novel", "-p", root, "--add-class", "shipping", "--cluster", "1", "--confirm",
                  "--annotator", "ann"])
    assert r.exit_code == 0 and "examples labeled 'shipping' by ann" in r.output
    labels = p.store.latest_labels("human")
    assert sum(k == p.store.class_id("shipping") for k in labels.values()) == 5
