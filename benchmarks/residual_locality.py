"""Where the residual a warm update leaves comes from, on a large project in steady state: is a
refresh's drain (``propagate.LabelPropagation.drain``: Gauss-Seidel sweeps over every row, at
most ``DRAIN_MAX_ROW_STEPS`` row-steps, 3 sweeps at 1M items) working off what the new labels
added, near them (a drain over those rows alone would do), or what earlier refreshes left
everywhere?

    python benchmarks/residual_locality.py --project DIR --rounds 3

``--project``: a built project with a refresh done, e.g. ``benchmarks/e2e_latency.py``'s 1M base
project (it is copied first; the copy gets the labels). Per round: 10 new human labels (random
unlabeled items, their true class from ``truth.npy``); the warm state of the last refresh is
loaded as ``labelloop refresh`` loads it, and the residual of every row, ||F(Y)_i - Y_i||_1
(one full product), is measured before and after the warm update (no drain); then
``Project.refresh()`` runs as the CLI's does (update and drain), so the next round starts from
where a user's next refresh would. Reported: the global relative residual before and after
the update and the error bound (1.5x the last full fit's), the sampled residual the bound
reads, the share of the after-update residual that the update added, and in how many rows the
added part lies (the rows with the largest increase first).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).parent))

RESULTS = Path(__file__).parent / "results"


def row_residuals(lp) -> tuple[np.ndarray, np.ndarray]:
    """``(R, M)``: ||F(Y)_i - Y_i||_1 (0 on clamped rows) and ||Y_i||_1 of every row, in the
    order the state is held in."""
    from labelloop.csr import matmul

    order = lp._order()
    S, y = (lp.S_, lp.y_) if order is None or not lp._Y_ordered else (order[2], lp.y_[order[0]])
    Y = lp._Y
    F = matmul(S, Y)
    R = np.abs(F - Y).sum(axis=1)
    R[y >= 0] = 0.0
    return R, np.abs(Y).sum(axis=1)


def one_round(path: Path, rng: np.random.Generator) -> dict:
    from e2e_latency import SRC, add_labels
    from labelloop.project import Project

    add_labels(path, 10, rng, SRC)
    p = Project(path)
    ids, S = p.affinity()
    y = p.label_vector(ids, sources=("human", "import"))
    key = (p._graph_fingerprint(ids), len(p.classes), p.setting("temperature"), p.setting("import_trust"),
           p.setting("class_prior"), None)
    if not p._load_warm_state(key, S):
        raise SystemExit(f"{path}: no warm state to start from (run a refresh first)")
    lp = p._lp
    R0, M0 = row_residuals(lp)
    lp.update(y, n_iter=p.setting("warm_iter"), drain=False, sample_weight=None)
    R1, M1 = row_residuals(lp)
    added = np.maximum(R1 - R0, 0.0)
    cum = np.cumsum(np.sort(added)[::-1]) / max(added.sum(), 1e-30)
    rows_for = {f"{int(s * 100)}%": int(np.searchsorted(cum, s) + 1) for s in (0.5, 0.8, 0.9, 0.99)}
    out = dict(n=len(ids), residual_fit=lp.residual_fit_, bound=lp.residual_growth * lp.residual_fit_,
               global_before=float(R0.sum() / M0.sum()), global_after=float(R1.sum() / M1.sum()),
               sampled_after=float(lp.residual_), added_share=float(added.sum() / R1.sum()), rows_holding_added=rows_for)
    p.close()
    p = Project(path)   # the refresh a user runs next (update + drain), from the stored state again
    s = p.refresh()
    out.update(drain_steps=s["drain_steps"], residual_after_refresh=s["residual"])
    p.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--project", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=None, help="where the copy goes (default: a temporary folder)")
    ap.add_argument("--out", default="residual_locality")
    args = ap.parse_args()
    rng = np.random.default_rng(3)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "project"
        shutil.copytree(args.project, path)
        rounds = []
        for r in range(args.rounds):
            rounds.append(one_round(path, rng))
            print(f"round {r}:", json.dumps(rounds[-1]), flush=True)
    RESULTS.mkdir(exist_ok=True)
    res = {"command": "python benchmarks/residual_locality.py " + " ".join(sys.argv[1:]), "rounds": rounds}
    (RESULTS / f"{args.out}.json").write_text(json.dumps(res, indent=1))
    n = rounds[0]["n"]
    lines = [f"# Where a warm update's residual comes from, {n:,} items", "",
             f"`{res['command']}`. Relative residual ||F(Y) - Y||_1 / ||Y||_1 over every row (global) and on "
             "the sample the error bound reads; bound = 1.5x the last full fit's. Per round: 10 new labels, "
             "the warm update alone, then the refresh a user runs (update + drain).", "",
             "| round | full fit's | bound | global before update | global after | sampled after | share added by "
             "the update | rows holding 50 / 90 / 99 % of the added part | drain steps of the refresh | "
             "residual after it |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for i, r in enumerate(rounds):
        h = r["rows_holding_added"]
        lines.append(f"| {i} | {r['residual_fit']:.5f} | {r['bound']:.5f} | {r['global_before']:.5f} | "
                     f"{r['global_after']:.5f} | {r['sampled_after']:.5f} | {r['added_share']:.3f} | "
                     f"{h['50%']:,} / {h['90%']:,} / {h['99%']:,} ({h['90%'] / n:.1%} of rows for 90 %) | "
                     f"{r['drain_steps']} | {r['residual_after_refresh']} |")
    (RESULTS / f"{args.out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
