"""Calibration maps compared on the robustness suite's cells (issue 10, "confidence is calibrated").

Per (dataset, backbone) cached by ``benchmarks/robustness_data.py``, per budget of random labels
per class and seed, labelloop's default prediction (as ``benchmarks/robustness.py``:
``calibrated_predictions`` with class_prior and head weight auto) is taken *uncalibrated*, with
its cross-fitted held-out distributions; then each calibration map is fitted on the held-out
human labels and scored on the unlabeled items (ECE, |mean confidence - accuracy|). The
predicted labels are the same under every map.

- ``power, beta 1 below 4``: the power map alone, no calibration below 4 held-out labels (before);
- ``power``: the same with ``DEFAULT_BETA`` below 4 held-out labels;
- ``power + top-label (prior k)``: then the top-label logistic map, its prior worth k items
  (``TOP_PRIOR_ITEMS`` is the default);
- ``power + top-label, LODO default``: the power below 4 held-out labels fitted on the other data
  sets' cells at one label per class (the maximum pooled likelihood of their unlabeled items),
  scored on the left-out data set: what ``DEFAULT_BETA`` does on data it was not fitted on.

Run:  python benchmarks/calibration.py [--seeds 3] [--only digits sms-spam]
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
sys.path.insert(0, str(HERE))


def raw_prediction(Xn, S, y, C):
    """(P_raw, heldout rows, Q_raw) of labelloop's default prediction, uncalibrated."""
    from labelloop.loop.calibrate import Calibrator
    from labelloop.loop.predict import calibrated_predictions, embedding_head, prior_candidates
    from labelloop.propagate import LabelPropagation

    head = embedding_head(Xn, C)
    lp = LabelPropagation(class_mass=False).fit(S, y, n_classes=C)
    pred, _ = calibrated_predictions(prior_candidates(lp.Y_, y, C), head(y, None), lp.reached_, y, lambda yy: prior_candidates(
        LabelPropagation(class_mass=False).fit(S, yy, n_classes=C).Y_, y, C), head, calibrator=Calibrator(1.0, 0, None, None))
    return pred.proba, pred.heldout_rows, pred.heldout_proba


