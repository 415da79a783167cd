"""Adding items to a kNN graph: ``graph.extend_knn_graph`` against a full rebuild, on the
synthetic clustered 384-d vectors of ``knn_backends.py``. Chooses ``graph.REBUILD_AFTER_ADDED``.

    python benchmarks/graph_update.py --n-old 100000 --n-new 5000
    python benchmarks/graph_update.py --n-old 100000 --n-new 5000 --drift-start 50000 --drift-step 2500 --drift-steps 16

Update: ``n_old`` items with a graph built by ``build_knn_graph`` (method "auto"), then
``n_new`` more appended with ``extend_knn_graph``; rebuild: ``build_knn_graph`` of all
``n_old + n_new`` items. CPU seconds of this process (``time.process_time``: every thread),
median of ``--runs``. Recall@k: mean |found ∩ exact| / k over 1000 random old rows and 1000
random new rows, exact neighbours by a FAISS flat search of those rows.

Drift: from ``--drift-start`` items, ``--drift-steps`` batches of ``--drift-step`` appended one
after the other with ``extend_knn_graph`` (never rebuilt), recall@k of all rows sampled after
each, against a rebuild's recall at the end. Writes benchmarks/results/graph_update.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from knn_backends import make_clustered_embeddings, recall_at_k  # noqa: E402

from labelloop.graph import (  # noqa: E402
    _search_exact, build_knn_graph, choose_method, extend_knn_graph, normalize_rows)

RESULTS = Path(__file__).parent / "results"


def exact_neighbours(X: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """(len(rows), k) exact cosine neighbours of ``rows`` among all of X, self excluded."""
    Xn = normalize_rows(X)
    idx, _ = _search_exact(Xn[rows], Xn, k + 1)
    return np.array([[j for j in r if j != i][:k] for i, r in zip(rows, idx)])


def timed(fn):
    t0, w0 = time.process_time(), time.perf_counter()
    out = fn()
    return out, time.process_time() - t0, time.perf_counter() - w0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-old", type=int, default=100_000)
    ap.add_argument("--n-new", type=int, default=5_000)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--drift-start", type=int, default=0, help="0: no drift rows")
    ap.add_argument("--drift-step", type=int, default=2_500)
    ap.add_argument("--drift-steps", type=int, default=16)
    ap.add_argument("--drift-data", choices=["same", "new"], default="same",
                    help="same: every batch from the first batch's clusters; new: each batch from 100 new clusters")
    ap.add_argument("--no-compare", action="store_true", help="drift rows only")
    ap.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the .json files")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    if args.markdown_only:
        return write_markdown(args.out)
    rng = np.random.default_rng(0)
    report: dict = {"command": "python " + " ".join(sys.argv), "machine": platform.platform(),
                    "cpus": os.cpu_count(), "load_start": os.getloadavg()[0], "rows": [], "drift": []}

    if not args.no_compare:
        compare(args, report, rng)
    if args.drift_start:
        drift(args, report, rng)
    report["load_end"] = os.getloadavg()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    name = f"graph_update{'' if args.drift_data == 'same' else '_newclusters'}"
    (args.out / f"{name}.json").write_text(json.dumps(report, indent=1))
    write_markdown(args.out)


def compare(args, report: dict, rng) -> None:
    n_old, m, k = args.n_old, args.n_new, args.k
    X, _ = make_clustered_embeddings(n_old + m, seed=1)
    g_old, cpu_old, _ = timed(lambda: build_knn_graph(X[:n_old], k))
    old_rows = np.sort(rng.choice(n_old, min(1000, n_old), replace=False))
    new_rows = n_old + np.sort(rng.choice(m, min(1000, m), replace=False))
    truth_old, truth_new = exact_neighbours(X, old_rows, k), exact_neighbours(X, new_rows, k)
    for name, fn in (("rebuild", lambda: build_knn_graph(X, k)),
                     ("update", lambda: extend_knn_graph(g_old, X[:n_old], X[n_old:])[0])):
        cpus, walls = [], []
        for _ in range(args.runs):
            g, cpu, wall = timed(fn)
            cpus.append(cpu)
            walls.append(wall)
        report["rows"].append({
            "what": name, "n_old": n_old, "n_new": m, "method": g.method,
            "cpu_s": round(statistics.median(cpus), 2), "wall_s": round(statistics.median(walls), 2),
            "recall_old_rows": round(recall_at_k(g.indices[old_rows], truth_old), 4),
            "recall_new_rows": round(recall_at_k(g.indices[new_rows], truth_new), 4),
            "runs": args.runs, "load": round(os.getloadavg()[0], 1)})
        print(report["rows"][-1], flush=True)
    report["old_build"] = {"method": g_old.method, "cpu_s": round(cpu_old, 2)}


def drift(args, report: dict, rng) -> None:
    k = args.k
    n0, step, steps = args.drift_start, args.drift_step, args.drift_steps
    if args.drift_data == "same":
        Xd, _ = make_clustered_embeddings(n0 + step * steps, seed=2)
    else:
        Xd = np.vstack([make_clustered_embeddings(n0, seed=2)[0]]
                       + [make_clustered_embeddings(step, seed=100 + s)[0] for s in range(steps)])
    g = build_knn_graph(Xd[:n0], k)
    total = 0.0
    for s in range(1, steps + 1):
        n = n0 + step * s
        g, cpu, _ = timed(lambda: extend_knn_graph(g, Xd[: n - step], Xd[n - step : n])[0])
        total += cpu
        rows = np.sort(rng.choice(n, 1000, replace=False))
        report["drift"].append({"n": n, "added_share": round((n - n0) / n0, 3), "update_cpu_s": round(cpu, 2),
                                "updates_cpu_s_total": round(total, 2),
                                "recall": round(recall_at_k(g.indices[rows], exact_neighbours(Xd[:n], rows, k)), 4),
                                "method": choose_method(n), "load": round(os.getloadavg()[0], 1)})
        print(report["drift"][-1], flush=True)
    rows = np.sort(rng.choice(n, 1000, replace=False))
    gr, cpu, _ = timed(lambda: build_knn_graph(Xd[:n], k))
    report["drift_rebuild"] = {"n": n, "cpu_s": round(cpu, 2), "method": gr.method,
                               "recall": round(recall_at_k(gr.indices[rows], exact_neighbours(Xd[:n], rows, k)), 4)}
    print(report["drift_rebuild"], flush=True)


def write_markdown(out: Path) -> None:
    from labelloop.graph import REBUILD_AFTER_ADDED

    lines = ["# Adding items to the kNN graph: update vs full rebuild", "",
             "`graph.extend_knn_graph` (new rows searched against every vector, old rows' lists "
             "merged with their k nearest new items) against `build_knn_graph` of every item. Synthetic "
             "clustered 384-d vectors (`knn_backends.make_clustered_embeddings`), k = 10. CPU s = "
             "`time.process_time` of the process (every thread), 2 cores shared with other jobs. "
             "Recall@10 on 1000 random rows against exact search.", ""]
    for name, title in (("graph_update", "new batches from the same clusters"),
                        ("graph_update_newclusters", "each new batch from 100 new clusters")):
        f = out / f"{name}.json"
        if not f.exists():
            continue
        r = json.loads(f.read_text())
        lines += [f"## {title}", "", f"Command: `{r['command']}`; load average {r['load_start']:.1f} at the "
                  f"start, {r['load_end']:.1f} at the end.", ""] + ([r["note"], ""] if r.get("note") else [])
        if r["rows"]:
            lines += ["| what | old items | new items | method | CPU s | wall s | recall@10 old rows | "
                      "recall@10 new rows | load |", "|---|---:|---:|---|---:|---:|---:|---:|---:|"]
            for x in r["rows"]:
                lines.append(f"| {x['what']} | {x['n_old']:,} | {x['n_new']:,} | {x['method']} | {x['cpu_s']} | "
                             f"{x['wall_s']} | {x['recall_old_rows']} | {x['recall_new_rows']} | {x['load']} |")
            up, rb = (next(x for x in r["rows"] if x["what"] == w) for w in ("update", "rebuild"))
            lines += ["", f"The update took {rb['cpu_s'] / up['cpu_s']:.1f}x less CPU than the rebuild "
                      f"(old graph built in {r['old_build']['cpu_s']} CPU s, {r['old_build']['method']}).", ""]
        if r["drift"]:
            lines += ["Drift: batches appended one after the other, never rebuilt.", "",
                      "| items | added since the full build | update CPU s | updates CPU s so far | recall@10 | method |",
                      "|---:|---:|---:|---:|---:|---|"]
            total = 0.0
            for x in r["drift"]:
                total += x["update_cpu_s"]
                x.setdefault("updates_cpu_s_total", round(total, 2))
                lines.append(f"| {x['n']:,} | {x['added_share']:.0%} | {x['update_cpu_s']} | "
                             f"{x['updates_cpu_s_total']} | {x['recall']} | {x['method']} |")
            d = r["drift_rebuild"]
            lines += ["", f"A full rebuild of the last {d['n']:,} items: {d['cpu_s']} CPU s, recall@10 "
                      f"{d['recall']} ({d['method']}).", ""]
    lines += [f"Rebuild bound: `graph.REBUILD_AFTER_ADDED` = {REBUILD_AFTER_ADDED:g}. " + DECISION]
    (out / "graph_update.md").write_text("\n".join(lines) + "\n")


#: why REBUILD_AFTER_ADDED is what it is (from the drift rows above)
DECISION = (
    "Neither drift run lost recall (0.9999-1.0 to +80 % with batches from the same clusters and "
    "to +60 % with each batch from new clusters, the largest shares measured), so the bound stays "
    "inside what was measured with a margin; the updates up to +50 % cost 54 CPU s together "
    "(new clusters), about one rebuild's worth (71 CPU s at 90k, 103 at 80k). A rebuild does "
    "not always restore recall: on the new-clusters data (1,300 small clusters by the end) the "
    "rebuilt IVF graph had recall 0.9145 where the extended one had 0.9998, as its sqrt(n) "
    "lists no longer separate the clusters. Before the update added centroids of the new items to "
    "the kept ones (old centroids only), the new-clusters run lost recall at once: 0.970 after "
    "one 5 % batch, 0.937 at +10 %, 0.863 at +30 %, 0.774 at +65 % (stopped there; the same "
    "command, load 12-16).")

if __name__ == "__main__":
    main()
