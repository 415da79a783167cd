"""Multi-label classification (issue 12): one-vs-rest propagation with per-class calibrated
scores against a one-vs-rest logistic regression, at 1-20 labeled items per class.

Data: ``wordnet-nouns-multilabel`` (real labels: a WordNet noun lemma with at least two senses
and the set of supersenses its senses fall in; the text is the bare lemma), a seeded random
subset of ``--n`` items, embedded with the packaged MiniLM and with TF-IDF (cached in
``benchmarks/.cache`` like ``robustness_data.py``'s files).

Per budget k (1, 2, 5, 10, 20) and seed: items are labeled until every class has at least k
positives (classes taken rarest first, items carrying the class drawn at random); each labeled
item gives all C decisions. On the unlabeled items, micro- and macro-F1 of:

- ``propagation``: ``loop.multilabel.predict_multilabel`` (one-vs-rest propagation on the shared
  10-NN graph, calibrated per class on cross-fitted held-out decisions), applies at calibrated
  score >= 0.5, at per-class bars maximising the F1 of the held-out decisions, and at the
  bars that predict each class for its labeled share of the items (``labels()``, what ships);
- ``+ head``: the same with ``X`` (a head per class on the embeddings averaged in at the weight
  the held-out decisions choose);
- ``head only``: the same with ``head_weight=1`` (the per-class heads alone, calibrated and
  thresholded the same way: the fair one-vs-rest classifier with tuned bars);
- ``logreg``: scikit-learn one-vs-rest ``LogisticRegression`` on the same embeddings, at 0.5,
  and with ``class_weight="balanced"`` (the usual remedy for rare classes) at 0.5;
- ``knn``: the mean decisions of the 10 nearest labeled items (cosine), at 0.5.

Also macro average precision (ranking, no threshold), and F1 of answering "every class" for every
item (no model) as a reference. Auto-labeling per (item, class): ``certify_multilabel`` at
target 0.9 and 0.95, then
``accepted_pairs``: the share of the unlabeled items' pairs accepted (all / "applies" only) and
the realised precision of what was accepted.

A second, synthetic set: ``digits-pairs-multilabel`` (two 8x8 digits side by side, labeled with
the digits shown), raw pixels (``--dataset digits-pairs-multilabel --out multilabel_digits``).

Run:  PYTHONPATH=src nice python benchmarks/multilabel.py [--n 5000] [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
RESULTS = HERE / "results"
SHOTS = (1, 2, 5, 10, 20)
TARGETS = (0.9, 0.95)
#: dataset -> (default --n, backbones)
DATASETS = {"wordnet-nouns-multilabel": (5000, ("minilm-l6", "tfidf")),
            "digits-pairs-multilabel": (3000, ("pixels",))}


def embed(dataset: str, items: list, backbone: str, n: int, cache_dir: Path) -> np.ndarray:
    """Embeddings of ``items``, cached as ``<dataset>-n<n>-s0-<cache id>.npy``."""
    from labelloop.embed import get_backbone

    bb = get_backbone(backbone)
    if bb.needs_fit:
        bb.fit(items)
    path = cache_dir / f"{dataset}-n{n}-s0-{bb.cache_id}.npy"
    if path.exists():
        return np.load(path)
    X = bb.embed(items).astype(np.float32)  # (n, dim)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, X)
    return X


def labeled_items(T: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Items labeled until every class has >= k positives among them (rarest class first)."""
    picked: list[int] = []
    have = np.zeros(T.shape[1], np.int64)
    for c in np.argsort(T.sum(axis=0), kind="stable"):
        pool = np.setdiff1d(np.flatnonzero(T[:, c]), picked)
        for i in rng.permutation(pool)[: max(0, k - have[c])]:
            picked.append(int(i))
            have += T[i]
    return np.array(sorted(picked), dtype=np.int64)