def pooled_beta(runs) -> float:
    """The grid power maximising the mean (per run) log-likelihood of the unlabeled items' labels."""
    from labelloop.loop.calibrate import BETA_GRID, apply_power

    def ll(beta):
        out = []
        for r in runs:
            u = np.flatnonzero(r["y"] < 0)
            Pc = apply_power(r["P"][u], beta)
            out.append(np.log(np.maximum(Pc[np.arange(u.size), r["yt"][u]], 1e-6)).mean())
        return float(np.mean(out))

    return max(BETA_GRID, key=ll)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--out", default="calibration")
    args = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits

    from labelloop.datasets import load_dataset
    from labelloop.graph import build_knn_graph, normalize_rows
    from labelloop.loop.calibrate import (DEFAULT_BETA, MIN_CALIBRATION_ITEMS, Calibrator, apply_power,
                                          expected_calibration_error, fit_calibrator, fit_top_label, prediction_weights)
    from labelloop.propagate import affinity_matrix
    from robustness import SHOTS, pairs, random_labels

    warnings.simplefilter("ignore")
    t0, load0 = time.time(), os.getloadavg()[0]
    runs = []
    for name, n, bb, f in pairs(args.only):
        yt = load_dataset(name, n=n, seed=0).labels
        Xn = normalize_rows(np.load(f))
        C = int(yt.max()) + 1
        S = affinity_matrix(build_knn_graph(Xn, k=10))
        for shots in SHOTS:
            for seed in range(args.seeds):
                y = random_labels(yt, C, shots, seed)
                with threadpool_limits(1, user_api="blas"):
                    P, rows, Q = raw_prediction(Xn, S, y, C)
                runs.append({"dataset": name, "backbone": bb, "shots": shots, "seed": seed, "P": P, "rows": rows,
                             "Q": Q, "y": y, "yt": yt})
            print(name, bb, shots, flush=True)
    datasets = sorted({r["dataset"] for r in runs})
    lodo = {d: pooled_beta([r for r in runs if r["shots"] == 1 and r["dataset"] != d]) for d in datasets}

    def fitted(r, *, top_prior=None, default=DEFAULT_BETA):
        t = r["y"][r["rows"]]
        if len(t) < MIN_CALIBRATION_ITEMS:
            return Calibrator(default, len(t), None, None)
        w = prediction_weights(t, r["P"].argmax(1), r["P"].shape[1])
        cal = fit_calibrator(r["Q"], t, weights=w)
        if top_prior is None:
            return cal
        Qb = apply_power(r["Q"], cal.beta)
        top = fit_top_label(Qb.max(1), Qb.argmax(1) == t, weights=w, prior_items=top_prior)
        return Calibrator(cal.beta, len(t), None, None, top)

    maps = {"uncalibrated": lambda r: Calibrator(1.0, 0, None, None),
            "power, beta 1 below 4": lambda r: fitted(r, default=1.0),
            "power": lambda r: fitted(r),
            **{f"power + top-label (prior {k:g})": (lambda k: lambda r: fitted(r, top_prior=k))(k) for k in (1.0, 5.0, 20.0)},
            "power + top-label, LODO default": lambda r: fitted(r, top_prior=5.0, default=lodo[r["dataset"]])}
    cells: dict = {}
    for r in runs:
        u = r["y"] < 0
        correct = r["P"][u].argmax(1) == r["yt"][u]
        for m, fit in maps.items():
            Pc = fit(r)(r["P"][u])
            assert (Pc.argmax(1) == r["P"][u].argmax(1)).all()
            conf = Pc.max(1)
            c = cells.setdefault((r["dataset"], r["backbone"], r["shots"]), {}).setdefault(m, [[], []])
            c[0].append(expected_calibration_error(conf, correct))
            c[1].append(abs(float(conf.mean() - correct.mean())))
    lines = [f"# Calibration maps on the robustness suite ({args.seeds} seeds; `python benchmarks/calibration.py`)", "",
             "labelloop's default prediction (class_prior and head weight auto), calibrated by each map fitted on the "
             "cross-fitted held-out human labels; on the unlabeled items, mean over cells (dataset x backbone x labels "
             "per class 1, 2, 5, 10, 20) of the ECE (10 bins) and of |mean confidence - accuracy| (each the mean over "
             "seeds); within 0.05: cells whose mean |gap| is at most 0.05. Predicted labels are the same under every "
             "map. LODO: the power used below 4 held-out labels fitted on the other data sets (one label per class), "
             "scored on the left-out one: " + ", ".join(f"{d} {b:.2f}" for d, b in lodo.items()) +
             f"; `DEFAULT_BETA` = {DEFAULT_BETA:.2f} (fitted on all).", "",
             "| map | mean ECE | ECE at 1 label/class | ECE at >= 2 | mean abs(gap) | cells within 0.05 | at >= 2 labels/class |",
             "|---|---|---|---|---|---|---|"]
    summary = {}
    for m in maps:
        e = {k: np.mean(v[m][0]) for k, v in cells.items()}
        g = {k: np.mean(v[m][1]) for k, v in cells.items()}
        one = [k for k in e if k[2] == 1]
        more = [k for k in e if k[2] > 1]
        s = summary[m] = {"ece": float(np.mean(list(e.values()))), "ece_1": float(np.mean([e[k] for k in one])),
                          "ece_2plus": float(np.mean([e[k] for k in more])), "gap": float(np.mean(list(g.values()))),
                          "within": int(sum(v <= 0.05 for v in g.values())), "within_2plus": int(sum(g[k] <= 0.05 for k in more)),
                          "cells": len(g), "cells_2plus": len(more)}
        lines.append(f"| {m} | {s['ece']:.3f} | {s['ece_1']:.3f} | {s['ece_2plus']:.3f} | {s['gap']:.3f} | "
                     f"{s['within']} of {s['cells']} | {s['within_2plus']} of {s['cells_2plus']} |")
    meta = {"seeds": args.seeds, "seconds": round(time.time() - t0), "loadavg_start": load0, "loadavg": os.getloadavg(),
            "argv": sys.argv, "lodo_beta": lodo}
    lines += ["", f"Command: `PYTHONPATH=src python {' '.join(sys.argv)}`; {meta['seconds']} s, load average "
              f"{load0:.1f} at the start and {meta['loadavg'][0]:.1f} at the end."]
    results = HERE / "results"
    (results / f"{args.out}.json").write_text(json.dumps({"meta": meta, "summary": summary}, indent=1))
    (results / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
