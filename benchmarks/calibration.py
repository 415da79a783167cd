"""Calibration maps compared on the robustness suite's cells (issue 10, "confidence is calibrated").

Per (dataset, backbone) cached by ``benchmarks/robustness_data.py``, per budget of random labels
per class and seed, labelloop's default prediction (as ``benchmarks/robustness.py``:
``calibrated_predictions`` with class_prior and head weight auto) is taken *uncalibrated*, with
its cross-fitted held-out distributions; then each calibration map is fitted on the held-out
human labels and scored on the unlabeled items (ECE, |mean confidence - accuracy|). The
predicted labels are the same under every map.

- ``power, beta 1 below 4``: the power map alone, no calibration below 4 held-out labels;
- ``power, beta 1.68 below 4`` / ``power``: the same with the earlier default power (the pooled
  likelihood's) or ``DEFAULT_BETA`` below 4 held-out labels;
- ``power + top-label slope and intercept (prior k), beta 1.68 below 4 (before)``: then the
  two-parameter top-label logistic map on every run, its prior worth k items (5 was the default);
- ``power + top-label slope`` / ``... slope and intercept``: the top-label map with one or two
  parameters on every run; ``... intercept by BIC (shipped)``: ``choose_top_label``;
- ``shipped, LODO default``: the power below 4 held-out labels fitted on the other data sets'
  cells at one label per class (the power at which their mean gap is zero), scored on the
  left-out data set: what ``DEFAULT_BETA`` does on data it was not fitted on;
- ``oracle: ...``: the shipped map fitted on evidence a project does not have (held-out labels
  weighted to the true class shares; the final model's predictions of unlabeled items instead
  of the fold models' predictions of the held-out labels; 50 or 500 random unlabeled items),
  to tell which of the three limits the calibration: class weights, fold models, or sample size;
- what else was tried for the cells that miss (benchmarks/results/calibration_calib6.md):
  ``... intercept matching the held-out accuracy``: the top-label intercept set so the held-out
  labels' weighted mean confidence equals their add-one smoothed accuracy (the calibration and
  the accuracy estimate telling one story); ``... weighted to BBSE class shares``: the held-out
  labels weighted to class shares corrected by their confusion matrix (Lipton et al. 2018)
  instead of the predicted shares; ``... unweighted``; ``power pulled toward DEFAULT_BETA``: the
  power fitted with a prior at DEFAULT_BETA worth TOP_PRIOR_ITEMS items (one octave per unit).

"Why cells miss": per cell whose mean |gap| under the shipped map exceeds 0.05, the signed gap
per seed and whether one sign holds on average (|mean gap| >= 0.05: a bias) or the seeds
scatter around zero (noise of a few held-out labels); the held-out labels' accuracy weighted
to the predicted class shares (what the fit sees) and to the true shares (an oracle), beside
the unlabeled items' accuracy: the first minus the second is the class weighting's bias, the
second minus the third the fold models' (each held-out label's fold model lacks it).

``--balanced-folds`` (an experiment): the held-out folds deal every class's labels from fold 0
(``loop.heldout.fold_ids`` replaced for the run), so while a class has at most 5 labels each fold
hides at most one of every class and no held-out label's fold model lacks more of its own class
than of the others (the shipped folds continue the round-robin across classes).

The uncalibrated runs are memoised (``--memo``): a second run only refits the maps (seconds).

Run:  python benchmarks/calibration.py [--seeds 3] [--only digits sms-spam]
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
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


def mean_gap_beta(runs) -> float:
    """The power (a fine grid, 2^-1 .. 2^3) at which the mean over (data set, backbone) pairs of
    (mean confidence - accuracy) of the unlabeled items is closest to zero: right on average."""
    from labelloop.loop.calibrate import apply_power

    grid = 2.0 ** np.linspace(-1, 3, 81)

    def gap(beta):
        pairs_: dict = {}
        for r in runs:
            u = r["y"] < 0
            Pc = apply_power(r["P"][u], beta)
            pairs_.setdefault((r["dataset"], r["backbone"]), []).append(Pc.max(1).mean() - (Pc.argmax(1) == r["yt"][u]).mean())
        return float(np.mean([np.mean(v) for v in pairs_.values()]))

    return float(min(grid, key=lambda b: abs(gap(b))))


def true_share_weights(r, t):
    """(m,) weights of held-out labels ``t`` to the unlabeled items' TRUE class shares (an oracle)."""
    C = r["P"].shape[1]
    u = r["y"] < 0
    pop = np.bincount(r["yt"][u], minlength=C) / u.sum()
    held = np.bincount(t, minlength=C) / len(t)
    w = pop[t] / np.maximum(held[t], 1e-12)
    return w / w.mean()


