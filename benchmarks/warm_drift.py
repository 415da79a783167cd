"""Drift of repeated warm updates from a cold fit, and what keeps it bounded: the periodic full
propagation (``refit_every=5``, the old default) against an error bound: when the relative
residual an update leaves (``LabelPropagation.residual``) exceeds ``residual_growth`` x the last
full fit's, either full steps from the warm result until it is back to the last full fit's
("drain", the default at 1.5x) or a full propagation ("refit"); and neither.

    python benchmarks/warm_drift.py --sizes 10000 100000 --updates 15 10

Data and graph as benchmarks/refresh_latency.py (synthetic 384-d, 10 overlapping classes,
k = 10; the graph from ``build_knn_graph``, or ``--cache-dir`` holding refresh_latency's).
Start: a cold fit with 3 labels per class; then ``--updates`` rounds of 10 new labels (random
unlabeled items, true class). After every round each variant updates warm, and its argmax is
compared with a cold fit on the same labels (agreement = share of items with the same
prediction). CPU seconds per update (this process, single-threaded products). Writes
benchmarks/results/warm_drift.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from refresh_latency import make_latent_embeddings  # noqa: E402

from labelloop.graph import KnnGraph, build_knn_graph  # noqa: E402
from labelloop.propagate import LabelPropagation, affinity_matrix  # noqa: E402

RESULTS = Path(__file__).parent / "results"
VARIANTS = {   # name: LabelPropagation options
    "refit every 5th (old default)": {"refit_every": 5, "residual_growth": None},
    "no correction": {"refit_every": None, "residual_growth": None},
    "residual > 2x the last full fit's: refit": {"refit_every": None, "residual_growth": 2.0,
                                                  "residual_action": "refit"},
    "residual > 2x the last full fit's: drain to 1x": {"refit_every": None, "residual_growth": 2.0,
                                                  "residual_action": "drain"},
    "residual > 1.5x the last full fit's: drain to 1x (default)": {"refit_every": None, "residual_growth": 1.5,
                                                              "residual_action": "drain"},
}


def run(n: int, updates: int, cache: Path | None) -> dict:
    X, _, yt = make_latent_embeddings(n)
    path = cache / f"graph-n{n}-k10.npz" if cache else None
    if path is not None and path.exists():
        g = KnnGraph.load(path)
    else:
        g = build_knn_graph(X, 10)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            g.save(path)
    del X
    S = affinity_matrix(g)
    rng = np.random.default_rng(0)
    y = np.full(n, -1)
    for c in range(10):
        y[rng.choice(np.flatnonzero(yt == c), 3, replace=False)] = c
    models = {k: LabelPropagation(**v).fit(S, y, n_classes=10) for k, v in VARIANTS.items()}
    agree = {k: [] for k in VARIANTS}
    cpu = {k: [] for k in VARIANTS}
    resid = {k: [] for k in VARIANTS}
    drained = {k: 0 for k in VARIANTS}   # full steps the drain variants ran   # the residual each update left (before a refit it triggered)
    refits = {k: 0 for k in VARIANTS}
    fit_residual = round(float(models["no correction"].residual()), 5)
    loads = []
    for t in range(updates):
        new = rng.choice(np.flatnonzero(y < 0), 10, replace=False)
        y[new] = yt[new]
        cold = LabelPropagation().fit(S, y, n_classes=10).transduction_
        loads.append(os.getloadavg()[0])
        for k, m in models.items():
            c0 = time.process_time()
            before = (m.n_refits_,)
            m.update(y)
            cpu[k].append(time.process_time() - c0)
            refits[k] += int(m.n_refits_ > before[0])
            drained[k] += getattr(m, "drain_steps_", 0)
            m.drain_steps_ = 0
            resid[k].append(round(float(m.residual()), 5))
            agree[k].append(float((m.transduction_ == cold).mean()))
        print(f"n={n} update {t}: " + ", ".join(f"{k} {agree[k][-1]:.4f}" for k in VARIANTS), flush=True)
    return {"n": n, "updates": updates, "load_median": round(float(np.median(loads)), 1),
            "residual_after_full_fit": fit_residual, "variants": {
        k: {"full_fits": refits[k], "drain_steps": drained[k], "residual": resid[k], "agreement": [round(a, 4) for a in agree[k]], "agreement_mean": round(float(np.mean(agree[k])), 4),
            "agreement_min": round(min(agree[k]), 4), "cpu_ms_median": round(1e3 * float(np.median(cpu[k])), 1),
            "cpu_ms_mean": round(1e3 * float(np.mean(cpu[k])), 1), "cpu_ms_max": round(1e3 * max(cpu[k]), 1)}
        for k in VARIANTS}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--updates", type=int, nargs="+", default=[15, 10], help="rounds per size")
    ap.add_argument("--cache-dir", type=Path, default=None)
    args = ap.parse_args()
    rows = [run(n, u, args.cache_dir) for n, u in zip(args.sizes, args.updates)]
    report = {"command": "python benchmarks/warm_drift.py " + " ".join(sys.argv[1:]), "rows": rows,
              "cores": os.cpu_count()}
    (RESULTS / "warm_drift.json").write_text(json.dumps(report, indent=2))
    lines = ["# Warm-update drift: periodic full propagation vs an error bound", "",
             f"Command: `{report['command']}`; {report['cores']} cores shared with other jobs (load average "
             "per size below). Agreement = share of items whose warm-updated argmax equals a cold fit's on "
             "the same labels, after each round of 10 new labels (3 labels per class to start). CPU ms per "
             "update: median / mean / max / total over the updates. Full fits: full propagations that replaced a "
             "warm update; drain steps: full steps run after warm updates whose residual was above the bound.",
             ""]
    for r in rows:
        lines += [f"## {r['n']:,} items, {r['updates']} updates (load {r['load_median']}; residual after "
                  f"the first full fit {r['residual_after_full_fit']})", "",
                  "| variant | full fits / drain steps | agreement mean | agreement min | CPU ms median / mean / max / total "
                  "| per update |", "|---|---:|---:|---:|---:|---|"]
        for k, v in r["variants"].items():
            lines.append(f"| {k} | {v['full_fits']} / {v['drain_steps']} | {v['agreement_mean']:.4f} | {v['agreement_min']:.4f} | "
                         f"{v['cpu_ms_median']} / {v['cpu_ms_mean']} / {v['cpu_ms_max']} / "
                         f"{round(v['cpu_ms_mean'] * r['updates'])} | {' '.join(f'{a:.3f}' for a in v['agreement'])} |")
        lines += ["", "Residual each update left, per variant (a refit's own where it triggered one):", ""]
        lines += [f"- {k}: {' '.join(f'{x:.4f}' for x in v['residual'])}" for k, v in r["variants"].items()]
        lines.append("")
    (RESULTS / "warm_drift.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
