"""Variants of labelloop's prediction decisions on the robustness suite's cells (issue 10), fast.

Every (dataset, backbone) pair ``benchmarks/robustness.py`` reads, every budget of random labels
per class (1, 2, 5, 10, 20) and seed: labelloop's default prediction (``calibrated_predictions``,
class_prior and head weight auto, as ``robustness.py``'s "labelloop" column), then the same with
one decision changed. The propagations and head fits are memoised on disk by the label vector
they were given (``--memo``), so a variant that only changes a choice or the calibration reruns
the whole table in seconds; a variant that hides other labels (10 folds) computes its new
propagations once.

Variants:

- ``default``: as shipped;
- ``prior: nats bar only``: ``choose_class_prior`` without its z rule (``min_z`` infinite);
- ``10 folds``: the held-out labels from 10 folds instead of 5;
- ``stratified folds``: fold f hides the f-th label of every class (each fold model is weaker in
  every class alike) instead of dealing the classes' labels round-robin across the folds;
- ``calibrate on one-step LOO``: the calibration fitted on each human label's own row one
  propagation step from its neighbours (its clamp dropped, ``S Y``) instead of the folds;
- ``calibrate on folds + LOO``: on both;
- ``weights: none`` / ``weights: sqrt``: the held-out labels unweighted, or weighted by the
  square root of the label-shift weights (``prediction_weights``);
- ``weights: confusion-corrected``: the class shares of the weights from the population's
  predicted shares corrected by the held-out confusion (non-negative least squares, smoothed);
- ``prior: EM (Saerens 2002)``: the "estimated" candidate's class shares from EM prior adjustment
  (Saerens, Latinne & Decaestecker 2002) of the label-share distributions of the unlabeled items,
  instead of the geometric mean of the label shares and the predicted shares;
- ``prior: + none``: no class-mass normalisation (the raw propagation) as a third candidate;
- ``prior: soft class-mass normalisation``: every candidate's column scales q_c / m_c raised to
  the power 0.5 (half-way between the raw propagation and full normalisation);
- ``prior: challenger's shares only``: ``choose_class_prior`` weighting the held-out labels by
  the challenger's predicted class shares alone (not also by the default's);
- ``prior: best of the candidates (oracle)``: an upper bound, not a method: per run, the fixed
  prior ("labels", "estimated" or "mixed") most accurate on the unlabeled items (read from the
  truth): what any rule choosing among these candidates can reach;
- ``head: likelihood 1 se clear (before)``: ``choose_head_weight`` with ``min_z=1`` (the head's
  calibrated held-out log-likelihood gain 1 standard error clear), the rule before
  AUTO_HEAD_MIN_Z 0; ``head: likelihood gain, no share more right``: ``min_right=0``;
  ``head: accuracy gain z 1`` / ``z 0.5``: the standard-error bar on the paired difference in
  held-out labels right instead of in log-likelihood;
- ``prior: few-label veto (before)``: with fewer than MIN_HELDOUT_FOR_PRIOR held-out labels, the
  default instead of the hedge when the hedge gets fewer of them right (the rule before);
  ``prior: few-label veto under both shares``: only when it gets fewer right weighted by both
  candidates' predicted class shares; ``before (likelihood 1 se, veto)``: both rules as before;
- ``prior: the hedge as the default``: "mixed" the default at every number of held-out labels,
  "labels" and "estimated" its challengers under the same evidence rule;
- ``prior: population accuracy (BBSE shares), z 1``: the prior chosen by its estimated accuracy
  on the population, held-out recall per class weighted by the class shares the candidates'
  held-out confusions imply (black-box shift estimation, Lipton et al. 2018).

LabelSpreading (``kernel="knn", n_neighbors=10``, as ``robustness.py``) is fitted on the same
labels (memoised too); "cells below LS" compares the means over the same seeds.

Run:  python benchmarks/prediction_variants.py [--seeds 3] [--first-seed 5] [--only rotten-tomatoes]
          [--shots 1 2] [--variants default "10 folds"]
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import importlib
import json
import os
import pickle
import shlex
import sys
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _key(a) -> str:
    return "none" if a is None else hashlib.sha1(np.ascontiguousarray(a).tobytes()).hexdigest()[:16]


def _raw(ctx):
    """labelloop's default choices with the calibration left out: (prediction, head weight)."""
    from labelloop.loop.calibrate import Calibrator
    from labelloop.loop.predict import calibrated_predictions, prior_candidates

    y, C = ctx["y"], ctx["C"]
    Y, reached = ctx["rawY"](y)
    return calibrated_predictions(prior_candidates(Y, y, C), ctx["head"](y, None), reached, y,
                                  lambda yy: prior_candidates(ctx["rawY"](yy)[0], y, C), ctx["head"],
                                  calibrator=Calibrator(1.0, 0, None, None))


