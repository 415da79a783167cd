"""Does `diagnose` advise `config head_weight 0.5` where averaging the head in helps?

For each cached feature set (run ``benchmarks/label_efficiency.py`` first: it fills
``benchmarks/.cache/``) and 5 / 10 / 20 random labels per class (seeds 0-2), the diagnostic's
cross-validated accuracy of propagation and of propagation averaged with the classifier head
(``head_weight`` 0.5) is set beside the true accuracy of both on the unlabeled items, and
whether the advice to turn the head on was given.

Run:  python benchmarks/head_advice.py      (writes results/head_advice.{json,md})
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
RESULTS = HERE / "results"
SETS = [  # (dataset, subset size, cache folder of label_efficiency.py)
    ("fashion-mnist", 10_000, "fashion-mnist-n10000-s0__efficientnet-lite0-112"),
    ("digits", None, "digits-n1797-s0__efficientnet-lite0-112"),
    ("digits", None, "digits-n1797-s0__pixels-16-gray"),
]
SHOTS = (5, 10, 20)
SEEDS = 3


def main() -> int:
    from labelloop.adapt.diagnose import diagnose
    from labelloop.adapt.finetune import fit_head
    from labelloop.datasets import load_dataset
    from labelloop.graph import build_knn_graph, normalize_rows
    from labelloop.propagate import LabelPropagation

    rows = []
    for name, n, key in SETS:
        chunks = sorted((CACHE / key).glob("chunk*.npy"))
        if not chunks:
            print(f"{key}: not cached; run benchmarks/label_efficiency.py first", file=sys.stderr)
            return 1
        X = normalize_rows(np.concatenate([np.load(c) for c in chunks]))       # (n, d)
        y = np.asarray(load_dataset(name, n=n).labels)
        C = int(y.max()) + 1
        g = build_knn_graph(X, k=10, method="exact")
        for per in SHOTS:
            for seed in range(SEEDS):
                rng = np.random.default_rng(seed)
                lab = np.concatenate([rng.choice(np.flatnonzero(y == c), per, replace=False) for c in range(C)])
                yl = np.full(len(y), -1)
                yl[lab] = y[lab]
                d = diagnose(g, yl, X, seed=seed)
                P = LabelPropagation(temperature=0.01, n_iter=20).fit(g, yl, n_classes=C).predict_proba()
                H = fit_head(X, yl, n_classes=C, seed=seed).predict_proba(X)
                unl = yl < 0
                rows.append({
                    "features": key.split("__")[1], "dataset": name, "labels_per_class": per, "seed": seed,
                    "cv_propagation": d.propagation_accuracy, "cv_with_head": d.propagation_with_head_accuracy,
                    "advised": "head_weight" in d.advice,
                    "true_propagation": float((P.argmax(1)[unl] == y[unl]).mean()),
                    "true_with_head": float(((0.5 * P + 0.5 * H).argmax(1)[unl] == y[unl]).mean()),
                })
                r = rows[-1]
                print(f"{name} {r['features']} {per}/class seed {seed}: CV {r['cv_propagation']:.3f} -> "
                      f"{r['cv_with_head']:.3f} advised={r['advised']}; true {r['true_propagation']:.3f} -> "
                      f"{r['true_with_head']:.3f}", flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "head_advice.json").write_text(json.dumps({"rows": rows}, indent=1) + "\n")
    lines = ["# diagnose's advice on averaging the classifier head into the predictions", "",
             f"Command: `python benchmarks/head_advice.py` ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC). "
             "CV = the diagnostic's cross-validated accuracy on the labeled items (10 folds); true = "
             "accuracy on the unlabeled items with all the labels; head averaged in with weight 0.5. "
             f"Seeds 0-{SEEDS - 1} draw the random labels.", "",
             "| dataset | features | labels / class | seed | CV propagation | CV with head | advised | "
             "true propagation | true with head |", "|---|---|---:|---:|---:|---:|---|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['dataset']} | {r['features']} | {r['labels_per_class']} | {r['seed']} | "
                     f"{r['cv_propagation']:.3f} | {r['cv_with_head']:.3f} | {'yes' if r['advised'] else 'no'} | "
                     f"{r['true_propagation']:.3f} | {r['true_with_head']:.3f} |")
    adv = [r for r in rows if r["advised"]]
    right = sum(r["true_with_head"] > r["true_propagation"] for r in adv)
    missed = sum(r["true_with_head"] - r["true_propagation"] >= 0.02 for r in rows if not r["advised"])
    lines += ["", f"Advised in {len(adv)} of {len(rows)} cases; the head truly helped in {right} of them. "
              f"Not advised although it truly gained >= 2 points: {missed}.", ""]
    (RESULTS / "head_advice.md").write_text("\n".join(lines))
    print("\n".join(lines[-2:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
