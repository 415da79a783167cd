"""Labeling functions (issue 14, part 1): do a few honest keyword rules help propagation?

Per text set (cached MiniLM embeddings of ``benchmarks/robustness_data.py``), per budget of
random human labels per class (0 / 5 / 20) and seed (3), accuracy on the items without a human
label of:

- rules only: the label model's class on the items the rules cover (``coverage`` says how many;
  the others get no label), Dawid–Skene (``ds``) and majority vote (``mv``);
- propagation only: what ``Project.refresh`` does without rules (clamped, class-mass
  normalised; no run at 0 labels);
- both: what ``Project.refresh`` does with rules (``rules.seed_with_rules``: spreading with
  alpha = SMOOTH_ALPHA, human labels weight 100, rule-covered items ``rule_trust`` x label-model
  confidence), for rule_trust 0.5 and 1.0, with each label model.

Calibration is left out: its power map does not change any item's top class.

How the rules were chosen: written from general knowledge of SMS spam and of film reviews /
plot synopses, BEFORE reading any text of these datasets and never from label statistics;
committed as first written. They are deliberately few (3-8 keywords per class).

Run:  python benchmarks/rules.py [--seeds 3] [--only sms-spam]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
RESULTS = HERE / "results"
SHOTS = (0, 5, 20)

# dataset -> (cache file, {class name: keywords}); written before looking at the data
RULES = {
    "sms-spam": ("sms-spam-n4862-s0-minilm-l6-256.npy", {
        "spam": ["free", "win", "winner", "prize", "claim", "urgent", "cash", "txt", "call now", "guaranteed"],
        "ham": ["lol", "ok", "home", "sorry", "love you", "tonight", "dinner", "later"],
    }),
    "rotten-tomatoes": ("rotten-tomatoes-n5000-s0-minilm-l6-256.npy", {
        "fresh": ["masterpiece", "brilliant", "wonderful", "delightful", "best", "beautifully", "moving"],
        "rotten": ["boring", "worst", "dull", "mess", "tedious", "fails", "waste", "pointless"],
        "plot": ["finds himself", "finds herself", "must", "discovers", "sets out", "young man", "young woman"],
    }),
}


def rule_votes(texts, rules, class_names):
    """(V, 3) votes: rule index, item row, class index (one rule per class)."""
    from labelloop.rules import keyword_pattern

    votes = []
    for a, (name, words) in enumerate(rules.items()):
        pattern, c = keyword_pattern(words), class_names.index(name)
        votes += [(a, i, c) for i, t in enumerate(texts) if pattern.search(t)]
    return np.array(votes, dtype=np.int64).reshape(-1, 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()

    from labelloop.datasets import load_dataset
    from labelloop.graph import build_knn_graph, normalize_rows
    from labelloop.project import SMOOTH_ALPHA
    from labelloop.propagate import LabelPropagation
    from labelloop.rules import fit_label_model, seed_with_rules

    rows = []
    for ds_name, (cache, rules) in RULES.items():
        if args.only and ds_name not in args.only:
            continue
        X = np.load(CACHE / cache)
        ds = load_dataset(ds_name, n=X.shape[0], seed=0)
        yt, C, n = np.asarray(ds.labels), len(ds.class_names), X.shape[0]
        graph = build_knn_graph(normalize_rows(X), k=10)
        votes = rule_votes(ds.items, rules, list(ds.class_names))
        models = {m: fit_label_model(votes, n_rules=len(rules), n_classes=C, method=m)
                  for m in ("dawid-skene", "majority")}
        t0 = time.perf_counter()
        for shots in SHOTS:
            for seed in range(args.seeds):
                rng = np.random.default_rng(seed)
                y = np.full(n, -1)
                for c in range(C):
                    pool = np.flatnonzero(yt == c)
                    pick = rng.choice(pool, size=min(shots, len(pool)), replace=False)
                    y[pick] = c
                test = y < 0
                out = dict(dataset=ds_name, shots=shots, seed=seed)
                for m, model in models.items():
                    key = "ds" if m == "dawid-skene" else "mv"
                    cov = np.zeros(n, bool)
                    cov[model.rows] = True
                    pred = np.full(n, -1)
                    pred[model.rows] = model.label
                    out[f"rules_{key}_coverage"] = float(cov[test].mean())
                    out[f"rules_{key}_acc_covered"] = float((pred == yt)[test & cov].mean())
                    for trust in (0.5, 1.0):
                        w0 = np.where(y >= 0, 100.0, 0.0)
                        fy, w = seed_with_rules(y, w0, model, trust)
                        P = LabelPropagation(alpha=SMOOTH_ALPHA).fit(graph, fy, n_classes=C,
                                                                      sample_weight=w).predict_proba()
                        out[f"both_{key}_t{trust}"] = float((P.argmax(1) == yt)[test].mean())
                if shots:
                    P = LabelPropagation().fit(graph, y, n_classes=C).predict_proba()
                    out["propagation"] = float((P.argmax(1) == yt)[test].mean())
                rows.append(out)
                print(json.dumps(out), file=sys.stderr)
        print(f"{ds_name}: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        rows.append(dict(dataset=ds_name, rule_accuracy_ds=models["dawid-skene"].rule_accuracy.tolist(),
                         rule_precision_true=[float((yt[votes[votes[:, 0] == a, 1]] == votes[votes[:, 0] == a, 2]).mean())
                                              if (votes[:, 0] == a).any() else None for a in range(len(rules))],
                         rule_coverage=[float((votes[:, 0] == a).sum() / n) for a in range(len(rules))],
                         rules={k: v for k, v in rules.items()}, n=n, classes=list(ds.class_names)))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rules.json").write_text(json.dumps(rows, indent=1))
    write_markdown(rows, RESULTS / "rules.md", args.seeds)


FINDINGS = """## Reading (measured 2026-11, 3 seeds)