def f1s(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    from sklearn.metrics import f1_score

    return (float(f1_score(truth, pred, average="micro", zero_division=0)),
            float(f1_score(truth, pred, average="macro", zero_division=0)))


def logreg_scores(Xn: np.ndarray, T: np.ndarray, lab: np.ndarray, class_weight: str | None = None) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression

    P = np.zeros(T.shape, np.float64)
    for c in range(T.shape[1]):
        y = T[lab, c]
        if y.min() == y.max():  # a class all labeled items agree on: that value everywhere
            P[:, c] = float(y[0])
            continue
        P[:, c] = LogisticRegression(max_iter=1000, class_weight=class_weight).fit(Xn[lab], y).predict_proba(Xn)[:, 1]
    return P


def knn_scores(Xn: np.ndarray, T: np.ndarray, lab: np.ndarray, k: int = 10) -> np.ndarray:
    sim = Xn @ Xn[lab].T  # (n, L) cosine
    kk = min(k, lab.size)
    nn = np.argpartition(-sim, kk - 1, axis=1)[:, :kk]  # (n, kk)
    return T[lab][nn].mean(axis=1)  # (n, C)


def macro_ap(P: np.ndarray, T: np.ndarray) -> float:
    """Mean over classes (with a positive) of average precision: ranking quality, no threshold."""
    from sklearn.metrics import average_precision_score

    return float(np.mean([average_precision_score(T[:, c], P[:, c]) for c in range(T.shape[1]) if T[:, c].any()]))


def auto_labeling(pred, Y, T, u, tag: str, row: dict) -> None:
    from labelloop.loop.multilabel import accepted_pairs, certify_multilabel

    for target in TARGETS:
        bars = certify_multilabel(pred, Y, target_precision=target)
        acc = accepted_pairs(pred, Y, bars)
        right = acc[:, 2] == T[acc[:, 0], acc[:, 1]]
        pos = acc[:, 2] == 1
        key = f"{tag}_auto{target}"
        row[f"{key}_share"] = len(acc) / (int(u.sum()) * T.shape[1])
        row[f"{key}_precision"] = float(right.mean()) if len(acc) else float("nan")
        row[f"{key}_applies_share"] = int(pos.sum()) / max(int(T[u].sum()), 1)  # of the true positives
        row[f"{key}_applies_precision"] = float(right[pos].mean()) if pos.any() else float("nan")
        row[f"{key}_classes_upper"] = sum(b.upper is not None for b in bars)
        row[f"{key}_classes_lower"] = sum(b.lower is not None for b in bars)


def f1_bars(H: np.ndarray, D: np.ndarray, prior_positives: float = 10.0) -> np.ndarray:
    """(C,) the alternative to ``share_thresholds`` that lost: per class the bar of 0.05..0.95
    maximising the F1 of the held-out decisions ``D`` under their calibrated scores ``H`` (m, C),
    the class's curve mixed with the curve pooled over classes as (pos_c F1_c + P0 F1_pool) / (pos_c + P0)."""
    grid = np.arange(0.05, 0.951, 0.05)
    if not (D == 1).any():
        return np.full(D.shape[1], 0.5)
    said = H[None] >= grid[:, None, None]  # (G, m, C)
    pos, neg = (D == 1)[None], (D == 0)[None]
    tp, fp, fn = (said & pos).sum(1), (said & neg).sum(1), (~said & pos).sum(1)  # (G, C)
    with np.errstate(invalid="ignore", divide="ignore"):
        f1_c = np.nan_to_num(2 * tp / (2 * tp + fp + fn))
        f1_pool = np.nan_to_num(2 * tp.sum(1) / (2 * tp.sum(1) + fp.sum(1) + fn.sum(1)))
    n_pos = (D == 1).sum(0)
    mix = (n_pos * f1_c + prior_positives * f1_pool[:, None]) / (n_pos + prior_positives)
    return grid[np.argmax(mix, axis=0)]


#: methods of the F1 tables: (key, label)
METHODS = (("prop05", "propagation, 0.5"), ("propf1", "propagation, held-out F1 bars"),
           ("prop", "propagation, share bars"),
           ("mix05", "+ head (auto), 0.5"), ("mix", "+ head (auto), share bars"),
           ("head", "head only (calibrated), share bars"), ("logreg", "OvR logreg, 0.5"),
           ("logreg_bal", "OvR logreg balanced, 0.5"), ("knn", "10-NN of labeled, 0.5"),
           ("every", "every class for every item (reference)"))


def run_one(Xn, graph, S, T, k, seed):
    from threadpoolctl import threadpool_limits

    from labelloop.loop.multilabel import predict_multilabel

    rng = np.random.default_rng(seed)
    lab = labeled_items(T, k, rng)
    Y = np.full(T.shape, -1, np.int8)
    Y[lab] = T[lab]
    u = np.ones(len(T), bool)
    u[lab] = False
    row = {"shots": k, "seed": seed, "labeled_items": int(lab.size)}
    with threadpool_limits(1, user_api="blas"):
        t0 = time.process_time()
        pred = predict_multilabel(graph, Y, affinity=S, seed=seed)
        row["cpu_s_propagation"] = time.process_time() - t0
        t0 = time.process_time()
        mix = predict_multilabel(graph, Y, affinity=S, seed=seed, X=Xn)
        row["cpu_s_mix"] = time.process_time() - t0
        head = predict_multilabel(graph, Y, affinity=S, seed=seed, X=Xn, head_weight=1.0)
        t0 = time.process_time()
        P_lr = logreg_scores(Xn, T, lab)
        row["cpu_s_logreg"] = time.process_time() - t0
        P_lrb = logreg_scores(Xn, T, lab, class_weight="balanced")
        P_knn = knn_scores(Xn, T, lab)
    row["head_weight"] = mix.head_weight
    labels = {"prop05": pred.scores >= 0.5, "propf1": pred.scores >= f1_bars(pred.heldout_scores, pred.heldout_decisions),
              "prop": pred.labels(), "mix05": mix.scores >= 0.5, "mix": mix.labels(),
              "head": head.labels(), "logreg": P_lr >= 0.5, "logreg_bal": P_lrb >= 0.5, "knn": P_knn >= 0.5,
              "every": np.ones(T.shape, bool)}  # no model: what F1 gives for answering "all of them"
    for name, L in labels.items():
        row[f"micro_{name}"], row[f"macro_{name}"] = f1s(L[u], T[u])
    for name, P in (("prop", pred.scores), ("mix", mix.scores), ("head", head.scores), ("logreg", P_lr),
                    ("knn", P_knn)):
        row[f"ap_{name}"] = macro_ap(P[u], T[u])
    auto_labeling(pred, Y, T, u, "prop", row)
    auto_labeling(mix, Y, T, u, "mix", row)
    return row


def batched_vs_per_class(S, T, seed: int = 0, repeats: int = 3) -> dict:
    """CPU seconds of one propagation of all classes as one (n, 2C) matrix vs C two-class
    ``LabelPropagation`` fits (medians of ``repeats``), 5 positives per class labeled."""
    from threadpoolctl import threadpool_limits

    from labelloop.loop.multilabel import propagate_multilabel
    from labelloop.propagate import LabelPropagation

    lab = labeled_items(T, 5, np.random.default_rng(seed))
    Y = np.full(T.shape, -1, np.int8)
    Y[lab] = T[lab]
    q = ((Y == 1).sum(0) + 1) / ((Y >= 0).sum(0) + 2)
    a, b = [], []
    with threadpool_limits(1, user_api="blas"):
        for _ in range(repeats):
            t0 = time.process_time()
            propagate_multilabel(S, Y)
            a.append(time.process_time() - t0)
            t0 = time.process_time()
            for c in range(T.shape[1]):
                y = np.where(Y[:, c] == 1, 0, np.where(Y[:, c] == 0, 1, -1))
                LabelPropagation(class_prior=np.array([q[c], 1 - q[c]])).fit(S, y, n_classes=2)
            b.append(time.process_time() - t0)
    return {"batched_cpu_s": float(np.median(a)), "per_class_cpu_s": float(np.median(b)),
            "ratio": float(np.median(b) / np.median(a))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="wordnet-nouns-multilabel", choices=sorted(DATASETS))
    ap.add_argument("--n", type=int, help="items (default: 5000 of WordNet, all 3000 digit pairs)")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--backbones", nargs="+", help="default: minilm-l6 tfidf (WordNet), pixels (digit pairs)")
    ap.add_argument("--shots", nargs="+", type=int, default=list(SHOTS))
    ap.add_argument("--cache-dir", type=Path, default=CACHE)
    ap.add_argument("--out", default="multilabel")
    ap.add_argument("--markdown-only", action="store_true", help="rewrite results/OUT.md from results/OUT.json")
    args = ap.parse_args(argv)
    if args.markdown_only:
        saved = json.loads((RESULTS / f"{args.out}.json").read_text())
        write_markdown(saved["meta"], saved["rows"], RESULTS / f"{args.out}.md")
        return 0
    warnings.simplefilter("ignore")

    from labelloop.datasets import load_multilabel_dataset
    from labelloop.graph import build_knn_graph, normalize_rows
    from labelloop.propagate import affinity_matrix

    t_start = time.time()
    n_default, backbones = DATASETS[args.dataset]
    ds = load_multilabel_dataset(args.dataset, n=args.n or n_default, seed=0)
    T = ds.labels.astype(np.int8)
    rows, speed = [], {}
    for backbone in args.backbones or backbones:
        Xn = normalize_rows(embed(args.dataset, ds.items, backbone, len(ds), args.cache_dir))
        graph = build_knn_graph(Xn, k=10)
        S = affinity_matrix(graph)
        speed[backbone] = batched_vs_per_class(S, T)
        print(f"{backbone}: batched {speed[backbone]['batched_cpu_s']:.2f} CPU-s, per class "
              f"{speed[backbone]['per_class_cpu_s']:.2f} CPU-s", flush=True)
        for k in args.shots:
            for seed in range(args.seeds):
                r = {"backbone": backbone, **run_one(Xn, graph, S, T, k, seed)}
                rows.append(r)
                print(f"{backbone:10s} k={k:<2d} seed {seed} items {r['labeled_items']:4d} micro/macro F1 " + "  ".join(
                    f"{m} {r['micro_' + m]:.3f}/{r['macro_' + m]:.3f}" for m, _ in METHODS)
                    + f"  w {r['head_weight']}  auto0.95 {r['mix_auto0.95_share']:.3f} @ "
                    f"{r['mix_auto0.95_precision']:.3f}", flush=True)
    meta = {"dataset": args.dataset, "n": len(ds), "classes": len(ds.class_names), "seeds": args.seeds,
            "positives_per_class": T.sum(0).tolist(), "labels_per_item": float(T.sum(1).mean()),
            "positive_share": float(T.mean()),
            "seconds": round(time.time() - t_start), "loadavg_end": [round(v, 2) for v in os.getloadavg()],
            "command": "PYTHONPATH=src nice python benchmarks/multilabel.py " + " ".join(
                sys.argv[1:] if argv is None else argv), "speed": speed}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    write_markdown(meta, rows, RESULTS / f"{args.out}.md")
    print(f"wrote {RESULTS / args.out}.md / .json ({meta['seconds']} s)")
    return 0


DESCRIPTION = {
    "wordnet-nouns-multilabel": "real labels (WordNet supersenses of a lemma's senses), the text is the bare lemma.",
    "digits-pairs-multilabel": "synthetic: two scikit-learn digits side by side, labeled with the digits shown.",
}


#: what the tables say, written after reading them (kept beside the generated tables)
FINDINGS = {
    "wordnet-nouns-multilabel": [
        "- A hard set: the bare lemma carries little of its senses. MiniLM ranks above chance (macro AP "
        "0.13-0.27 against a positive share of 0.083); TF-IDF does not (0.084-0.093): on it no method beats "
        "answering every class for every item (micro-F1 0.15).",
        "- 0.5 of calibrated scores predicts almost nothing (micro-F1 0.02-0.05): calibrated P(applies) of a "
        "rare class seldom passes 0.5. The share bars (what `labels()` ships) fix that.",
        "- MiniLM: propagation with share bars beats balanced one-vs-rest logistic regression at 1-5 positives "
        "per class (micro-F1 0.20 / 0.22 / 0.25 vs 0.06 / 0.09 / 0.21) and loses at 10-20 (0.27 / 0.28 vs "
        "0.31 / 0.34): the graph of bare lemmas is weak. With the head (`X=`, weight chosen on held-out "
        "likelihood, 0.58-0.75 there) it ties at 10-20 (0.31 / 0.33 vs 0.31 / 0.34).",
        "- Auto-labeling: no class's 'applies' side was certified (a class needs 59 held-out positives inside "
        "its bar); 'does not apply' was, for up to 18 of 24 classes at 20 positives per class (MiniLM + head: "
        "58 % of the unlabeled pairs accepted at target 0.9, 15 % at 0.95). Every run that accepted anything "
        "met its target: lowest realised precision 0.908 at 0.9 (28 runs), 0.975 at 0.95 (9 runs).",
    ],
    "digits-pairs-multilabel": [
        "- Synthetic, strong pixels signal: propagation with share bars beats balanced one-vs-rest logistic "
        "regression at every budget (micro-F1 0.44 / 0.49 / 0.59 / 0.65 / 0.73 vs 0.30 / 0.42 / 0.53 / 0.58 "
        "/ 0.65 at 1-20 positives per class) and ranks best at every budget (macro AP).",
        "- The head adds nothing here (the weight chosen is mostly 0).",
        "- Auto-labeling: 'does not apply' certified for 5 (10 positives per class) to 8 of 10 classes (20): "
        "60 % of the unlabeled pairs accepted at target 0.9, 33 % at 0.95; 'applies' never. Lowest realised "
        "precision of any run: 0.949 at 0.9 (12 runs), 0.965 at 0.95 (6 runs).",
    ],
}


def write_markdown(meta: dict, rows: list[dict], path: Path) -> None:
    def mean(b, k, key):
        v = [r.get(key, float("nan")) for r in rows if r["backbone"] == b and r["shots"] == k]
        return float(np.nanmean(v)) if v else float("nan")

    L = [f"# Multi-label: one-vs-rest propagation vs logistic regression ({meta['seeds']} seeds)", "",
         f"`{meta['command']}` — {meta['seconds']} s wall, load average at the end "
         f"{' '.join(str(v) for v in meta['loadavg_end'])} (2 shared cores).", "",
         f"Data: `{meta['dataset']}`, {meta['n']} items (seeded random subset), {meta['classes']} classes, "
         f"{meta['labels_per_item']:.2f} classes per item; " + DESCRIPTION[meta["dataset"]] + " Items labeled until each class has >= k positives; "
         "scores on the unlabeled items, means over seeds. `propagation`: `predict_multilabel(graph, Y)`; "
         "`+ head (auto)`: `predict_multilabel(graph, Y, X=embeddings)` (a head per class averaged in at "
         "the weight the held-out decisions choose; the mean weight chosen is in the last column). "
         "`0.5`: applies at calibrated score >= 0.5; `held-out F1 bars`: per class the bar maximising the F1 of "
         "the held-out decisions (shrunk to the pooled one); `share bars`: `MultiLabelPrediction.labels()`, "
         "each class predicted for its labeled share of the items (what ships).", "",
         "## Findings", "", *FINDINGS.get(meta["dataset"], []), "",
         "## micro-F1 / macro-F1", "",
         "| backbone | k | items | " + " | ".join(lab for _, lab in METHODS) + " | head weight |",
         "|---|---:|---:|" + "---|" * len(METHODS) + "---:|"]
    backbones = list(dict.fromkeys(r["backbone"] for r in rows))
    shots = list(dict.fromkeys(r["shots"] for r in rows))
    for b in backbones:
        for k in shots:
            cells = [f"{mean(b, k, 'micro_' + m):.3f} / {mean(b, k, 'macro_' + m):.3f}" for m, _ in METHODS]
            L.append(f"| {b} | {k} | {mean(b, k, 'labeled_items'):.0f} | " + " | ".join(cells)
                     + f" | {mean(b, k, 'head_weight'):.2f} |")
    L += ["", "## Ranking quality: macro average precision (no threshold)", "",
          "| backbone | k | propagation | + head (auto) | head only | OvR logreg | 10-NN | (share of positive pairs) |",
          "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for b in backbones:
        for k in shots:
            L.append(f"| {b} | {k} | " + " | ".join(f"{mean(b, k, 'ap_' + m):.3f}" for m in ("prop", "mix", "head", "logreg", "knn"))
                     + f" | {meta['positive_share']:.3f} |")
    L += ["", "## Auto-labeling per (item, class): certified bars, then accepted pairs", "",
          "share = accepted pairs / all pairs of the unlabeled items; applies = accepted 'applies' pairs / "
          "true positives of the unlabeled items; precision realised against the truth; classes = "
          "classes with a certified upper / lower bar (of " + str(meta["classes"]) + ").", "",
          "| backbone | k | model | target | share accepted | precision | applies share | applies precision | "
          "classes upper / lower |",
          "|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for b in backbones:
        for k in shots:
            for tag, name in (("prop", "propagation"), ("mix", "+ head")):
                for t in TARGETS:
                    key = f"{tag}_auto{t}"
                    L.append(f"| {b} | {k} | {name} | {t} | {mean(b, k, key + '_share'):.3f} | "
                             f"{mean(b, k, key + '_precision'):.3f} | {mean(b, k, key + '_applies_share'):.3f} | "
                             f"{mean(b, k, key + '_applies_precision'):.3f} | "
                             f"{mean(b, k, key + '_classes_upper'):.1f} / {mean(b, k, key + '_classes_lower'):.1f} |")
    L += ["", "## CPU seconds (single BLAS thread, medians)", "",
          "| backbone | k | predict_multilabel (6 propagations: 5 folds + final) | with X (+ 6 x C heads) | "
          "OvR logreg (C fits) |",
          "|---|---:|---:|---:|---:|"]
    for b in backbones:
        for k in shots:
            L.append(f"| {b} | {k} | {mean(b, k, 'cpu_s_propagation'):.2f} | {mean(b, k, 'cpu_s_mix'):.2f} | "
                     f"{mean(b, k, 'cpu_s_logreg'):.2f} |")
    L += ["", "One propagation of all classes as one (n, 2C) matrix vs C two-class `LabelPropagation` fits "
          "(5 positives per class, median of 3):", ""]
    for b, s in meta["speed"].items():
        L.append(f"- {b}: batched {s['batched_cpu_s']:.2f} CPU-s, per class {s['per_class_cpu_s']:.2f} CPU-s "
                 f"({s['ratio']:.1f}x)")
    path.write_text("\n".join(L) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
