"""Robustness suite (issue 10): is propagation at least as accurate as LabelSpreading, and is
its confidence calibrated, on every dataset and backbone we can load offline?

Per (dataset, backbone) pair cached by ``benchmarks/robustness_data.py`` and per budget of
random labels per class (1, 2, 5, 10, 20; ``--seeds`` seeds), on the unlabeled items:

- labelloop: ``LabelPropagation()`` defaults (local scaling, 100 steps), the classifier head
  averaged in where held-out labels show it helps (head_weight auto) and calibrated out of
  fold, exactly as ``Project.refresh`` does (``labelloop.loop.calibrated_predictions``),
  with ``class_prior auto``: class-mass normalisation to the label shares or to the shares
  estimated from the graph, whichever the held-out human labels support
  (``labelloop.loop.choose_class_prior``);
- class_prior labels (the default before ``auto``) and estimated: the same with that prior fixed;
- paper: T = 0.01, 20 steps, clamped (Bai et al.; the defaults before this round);
- LabelSpreading: scikit-learn ``LabelSpreading(kernel="knn", n_neighbors=10)``;
- logreg: logistic regression on the labeled items only.

Accuracy and expected calibration error (ECE, 10 bins) of each; whether the whole-dataset
accuracy estimate's interval contains the truth; the audit's false-flag rate on clean labels;
then the certify loop (``simulate.certify_loop``: 5 labels per class, then only verify checks,
to 130 labels).

Run:  python benchmarks/robustness.py [--seeds 3] [--only digits sms-spam]
      python benchmarks/robustness.py --audit-estimate-only --out robustness_audit   (the estimate and audit
      sections alone: labelloop's prediction only, no certify loop; results/robustness_audit.md)
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


def pairs(only):
    import re

    for f in sorted(CACHE.glob("*-s0-*.npy")):
        m = re.match(r"^(.*)-n(\d+)-s0-(.*)\.npy$", f.name)  # robustness_data.py's cache names
        if m is None or (only and m.group(1) not in only):
            continue
        yield m.group(1), int(m.group(2)), m.group(3), f


def random_labels(yt, C, shots, seed):
    """(n,) ``shots`` random labels per class of the truth ``yt`` (the others -1), as every cell draws them."""
    rng = np.random.default_rng(seed)
    lab = np.concatenate([rng.choice(np.flatnonzero(yt == c), size=min(shots, int((yt == c).sum())), replace=False)
                          for c in range(C)])
    y = np.full(len(yt), -1)
    y[lab] = yt[lab]
    return y


def ece(P, y):
    from labelloop.loop import expected_calibration_error

    return expected_calibration_error(P.max(1), P.argmax(1) == y)


def estimate_covers(P, y, yt, held_rows, held_P, C):
    """Does the whole-dataset accuracy estimate (Project.estimate's) contain the truth?"""
    from labelloop.loop.calibrate import prediction_weights
    from labelloop.loop.estimate import estimate_dataset_accuracy

    t = y[held_rows]
    w = prediction_weights(t, P.argmax(1), C) if len(held_rows) else None
    est = estimate_dataset_accuracy(P.max(1), y >= 0, held_P.max(1), held_P.argmax(1) == t, heldout_weights=w)
    truth = float(((P.argmax(1) == yt) | (y >= 0)).mean())
    return est.lower <= truth <= est.upper, est.upper - est.lower


def audit_flags(X, graph, yt, C, seed, *, noise: float = 0.0, prior: float = 0.95):
    """The audit on 20 random human labels per class (prior accuracy ``prior``), a share ``noise``
    of them flipped to another class: (share flagged at P(wrong) >= 0.9, precision of those flags,
    recall of the flipped labels, average precision of the P(wrong) ranking)."""
    from sklearn.metrics import average_precision_score

    from labelloop.audit import audit_labels

    rng = np.random.default_rng(seed)
    lab = np.concatenate([rng.choice(np.flatnonzero(yt == c), size=min(20, int((yt == c).sum())), replace=False)
                          for c in range(C)])
    y = np.full(len(yt), -1)
    y[lab] = yt[lab]
    flip = rng.choice(lab, int(round(noise * lab.size)), replace=False)
    y[flip] = (y[flip] + rng.integers(1, C, flip.size)) % C
    res = audit_labels(X, graph, y, C, classifier="logreg", label_accuracy=np.where(y >= 0, prior, np.nan))
    flagged = lab[res.scores[lab] >= 0.9]
    hit = np.isin(flagged, flip).sum()
    ap = average_precision_score(np.isin(lab, flip), res.scores[lab]) if flip.size else float("nan")
    return (flagged.size / lab.size, hit / flagged.size if flagged.size else float("nan"),
            hit / flip.size if flip.size else float("nan"), ap)


def labelloop_prediction(Xn, S, y, C):
    """labelloop: class_prior "auto" (the default): "labels" or "estimated", chosen per run on the
    held-out human labels (loop.choose_class_prior), as Project.refresh does."""
    from labelloop.loop.predict import calibrated_predictions, embedding_head, prior_candidates
    from labelloop.propagate import LabelPropagation

    head = embedding_head(Xn, C)
    H = head(y, None)
    lp = LabelPropagation(class_mass=False).fit(S, y, n_classes=C)
    pred, _ = calibrated_predictions(prior_candidates(lp.Y_, y, C), H, lp.reached_, y, lambda yy: prior_candidates(
        LabelPropagation(class_mass=False).fit(S, yy, n_classes=C).Y_, y, C), head)
    return {"labelloop": pred.proba, "_heldout": (pred.heldout_rows, pred.heldout_proba), "_prior": pred.class_prior}, \
        head, H


def methods(Xn, graph, S, y, C):
    from sklearn.linear_model import LogisticRegression
    from sklearn.semi_supervised import LabelSpreading

    from labelloop.loop.predict import AUTO_PRIOR_CANDIDATES, calibrated_predictions
    from labelloop.propagate import LabelPropagation

    out, head, H = labelloop_prediction(Xn, S, y, C)
    # each prior alone: "labels" (the default before "auto") and "estimated"
    for prior in AUTO_PRIOR_CANDIDATES:
        lp = LabelPropagation(class_mass=prior).fit(S, y, n_classes=C)
        out[prior] = calibrated_predictions(lp.predict_proba(), H, lp.reached_, y, lambda yy: LabelPropagation(
            class_mass=prior).fit(S, yy, n_classes=C).predict_proba(), head)[0].proba
    out["paper"] = LabelPropagation(temperature=0.01, n_iter=20, class_mass=False).fit(graph, y, n_classes=C).predict_proba()
    out["labelspreading"] = LabelSpreading(kernel="knn", n_neighbors=10).fit(Xn, y).label_distributions_
    lab = y >= 0
    P = np.zeros((len(y), C))
    clf = LogisticRegression(max_iter=1000).fit(Xn[lab], y[lab])
    P[:, clf.classes_] = clf.predict_proba(Xn)
    out["logreg"] = P
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--only", nargs="*")
    ap.add_argument("--out", default="robustness")
    ap.add_argument("--shots", type=int, nargs="*", default=list(SHOTS), help="labels per class (quick runs)")
    ap.add_argument("--accuracy-only", action="store_true", help="skip the audit and certify sections (quick runs)")
    ap.add_argument("--audit-estimate-only", action="store_true",
                    help="only the estimate (labelloop's prediction alone) and audit sections; use with --out")
    ap.add_argument("--certify-only", action="store_true", help="run only the certify loop section")
    args = ap.parse_args(argv)
    from threadpoolctl import threadpool_limits

    from labelloop.datasets import load_dataset
    from labelloop.graph import build_knn_graph, normalize_rows
    from labelloop.propagate import affinity_matrix
    from labelloop.simulate import SimulationData, certify_loop

    warnings.simplefilter("ignore")
    rows, certs, flags = [], [], []
    covers, widths = [], []
    t0, load0 = time.time(), os.getloadavg()[0]
    for name, n, bb, f in pairs(args.only):
        yt = load_dataset(name, n=n, seed=0).labels
        X = np.load(f)
        Xn = normalize_rows(X)
        C = int(yt.max()) + 1
        graph = build_knn_graph(Xn, k=10)
        S = affinity_matrix(graph)
        for shots in () if args.certify_only else args.shots:
            acc, cal, chosen, gap, sgap, ls_chance = {}, {}, {}, {}, {}, []
            for seed in range(args.seeds):
                y = random_labels(yt, C, shots, seed)
                u = y < 0
                with threadpool_limits(1, user_api="blas"):
                    res = labelloop_prediction(Xn, S, y, C)[0] if args.audit_estimate_only else methods(Xn, graph, S, y, C)
                    held_rows, held_P = res.pop("_heldout")
                    chosen.setdefault(shots, []).append(res.pop("_prior"))
                    for m, P in res.items():
                        acc.setdefault(m, []).append(float((P[u].argmax(1) == yt[u]).mean()))
                        cal.setdefault(m, []).append(float(ece(P[u], yt[u])))
                        sgap.setdefault(m, []).append(float(P[u].max(1).mean()) - acc[m][-1])  # > 0: overconfident
                        gap.setdefault(m, []).append(abs(sgap[m][-1]))
                    # LabelSpreading stops at tol after ~5 steps at alpha 0.2: items no label reached
                    # keep an all-zero row, whose argmax is class 0 (the majority class of the
                    # imbalanced sets here). The same with those items guessed at chance:
                    if "labelspreading" in res:
                        zero = res["labelspreading"][u].sum(1) == 0
                        hit = (res["labelspreading"][u].argmax(1) == yt[u]) & ~zero
                        ls_chance.append(float((hit.sum() + zero.sum() / C) / u.sum()))
                    inside, width = estimate_covers(res["labelloop"], y, yt, held_rows, held_P, C)
                    covers.append(inside)
                    widths.append(width)
            row = {"dataset": name, "backbone": bb, "n": len(yt), "classes": C, "shots": shots,
                   "estimate_covers": float(np.mean(covers[-args.seeds:])),
                   "estimate_width": float(np.mean(widths[-args.seeds:])),
                   "estimated_chosen": sum(c == "estimated" for c in chosen[shots]),
                   "mixed_chosen": sum(c == "mixed" for c in chosen[shots]),
                   **{f"acc_{m}": float(np.mean(v)) for m, v in acc.items()},
                   **{f"ece_{m}": float(np.mean(v)) for m, v in cal.items()},
                   **{f"gap_{m}": float(np.mean(v)) for m, v in gap.items()},
                   **{f"sgap_{m}": float(np.mean(v)) for m, v in sgap.items()},
                   **({"acc_ls_chance": float(np.mean(ls_chance))} if ls_chance else {})}
            rows.append(row)
            print(f"{name:22s} {bb:28s} @{shots:<2d} " + " ".join(f"{m} {row['acc_' + m]:.3f}/{row['ece_' + m]:.2f}"
                                                        for m in acc), flush=True)
        if args.accuracy_only:
            continue
        if not args.certify_only:
            with threadpool_limits(1, user_api="blas"):
                clean = [audit_flags(Xn, graph, yt, C, seed)[0] for seed in range(args.seeds)]
                noisy = np.array([audit_flags(Xn, graph, yt, C, seed, noise=0.1) for seed in range(args.seeds)])
                flags.append({"dataset": name, "backbone": bb, "false_flag_rate": float(np.mean(clean)),
                              "noisy_precision": float(np.nanmean(noisy[:, 1])), "noisy_recall": float(np.nanmean(noisy[:, 2])),
                              "noisy_ap": float(np.nanmean(noisy[:, 3]))})
                if args.audit_estimate_only:  # the same 10 % flipped, the prior right about it (0.9)
                    matched = np.array([audit_flags(Xn, graph, yt, C, seed, noise=0.1, prior=0.9) for seed in range(args.seeds)])
                    flags[-1] |= {"matched_precision": float(np.nanmean(matched[:, 1])),
                                  "matched_recall": float(np.nanmean(matched[:, 2]))}
            print(f"  audit: clean labels {flags[-1]['false_flag_rate']:.4f} flagged at P(wrong) >= 0.9; 10 % flipped: "
                  f"precision {flags[-1]['noisy_precision']:.3f} recall {flags[-1]['noisy_recall']:.3f}", flush=True)
        if name in ("digits", "fashion-mnist", "sms-spam") and (C <= 10) and not args.audit_estimate_only:
            data = SimulationData(name, X, yt, [str(c) for c in range(C)], bb)
            for seed in range(args.seeds):
                recs = certify_loop(data, seed=seed, stop_when_certified=False)
                r = recs[-1]
                # a look (after every verify batch) whose accepted labels are truly below the target
                wrong = any(x["certified"] and (x["auto_precision"] or 1.0) < 0.95 for x in recs)
                certs.append({"dataset": name, "backbone": bb, "seed": seed, "wrong_at_some_look": wrong,
                              "largest_coverage": max(x["auto_coverage"] for x in recs),  # at any look
                              **{k: r[k] for k in ("human_labels", "certified", "auto_coverage", "auto_precision",
                                                   "random_checks")}})
                print("  certify", certs[-1], flush=True)
    RESULTS.mkdir(exist_ok=True)
    meta = {"seeds": args.seeds, "seconds": round(time.time() - t0), "loadavg_start": load0, "loadavg": os.getloadavg(),
            "argv": sys.argv}
    (RESULTS / f"{args.out}.json").write_text(json.dumps({"meta": meta, "rows": rows, "certify": certs,
                                                          "audit_clean": flags}, indent=1))
    if args.audit_estimate_only:
        (RESULTS / f"{args.out}.md").write_text("\n".join(audit_estimate_report(rows, flags, args.seeds, meta)) + "\n")
        return 0
    below = {m: sum(r[f"acc_{m}"] < r["acc_labelspreading"] for r in rows) for m in ("labelloop", "labels", "estimated")}
    below_chance = sum(r["acc_labelloop"] < r["acc_ls_chance"] for r in rows)
    lines = [f"# Robustness suite ({args.seeds} seeds; `python benchmarks/robustness.py`)", "",
             "Accuracy on the unlabeled items / ECE, random labels per class. labelloop: the default, "
             "`class_prior auto` (\"labels\" or \"estimated\" chosen per run on held-out human labels, "
             "`loop.choose_class_prior`; with fewer than 10 held-out labels the mean of the two, \"mixed\"); "
             "\"estimated / mixed chosen\": in how many of the seeds. The next two "
             "columns fix the prior (\"labels\" was the default before `auto`). **bold**: below LabelSpreading. "
             "\"LS, unreached at chance\": LabelSpreading stops after ~5 steps (tol) and leaves the items no label "
             "reached with an all-zero row, whose argmax is class 0 (the majority class of the imbalanced sets "
             "here); this column guesses those at chance instead.", "",
             f"Cells below LabelSpreading: labelloop (auto) {below['labelloop']}, class_prior labels "
             f"{below['labels']}, class_prior estimated {below['estimated']}, of {len(rows)}; labelloop below "
             f"LabelSpreading with unreached items at chance: {below_chance}.", "",
             f"labelloop (auto) on the unlabeled items, mean over cells: ECE {np.mean([r['ece_labelloop'] for r in rows]):.3f}, "
             f"|mean confidence - accuracy| {np.mean([r['gap_labelloop'] for r in rows]):.3f} "
             f"(cells with |gap| <= 0.05: {sum(r['gap_labelloop'] <= 0.05 for r in rows)} of {len(rows)}; the others "
             f"over- / underconfident on average over the seeds: "
             f"{sum(r['gap_labelloop'] > 0.05 and r['sgap_labelloop'] > 0 for r in rows)} / "
             f"{sum(r['gap_labelloop'] > 0.05 and r['sgap_labelloop'] <= 0 for r in rows)}).", "",
             "| dataset | backbone | labels/class | labelloop | estimated / mixed chosen | class_prior labels | "
             "class_prior estimated | paper (T=0.01, 20 steps) | LabelSpreading | LS, unreached at chance | logreg |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def cell(r, m):
        v = f"{r[f'acc_{m}']:.3f} / {r[f'ece_{m}']:.2f}"
        return f"**{v}**" if m in below and r[f"acc_{m}"] < r["acc_labelspreading"] else v

    for r in rows:
        lines.append(f"| {r['dataset']} | {r['backbone']} | {r['shots']} | {cell(r, 'labelloop')} | "
                     f"{r['estimated_chosen']} / {r['mixed_chosen']} of {args.seeds} | {cell(r, 'labels')} | "
                     f"{cell(r, 'estimated')} | {cell(r, 'paper')} | {cell(r, 'labelspreading')} | "
                     f"{r['acc_ls_chance']:.3f} | {cell(r, 'logreg')} |")
    cov = [r["estimate_covers"] for r in rows]
    lines += ["", "## Whole-dataset accuracy estimate (`status`): does its interval contain the truth?", "",
              f"In {100 * np.mean(cov):.1f} % of the {len(cov) * args.seeds} runs above (every dataset, budget and "
              f"seed); mean interval width {np.mean([r['estimate_width'] for r in rows]):.3f}.", "",
              "| dataset | backbone | share of runs inside, by labels per class 1 / 2 / 5 / 10 / 20 |", "|---|---|---|"]
    for key in dict.fromkeys((r["dataset"], r["backbone"]) for r in rows):
        vals = [f"{r['estimate_covers']:.2f}" for r in rows if (r["dataset"], r["backbone"]) == key]
        lines.append(f"| {key[0]} | {key[1]} | {' / '.join(vals)} |")
    lines += ["", "## Audit of human labels (20 random per class, prior accuracy 0.95), flags at P(wrong) >= 0.9", "",
              "| dataset | backbone | clean labels: share flagged | 10 % flipped: precision of flags | recall |",
              "|---|---|---|---|---|"]
    lines += [f"| {f['dataset']} | {f['backbone']} | {f['false_flag_rate']:.4f} | {f['noisy_precision']:.3f} | "
              f"{f['noisy_recall']:.3f} |" for f in flags]
    if args.certify_only:  # only the certify table below
        lines = [f"# Certify loop ({args.seeds} seeds; `python benchmarks/robustness.py --certify-only`)"]
    if certs:
        lines += ["", "## Certify loop (5 random labels per class, then only `next --strategy verify`, <= 130 labels)", "",
                  "| dataset | backbone | seed | human labels | certified | machine-label coverage | true precision |",
                  "|---|---|---|---|---|---|---|"]
        for c in certs:
            lines.append(f"| {c['dataset']} | {c['backbone']} | {c['seed']} | {c['human_labels']} | {c['certified']} | "
                         f"{c['auto_coverage']:.3f} | {'–' if c['auto_precision'] is None else round(c['auto_precision'], 4)} |")
        lines += ["", "| dataset | backbone | seeds | mean coverage | min | seeds >= 0.80 | certified | lowest true precision "
                  "| runs wrong at some look | mean largest coverage at any look |", "|---|---|---|---|---|---|---|---|---|---|"]
        for key in dict.fromkeys((c["dataset"], c["backbone"]) for c in certs):
            cs = [c for c in certs if (c["dataset"], c["backbone"]) == key]
            cov, prec = [c["auto_coverage"] for c in cs], [c["auto_precision"] for c in cs if c["auto_precision"] is not None]
            lines.append(f"| {key[0]} | {key[1]} | {len(cs)} | {np.mean(cov):.3f} | {min(cov):.3f} | "
                         f"{sum(v >= 0.8 for v in cov)} | {sum(c['certified'] for c in cs)} | "
                         f"{'–' if not prec else round(min(prec), 4)} | "
                         f"{sum(c.get('wrong_at_some_look', False) for c in cs)} | "
                         f"{np.mean([c.get('largest_coverage', c['auto_coverage']) for c in cs]):.3f} |")
    lines += ["", f"Command: `PYTHONPATH=src python {' '.join(sys.argv)}`; "
              f"{meta['seconds']} s, load average {load0:.1f} at the start and {meta['loadavg'][0]:.1f} at the end."]
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    return 0


def audit_estimate_report(rows, flags, seeds, meta):
    """The --audit-estimate-only report: the estimate's coverage and width by budget, the audit."""
    lines = [f"# Robustness suite: accuracy estimate and audit ({seeds} seeds; `python benchmarks/robustness.py "
             "--audit-estimate-only`)", "",
             "## Whole-dataset accuracy estimate (`status`, `diagnose`, dashboard): does its 95 % interval contain "
             "the truth, and how wide is it?", "",
             f"In {100 * np.mean([r['estimate_covers'] for r in rows]):.1f} % of the {len(rows) * seeds} runs (every "
             f"dataset, budget and seed); mean interval width {np.mean([r['estimate_width'] for r in rows]):.3f}.", "",
             "| labels per class | runs | share inside | mean width |", "|---|---|---|---|"]
    for shots in SHOTS:
        rs = [r for r in rows if r["shots"] == shots]
        lines.append(f"| {shots} | {len(rs) * seeds} | {np.mean([r['estimate_covers'] for r in rs]):.3f} | "
                     f"{np.mean([r['estimate_width'] for r in rs]):.3f} |")
    lines += ["", "| dataset | backbone | share inside / mean width, by labels per class 1 / 2 / 5 / 10 / 20 |", "|---|---|---|"]
    for key in dict.fromkeys((r["dataset"], r["backbone"]) for r in rows):
        vals = [f"{r['estimate_covers']:.2f}/{r['estimate_width']:.2f}" for r in rows if (r["dataset"], r["backbone"]) == key]
        lines.append(f"| {key[0]} | {key[1]} | {' · '.join(vals)} |")
    lines += ["", "## Audit of human labels (20 random per class), flags at P(wrong) >= 0.9", "",
              "Clean labels with prior accuracy 0.95; then 10 % of them flipped, with the prior 0.95 (too "
              "trusting) and 0.9 (right); AP: average precision of the P(wrong) ranking against the flipped set.", "",
              "| dataset | backbone | clean: share flagged | 10 % flipped, prior 0.95: precision / recall / AP "
              "| prior 0.9: precision / recall |", "|---|---|---|---|---|"]
    lines += [f"| {f['dataset']} | {f['backbone']} | {f['false_flag_rate']:.4f} | {f['noisy_precision']:.3f} / "
              f"{f['noisy_recall']:.3f} / {f['noisy_ap']:.3f} | {f['matched_precision']:.3f} / {f['matched_recall']:.3f} |"
              for f in flags]
    return lines + ["", f"{meta['seconds']} s, load average {meta['loadavg_start']:.1f} at the start and "
                        f"{meta['loadavg'][0]:.1f} at the end."]


if __name__ == "__main__":
    sys.exit(main())