- Majority vote beats Dawid–Skene as the label model on both sets, by a wide margin (covered
  accuracy 0.925 vs 0.66 on sms-spam, 0.71 vs 0.44 on rotten-tomatoes). Keyword rules vote one
  class or abstain, and Dawid–Skene with abstains as missing annotations cannot tell a rule's
  accuracy from its coverage: its per-rule estimates are far from the true precision (table
  above). `label_model` therefore defaults to `majority`; `dawid-skene` stays available.
- Rules + propagation with no human label beats propagation with 20 labels per class on both
  sets (sms-spam 0.939 vs 0.891; rotten-tomatoes 0.567 vs 0.481). Adding 5 or 20 random human
  labels on top of the rules changes little (within about 1 point): with ~10-25 % of the items
  seeded by rules, 10-60 human seeds barely move the result.
- rule_trust 0.5 vs 1.0 makes almost no difference: every rule seed has about the same weight,
  so the scale cancels in the row normalisation; it only sets rules against human labels
  (weight 100), which win either way. Default 0.5.
"""


def write_markdown(rows, path, seeds):
    cols = ["rules_ds_coverage", "rules_ds_acc_covered", "rules_mv_acc_covered", "propagation",
            "both_ds_t0.5", "both_mv_t0.5", "both_ds_t1.0", "both_mv_t1.0"]
    lines = ["# Labeling functions: rules only, propagation only, both", "",
             f"`python benchmarks/rules.py --seeds {seeds}`: MiniLM embeddings, k = 10; mean (± sd) over "
             f"{seeds} seeds of random human labels; accuracy on the items without a human label. "
             "`rules_*_acc_covered`: accuracy of the label model (ds = Dawid–Skene, mv = majority vote) "
             "on the items the rules cover (`rules_ds_coverage` of them); `both_*_tX`: propagation with "
             "rule seeds at rule_trust X.", ""]
    for ds_name in dict.fromkeys(r["dataset"] for r in rows):
        info = next(r for r in rows if r["dataset"] == ds_name and "rules" in r)
        lines += [f"## {ds_name} (n = {info['n']}; classes {', '.join(info['classes'])})", "",
                  "| rule (class) | keywords | coverage | true precision | DS estimate |", "|---|---|---|---|---|"]
        for a, (cls, words) in enumerate(info["rules"].items()):
            tp = info["rule_precision_true"][a]
            lines.append(f"| {cls} | {', '.join(words)} | {info['rule_coverage'][a]:.3f} | "
                         f"{'-' if tp is None else f'{tp:.3f}'} | {info['rule_accuracy_ds'][a]:.3f} |")
        lines += ["", "| labels/class | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for shots in SHOTS:
            rs = [r for r in rows if r["dataset"] == ds_name and r.get("shots") == shots]
            cells = []
            for c in cols:
                v = [r[c] for r in rs if c in r]
                cells.append("-" if not v else f"{np.mean(v):.3f} ± {np.std(v):.3f}")
            lines.append(f"| {shots} | " + " | ".join(cells) + " |")
        lines.append("")
    path.write_text("\n".join(lines + [FINDINGS]))


if __name__ == "__main__":
    main()
