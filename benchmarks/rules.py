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

``--al``: active learning with the rules on (``results/rules_al.md``). Starting from the rules
alone (no human label), ``--budget`` labels are asked ``--batch`` at a time through
:func:`labelloop.loop.choose` (what ``labelloop next`` calls), answered with the true class,
and propagation (rule seeds at rule_trust 0.5, majority label model, the default) is refit
after each batch. Strategies: random, margin, conflict (rule conflicts first, then margin),
auto without the rules' votes (typicality, then margin + diversity, 20 % random), auto with
them (after the cold start, conflict + diversity instead of margin). Accuracy on the items
without a human label at 0 / 20 / 50 / 100 / ``--budget`` labels.

Run:  python benchmarks/rules.py --al [--seeds 3] [--budget 100] [--batch 10]
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


def datasets(only):
    """(name, rules, dataset, embeddings (n, d), kNN graph k = 10, votes) of each text set."""
    from labelloop.datasets import load_dataset
    from labelloop.graph import build_knn_graph, normalize_rows

    for ds_name, (cache, rules) in RULES.items():
        if only and ds_name not in only:
            continue
        X = np.load(CACHE / cache)
        ds = load_dataset(ds_name, n=X.shape[0], seed=0)
        graph = build_knn_graph(normalize_rows(X), k=10)
        yield ds_name, rules, ds, X, graph, rule_votes(ds.items, rules, list(ds.class_names))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=None)
    ap.add_argument("--al", action="store_true", help="active learning with rules (results/rules_al.md)")
    ap.add_argument("--budget", type=int, default=100)
    ap.add_argument("--batch", type=int, default=10)
    args = ap.parse_args()
    if args.al:
        return active_learning(args)

    from labelloop.project import SMOOTH_ALPHA
    from labelloop.propagate import LabelPropagation
    from labelloop.rules import fit_label_model, seed_with_rules

    rows = []
    for ds_name, rules, ds, X, graph, votes in datasets(args.only):
        yt, C, n = np.asarray(ds.labels), len(ds.class_names), X.shape[0]
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


# ------------------------------------------------------------------ active learning with rules
AL_STRATEGIES = (("random", "random", False), ("margin", "margin", False), ("conflict", "conflict", True),
                 ("auto", "auto", False), ("auto+rules", "auto", True))   # (label, strategy, rule inputs)


def active_learning(args) -> None:
    import os

    from labelloop.loop import choose
    from labelloop.project import SMOOTH_ALPHA
    from labelloop.propagate import LabelPropagation
    from labelloop.rules import fit_label_model, seed_with_rules
    from labelloop.select import rule_conflicts

    marks = sorted(m for m in {0, 20, 50, 100, args.budget} if m <= args.budget)
    rows, t_start, cpu_start = [], time.perf_counter(), time.process_time()
    for ds_name, rules, ds, X, graph, votes in datasets(args.only):
        yt, C, n = np.asarray(ds.labels), len(ds.class_names), X.shape[0]
        model = fit_label_model(votes, n_rules=len(rules), n_classes=C, method="majority")
        V = np.zeros((n, C))                                     # (n, C) votes per class
        np.add.at(V, (votes[:, 1], votes[:, 2]), 1.0)
        Q = np.zeros((n, C))                                     # (n, C) label model, 0 uncovered
        Q[model.rows] = model.proba

        def propagate(y):
            fy, w = seed_with_rules(y, np.where(y >= 0, 100.0, 0.0), model, 0.5)
            return LabelPropagation(alpha=SMOOTH_ALPHA).fit(graph, fy, n_classes=C, sample_weight=w).predict_proba()

        P0 = propagate(np.full(n, -1))
        split, disagree = rule_conflicts(P0, V, Q)
        info = dict(dataset=ds_name, n=n, classes=list(ds.class_names), conflicts_at_start=int((split | disagree).sum()),
                    split=int(split.sum()), disagree=int(disagree.sum()),
                    conflict_error_rate=float((P0.argmax(1) != yt)[split | disagree].mean()),
                    other_error_rate=float((P0.argmax(1) != yt)[~(split | disagree)].mean()))
        rows.append(info)
        print(json.dumps(info), file=sys.stderr)
        for label, strategy, with_rules in AL_STRATEGIES:
            for seed in range(args.seeds):
                y = np.full(n, -1)
                curve, conflicts_asked = {}, 0
                while True:
                    P = propagate(y)
                    k = int((y >= 0).sum())
                    if k in marks:
                        curve[k] = float((P.argmax(1) == yt)[y < 0].mean())
                    if k >= args.budget:
                        break
                    labeled = np.flatnonzero(y >= 0)
                    unl = np.flatnonzero(y < 0)
                    rules_in = dict(rule_votes=V, rule_proba=Q) if with_rules else {}
                    ch = choose(strategy, min(args.batch, args.budget - k), labeled=labeled, unlabeled=unl,
                                probabilities=P, graph=graph, embeddings=X, labels=y[labeled] if k else None,
                                class_names=list(ds.class_names), seed=seed * 1000 + k, **rules_in)
                    s_, d_ = rule_conflicts(P[ch.rows], V[ch.rows], Q[ch.rows])
                    conflicts_asked += int((s_ | d_).sum())
                    y[ch.rows] = yt[ch.rows]
                out = dict(dataset=ds_name, strategy=label, seed=seed, conflicts_asked=conflicts_asked,
                           **{f"acc@{m}": curve[m] for m in marks})
                rows.append(out)
                print(json.dumps(out), file=sys.stderr)
    wall, cpu = time.perf_counter() - t_start, time.process_time() - cpu_start
    load = os.getloadavg()[0]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "rules_al.json").write_text(json.dumps(rows, indent=1))
    write_al_markdown(rows, RESULTS / "rules_al.md", args, marks, wall, cpu, load)


