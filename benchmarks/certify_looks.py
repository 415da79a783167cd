"""How often a certificate is wrong when the loop looks again and again (docs/certification.md).

A pool of 2,000 items whose precision falls with coverage (``--shape``); checks are drawn
uniformly from it (region 1), and ``certify`` runs after every ``--every`` checks up to
``--checks``. A run is *wrong* if any look certifies a region whose true precision is below the
target -- the event whose chance the anytime-valid test bounds by 1 - level (5 %); the one-look
Clopper-Pearson test is run on the same draws for comparison.

``--draw verify``: the checks are drawn as `next --strategy verify` draws them instead, in
batches of ``--every`` with a look after each: from the planned region, kept while it can pass and
moved inside the most confident wrong check after one (``certify.pending_region``), the plan
reading scores that overstate the top (each item's error shown 5 times smaller than it is),
so that it draws from regions below the target and the region moves with the answers.

    PYTHONPATH=src python benchmarks/certify_looks.py --runs 1000 --every 10 --checks 200
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def pool(shape: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n,) whether each item's machine label is right, most confident first."""
    return rng.random(n) < _precision(shape, n)


def _precision(shape: str, n: int) -> np.ndarray:
    """(n,) the chance each item's machine label is right, most confident first."""
    if shape == "flat94":  # every region 94 % precise: every certificate is wrong
        p = np.full(n, 0.94)
    elif shape == "flat95":  # exactly at the target (the worst case for the test): nothing may pass
        p = np.full(n, 0.9499)
    else:  # "slope": 99.5 % at the top, falling: the top ~55 % is above 95 %, larger regions below
        p = np.clip(0.995 - 0.16 * np.linspace(0, 1, n) ** 2, 0, 1)
    return p


def run_verify(shape: str, runs: int, every: int, checks: int, seed: int = 0) -> dict:
    """The anytime test on checks drawn by the verify loop (see the module text); the one-look
    test is not run (the loop's regions follow the anytime test's answers)."""
    from labelloop.loop import certify, choose, coverage_of, pending_region

    rng = np.random.default_rng(seed)
    n, target = 2000, 0.95
    wrong = last_bad = 0
    for r in range(runs):
        p_true = _precision(shape, n)
        right = rng.random(n) < p_true
        conf = 1 - (1 - p_true) / 5 - np.arange(n) * 1e-9  # most confident first, no ties
        P = np.c_[conf, 1 - conf]
        drawn: list[int] = []
        cov_d, reg_d = [], []
        last, hit, bad = 0.0, False, False
        while len(drawn) < checks:
            unl = np.setdiff1d(np.arange(n), drawn)
            eligible = np.isin(np.arange(n), unl)
            pend = pending_region(np.asarray(cov_d), np.asarray(reg_d), right[drawn], last) if last else 0.0
            ch = choose("verify", every, labeled=np.asarray(drawn, np.int64), unlabeled=unl, probabilities=P,
                        seed=seed + 1000 * r + len(drawn), verify_eligible=eligible, pending_coverage=pend)
            last = ch.details["coverage"]
            cov_now = coverage_of(conf, eligible)
            drawn += [int(i) for i in ch.rows]
            cov_d += [float(cov_now[i]) for i in ch.rows]
            reg_d += [float(g) for g in ch.regions]
            cert = certify(np.asarray(cov_d), np.zeros(len(drawn), int), right[drawn], n_classes=2, candidate=last,
                           check_region=np.asarray(reg_d), target_precision=target, per_class=False)
            rho = float(cert.coverage[0])
            rest = np.flatnonzero(~np.isin(np.arange(n), drawn))  # most confident first
            bad = rho > 0 and right[rest[:max(1, int(round(rho * rest.size)))]].mean() < target
            hit |= bad
        wrong += hit
        last_bad += bad
    return {"shape": shape, "runs": runs, "ever_anytime": wrong / runs, "last_anytime": last_bad / runs,
            "ever_clopper-pearson": float("nan"), "last_clopper-pearson": float("nan")}


def run(shape: str, runs: int, every: int, checks: int, seed: int = 0) -> dict:
    from labelloop.autolabel import anytime_min_count, min_verified_count
    from labelloop.loop.certify import _largest_region

    rng = np.random.default_rng(seed)
    n, target = 2000, 0.95
    cov_item = (np.arange(n) + 1) / n
    wrong = {"anytime": 0, "clopper-pearson": 0}
    last_wrong = dict.fromkeys(wrong, 0)
    for _ in range(runs):
        right = pool(shape, n, rng)
        truth = np.cumsum(right) / np.arange(1, n + 1)  # (n,) true precision of each top region
        d = rng.choice(n, checks, replace=False)
        for name in wrong:
            hit = False
            for m in range(every, checks + 1, every):
                anytime = name == "anytime"  # the test certify runs, without its per-class pass and messages
                need = anytime_min_count(target) if anytime else min_verified_count(target)
                rho = _largest_region(cov_item[d[:m]], np.ones(m), right[d[:m]], target=target, level=0.95,
                                      min_count=need, anytime=anytime)[0]
                bad = rho > 0 and truth[int(round(rho * n)) - 1] < target
                hit |= bad
            wrong[name] += hit
            last_wrong[name] += bad
    return {"shape": shape, "runs": runs, **{f"ever_{k}": v / runs for k, v in wrong.items()},
            **{f"last_{k}": v / runs for k, v in last_wrong.items()}}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1000)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--checks", type=int, default=200)
    ap.add_argument("--shapes", nargs="*", default=["flat94", "flat95", "slope"])
    ap.add_argument("--out", default="certify_looks", help="results/OUT.md")
    ap.add_argument("--draw", choices=["uniform", "verify"], default="uniform",
                    help="checks drawn uniformly (default) or by the verify loop, a batch of --every per look")
    args = ap.parse_args(argv)
    t0, load0 = time.time(), os.getloadavg()[0]
    rows = [(run_verify if args.draw == "verify" else run)(s, args.runs, args.every, args.checks)
            for s in args.shapes]
    lines = ["# Wrong certificates over many looks", "",
             f"{args.runs} runs per pool; 2,000 items; checks drawn "
             f"{'by the verify loop (plan on overstated scores)' if args.draw == 'verify' else 'uniformly'}, "
             f"`certify` after every {args.every} "
             f"checks up to {args.checks}; target 95 %, level 95 %. *Ever*: some look certified a region whose true "
             "precision is below 95 % (what a user who keeps the first certificate gets); *last*: the last look did.",
             "", "| pool | anytime (e-process): ever | last | Clopper-Pearson: ever | last |", "|---|---|---|---|---|"]
    for r in rows:
        f = lambda v: "–" if np.isnan(v) else f"{v:.3f}"  # noqa: E731 (not run on verify draws)
        lines.append(f"| {r['shape']} | {f(r['ever_anytime'])} | {f(r['last_anytime'])} | "
                     f"{f(r['ever_clopper-pearson'])} | {f(r['last_clopper-pearson'])} |")
    lines += ["", "Pools: flat94 = every item right with probability 0.94; flat95 = 0.9499 (the worst case: just "
              "below the target); slope = 0.995 at the top falling as the square of the coverage (regions up to "
              "about 55 % are above 95 %).", "",
              f"Command: `PYTHONPATH=src python benchmarks/{Path(__file__).name} "
              f"{' '.join(sys.argv[1:])}`; "
              f"{time.time() - t0:.0f} s, load average {load0:.1f} at the start and {os.getloadavg()[0]:.1f} at the end."]
    out = HERE / "results" / f"{args.out}.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
