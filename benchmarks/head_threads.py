"""Two small hot spots that made the test suite and a busy machine slow, each against the way it
was done before, in the same run:

- ``LinearHead.fit`` (the torch softmax head behind ``diagnose`` and ``labelloop train``):
  CPU seconds with torch's intra-op threads at 1 (the default, ``num_threads``) and at 2 (what
  it ran with before), for a few sizes of labeled rows x dimensions;
- certification's judging of every (check, region) pair of a round: the anytime test's mixture
  of exponentials per pair (``autolabel.anytime_passes``, as before) against the lookup of the
  fewest right checks that pass at each count (``autolabel.anytime_min_correct``, now), on the
  running counts of one ``certify`` of ``--checks`` random checks; and one whole ``certify``.

    PYTHONPATH=src python benchmarks/head_threads.py            # 3 runs each, medians

CPU = ``time.process_time()`` of this process (all its threads), medians of ``--runs``; the
load average is printed beside them: with other work on the cores the second torch thread
waits much longer than on an idle machine. Writes benchmarks/results/head_threads.json / .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = [(40, 8), (1_000, 384), (5_000, 384)]


def cpu(fn, runs: int) -> float:
    """Median CPU seconds of ``fn()`` over ``runs`` runs."""
    out = []
    for _ in range(runs):
        t = time.process_time()
        fn()
        out.append(time.process_time() - t)
    return statistics.median(out)


def head_rows(epochs: int, runs: int) -> list[dict]:
    from labelloop.adapt.finetune import LinearHead

    rng = np.random.default_rng(0)
    rows = []
    for n, d in SIZES:
        X = rng.normal(size=(n, d)).astype(np.float32)
        y = rng.integers(0, 4, n)
        row = {"rows": n, "dims": d, "epochs": epochs}
        for threads in (1, 2):
            row[f"cpu_{threads}"] = cpu(lambda: LinearHead(epochs=epochs, num_threads=threads).fit(X, y), runs)
        rows.append(row)
        print(row, flush=True)
    return rows


def certify_row(m: int, runs: int) -> dict:
    from labelloop.autolabel import anytime_min_correct, anytime_passes
    from labelloop.loop.certify import _region_grid, _running_count, certify, coverage_of

    rng = np.random.default_rng(0)
    s = rng.beta(5, 1, m)
    ok = rng.random(m) < s
    cov = coverage_of(s, np.ones(m, bool))
    region = np.ones(m)
    rho = _region_grid(cov, region)
    inside = (cov[:, None] <= rho[None, :] + 1e-9) & (region[:, None] >= rho[None, :] - 1e-9)
    m_run, k_run = _running_count(inside), _running_count(inside & ok[:, None])
    mixture = cpu(lambda: anytime_passes(k_run, m_run, target_precision=0.95, confidence_level=0.95), runs)
    lookup = cpu(lambda: k_run >= anytime_min_correct(m, 0.95, 0.95)[m_run], runs)
    same = bool(((k_run >= anytime_min_correct(m, 0.95, 0.95)[m_run])
                 == anytime_passes(k_run, m_run, target_precision=0.95, confidence_level=0.95)).all())
    whole = cpu(lambda: certify(cov, np.zeros(m, int), ok, n_classes=1, candidate=1.0, target_precision=0.95), runs)
    row = {"checks": m, "regions": int(rho.size), "cpu_mixture": mixture, "cpu_lookup": lookup,
           "same_decisions": same, "cpu_certify": whole}
    print(row, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--checks", type=int, default=2_000)
    ap.add_argument("--out", default="head_threads")
    args = ap.parse_args()
    load0 = os.getloadavg()
    heads = head_rows(args.epochs, args.runs)
    cert = certify_row(args.checks, args.runs)
    load1 = os.getloadavg()
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(
        {"heads": heads, "certify": cert, "load_before": load0, "load_after": load1}, indent=2))
    cmd = f"PYTHONPATH=src python benchmarks/head_threads.py --runs {args.runs} --epochs {args.epochs} " \
          f"--checks {args.checks}"
    lines = [
        "# LinearHead threads and certification's pair judging", "",
        f"Command: `{cmd}` on {platform.machine()}, {os.cpu_count()} cores (shared). Load average (1/5/15 min) "
        f"before {[round(v, 2) for v in load0]}, after {[round(v, 2) for v in load1]}. CPU seconds of the "
        f"process, medians of {args.runs} runs.", "",
        f"## LinearHead.fit, {args.epochs} full-batch steps, 4 classes", "",
        "| labeled rows x dims | 1 torch thread (default) | 2 threads (before) | ratio |", "|---|---:|---:|---:|"]
    for r in heads:
        lines.append(f"| {r['rows']:,} x {r['dims']} | {r['cpu_1']:.3f} | {r['cpu_2']:.3f} | "
                     f"{r['cpu_2'] / max(r['cpu_1'], 1e-9):.1f}x |")
    lines += ["", f"## certify, {cert['checks']:,} random checks, {cert['regions']} grid regions", "",
              "| what | CPU s |", "|---|---:|",
              f"| every (check, region) pair by the mixture of exponentials (before) | {cert['cpu_mixture']:.3f} |",
              f"| the same pairs by the fewest-right-checks lookup (now) | {cert['cpu_lookup']:.3f} |",
              f"| one whole certify (now) | {cert['cpu_certify']:.3f} |", "",
              f"Same decisions on every pair: {cert['same_decisions']}."]
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