def write_al_markdown(rows, path, args, marks, wall, cpu, load):
    cols = [f"acc@{m}" for m in marks]
    lines = ["# Active learning with labeling functions: margin vs rule conflicts", "",
             f"`python benchmarks/rules.py --al --seeds {args.seeds} --budget {args.budget} --batch {args.batch}` "
             f"({wall:.0f} s wall, {cpu:.0f} CPU s, load average {load:.1f} on the shared 2-core machine). "
             "MiniLM embeddings, k = 10, the rules of `rules.md`, majority label model, rule_trust 0.5; "
             f"no human label at the start, {args.batch} per batch through `labelloop.loop.choose`, answered "
             f"with the true class. Mean ± sd over {args.seeds} seeds of the accuracy on the items without a "
             "human label after N labels; `conflicts asked`: labels spent on items in conflict when asked.", ""]
    for ds_name in dict.fromkeys(r["dataset"] for r in rows):
        info = next(r for r in rows if r["dataset"] == ds_name and "conflicts_at_start" in r)
        lines += [f"## {ds_name} (n = {info['n']}; classes {', '.join(info['classes'])})", "",
                  f"At the start (rules only): {info['conflicts_at_start']} items in conflict ({info['split']} "
                  f"where rules vote for different classes, {info['disagree']} where the label model and the "
                  f"graph disagree); the graph's error rate is {info['conflict_error_rate']:.3f} on them and "
                  f"{info['other_error_rate']:.3f} on the other items.", "",
                  "| strategy | " + " | ".join(cols) + " | conflicts asked |", "|---" * (len(cols) + 2) + "|"]
        for label, _, _ in AL_STRATEGIES:
            rs = [r for r in rows if r["dataset"] == ds_name and r.get("strategy") == label]
            if not rs:
                continue
            cells = [f"{np.mean([r[c] for r in rs]):.3f} ± {np.std([r[c] for r in rs]):.3f}" for c in cols]
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {np.mean([r['conflicts_asked'] for r in rs]):.0f} |")
        lines.append("")
    path.write_text("\n".join(lines + [AL_FINDINGS]))


AL_FINDINGS = """## Reading (measured 2026-11-29, 5 seeds)

- margin and conflict have no random part and start from the same rules-only predictions, so
  their seeds agree (sd 0); random, auto and auto+rules differ by seed.
- Conflict first vs margin: behind at 20 labels on both sets (sms-spam 0.935 vs 0.944,
  rotten-tomatoes 0.563 vs 0.565), ahead from 50 labels on (sms-spam +0.002 / +0.004 / +0.003
  at 50 / 100 / 200; rotten-tomatoes +0.015 / +0.007 / +0.001). Conflicts do not run out: each
  human label changes the graph's prediction around it, and new items where the rules' label
  model and the graph disagree appear (all 200 labels went to items in conflict when asked,
  from 42 and 26 conflicts at the start).
- auto with the rules' votes (conflict + diversity after the cold start) vs auto without:
  rotten-tomatoes +0.010 / +0.007 / +0.005 at 50 / 100 / 200 labels (sd <= 0.007), equal at 20;
  sms-spam +0.006 / -0.001 / +0.004 / -0.002 at 20 / 50 / 100 / 200 (sd 0.001-0.007). Better
  at 5 of 8 points, worse at 2 by at most 0.002: small, but the gains are larger than the losses,
  and every such label also measures the rules that voted on the item (`rules report`). So
  `auto` mixes conflicts in when rules exist (`select.auto.CONFLICT_IN_AUTO`).
- The effects are small because with ~10-25 % of the items seeded by rules, 200 human labels
  move propagation little (see `rules.md`). On rotten-tomatoes random human labels even end
  below the rules-only start (0.545 vs 0.567 at 200), in this setting without calibration or
  class-mass normalisation (as `rules.md`'s `both` columns); every active strategy stays near
  or above the start.
"""


if __name__ == "__main__":
    main()
