"""Annotator quality through the Project API and CLI: gold items, consensus routing, reports."""

import json
import subprocess
import sys

import numpy as np


def make_project(project_factory, tmp_path, n=60, classes=("a", "b", "c")):
    p = project_factory("text", classes=list(classes))
    f = tmp_path / "items.csv"
    f.write_text("id,text\n" + "".join(f"t{i},text number {i}\n" for i in range(n)))
    p.import_(f)
    return p


def test_planted_bad_annotator_is_found(project_factory, tmp_path):
    p = make_project(project_factory, tmp_path)
    rng = np.random.default_rng(0)
    classes = p.classes
    truth = {f"t{i}": classes[i % 3] for i in range(60)}
    gold = tmp_path / "gold.csv"
    gold.write_text("item,label\n" + "".join(f"t{i},{truth[f't{i}']}\n" for i in range(10)))
    r = p.import_gold(gold)
    assert r.appended == 10 and len(p.gold()) == 10
    for who, err in (("good1", 0.0), ("good2", 0.05), ("random", 1.0)):
        pairs = []
        for ref, lab in truth.items():
            pairs.append((ref, lab if rng.random() >= err else classes[rng.integers(3)]))
        p.label(pairs, annotator=who)
    rep = p.annotators()
    by = {a["annotator"]: a for a in rep["annotators"]}
    assert set(by) == {"good1", "good2", "random"}  # gold is not an annotator
    assert by["good1"]["gold_accuracy"] == 1.0 and by["good1"]["gold_items"] == 10
    assert by["random"]["gold_accuracy"] < 0.7
    assert by["random"]["consensus_accuracy"] < by["good2"]["consensus_accuracy"]
    assert by["random"]["dawid_skene_accuracy"] < 0.7 < by["good1"]["dawid_skene_accuracy"]
    kappas = {(x["a"], x["b"]): x["cohen_kappa"] for x in rep["pairs"]}
    assert kappas[("good1", "good2")] > 0.8 and kappas[("good1", "random")] < 0.3
    assert rep["items_with_several"] == 60 and rep["fleiss_kappa"] is not None


def test_consensus_routing_writes_assignments(project_factory, tmp_path):
    p = make_project(project_factory, tmp_path)
    r = p.consensus(fraction=0.1, times=3, annotators=["ann", "bob", "cy", "dee"])
    assert r["items"] == 60 and r["items_to_several"] == 6
    rows = p.store.conn.execute("SELECT item_id, COUNT(*) FROM assignments GROUP BY item_id").fetchall()
    counts = sorted(c for _, c in rows)
    assert counts.count(3) == 6 and counts.count(1) == 54
    sizes = list(r["queue_sizes"].values())
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == 54 + 18


def test_cli_annotators_and_consensus(project_factory, tmp_path):
    p = make_project(project_factory, tmp_path, n=12)
    p.label([(f"t{i}", "a") for i in range(12)], annotator="x")
    p.label([(f"t{i}", "a" if i % 2 else "b") for i in range(12)], annotator="y")
    root = str(p.root)
    out = subprocess.run([sys.executable, "-m", "labelloop.cli", "annotators", "-p", root, "--json"],
                         capture_output=True, text=True, check=True).stdout
    assert {a["annotator"] for a in json.loads(out)["annotators"]} == {"x", "y"}
    txt = subprocess.run([sys.executable, "-m", "labelloop.cli", "annotators", "-p", root],
                         capture_output=True, text=True, check=True).stdout
    assert "Cohen's kappa x / y" in txt
    # the annotators come from the labels: two people cannot give 3 opinions each
    bad = subprocess.run([sys.executable, "-m", "labelloop.cli", "consensus", "-p", root, "--fraction", "0.5"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "only 2 given" in bad.stderr and "Traceback" not in bad.stderr
    ok = subprocess.run([sys.executable, "-m", "labelloop.cli", "consensus", "-p", root, "--fraction", "0.5",
                         "--times", "2"], capture_output=True, text=True)
    assert ok.returncode == 0 and "routed 0 items" in ok.stdout  # x and y labeled everything already
