"""What the graph and the propagation would cost at 10M-100M items: measured rates on this
machine, extrapolated (docs/architecture.md, "Beyond one machine").

    python benchmarks/scale_estimate.py              # IVF shard of 200k, propagation on 1M rows

Measures, single-threaded (CPU seconds):
- FAISS IVF-Flat search (384-d, nlist = 4 sqrt(m), nprobe = 16, k = 10; the settings of
  ``labelloop.graph``) on one shard of ``--shard`` vectors: vectors scanned per CPU-second
  (``nprobe * m / nlist`` per query);
- one propagation step ``F <- S F`` (CSR ``(n, n)`` with 17 non-zeros a row, like a
  symmetrised k = 10 graph, times ``(n, C)`` float32, C = 10) on ``--rows`` rows: non-zeros
  per CPU-second. Neighbours are drawn at random, so memory access is worse than a real
  kNN graph's (an upper bound on the cost).

Then extrapolates, for n = 10M and 100M: the graph build's scan work (all n items are
queries), unsharded and with the vectors spread over S machines (each holds n / S vectors and
its own IVF, every query goes to all S: the scan grows by sqrt(S)), the propagation's 20
steps, and the memory of each part. Writes benchmarks/results/scale_estimate.json and .md.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
D, K, NPROBE, AVG_NNZ, C, STEPS = 384, 10, 16, 17, 10, 20


def cpu() -> float:
    return time.process_time()


def ivf_rate(m: int, n_queries: int, seed: int = 0) -> dict:
    import faiss

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((200, D), dtype=np.float32)                 # (200, D)
    X = centres[rng.integers(0, 200, m)] + 0.5 * rng.standard_normal((m, D), dtype=np.float32)  # (m, D)
    faiss.normalize_L2(X)
    nlist = int(4 * math.sqrt(m))
    quant = faiss.IndexFlatIP(D)
    index = faiss.IndexIVFFlat(quant, D, nlist, faiss.METRIC_INNER_PRODUCT)
    t = cpu()
    index.train(X[rng.choice(m, min(m, 40 * nlist), replace=False)])
    index.add(X)
    build = cpu() - t
    index.nprobe = NPROBE
    t = cpu()
    index.search(X[:n_queries], K + 1)
    search = cpu() - t
    scanned = n_queries * NPROBE * m / nlist
    return {"m": m, "nlist": nlist, "queries": n_queries, "train_add_cpu_s": build, "search_cpu_s": search,
            "scanned_per_cpu_s": scanned / search}


def spmm_rate(n: int, seed: int = 0) -> dict:
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    indptr = np.arange(0, n * AVG_NNZ + 1, AVG_NNZ, dtype=np.int64)
    S = sp.csr_matrix((rng.random(n * AVG_NNZ, dtype=np.float32) / AVG_NNZ,
                       rng.integers(0, n, n * AVG_NNZ).astype(np.int32), indptr), shape=(n, n))  # (n, n)
    F = rng.random((n, C), dtype=np.float32)                                  # (n, C)
    S @ F
    t = cpu()
    for _ in range(3):
        F = S @ F
    step = (cpu() - t) / 3
    return {"n": n, "nnz": S.nnz, "step_cpu_s": step, "nnz_per_cpu_s": S.nnz / step}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shard", type=int, default=200_000)
    ap.add_argument("--queries", type=int, default=5_000)
    ap.add_argument("--rows", type=int, default=1_000_000)
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    ivf = ivf_rate(args.shard, args.queries)
    prop = spmm_rate(args.rows)
    out = {"measured": {"ivf": ivf, "propagation_step": prop}, "load": os.getloadavg()[0], "extrapolated": []}
    for n in (10_000_000, 100_000_000):
        for shards in (1, 8, 32):
            m = n / shards
            scan = n * shards * NPROBE * m / (4 * math.sqrt(m))      # vectors scanned, all shards
            out["extrapolated"].append({
                "n": n, "machines": shards,
                "graph_cpu_h": scan / ivf["scanned_per_cpu_s"] / 3600,
                "vectors_gb_per_machine": m * D * 4 / 1e9,
                "propagation_20_steps_cpu_s": STEPS * n * AVG_NNZ / prop["nnz_per_cpu_s"],
                "propagation_gb": n * AVG_NNZ * 8 / 1e9 + 2 * n * C * 4 / 1e9,
            })
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale_estimate.json").write_text(json.dumps(out, indent=1))
    lines = [
        "# Scale estimate: the graph and the propagation at 10M and 100M items", "",
        f"`python benchmarks/scale_estimate.py --shard {args.shard} --queries {args.queries} --rows {args.rows}`; "
        f"single-threaded CPU seconds on this 2-core machine shared with other jobs (load {out['load']:.1f}).", "",
        "Measured:", "",
        f"- FAISS IVF-Flat, {ivf['m']:,} x {D} vectors, nlist {ivf['nlist']}, nprobe {NPROBE}, k {K}: "
        f"train + add {ivf['train_add_cpu_s']:.1f} CPU-s, {ivf['queries']:,} queries {ivf['search_cpu_s']:.1f} CPU-s "
        f"= {ivf['scanned_per_cpu_s'] / 1e6:.1f} M vectors scanned per CPU-s",
        f"- one propagation step, {prop['n']:,} rows, {prop['nnz']:,} non-zeros (random neighbours), C = {C}: "
        f"{prop['step_cpu_s']:.2f} CPU-s = {prop['nnz_per_cpu_s'] / 1e6:.0f} M non-zeros per CPU-s", "",
        "Extrapolated (graph: every item is a query; shards = machines, each with n / S vectors and its own IVF, "
        "every query sent to every shard and the S top-k lists merged):", "",
        "| n | machines | graph build, CPU-hours (all machines) | vectors per machine, GB | "
        "propagation, 20 steps, CPU-s | propagation memory, GB |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for e in out["extrapolated"]:
        lines.append(f"| {e['n']:,} | {e['machines']} | {e['graph_cpu_h']:.1f} | {e['vectors_gb_per_machine']:.1f} | "
                     f"{e['propagation_20_steps_cpu_s']:.0f} | {e['propagation_gb']:.1f} |")
    (RESULTS / "scale_estimate.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
