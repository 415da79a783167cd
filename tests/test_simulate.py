"""The simulation harness end to end on a tiny problem, and the loop's Project methods."""

import json

import numpy as np
import pytest
from PIL import Image

from labelloop.errors import NotReadyError, PoolExhaustedError, ValidationError
from labelloop.simulate import SimulationData, simulate


def blobs(n_per=40, n_classes=3, d=8, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_classes, d)) * 4
    X = np.concatenate([c + rng.normal(size=(n_per, d)) for c in centres]).astype(np.float32)
    y = np.repeat(np.arange(n_classes), n_per)
    return SimulationData("blobs", X, y, [f"c{i}" for i in range(n_classes)], "synthetic")


def test_tiny_simulation_writes_json_table_and_a_real_png(tmp_path):
    result = simulate(blobs(), strategies=["random", "margin", "auto"], budget=30, step=6, seeds=2,
                      baseline=True, out=tmp_path)
    data = json.loads((tmp_path / "simulate-blobs.json").read_text())
    assert {s["strategy"] for s in data["summary"]} == {"random", "margin", "auto"}
    assert len(data["records"]) == 4 * 2 * 5  # (3 strategies + baseline) x 2 seeds x 5 steps
    for r in data["records"]:
        assert 0 <= r["accuracy_all"] <= 1 and r["human_labels"] % 6 == 0
        assert r["cost_with_autolabel"] >= r["human_labels"]
    table = (tmp_path / "simulate-blobs.md").read_text()
    assert sum(line.startswith("|") for line in table.splitlines()) == 2 + 4  # header, rule, 4 rows
    with Image.open(tmp_path / "simulate-blobs.png") as im:
        assert im.format == "PNG" and im.size[0] > 300 and im.size[1] > 200
        assert len(np.unique(np.asarray(im.convert("L")))) > 10  # not a blank canvas
    # three separated blobs: every strategy gets there with 30 labels
    for s in result["summary"]:
        assert s["accuracy_mean"][-1] >= 0.95


def test_auto_draws_a_random_share_like_project_next(monkeypatch):
    """The simulated `auto` asks the strategy for 80 % of each batch after the first, and
    draws the rest at random, as Project.next does; other strategies get whole batches."""
    from labelloop import simulate as sim
    from labelloop.select import get_strategy

    asked = []
    real = get_strategy

    def spy(name):
        strat = real(name)
        select = strat.select
        strat.select = lambda **kw: (asked.append((name, kw["n"])), select(**kw))[1]
        return strat

    monkeypatch.setattr("labelloop.select.get_strategy", spy)
    for strategy in ("auto", "margin"):
        recs = sim.run_one(blobs(), strategy, budget=30, step=10, seed=0)
        assert [r["human_labels"] for r in recs] == [10, 20, 30]
    assert [n for s, n in asked if s == "auto"] == [10, 8, 8]
    assert [n for s, n in asked if s == "margin"] == [10, 10]    # after a random cold start


def test_simulation_rejects_unknown_strategy():
    with pytest.raises(ValidationError, match="unknown strategy 'nope'"):
        simulate(blobs(), strategies=["nope"], budget=10, step=5, seeds=1)


@pytest.fixture
def loop_project(project_factory, tmp_path):
    """A text project of three well separated topics, embedded with the fake-free tfidf backbone."""
    p = project_factory("text")
    topics = {"sport": "football goal match team player score league",
              "food": "pasta recipe cook tomato sauce garlic oven",
              "tech": "computer software code python laptop chip"}
    rng = np.random.default_rng(0)
    lines = ["id,text,topic"]
    truth = {}
    for t, words in topics.items():
        w = words.split()
        for i in range(25):
            text = " ".join(rng.choice(w, size=6)) + f" {t[:2]}{i}"
            lines.append(f"{t}{i},{text},{t}")
            truth[f"{t}{i}"] = t
    f = tmp_path / "texts.csv"
    f.write_text("\n".join(lines) + "\n")
    p.import_(f)  # no label column: unlabeled
    p.embed("tfidf")
    return p, truth


def test_next_autolabel_status_and_stopping(loop_project):
    p, truth = loop_project
    with pytest.raises(NotReadyError, match="refresh"):
        p.autolabel()
    # cold start: no labels, no predictions -> auto picks typical items of uncovered clusters
    first = p.next(6)
    assert len(first) == 6 and all(r["guess"] is None and r["reason"] for r in first)
    p.label([(r["ref"], truth[r["ref"]]) for r in first], create_classes=True)
    for _ in range(8):
        p.refresh()
        picks = p.next(6, strategy="margin")
        assert not {r["ref"] for r in picks} & {r["ref"] for r in first}
        p.label([(r["ref"], truth[r["ref"]]) for r in picks], create_classes=True)
    p.refresh()
    a = p.autolabel(target_precision=0.9)
    assert a["accepted"] + a["needs_person"] == 75 - 54
    st = p.status()
    assert st["labeled"]["human"] == 54 and st["labeled"]["machine"] == a["accepted"]
    est = st["estimate"]
    assert 0 <= est["lower"] <= est["accuracy"] <= est["upper"] <= 1
    assert set(st["stopping"]) >= {"stop", "stable", "advice"}
    runs = p.store.runs("query")
    assert len(runs) == 9 and runs[0]["params"]["strategy"] == "auto"
    # every accepted machine label is right on this easy set
    rows = [r for r in p.rows() if r["source"] == "machine"]
    assert all(r["label"] == truth[r["external_id"]] for r in rows)