def population_sample(r, size=None):
    """Rows of unlabeled items (an oracle's evidence): as many per class as the held-out labels
    have (``size`` None), or ``size`` drawn uniformly."""
    rng = np.random.default_rng(1)
    u = np.flatnonzero(r["y"] < 0)
    if size is not None:
        return rng.choice(u, min(size, u.size), replace=False)
    cnt = np.bincount(r["y"][r["rows"]], minlength=r["P"].shape[1])
    return np.concatenate([rng.choice(u[r["yt"][u] == c], min(cnt[c], int((r["yt"][u] == c).sum())), replace=False)
                           for c in range(len(cnt))])


def balanced_fold_ids(labels, n_folds=5, *, seed=0, keep_one_per_class=False) -> np.ndarray:
    """``loop.heldout.fold_ids`` with every class's labels dealt round-robin from fold 0 (``--balanced-folds``)."""
    labels = np.asarray(labels, dtype=np.int64)
    order = np.random.default_rng(seed).permutation(labels.size)
    out = np.full(labels.size, -1, dtype=np.int64)
    if not keep_one_per_class:
        out[order] = np.arange(labels.size) % n_folds
        return out
    for c in np.unique(labels):
        members = order[labels[order] == c]  # (m_c,) this class, in random order
        if members.size >= 2:
            out[members] = np.arange(members.size) % n_folds
    return out


def bbse_shares(r) -> np.ndarray:
    """(C,) class shares of the unlabeled items by black-box shift estimation (Lipton et al.
    2018): the predicted shares ``q`` = M^T pi with M the held-out labels' confusion matrix
    (rows add-one smoothed), solved by non-negative least squares."""
    from scipy.optimize import nnls

    C = r["P"].shape[1]
    t, pred = r["y"][r["rows"]], r["Q"].argmax(1)
    M = np.stack([(np.bincount(pred[t == c], minlength=C) + 1.0 / C) / ((t == c).sum() + 1.0) for c in range(C)])
    pi = nnls(M.T, np.bincount(r["P"].argmax(1), minlength=C) / len(r["P"]))[0] + 1e-3
    return pi / pi.sum()


def shares_weights(t, shares) -> np.ndarray:
    """(m,) weights of held-out labels ``t`` to the class ``shares`` (C,), mean 1."""
    held = np.bincount(t, minlength=len(shares)) / len(t)
    w = shares[t] / np.maximum(held[t], 1e-12)
    return w / w.mean()