def _one_step_loo(ctx, prior, hw):
    """(L, C) each human label's row one step from its neighbours (own clamp dropped), under ``prior``."""
    from labelloop.loop.predict import HEDGE_PRIOR, mix_head
    from labelloop.propagate import _class_mass_scale

    y, C = ctx["y"], ctx["C"]
    Y = np.maximum(ctx["rawY"](y)[0], 0)
    lab = np.flatnonzero(y >= 0)
    Yl = np.maximum(np.asarray(ctx["S"]() [lab] @ Y), 0)
    parts = []
    for k in (("labels", "estimated") if prior == HEDGE_PRIOR else (prior,)):
        Z = Yl * _class_mass_scale(Y, y, C, k)
        parts.append(Z / np.maximum(Z.sum(1, keepdims=True), 1e-12))
    Q = np.mean(parts, axis=0)
    return lab, (mix_head(Q, ctx["head"](y, None)[lab], hw) if hw > 0 else Q)


def _confusion_weights(t, q_pred, P, C):
    from scipy.optimize import nnls

    M = np.zeros((C, C))
    np.add.at(M, (q_pred, t), 1.0)
    M = M + np.eye(C) + 1.0 / C
    M /= M.sum(0, keepdims=True)
    q, _ = nnls(M, np.bincount(P.argmax(1), minlength=C) / len(P))
    q = np.maximum(q, 1e-3)
    q /= q.sum()
    held = np.bincount(t, minlength=C) / len(t)
    w = q[t] / np.maximum(held[t], 1e-12)
    return w / w.mean()


def _recalibrated(evidence="folds", weighting="shift"):
    """A variant: the default choices, the calibration fitted on other evidence or weights."""
    def run(ctx):
        from labelloop.loop.calibrate import fit_calibrator, prediction_weights

        pred, hw = _raw(ctx)
        y, C, P = ctx["y"], ctx["C"], pred.proba
        rows, Q = pred.heldout_rows, pred.heldout_proba
        if evidence != "folds":
            lab, Ql = _one_step_loo(ctx, pred.class_prior, hw)
            rows, Q = (lab, Ql) if evidence == "loo" else (np.r_[rows, lab], np.concatenate([Q, Ql]))
        t = y[rows]
        w = None
        if len(rows):
            w = prediction_weights(t, P.argmax(1), C)
            if weighting == "none":
                w = np.ones(len(t))
            elif weighting == "sqrt":
                w = np.sqrt(w) / np.sqrt(w).mean()
            elif weighting == "confusion":
                w = _confusion_weights(t, Q.argmax(1), P, C)
        return fit_calibrator(Q, t, weights=w, top_label=True)(P)
    return run


def _default(ctx):
    from labelloop.loop.predict import calibrated_predictions, prior_candidates

    y, C = ctx["y"], ctx["C"]
    Y, reached = ctx["rawY"](y)
    return calibrated_predictions(prior_candidates(Y, y, C), ctx["head"](y, None), reached, y,
                                  lambda yy: prior_candidates(ctx["rawY"](yy)[0], y, C), ctx["head"])[0].proba


