"""Why the certify loop stops where it does, per seed (issue 10, part 3).

The loop of ``benchmarks/robustness.py --certify-only`` (``simulate.certify_loop``: 5 random
labels per class, then only verify batches of 10 answered by the oracle, to 130 labels) on one
(dataset, backbone) pair cached by ``benchmarks/robustness_data.py``. Per seed: the machine-label
coverage of all items and its true precision, the regions the verify batches were drawn from,
the wrong checks (coverage when drawn / region drawn from / order), what ended the certified
region, and the true precision of the most confident 86.3 % of the unlabeled items (80 % of all
items at 130 labels on digits) at the first and the last look.

What ends it: ``region`` (every check counting there was right: the certificate is the whole
region drawn from, so the plan's region is the cap), ``wrong check`` (the fixed sequence stops
just inside the least-covered wrong check that counts), ``nothing`` (a wrong check below the
region holding the fewest checks that can pass: no valid certificate in the budget).

At <= 92 checks a region passes only if none of its checks is wrong (one wrong check needs 93
checks even for the one-look Clopper-Pearson bound, 135 for the anytime test), so the chance
of certifying 80 % of digits is about the chance that the ~64-77 checks drawn below 0.863 are
all right: ``p ** 64`` with p the top region's precision is an upper bound for any plan.

Run:  python benchmarks/certify_diagnose.py [--only digits] [--backbone pixels] [--seeds 0-19] [--out NAME]
      [--set PLAN_HEDGE=0.5 ...]   (a plan constant of labelloop.loop.certify changed for this run;
      PLAN_PRIOR_ERRORS=1e9 turns the held-out correction off)
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
RESULTS = HERE / "results"
GOAL = 0.863   # the region of the unlabeled items that is 80 % of all items (digits, 130 labels)


def _why(rec: dict) -> str:
    """What ended the certified region of the last look ``rec`` (see the module docstring)."""
    cc = rec["certified_coverage"]
    if cc <= 0:
        return "nothing"
    # the fixed sequence stops at the grid region holding the least-covered wrong check beyond it
    beyond = [c for c, g, _ in rec["wrong_checks"] if c > cc and g >= c]
    if beyond and min(beyond) - cc <= 0.0015:
        return f"wrong check at {min(beyond):.3f}"
    return "region"


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", default="digits")
    ap.add_argument("--backbone", default="pixels")
    ap.add_argument("--seeds", default="0-19", help="a range, first-last")
    ap.add_argument("--out", default="certify_diagnose")
    ap.add_argument("--set", nargs="*", default=[], metavar="NAME=VALUE",
                    help="plan constants of labelloop.loop.certify to change (PLAN_HEDGE, PLAN_PRIOR_ERRORS, PLAN_SLACK)")
    args = ap.parse_args(argv)
    import importlib

    plan = importlib.import_module("labelloop.loop.certify")
    for kv in args.set:
        name, value = kv.split("=")
        if name not in ("PLAN_HEDGE", "PLAN_PRIOR_ERRORS", "PLAN_SLACK"):
            raise SystemExit(f"--set: {name} is not a plan constant (PLAN_HEDGE, PLAN_PRIOR_ERRORS, PLAN_SLACK)")
        setattr(plan, name, float(value))
    from threadpoolctl import threadpool_limits

    from labelloop.datasets import load_dataset
    from labelloop.simulate import SimulationData, certify_loop

    warnings.simplefilter("ignore")
    f = sorted(CACHE.glob(f"{args.only}-n*-s0-{args.backbone}*.npy"))[0]
    n = int(f.name.split("-n")[1].split("-")[0])
    yt = load_dataset(args.only, n=n, seed=0).labels
    bb = f.stem.split("-s0-")[1]
    data = SimulationData(args.only, np.load(f), yt, [str(c) for c in range(int(yt.max()) + 1)], bb)
    lo, hi = (int(v) for v in args.seeds.split("-"))
    t0, load0 = time.time(), os.getloadavg()[0]
    rows = []
    for seed in range(lo, hi + 1):
        with threadpool_limits(1, user_api="blas"):
            recs = certify_loop(data, seed=seed, stop_when_certified=False)
        first, last = recs[0], recs[-1]
        drawn = [r["drawn_from"] for r in recs if r["drawn_from"] is not None]
        rows.append(dict(seed=seed, coverage=last["auto_coverage"], precision=last["auto_precision"],
                         drawn=drawn, wrong=last["wrong_checks"], why=_why(last),
                         wrong_at_some_look=any(x["certified"] and (x["auto_precision"] or 1) < 0.95 for x in recs),
                         p_first=first["top_precision"][GOAL], p_last=last["top_precision"][GOAL]))
        print(rows[-1], flush=True)
    cov = np.array([r["coverage"] for r in rows])
    lines = [f"# Why certification stops where it does: {args.only} {bb}, seeds {args.seeds}"
             + (f" ({', '.join(args.set)})" if args.set else ""), "",
             "`simulate.certify_loop`: 5 random labels per class, then verify batches of 10 to 130 labels. "
             "Coverage: machine labels certified, share of all items. Drawn from: the regions (coverage of the "
             "unlabeled items) the 8 batches were drawn from. Wrong checks: coverage when drawn / region / order. "
             f"p first / last: true precision of the most confident {GOAL} of the unlabeled items at the first "
             f"and the last look; p^64: the chance that the fewest checks that can pass, drawn there, are all right.",
             "", "| seed | coverage | true precision | drawn from | wrong checks | ends at | p first | p last | p_first^64 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        d = []
        for v in r["drawn"]:
            if not d or d[-1][0] != v:
                d.append([v, 0])
            d[-1][1] += 1
        drawn = ", ".join(f"{v:.3g}" + (f" x{k}" if k > 1 else "") for v, k in d)
        wrong = ", ".join(f"{c:.3f}/{g:.3g}/#{i}" for c, g, i in r["wrong"]) or "–"
        prec = "–" if r["precision"] is None else f"{r['precision']:.4f}"
        lines.append(f"| {r['seed']} | {r['coverage']:.3f} | {prec} | {drawn} | {wrong} | {r['why']} | "
                     f"{r['p_first']:.4f} | {r['p_last']:.4f} | {r['p_first'] ** 64:.2f} |")
    whys = [r["why"].split(" at ")[0] for r in rows]
    lines += ["", f"Mean coverage {cov.mean():.3f}; seeds >= 0.80: {int((cov >= 0.8).sum())} of {len(rows)}; "
              f"ends at the region drawn from: {whys.count('region')}, at a wrong check: {whys.count('wrong check')}, "
              f"nothing: {whys.count('nothing')}; runs wrong at some look: {sum(r['wrong_at_some_look'] for r in rows)}; "
              f"mean p_first^64 {np.mean([r['p_first'] ** 64 for r in rows]):.2f}, "
              f"mean p_last^64 {np.mean([r['p_last'] ** 64 for r in rows]):.2f}.", "",
              f"Command: `PYTHONPATH=src python benchmarks/certify_diagnose.py {' '.join(sys.argv[1:])}`; "
              f"{time.time() - t0:.0f} s, load average {load0:.1f} at the start and {os.getloadavg()[0]:.1f} at the end."]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-3:]))


if __name__ == "__main__":
    main()
