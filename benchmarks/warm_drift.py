"""Drift of repeated warm updates from a cold fit, and what keeps it bounded: the periodic full
propagation (``refit_every=5``, the old default) against an error bound: when the relative
residual an update leaves (``LabelPropagation.residual``) exceeds ``residual_growth`` x the last
full fit's, either full steps from the warm result towards the last full fit's ("drain", the
default at 1.5x, at most ``drain_steps`` per update) or a full propagation ("refit"); and neither.

    python benchmarks/warm_drift.py --sizes 10000 100000 --updates 15 10
    python benchmarks/warm_drift.py --project /tmp/million/base1m --updates 5 --variants none drain drain10 drain5
    python benchmarks/warm_drift.py --project /tmp/million/base1m --updates 5 --variants cli clijacobi cligs5 --out warm_drift_gs_1000000
    python benchmarks/warm_drift.py --project /tmp/million/base1m --updates 40 --compare-every 5 --variants clilanding clistall cli --out warm_drift_rebase_1000000

Data and graph as benchmarks/refresh_latency.py (synthetic 384-d, 10 overlapping classes,
k = 10; the graph from ``build_knn_graph``, or ``--cache-dir`` holding refresh_latency's).
Start: a cold fit with 3 labels per class; then ``--updates`` rounds of 10 new labels (random
unlabeled items, true class). After every round each variant updates warm, and its argmax is
compared with a cold fit on the same labels (agreement = share of items with the same
prediction). CPU seconds per update (this process, single-threaded products). Writes
benchmarks/results/warm_drift.json and .md. ``--project DIR``: instead, the stored affinity,
first refresh (3 labels per class) and true classes of a project benchmarks/e2e_latency.py
built (read only; e.g. 1M items, where each cold fit for the comparison is ~50 CPU-s);
writes warm_drift_<n>.json and .md.
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
VARIANTS = {   # short key: (name, LabelPropagation options)
    "refit5": ("refit every 5th (old default)", {"refit_every": 5, "residual_growth": None}),
    "none": ("no correction", {"refit_every": None, "residual_growth": None}),
    "refit2x": ("residual > 2x the last full fit's: refit", {"refit_every": None, "residual_growth": 2.0,
                                                             "residual_action": "refit"}),
    "drain2x": ("residual > 2x the last full fit's: drain to 1x", {
        "refit_every": None, "residual_growth": 2.0, "residual_action": "drain", "drain_steps": None}),
    "drain": ("residual > 1.5x the last full fit's: drain to 1x (the rule before)", {
        "refit_every": None, "residual_growth": 1.5, "residual_action": "drain", "drain_steps": None}),
    "drain10": ("residual > 1.5x: drain to 1x, at most 10 steps per update", {
        "refit_every": None, "residual_growth": 1.5, "residual_action": "drain", "drain_steps": 10}),
    "drainauto": ("residual > 1.5x: drain to 1x, at most 5M row-steps per update (default: 5 steps at 1M, 50 at 100k)", {
        "refit_every": None, "residual_growth": 1.5, "residual_action": "drain", "drain_steps": "auto"}),
    "cli": ("as `labelloop refresh`: 5 push steps (warm_iter), residual > 1.5x: Gauss-Seidel sweeps to 1x, "
            "at most 3M row-steps per update", {"update": {"n_iter": 5}}),
    "clilanding": ("as `labelloop refresh`, but a drain that used its budget and left the residual above its target "
                   "and no lower than before the update moves the baseline up to it (at most 1.5x; "
                   "rebaseline=\"landing\")", {"rebaseline": "landing", "update": {"n_iter": 5}}),
    "clijacobi": ("as `labelloop refresh` before: 5 push steps, residual > 1.5x: full (Jacobi) steps to 1x, "
                  "at most 5M row-steps per update", {"drain_sweep": "jacobi", "drain_steps": lambda n: max(1, 5_000_000 // n),
                                                      "update": {"n_iter": 5}}),
    "clistall": ("as `labelloop refresh`, the baseline moves up early only where a drain ends above the bound "
                 "(rebaseline=\"stall\")", {"rebaseline": "stall", "update": {"n_iter": 5}}),
    "cligs5": ("as `labelloop refresh`, at most 5M row-steps of Gauss-Seidel sweeps per update", {
        "drain_steps": lambda n: max(1, 5_000_000 // n), "update": {"n_iter": 5}}),
    "push20": ("20 push steps on up to 3n rows, then as `labelloop refresh`", {
        "update": {"n_iter": 20, "max_rows": "3n"}}),
    "push20d2": ("20 push steps on up to 3n rows, at most 2 full steps per update", {
        "drain_steps": 2, "update": {"n_iter": 20, "max_rows": "3n"}}),
    "push10d2": ("10 push steps on up to 2n rows, at most 2 full steps per update", {
        "drain_steps": 2, "update": {"n_iter": 10, "max_rows": "2n"}}),
    "drain5": ("residual > 1.5x: drain to 1x, at most 5 steps per update", {
        "refit_every": None, "residual_growth": 1.5, "residual_action": "drain", "drain_steps": 5}),
    "drain2": ("residual > 1.5x: drain to 1x, at most 2 steps per update", {
        "refit_every": None, "residual_growth": 1.5, "residual_action": "drain", "drain_steps": 2}),
}


def project_state(root: Path) -> tuple:
    """``(S, y, truth, Y)`` from a project e2e_latency.py built (read only): its stored affinity,
    the first refresh's labels and propagation state, and the items' true classes."""
    from labelloop.csr import CsrArrays

    folder = next((root / "arrays" / "graphs").glob("*-S-k*-T*"))
    data, indices, indptr = (np.load(folder / f"{a}.npy") for a in ("data", "indices", "indptr"))
    n = len(indptr) - 1
    run = min((d for d in (root / "arrays" / "runs").iterdir() if (d / "state_Y.npy").exists()),
              key=lambda d: int(d.name))
    order = folder / "order"   # its locality order where stored (read only), else made in memory
    return (CsrArrays(data, indices, indptr, (n, n), order_dir=order if order.exists() else None),
            np.load(run / "state_y.npy").astype(np.int64), np.load(root / "truth.npy"),
            np.load(run / "state_Y.npy"))


def _options(v: dict, n: int) -> dict:
    """A variant's LabelPropagation options on n items (its "update" entry: the arguments of each
    update; a function of n: its value for n)."""
    return {k: x(n) if callable(x) else x for k, x in v.items() if k != "update"}


def run(n: int, updates: int, cache: Path | None, keys: list[str], project: Path | None = None,
        compare_every: int = 1) -> dict:
    rng = np.random.default_rng(0)
    variants = {VARIANTS[k][0]: VARIANTS[k][1] for k in keys}
    if project is not None:   # its stored graph and first refresh (a cold fit of 3 labels per class)
        S, y, yt, Y = project_state(project)
        n = S.shape[0]
        models = {k: LabelPropagation(**_options(v, n)).restore(S, Y.copy(), y.copy()) for k, v in variants.items()}
    else:
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
        y = np.full(n, -1)
        for c in range(10):
            y[rng.choice(np.flatnonzero(yt == c), 3, replace=False)] = c
        models = {k: LabelPropagation(**_options(v, n)).fit(S, y, n_classes=10) for k, v in variants.items()}
    agree = {k: [] for k in variants}
    cpu = {k: [] for k in variants}
    resid = {k: [] for k in variants}   # the residual each update left (before a refit it triggered)
    drained = {k: 0 for k in variants}   # full steps the drain variants ran
    refits = {k: 0 for k in variants}
    drains = {k: "" for k in variants}   # per update: D (it drained) or . (it did not)
    compared, cold_residual = [], []   # the updates compared with a cold fit, and its residual
    fit_residual = round(float(next(iter(models.values())).residual()), 5)
    loads = []
    for t in range(updates):
        new = rng.choice(np.flatnonzero(y < 0), 10, replace=False)
        y[new] = yt[new]
        compare = (t + 1) % compare_every == 0 or t == updates - 1
        if compare:   # a cold fit: ~50 CPU-s at 1M items
            fitted = LabelPropagation().fit(S, y, n_classes=10)
            cold, _ = fitted.transduction_, cold_residual.append(round(float(fitted.residual_fit_), 5))
            compared.append(t + 1)
            del fitted
        loads.append(os.getloadavg()[0])
        for k, m in models.items():
            c0 = time.process_time()
            before = (m.n_refits_,)
            m.update(y, **{a: (int(x[:-1]) * n if isinstance(x, str) else x)   # "3n": 3 x the items
                           for a, x in variants[k].get("update", {}).items()})
            cpu[k].append(time.process_time() - c0)
            refits[k] += int(m.n_refits_ > before[0])
            drained[k] += getattr(m, "drain_steps_", 0)
            drains[k] += "D" if getattr(m, "drain_steps_", 0) else "."
            m.drain_steps_ = 0
            resid[k].append(round(float(m.residual()), 5))
            if compare:
                agree[k].append(float((m.transduction_ == cold).mean()))
        print(f"n={n} update {t}: " + ", ".join(f"{k} {agree[k][-1] if compare else float('nan'):.4f} "
                                                 f"({cpu[k][-1]:.2f} s, residual {resid[k][-1]:.4f})"
                                                 for k in variants), flush=True)
    return {"n": n, "updates": updates, "load_median": round(float(np.median(loads)), 1),
            "residual_after_full_fit": fit_residual, "compared": compared, "cold_residual": cold_residual,
            "variants": {
        k: {"full_fits": refits[k], "drain_steps": drained[k], "drains": drains[k], "residual": resid[k], "agreement": [round(a, 4) for a in agree[k]], "agreement_mean": round(float(np.mean(agree[k])), 4),
            "agreement_min": round(min(agree[k]), 4), "cpu_ms_median": round(1e3 * float(np.median(cpu[k])), 1),
            "cpu_ms_mean": round(1e3 * float(np.mean(cpu[k])), 1), "cpu_ms_max": round(1e3 * max(cpu[k]), 1)}
        for k in variants}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--updates", type=int, nargs="+", default=[15, 10], help="rounds per size")
    ap.add_argument("--cache-dir", type=Path, default=None)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--project", type=Path, default=None,
                    help="instead of --sizes: a project benchmarks/e2e_latency.py built (e.g. 1M items), read only")
    ap.add_argument("--compare-every", type=int, default=1,
                    help="a cold fit (for the agreement) after every this many updates and the last (default 1)")
    ap.add_argument("--out", default=None, help="results file name in benchmarks/results (default warm_drift[_<n>])")
    args = ap.parse_args()
    if args.project is not None:
        rows = [run(0, args.updates[0], None, args.variants, args.project, args.compare_every)]
    else:
        rows = [run(n, u, args.cache_dir, args.variants, compare_every=args.compare_every)
                for n, u in zip(args.sizes, args.updates)]
    report = {"command": "python benchmarks/warm_drift.py " + " ".join(sys.argv[1:]), "rows": rows,
              "cores": os.cpu_count()}
    out = RESULTS / (args.out or ("warm_drift" if args.project is None else f"warm_drift_{rows[0]['n']}"))  # e.g. _1000000
    out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    lines = ["# Warm-update drift: periodic full propagation vs an error bound", "",
             f"Command: `{report['command']}`; {report['cores']} cores shared with other jobs (load average "
             "per size below). Agreement = share of items whose warm-updated argmax equals a cold fit's on "
             "the same labels, after each round of 10 new labels (3 labels per class to start; with "
             "--compare-every, after those rounds only, listed per size). CPU ms per "
             "update: median / mean / max / total over the updates. Full fits: full propagations that replaced a "
             "warm update; drain steps: full steps run after warm updates whose residual was above the bound.",
             ""]
    for r in rows:
        lines += [f"## {r['n']:,} items, {r['updates']} updates (load {r['load_median']}; residual after "
                  f"the first full fit {r['residual_after_full_fit']})", "",
                  *([f"Compared with a cold fit after updates {r['compared']}; the cold fits' own residuals: "
                     f"{r['cold_residual']}.", ""] if "compared" in r else []),
                  "| variant | full fits / drain steps | agreement mean | agreement min | CPU ms median / mean / max / total "
                  "| per update |", "|---|---:|---:|---:|---:|---|"]
        for k, v in r["variants"].items():
            lines.append(f"| {k} | {v['full_fits']} / {v['drain_steps']} | {v['agreement_mean']:.4f} | {v['agreement_min']:.4f} | "
                         f"{v['cpu_ms_median']} / {v['cpu_ms_mean']} / {v['cpu_ms_max']} / "
                         f"{round(v['cpu_ms_mean'] * r['updates'])} | {' '.join(f'{a:.3f}' for a in v['agreement'])} |")
        lines += ["", "Residual each update left, per variant (a refit's own where it triggered one):", ""]
        lines += [f"- {k}: {' '.join(f'{x:.4f}' for x in v['residual'])}" for k, v in r["variants"].items()]
        if any("drains" in v for v in r["variants"].values()):
            lines += ["", "Updates that drained (D) or not (.), in order:", ""]
            lines += [f"- {k}: `{v['drains']}` ({v['drains'].count('D')} of {len(v['drains'])})"
                      for k, v in r["variants"].items() if "drains" in v]
        lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