def _stratified_fold_ids(labels, n_folds=5, *, seed=0, keep_one_per_class=False):
    """heldout.fold_ids with every class's labels dealt from fold 0."""
    from labelloop.loop.heldout import fold_ids

    labels = np.asarray(labels, dtype=np.int64)
    if not keep_one_per_class:
        return fold_ids(labels, n_folds, seed=seed)
    order = np.random.default_rng(seed).permutation(labels.size)
    out = np.full(labels.size, -1, dtype=np.int64)
    for c in np.unique(labels):
        members = order[labels[order] == c]
        if members.size >= 2:
            out[members] = np.arange(members.size) % n_folds
    return out


def _patched(module="labelloop.loop.predict", **attrs):
    """A variant: the default with attributes of ``module`` replaced while it runs."""
    def run(ctx):
        mod = importlib.import_module(module)
        old = {k: getattr(mod, k) for k in attrs}
        try:
            for k, v in attrs.items():
                setattr(mod, k, v(old[k]))
            return _default(ctx)
        finally:
            for k, v in old.items():
                setattr(mod, k, v)
    return run


def em_shares(Y, y, n_classes, *, shares=None, iters=200, tol=1e-6):
    """(C,) class shares by EM prior adjustment (Saerens et al. 2002): the label-share
    distributions of the unlabeled reached rows re-weighted by q / q_labels, q their mean, to
    a fixed point."""
    from labelloop.propagate import class_distributions

    P, reached = class_distributions(Y, y, n_classes, "labels", shares=shares)
    P = P[(y < 0) & reached].astype(np.float64)
    q_lab = np.bincount(y[y >= 0], minlength=n_classes)[:n_classes] + 1.0 if shares is None else np.asarray(shares, float)
    q_lab = q_lab / q_lab.sum()
    q = q_lab.copy()
    for _ in range(iters):
        Z = P * (q / q_lab)
        q_new = (Z / np.maximum(Z.sum(1, keepdims=True), 1e-300)).mean(0)
        done = np.abs(q_new - q).max() < tol
        q = q_new
        if done:
            break
    return q


def _em_candidates(orig):
    def prior_candidates(Y, y, n_classes, names=None, *, shares=None):
        from labelloop.loop.predict import AUTO_PRIOR_CANDIDATES, HEDGE_PRIOR
        from labelloop.propagate import class_distributions

        out = orig(Y, y, n_classes, *(() if names is None else (names,)), shares=shares)
        if "estimated" in out:
            out["estimated"] = class_distributions(Y, y, n_classes, em_shares(Y, y, n_classes, shares=shares))[0]
        if HEDGE_PRIOR in out and all(k in out for k in AUTO_PRIOR_CANDIDATES):
            out[HEDGE_PRIOR] = np.mean([out[k] for k in AUTO_PRIOR_CANDIDATES], axis=0, dtype=np.float32)
        return out
    return prior_candidates


def _with_none(orig):
    def prior_candidates(Y, y, n_classes, names=None, *, shares=None):
        from labelloop.propagate import class_distributions

        out = orig(Y, y, n_classes, *(() if names is None else (names,)), shares=shares)
        keys = list(out)
        out["none"] = class_distributions(Y, y, n_classes, None)[0]
        return {k: out[k] for k in (*keys[:2], "none", *keys[2:])}
    return prior_candidates


def _own_shares(orig):
    def choose_class_prior(y_human, rows, Q, population, **kw):
        names = list(Q)
        challenger = next((k for k in names[1:] if k != "mixed"), names[0])
        return orig(y_human, rows, Q, {**population, names[0]: population[challenger]}, **kw)
    return choose_class_prior