def mean_matching(cal, Q, t, w):
    """``cal`` with the top-label intercept moved so that the weighted mean calibrated confidence
    of the held-out labels equals their add-one smoothed weighted accuracy (bisection)."""
    from labelloop.loop.calibrate import Calibrator, apply_power, apply_top_label

    w = w / w.sum()
    m = len(t)
    target = (float((w * (cal(Q).argmax(1) == t)).sum()) * m + 1.0) / (m + 2.0)
    Qb = apply_power(Q, cal.beta)
    a, b = cal.top
    lo, hi = -12.0, 12.0
    for _ in range(50):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if float((w * apply_top_label(Qb, a, b + mid).max(1)).sum()) < target else (lo, mid)
    return Calibrator(cal.beta, m, None, None, (a, b + (lo + hi) / 2))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--out", default="calibration")
    ap.add_argument("--memo", default=str(HERE / ".cache" / "calibration_runs"),
                    help="folder of the uncalibrated runs, reused when the same cells are asked again")
    ap.add_argument("--balanced-folds", action="store_true",
                    help="experiment: every class's labels dealt from fold 0 (use its own --memo)")
    args = ap.parse_args(argv)
    if args.balanced_folds:
        import labelloop.loop.heldout as heldout

        heldout.fold_ids = balanced_fold_ids
    from threadpoolctl import threadpool_limits

    from labelloop.datasets import load_dataset
    from labelloop.graph import build_knn_graph, normalize_rows
    from labelloop.loop.calibrate import (BETA_GRID, DEFAULT_BETA, MIN_CALIBRATION_ITEMS, TOP_PRIOR_ITEMS, Calibrator, apply_power,
                                          choose_top_label, expected_calibration_error, fit_calibrator, fit_top_label,
                                          prediction_weights)
    from labelloop.propagate import affinity_matrix
    from robustness import SHOTS, pairs, random_labels

    warnings.simplefilter("ignore")
    t0, load0 = time.time(), os.getloadavg()[0]
    runs = []
    Path(args.memo).mkdir(parents=True, exist_ok=True)
    for name, n, bb, f in pairs(args.only):
        memo = Path(args.memo) / f"{name}-{bb}-s{args.seeds}.pkl"
        if memo.exists():
            runs += pickle.loads(memo.read_bytes())
            continue
        first = len(runs)
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
        memo.write_bytes(pickle.dumps(runs[first:]))
    datasets = sorted({r["dataset"] for r in runs})
    lodo = {d: mean_gap_beta([r for r in runs if r["shots"] == 1 and r["dataset"] != d]) for d in datasets}
    OLD_BETA = 2.0 ** 0.75  # DEFAULT_BETA before (the pooled likelihood's power)

    def fitted(r, *, top="shipped", default=DEFAULT_BETA, prior=TOP_PRIOR_ITEMS, weights="predicted", evidence=None,
               match=False, beta_prior=False):
        """The power, then the top-label map: "shipped" (choose_top_label), "both" (slope and
        intercept on every run), "slope", or None; ``weights``: "predicted" (shipped), "bbse",
        "none" or "true" (an oracle); ``evidence``: oracles; ``match``: the intercept matching
        the held-out accuracy (:func:`mean_matching`); ``beta_prior``: the power pulled toward
        DEFAULT_BETA (:func:`power_with_prior`)."""
        if evidence is not None:
            s = population_sample(r, None if evidence == "same" else evidence)
            Q, t = r["P"][s], r["yt"][s]
        else:
            Q, t = r["Q"], r["y"][r["rows"]]
        if len(r["rows"]) < MIN_CALIBRATION_ITEMS and evidence in (None, "same"):
            return Calibrator(default, len(t), None, None)
        w = {"true": lambda: true_share_weights(r, t), "bbse": lambda: shares_weights(t, bbse_shares(r)),
             "none": lambda: np.ones(len(t)),
             "predicted": lambda: prediction_weights(t, r["P"].argmax(1), r["P"].shape[1])}[weights]()
        if evidence not in (None, "same"):
            w = None  # a uniform sample of the unlabeled items: no class weights
        cal = fit_calibrator(Q, t, weights=w)
        if beta_prior:
            cal = Calibrator(power_with_prior(Q, t, w), len(t), None, None)
        if top is None:
            return cal
        Qb = apply_power(Q, cal.beta)
        if top == "shipped":
            ab = choose_top_label(Qb.max(1), Qb.argmax(1) == t, weights=w)
        else:
            ab = fit_top_label(Qb.max(1), Qb.argmax(1) == t, weights=w, prior_items=prior, intercept=top == "both")
        cal = Calibrator(cal.beta, len(t), None, None, ab)
        return mean_matching(cal, Q, t, w) if match else cal

    def power_with_prior(Q, t, w):
        """The power of BETA_GRID minimising fit_calibrator's weighted smoothed cross-entropy plus
        a Gaussian prior on log2(beta) at log2(DEFAULT_BETA), worth TOP_PRIOR_ITEMS items."""
        L = np.log(np.maximum(np.asarray(Q, np.float64), 1e-12))
        m, C = L.shape
        eps = 1.0 / (m + 2)
        target = np.full((m, C), eps / C)
        target[np.arange(m), t] += 1.0 - eps

        def objective(beta):
            Z = beta * L
            Z -= Z.max(1, keepdims=True)
            logp = Z - np.log(np.exp(Z).sum(1, keepdims=True))
            return (float((w * -(target * logp).sum(1)).sum() / w.sum())
                    + 0.5 * TOP_PRIOR_ITEMS / m * (np.log2(beta) - np.log2(DEFAULT_BETA)) ** 2)

        return min(BETA_GRID, key=objective)

    maps = {"uncalibrated": lambda r: Calibrator(1.0, 0, None, None),
            "power, beta 1 below 4": lambda r: fitted(r, top=None, default=1.0),
            f"power, beta {OLD_BETA:.2f} below 4": lambda r: fitted(r, top=None, default=OLD_BETA),
            "power": lambda r: fitted(r, top=None),
            **{f"power + top-label slope and intercept (prior {k:g}), beta {OLD_BETA:.2f} below 4 (before)":
               (lambda k: lambda r: fitted(r, top="both", prior=k, default=OLD_BETA))(k) for k in (1.0, 5.0, 20.0)},
            "power + top-label slope and intercept": lambda r: fitted(r, top="both"),
            "power + top-label slope": lambda r: fitted(r, top="slope"),
            "power + top-label slope, intercept by BIC (shipped)": lambda r: fitted(r),
            "shipped, LODO default": lambda r: fitted(r, default=lodo[r["dataset"]]),
            "shipped + intercept matching the held-out accuracy": lambda r: fitted(r, match=True),
            "shipped, held-out labels weighted to BBSE class shares": lambda r: fitted(r, weights="bbse"),
            "shipped, held-out labels unweighted": lambda r: fitted(r, weights="none"),
            "shipped, power pulled toward DEFAULT_BETA (prior worth 5 items)": lambda r: fitted(r, beta_prior=True),
            "oracle: weights to the true class shares": lambda r: fitted(r, weights="true"),
            "oracle: the final model's predictions of unlabeled items, as many per class as held out":
                lambda r: fitted(r, evidence="same"),
            "oracle: ... and weights to the true class shares": lambda r: fitted(r, evidence="same", weights="true"),
            "oracle: 50 unlabeled items drawn at random": lambda r: fitted(r, evidence=50),
            "oracle: 500 unlabeled items drawn at random": lambda r: fitted(r, evidence=500)}
    cells: dict = {}
    for r in runs:
        u = r["y"] < 0
        correct = r["P"][u].argmax(1) == r["yt"][u]
        for m, fit in maps.items():
            Pc = fit(r)(r["P"][u])
            assert (Pc.argmax(1) == r["P"][u].argmax(1)).all()
            conf = Pc.max(1)
            c = cells.setdefault((r["dataset"], r["backbone"], r["shots"]), {}).setdefault(m, [[], [], []])
            c[0].append(expected_calibration_error(conf, correct))
            c[1].append(abs(float(conf.mean() - correct.mean())))
            c[2].append(float(conf.mean() - correct.mean()))
    lines = [f"# Calibration maps on the robustness suite ({args.seeds} seeds; `python benchmarks/calibration.py`)", "",
             "labelloop's default prediction (class_prior and head weight auto), calibrated by each map fitted on the "
             "cross-fitted held-out human labels; on the unlabeled items, mean over cells (dataset x backbone x labels "
             "per class 1, 2, 5, 10, 20) of the ECE (10 bins) and of |mean confidence - accuracy| (each the mean over "
             "seeds); within 0.05: cells whose mean |gap| is at most 0.05. Predicted labels are the same under every "
             "map. LODO: the power used below 4 held-out labels fitted on the other data sets (one label per class, "
             "the power whose mean gap over their (data set, backbone) pairs is zero), scored on the left-out one: " +
             ", ".join(f"{d} {b:.2f}" for d, b in lodo.items()) + f"; `DEFAULT_BETA` = {DEFAULT_BETA:.2f} (fitted on all). "
             "Oracles (not possible in a project, they read the truth of unlabeled items) locate the error: the "
             "held-out labels' class weights, the fold models being weaker than the final one, or the number of "
             "labels.", "",
             "| map | mean ECE | ECE at 1 label/class | ECE at >= 2 | mean abs(gap) | mean gap at >= 2 | cells within 0.05 "
             "| at >= 2 labels/class | cells over / under by > 0.05 |",
             "|---|---|---|---|---|---|---|---|---|"]
    summary = {}
    for m in maps:
        e = {k: np.mean(v[m][0]) for k, v in cells.items()}
        g = {k: np.mean(v[m][1]) for k, v in cells.items()}
        sg = {k: np.mean(v[m][2]) for k, v in cells.items()}  # signed: mean confidence - accuracy
        one = [k for k in e if k[2] == 1]
        more = [k for k in e if k[2] > 1]
        s = summary[m] = {"ece": float(np.mean(list(e.values()))), "ece_1": float(np.mean([e[k] for k in one])),
                          "ece_2plus": float(np.mean([e[k] for k in more])), "gap": float(np.mean(list(g.values()))),
                          "within": int(sum(v <= 0.05 for v in g.values())), "within_2plus": int(sum(g[k] <= 0.05 for k in more)),
                          "cells": len(g), "cells_2plus": len(more), "signed_gap_2plus": float(np.mean([sg[k] for k in more])),
                          "over": int(sum(g[k] > 0.05 and sg[k] > 0 for k in g)),
                          "under": int(sum(g[k] > 0.05 and sg[k] <= 0 for k in g))}
        lines.append(f"| {m} | {s['ece']:.3f} | {s['ece_1']:.3f} | {s['ece_2plus']:.3f} | {s['gap']:.3f} | "
                     f"{s['signed_gap_2plus']:+.3f} | {s['within']} of {s['cells']} | {s['within_2plus']} of "
                     f"{s['cells_2plus']} | {s['over']} / {s['under']} |")
    shipped, before = "power + top-label slope, intercept by BIC (shipped)", [m for m in maps if m.endswith("(before)")][1]
    lines += ["", f"Per cell: the shipped map and the one before ({before}); accuracy on the unlabeled items, mean "
              "confidence - accuracy per seed, held-out labels per seed (m).", "",
              "| dataset | backbone | labels/class | accuracy | m | gap before | gap shipped | mean abs(gap) before / shipped |",
              "|---|---|---|---|---|---|---|---|"]
    for k, v in cells.items():
        m_held = sorted({len(r["rows"]) for r in runs if (r["dataset"], r["backbone"], r["shots"]) == k})
        acc = np.mean([float((r["P"][r["y"] < 0].argmax(1) == r["yt"][r["y"] < 0]).mean()) for r in runs
                       if (r["dataset"], r["backbone"], r["shots"]) == k])
        sg = {x: " ".join(f"{g:+.3f}" for g in v[x][2]) for x in (before, shipped)}
        lines.append(f"| {k[0]} | {k[1]} | {k[2]} | {acc:.3f} | {'/'.join(map(str, m_held))} | {sg[before]} | {sg[shipped]} | "
                     f"{np.mean(v[before][1]):.3f} / {np.mean(v[shipped][1]):.3f} |")
    lines += why_cells_miss(runs, cells, shipped)
    lines += estimate_against_confidence(runs, maps[shipped])
    meta = {"seeds": args.seeds, "seconds": round(time.time() - t0), "loadavg_start": load0, "loadavg": os.getloadavg(),
            "argv": sys.argv, "lodo_beta": lodo}
    lines += ["", f"Command: `PYTHONPATH=src python {' '.join(sys.argv)}`; {meta['seconds']} s, load average "
              f"{load0:.1f} at the start and {meta['loadavg'][0]:.1f} at the end."]
    results = HERE / "results"
    (results / f"{args.out}.json").write_text(json.dumps({"meta": meta, "summary": summary}, indent=1))
    (results / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def why_cells_miss(runs, cells, shipped) -> list[str]:
    """The "Why cells miss" section (module docstring): the cells whose mean |gap| under the
    ``shipped`` map exceeds 0.05, each classed as no held-out labels, a bias (one sign on
    average) or noise, with the held-out accuracy under predicted and true class weights."""
    from labelloop.loop.calibrate import prediction_weights

    acc: dict = {}
    for r in runs:
        u = r["y"] < 0
        t = r["y"][r["rows"]]
        ok = r["Q"].argmax(1) == t
        row = [float((r["P"][u].argmax(1) == r["yt"][u]).mean())]
        if len(t):
            for w in (prediction_weights(t, r["P"].argmax(1), r["P"].shape[1]), true_share_weights(r, t)):
                row.append(float((w * ok).sum() / w.sum()))
        acc.setdefault((r["dataset"], r["backbone"], r["shots"]), []).append(row)
    lines = ["", "## Why cells miss (shipped map)", "",
             "Cells with mean |gap| > 0.05: the signed gap (mean confidence - accuracy) per seed; kind: \"no held-out\" "
             "(one label per class, the default power), \"bias\" (|mean gap| >= 0.05) or \"noise\" (seeds on both sides); "
             "accuracy of the unlabeled items, and the held-out labels' accuracy weighted to the predicted class shares "
             "(what the fit sees) and to the true shares (an oracle). Predicted minus true weights: the weighting's bias "
             "(over-predicted classes have high recall and get the most weight); true weights minus unlabeled: the fold "
             "models' (each held-out label is predicted without it).", "",
             "| dataset | backbone | labels/class | gap per seed | mean gap | kind | accuracy | held-out, predicted "
             "weights | held-out, true weights |", "|---|---|---|---|---|---|---|---|---|"]
    kinds: dict = {}
    for k, v in cells.items():
        g = np.array(v[shipped][2])
        if np.abs(g).mean() <= 0.05:
            continue
        a = np.array(acc[k], dtype=object)
        held = [r for r in acc[k] if len(r) == 3]
        kind = "no held-out" if not held else ("bias" if abs(g.mean()) >= 0.05 else "noise")
        kinds.setdefault(kind, []).append(g.mean())
        hp, ht = (f"{np.mean([r[i] for r in held]):.3f}" for i in (1, 2)) if held else ("–", "–")
        lines.append(f"| {k[0]} | {k[1]} | {k[2]} | {' '.join(f'{x:+.3f}' for x in g)} | {g.mean():+.3f} | {kind} | "
                     f"{np.mean([r[0] for r in a]):.3f} | {hp} | {ht} |")
    lines += ["", "Missed cells by kind (over / under on average): " + "; ".join(
        f"{kind} {len(v)} ({sum(x > 0 for x in v)} / {sum(x <= 0 for x in v)})" for kind, v in kinds.items()) + "."]
    return lines


def estimate_against_confidence(runs, fit) -> list[str]:
    """The "accuracy estimate against mean confidence" section: on the runs with held-out labels,
    how far the whole-dataset accuracy estimate (``status``: the calibrated confidences corrected
    by the held-out labels' calibration gap, ``loop.estimate``) and the calibrated mean confidence
    each land from the unlabeled items' accuracy, and how often the estimate's interval (and the
    same interval moved to the mean confidence) contains the truth."""
    from labelloop.loop.calibrate import prediction_weights
    from labelloop.loop.estimate import estimate_dataset_accuracy

    per: dict = {}
    for r in runs:
        P, rows, y, yt = r["P"], r["rows"], r["y"], r["yt"]
        if len(rows) < 4:
            continue
        cal, u, t = fit(r), y < 0, y[rows]
        Pc, Qc = cal(P), cal(r["Q"])
        w = prediction_weights(t, P.argmax(1), P.shape[1])
        est = estimate_dataset_accuracy(Pc.max(1), ~u, Qc.max(1), Qc.argmax(1) == t, heldout_weights=w)
        n, n_h = len(y), int((~u).sum())
        acc = float((Pc[u].argmax(1) == yt[u]).mean())
        truth = float(((Pc.argmax(1) == yt) | ~u).mean())
        point = (n_h + float(Pc[u].max(1).sum())) / n  # the calibration's own whole-dataset claim
        shift = point - est.accuracy
        per.setdefault((r["dataset"], r["backbone"], r["shots"]), []).append(
            [abs((est.accuracy * n - n_h) / (n - n_h) - acc), abs(float(Pc[u].max(1).mean()) - acc),
             est.lower <= truth <= est.upper, est.lower + shift <= truth <= est.upper + shift])
    a = np.array([np.mean(v, axis=0) for v in per.values()])  # (cells, 4)
    return ["", "## The accuracy estimate against mean confidence (shipped map, runs with >= 4 held-out labels)", "",
            "Unlabeled items' accuracy as the whole-dataset estimate (`status`) puts it, against the calibrated mean "
            "confidence; and coverage of the estimate's interval, as computed and moved to centre on the mean "
            "confidence (\"one story\").", "",
            "| | mean abs(error) | cells within 0.05 | runs whose interval contains the truth |", "|---|---|---|---|",
            f"| estimate (`status`) | {a[:, 0].mean():.3f} | {int((a[:, 0] <= 0.05).sum())} of {len(a)} | {a[:, 2].mean():.3f} |",
            f"| calibrated mean confidence | {a[:, 1].mean():.3f} | {int((a[:, 1] <= 0.05).sum())} of {len(a)} | "
            f"{a[:, 3].mean():.3f} |"]


if __name__ == "__main__":
    sys.exit(main())