def test_next_when_everything_is_labeled(loop_project):
    p, truth = loop_project
    p.label(list(truth.items()), create_classes=True)
    with pytest.raises(PoolExhaustedError):
        p.next(1)


def test_machine_labels_are_withdrawn_when_they_no_longer_pass(loop_project):
    p, truth = loop_project
    p.label([(k, v) for k, v in list(truth.items())[::3]], create_classes=True)
    p.refresh()
    # nothing is certified before people check a random sample of what would be accepted
    first = p.autolabel(target_precision=0.8)
    assert first["accepted"] == 0 and "labelloop next --strategy verify" in first["suggest"]
    checks = p.next(20, strategy="verify")
    assert checks and {r["kind"] for r in checks} == {"verify"}
    by_id = {it.id: it.external_id for it in p.store.items()}
    p.label([(r["item"], truth[by_id[r["item"]]]) for r in checks])
    p.refresh()
    a = p.autolabel(target_precision=0.8)
    assert a["accepted"] > 0 and a["certificate"]["certified"]
    # a stricter target accepts fewer: the others are withdrawn by new annotations, not deleted
    b = p.autolabel(target_precision=0.999)
    assert b["accepted"] <= a["accepted"] and b["withdrawn"] == a["accepted"] - b["accepted"]
    assert len(p.store.latest_labels("machine")) == b["accepted"]
    assert len(p.store.annotations("machine")) == a["accepted"] + b["withdrawn"]


def test_labels_drawn_at_random_become_the_class_prior(loop_project):
    p, truth = loop_project
    by_id = {it.id: it.external_id for it in p.store.items()}
    items = list(truth.items())
    p.label(items[:3] + items[25:26] + items[50:51], create_classes=True)  # hand-picked: 3 sport, 1, 1
    first = p.refresh()["class_prior"]  # the shares of the labels no strategy chose, add-one smoothed
    assert first == pytest.approx([0.5, 0.25, 0.25], abs=1e-3) or sorted(first) == pytest.approx([0.25, 0.25, 0.5])
    picked = p.next(6, strategy="margin")  # actively chosen: never part of the prior
    p.label([(r["item"], truth[by_id[r["item"]]]) for r in picked])
    assert sorted(p.refresh()["class_prior"]) == pytest.approx(sorted(first), abs=1e-3)
    drawn = p.next(36, strategy="random")
    p.label([(r["item"], truth[by_id[r["item"]]]) for r in drawn])
    s = p.refresh(full=True)
    # 36 labels drawn at random: their add-one smoothed shares are the prior
    counts = {c: sum(truth[by_id[r["item"]]] == c for r in drawn) for c in p.classes}
    assert s["class_prior_source"] == "random"
    assert s["class_prior"] == pytest.approx([(counts[c] + 1) / 39 for c in p.classes], abs=1e-3)


def test_diagnose_says_when_predictions_and_label_shares_disagree(loop_project):
    p, truth = loop_project
    items = list(truth.items())
    skewed = items[:2] + items[25:37] + items[50:62]  # sport 2 of 26 labels; a third of the items
    p.label(skewed, create_classes=True)
    p.refresh()
    d = p.diagnose()
    assert d["imbalance"]["class"] == "sport" and d["imbalance"]["predicted_share"] > 2 * d["imbalance"]["label_share"]
    assert "labelloop next --strategy random" in d["summary"]


def test_learning_curve_and_estimate_card_agree(loop_project):
    from labelloop.web.dashboard import learning_curve

    p, truth = loop_project
    items = list(truth.items())
    p.label(items[::5], create_classes=True)
    p.refresh()
    p.label(items[1::5])
    p.refresh()
    curve = learning_curve(p)
    assert len(curve) == 2 and all(pt["estimated_accuracy"] is not None for pt in curve)
    assert curve[-1]["estimated_accuracy"] == p.status()["estimate"]["accuracy"]


def test_class_prior_estimated_is_used_until_random_draws_measure_the_shares(loop_project):
    p, truth = loop_project
    items = list(truth.items())
    p.label(items[:3] + items[25:26] + items[50:51], create_classes=True)
    p.set_setting("class_prior", "estimated")
    s = p.refresh()
    assert s["class_prior_source"] == "estimated" and s["class_prior"] is None