def bbse_shares(t, held_pred, pop_pred, C):
    """(C,) the population's class shares: its predicted shares corrected by the held-out confusion
    (black-box shift estimation, Lipton et al. 2018; add-1/C smoothed, non-negative least squares)."""
    from scipy.optimize import nnls

    M = np.zeros((C, C))
    np.add.at(M, (held_pred, t), 1.0)
    M = M + 1.0 / C
    M /= M.sum(0, keepdims=True)
    q, _ = nnls(M, np.bincount(pop_pred, minlength=C)[:C] / len(pop_pred))
    q = np.maximum(q, 1e-3)
    return q / q.sum()


def _population_accuracy(min_z):
    """choose_class_prior by each candidate's estimated accuracy on the population: its held-out
    recall per class weighted by the class shares that the candidates' held-out confusions imply
    (the mean of their BBSE shares); a challenger wins when its gain is ``min_z`` standard errors
    of the paired per-label difference clear."""
    def wrap(orig):
        def choose_class_prior(y_human, rows, Q, population, **kw):
            from labelloop.loop.predict import HEDGE_PRIOR, MIN_HELDOUT_FOR_PRIOR, paired_gain

            if len(rows) < MIN_HELDOUT_FOR_PRIOR:
                return orig(y_human, rows, Q, population, **kw)
            names = [k for k in Q if k != HEDGE_PRIOR]
            t = np.asarray(y_human)[rows]
            C = Q[names[0]].shape[1]
            q = np.mean([bbse_shares(t, Q[k].argmax(1), population[k], C) for k in names], axis=0)
            w = q[t] / np.maximum(np.bincount(t, minlength=C)[t], 1)
            w = w / w.sum()
            right0 = (Q[names[0]].argmax(1) == t).astype(float)
            best, best_gain = names[0], 0.0
            for k in names[1:]:
                g, se = paired_gain((Q[k].argmax(1) == t) - right0, w)
                if g > best_gain and g > min_z * se:
                    best, best_gain = k, g
            return best
        return choose_class_prior
    return wrap


def _hedge_default(orig):
    """choose_class_prior with the hedge ("mixed") as the default at every number of held-out
    labels: "labels" or "estimated" replace it only with the evidence a challenger needs."""
    def choose_class_prior(y_human, rows, Q, population, **kw):
        from labelloop.loop.predict import HEDGE_PRIOR, MIN_HELDOUT_FOR_PRIOR

        if len(rows) < MIN_HELDOUT_FOR_PRIOR or HEDGE_PRIOR not in Q:
            return orig(y_human, rows, Q, population, **kw)
        order = [HEDGE_PRIOR, *(k for k in Q if k != HEDGE_PRIOR)]
        mod = importlib.import_module("labelloop.loop.predict")
        saved = mod.HEDGE_PRIOR
        try:  # no hedge in the candidates: orig compares them all against the first
            mod.HEDGE_PRIOR = "-"
            return orig(y_human, rows, {k: Q[k] for k in order}, population, **kw)
        finally:
            mod.HEDGE_PRIOR = saved
    return choose_class_prior


def _veto(kind):
    """choose_class_prior with a veto of the hedge by the few held-out labels (fewer than
    MIN_HELDOUT_FOR_PRIOR; without a veto the hedge is the choice there): "on" (the default
    when the hedge gets fewer of them right: the rule before this round), "both shares" (when it
    gets fewer right weighted by the hedge's predicted class shares and by the default's)."""
    def wrap(orig):
        def choose_class_prior(y_human, rows, Q, population, **kw):
            from labelloop.loop.calibrate import prediction_weights
            from labelloop.loop.predict import HEDGE_PRIOR, MIN_HELDOUT_FOR_PRIOR

            if len(rows) >= MIN_HELDOUT_FOR_PRIOR or HEDGE_PRIOR not in Q:
                return orig(y_human, rows, Q, population, **kw)
            default = next(iter(Q))
            t = np.asarray(y_human)[rows]
            C = Q[default].shape[1]
            for k in (HEDGE_PRIOR, default) if kind == "both shares" else (None,):
                w = np.ones(len(t)) if k is None else prediction_weights(t, population[k], C)
                if (w * (Q[HEDGE_PRIOR].argmax(1) == t)).sum() >= (w * (Q[default].argmax(1) == t)).sum():
                    return HEDGE_PRIOR
            return default
        return choose_class_prior
    return wrap


def _head_accuracy_z(min_z):
    """choose_head_weight with its evidence taken from the decisions: a weight must get a share
    AUTO_HEAD_MIN_RIGHT more held-out labels right, ``min_z`` standard errors of the paired
    per-label difference in right clear, and raise the calibrated log-likelihood (any amount)."""
    def wrap(orig):
        def choose_head_weight(y_human, rows, Q_prop, Q_head, weights=None, **kw):
            from labelloop.loop.predict import AUTO_HEAD_WEIGHTS, mix_head, paired_gain

            if Q_head is None or len(rows) < 2:
                return 0.0
            t = np.asarray(y_human)[rows]
            w = np.ones(len(rows)) if weights is None else np.asarray(weights, dtype=np.float64)
            right0 = (Q_prop.argmax(1) == t).astype(float)

            def clear(wt):  # the default's bars (min_z 0) and the decisions' standard-error bar
                gain, se = paired_gain((mix_head(Q_prop, Q_head, wt).argmax(1) == t) - right0, w / w.sum())
                return gain > min_z * se and orig(y_human, rows, Q_prop, Q_head, weights, grid=(wt,), min_z=0.0) == wt

            ok = [wt for wt in AUTO_HEAD_WEIGHTS if wt > 0 and clear(wt)]
            return orig(y_human, rows, Q_prop, Q_head, weights, grid=ok, min_z=0.0) if ok else 0.0
        return choose_head_weight
    return wrap


def _oracle(ctx):
    from labelloop.loop.predict import calibrated_predictions, prior_candidates

    y, C, u = ctx["y"], ctx["C"], ctx["y"] < 0
    Y, reached = ctx["rawY"](y)
    best = None
    for k in ("labels", "estimated", "mixed"):
        P = calibrated_predictions(prior_candidates(Y, y, C, (k,))[k], ctx["head"](y, None), reached, y,
                                   lambda yy: prior_candidates(ctx["rawY"](yy)[0], y, C, (k,))[k], ctx["head"])[0].proba
        acc = float((P[u].argmax(1) == ctx["truth"][u]).mean())
        if best is None or acc > best[0]:
            best = (acc, P)
    return best[1]


VARIANTS = {
    "default": _default,
    "prior: nats bar only": _patched(choose_class_prior=lambda f: functools.partial(f, min_z=np.inf)),
    "10 folds": _patched(heldout_proba=lambda f: functools.partial(f, folds=10)),
    "stratified folds": _patched("labelloop.loop.heldout", fold_ids=lambda f: _stratified_fold_ids),
    "calibrate on one-step LOO": _recalibrated("loo"),
    "calibrate on folds + LOO": _recalibrated("both"),
    "weights: none": _recalibrated(weighting="none"),
    "weights: sqrt": _recalibrated(weighting="sqrt"),
    "weights: confusion-corrected": _recalibrated(weighting="confusion"),
    "prior: EM (Saerens 2002)": _patched(prior_candidates=_em_candidates),
    "prior: + none": _patched(prior_candidates=_with_none),
    "prior: soft class-mass normalisation": _patched("labelloop.propagate",
                                                     _class_mass_scale=lambda f: lambda *a, **k: f(*a, **k) ** 0.5),
    "prior: challenger's shares only": _patched(choose_class_prior=_own_shares),
    "prior: best of the candidates (oracle)": _oracle,
    "head: likelihood 1 se clear (before)": _patched(choose_head_weight=lambda f: functools.partial(f, min_z=1.0)),
    "head: likelihood gain, no share more right": _patched(choose_head_weight=lambda f: functools.partial(
        f, min_right=0.0)),
    "prior: few-label veto (before)": _patched(choose_class_prior=_veto("on")),
    "prior: few-label veto under both shares": _patched(choose_class_prior=_veto("both shares")),
    "before (likelihood 1 se, veto)": _patched(choose_head_weight=lambda f: functools.partial(f, min_z=1.0),
                                               choose_class_prior=_veto("on")),
    "head: accuracy gain z 1": _patched(choose_head_weight=_head_accuracy_z(1.0)),
    "head: accuracy gain z 0.5": _patched(choose_head_weight=_head_accuracy_z(0.5)),
    "prior: the hedge as the default": _patched(choose_class_prior=_hedge_default),
    "prior: population accuracy (BBSE shares), z 1": _patched(choose_class_prior=_population_accuracy(1.0)),
    "prior: population accuracy (BBSE shares), z 0": _patched(choose_class_prior=_population_accuracy(0.0)),
}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--memo", default=str(HERE / ".cache" / "prediction_variants"))
    ap.add_argument("--out", default="prediction_variants")
    ap.add_argument("--shots", type=int, nargs="*", help="labels per class (default: all of robustness.py's)")
    ap.add_argument("--first-seed", type=int, default=0, help="seeds first-seed .. first-seed + seeds - 1")
    args = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits

    from labelloop.datasets import load_dataset
    from labelloop.graph import build_knn_graph, normalize_rows
    from labelloop.loop.predict import embedding_head
    from labelloop.propagate import LabelPropagation, affinity_matrix
    from robustness import SHOTS, ece, pairs, random_labels

    warnings.simplefilter("ignore")
    ls: dict = defaultdict(list)  # cell -> LabelSpreading's accuracy per seed (the same labels)
    Path(args.memo).mkdir(parents=True, exist_ok=True)
    t0, load0 = time.time(), os.getloadavg()[0]
    cells: dict = defaultdict(lambda: defaultdict(list))  # variant -> cell -> [(acc, |gap|, ece)]
    for name, n, bb, f in pairs(args.only):
        memo_file = Path(args.memo) / f"{name}-{bb}.pkl"
        memo = pickle.loads(memo_file.read_bytes()) if memo_file.exists() else {}
        size = len(memo)
        yt = load_dataset(name, n=n, seed=0).labels
        Xn = normalize_rows(np.load(f))
        C = int(yt.max()) + 1
        S: list = []
        head0 = embedding_head(Xn, C)

        def graph_S():
            if not S:
                S.append(affinity_matrix(build_knn_graph(Xn, k=10)))
            return S[0]

        def rawY(yy):
            k = ("p", _key(yy))
            if k not in memo:
                lp = LabelPropagation(class_mass=False).fit(graph_S(), yy, n_classes=C)
                memo[k] = (np.asarray(lp.Y_, np.float32), np.asarray(lp.reached_))
            return memo[k]

        def head(yy, rows=None):
            k = ("h", _key(yy), _key(rows))
            if k not in memo:
                memo[k] = head0(yy, rows)
            return memo[k]

        for shots in args.shots or SHOTS:
            for seed in range(args.first_seed, args.first_seed + args.seeds):
                y = random_labels(yt, C, shots, seed)
                u = y < 0
                k = ("ls", _key(y))
                if k not in memo:  # LabelSpreading(kernel="knn", n_neighbors=10), as robustness.py
                    from sklearn.semi_supervised import LabelSpreading

                    with threadpool_limits(1, user_api="blas"):
                        D = LabelSpreading(kernel="knn", n_neighbors=10).fit(Xn, y).label_distributions_
                    memo[k] = float((D[u].argmax(1) == yt[u]).mean())
                ls[(name, bb, shots)].append(memo[k])
                ctx = {"y": y, "C": C, "rawY": rawY, "head": head, "S": graph_S, "truth": yt}  # truth: the oracle only
                for v in args.variants:
                    with threadpool_limits(1, user_api="blas"):
                        P = VARIANTS[v](ctx)
                    acc = float((P[u].argmax(1) == yt[u]).mean())
                    cells[v][(name, bb, shots)].append((acc, abs(float(P[u].max(1).mean()) - acc), float(ece(P[u], yt[u]))))
        if len(memo) > size:
            memo_file.write_bytes(pickle.dumps(memo))
        print(name, bb, flush=True)
    seeds = f"seeds {args.first_seed}-{args.first_seed + args.seeds - 1}"
    lines = [f"# Prediction variants on the robustness suite ({seeds}; `python benchmarks/prediction_variants.py`)",
             "", "Each variant changes one decision of labelloop's default prediction (see the script's docstring); "
             "on the unlabeled items, per cell (dataset x backbone x labels per class) the mean over seeds. Below LS: "
             "cells whose accuracy is below LabelSpreading's on the same labels; within 0.05: cells "
             "whose mean |mean confidence - accuracy| is at most 0.05.", "",
             "| variant | cells below LS | within 0.05 | within 0.05 at >= 2 labels/class | mean ECE | mean accuracy |",
             "|---|---|---|---|---|---|"]
    summary, below_lines = {}, []
    ls = {k: float(np.mean(v)) for k, v in ls.items()}
    for v in args.variants:
        m = {k: np.mean(r, axis=0) for k, r in cells[v].items()}
        s = summary[v] = {"below": int(sum(a[0] < ls[k] for k, a in m.items())),
                          "within": int(sum(a[1] <= 0.05 for a in m.values())),
                          "within_2plus": int(sum(a[1] <= 0.05 for k, a in m.items() if k[2] > 1)),
                          "ece": float(np.mean([a[2] for a in m.values()])), "acc": float(np.mean([a[0] for a in m.values()])),
                          "cells": len(m)}
        lines.append(f"| {v} | {s['below']} of {s['cells']} | {s['within']} | {s['within_2plus']} | {s['ece']:.4f} | {s['acc']:.4f} |")
        below_lines.append(f"- {v}: " + (", ".join(f"{k[0]} {k[1].split('-')[0]} @{k[2]} {a[0]:.3f} (LS {ls[k]:.3f})"
                                                   for k, a in m.items() if a[0] < ls[k]) or "none"))
    meta = {"seeds": args.seeds, "seconds": round(time.time() - t0), "loadavg_start": load0, "loadavg": os.getloadavg(),
            "argv": sys.argv}
    lines += ["", "Cells below LabelSpreading (accuracy, mean over seeds):", "", *below_lines]
    if "default" in cells:  # what each variant moves, against the default on the same labels
        lines += ["", "Cells whose accuracy moved by more than 0.01 against the default:", ""]
        base = {k: float(np.mean([a[0] for a in r])) for k, r in cells["default"].items()}
        for v in args.variants:
            moved = [(k, base[k], float(np.mean([a[0] for a in r]))) for k, r in cells[v].items()]
            moved = [m for m in moved if abs(m[2] - m[1]) > 0.01]
            if v != "default":
                lines.append(f"- {v}: " + (", ".join(f"{k[0]} {k[1].split('-')[0]} @{k[2]} {b:.3f} -> {a:.3f}"
                                                     for k, b, a in moved) or "none"))
    lines += ["", f"Command: `PYTHONPATH=src python {shlex.join(sys.argv)}`; {meta['seconds']} s (with the memo of an "
              f"earlier run where present), load average {load0:.1f} at the start and {meta['loadavg'][0]:.1f} at the end."]
    (HERE / "results" / f"{args.out}.json").write_text(json.dumps({"meta": meta, "summary": summary,
        "cells": {v: {f"{k[0]}|{k[1]}|{k[2]}": list(map(float, np.mean(r, axis=0))) for k, r in c.items()}
                  for v, c in cells.items()}}, indent=1))
    (HERE / "results" / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
