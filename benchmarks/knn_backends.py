"""kNN graph backends: build time and recall@k against exact search, on synthetic 384-d
vectors (clustered, or overlapping with --data latent). Chooses ``labelloop.graph``'s default
approximate method and exact threshold.

    python benchmarks/knn_backends.py                 # n = 10k, 50k, 100k
    python benchmarks/knn_backends.py --large         # + 1M (hours for exact; exact is skipped)
    python benchmarks/knn_backends.py --data latent --sizes 100000 1000000 \
        --methods ivf-blas --isolate --append           # each build in its own process: peak RSS
    python benchmarks/knn_backends.py --sizes 200000 --methods ivf nndescent
    python benchmarks/knn_backends.py --data latent --sizes 100000 \
        --methods ivf nndescent nndescent-nn11 nndescent-nn20   # NN-descent candidate lists

Each method runs the full ``build_knn_graph`` (normalise, search k+1, drop self, repair).
With ``--isolate`` the vectors are saved once as .npy (``--cache``) and each build runs in a
child process on them memory-mapped, as ``Project.graph`` reads them: its CPU seconds (user +
system, every thread) and its own peak RSS (VmHWM, the mapped vectors it touched included).
Recall@k: mean |found ∩ exact| / k over 1000 random query rows, exact neighbours from a FAISS
flat search of those rows. Times: median of ``--runs`` (3 for n <= 50k, 1 above by default).
pynndescent's numba JIT compile is measured separately in a fresh process (it is paid once
per process, and is not part of its build times below). Writes
benchmarks/results/knn_backends.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import labelloop.graph as graph_mod
from labelloop.graph import _n_threads, _search_exact, build_knn_graph, normalize_rows

RESULTS = Path(__file__).parent / "results"


def make_clustered_embeddings(
    n: int,
    dim: int = 384,
    n_clusters: int = 100,
    intrinsic: int = 16,
    spread: float = 0.25,
    noise: float = 0.03,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Synthetic "embeddings": ``n_clusters`` random unit centres, each with its own random
    ``intrinsic``-dimensional subspace of variation (std ``spread``) plus isotropic noise.

    Within-cluster cosine ~0.43, between clusters ~0, nearest-neighbour cosine ~0.7 (like
    sentence embeddings). Returns (X (n, dim) float32, cluster id (n,)).
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    cluster = rng.integers(0, n_clusters, n)
    X = np.empty((n, dim), np.float32)
    for c in range(n_clusters):
        rows = np.flatnonzero(cluster == c)
        U = rng.standard_normal((intrinsic, dim)).astype(np.float32) / np.sqrt(dim)  # (r, dim)
        z = spread * rng.standard_normal((rows.size, intrinsic)).astype(np.float32)
        # x = centre + z U + noise
        X[rows] = centres[c] + z @ U + noise * rng.standard_normal((rows.size, dim), dtype=np.float32)
    return X, cluster


def pca_ivf(X: np.ndarray, k: int, dim: int = 128, rerank: int = 3) -> np.ndarray:
    """Candidate only (not in the library): IVF on a PCA-``dim`` projection for ``rerank * k``
    candidates, re-ranked by exact cosine in the full space. Returns (n, k+1) ids."""
    import faiss

    from labelloop.graph import _search_ivf

    n = X.shape[0]
    sample = X[np.random.default_rng(0).choice(n, min(n, 20_000), replace=False)]
    mean = sample.mean(0)
    _, _, Vt = np.linalg.svd(sample - mean, full_matrices=False)
    Y = normalize_rows((X - mean) @ Vt[:dim].T)
    faiss.omp_set_num_threads(_n_threads())
    cand, _ = _search_ivf(np.ascontiguousarray(Y), rerank * k + 1, seed=0)
    sims = np.concatenate(
        [np.einsum("nd,nkd->nk", X[i : i + 10_000], X[cand[i : i + 10_000]]) for i in range(0, n, 10_000)]
    )
    order = np.argsort(-sims, axis=1)[:, : k + 1]
    return np.take_along_axis(cand, order, 1)


def jit_compile_seconds() -> dict:
    """pynndescent's first call in a fresh process minus a second call (numba compile cost)."""
    code = (
        "import time, numpy as np, pynndescent\n"
        "X = np.random.default_rng(0).standard_normal((2000, 384)).astype(np.float32)\n"
        "t = time.perf_counter(); pynndescent.NNDescent(X, metric='cosine', n_neighbors=11, random_state=0).neighbor_graph\n"
        "a = time.perf_counter() - t\n"
        "t = time.perf_counter(); pynndescent.NNDescent(X, metric='cosine', n_neighbors=11, random_state=1).neighbor_graph\n"
        "b = time.perf_counter() - t\n"
        "print(a, b)\n"
    )
    try:
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    except (subprocess.CalledProcessError, FileNotFoundError) as exc:
        return {"error": str(exc)}
    first, second = map(float, out.stdout.split()[-2:])
    return {"first_call_s": round(first, 2), "second_call_s": round(second, 2), "compile_s": round(first - second, 2)}


def exact_rows(X: np.ndarray, q: np.ndarray, kk: int, chunk: int = 200_000) -> np.ndarray:
    """(len(q), kk) exact cosine neighbours of the rows ``q`` among every row of ``X``, self
    included; the items normalised in chunks (no normalised copy of X)."""
    Q = normalize_rows(X[q])
    sims, ids = [], []
    for lo in range(0, X.shape[0], chunk):
        i, s = _search_exact(Q, np.ascontiguousarray(normalize_rows(X[lo : lo + chunk])), kk)
        sims.append(s)
        ids.append(i + lo)
    sims, ids = np.concatenate(sims, axis=1), np.concatenate(ids, axis=1)
    return np.take_along_axis(ids, np.argsort(-sims, axis=1, kind="stable")[:, :kk], 1)


def build_one(npy: str, method: str, k: str, queries: str) -> None:
    """--isolate's child: build on the memory-mapped vectors, print one JSON line."""
    import resource

    X = np.load(npy, mmap_mode="r")
    if method.startswith("nndescent"):  # its numba compile is measured separately
        import pynndescent

        pynndescent.NNDescent(np.random.default_rng(0).standard_normal((500, 8)), metric="cosine", n_neighbors=5)
    if method.startswith("ivf-blas-"):
        # -pN: N probed lists (both spaces); -rN: N refinement passes; -cN: N candidates per item
        # scored exactly after a reduced-space search; -full / -reduced: the full space / the
        # reduced space (where the rows allow it) at every size
        for part in method.removeprefix("ivf-blas-").split("-"):
            if part in ("full", "reduced"):
                setattr(graph_mod, {"full": "IVF_BLAS_REDUCED_MAX_DIM", "reduced": "IVF_BLAS_REDUCED_MIN_N"}[part], 0)
                continue
            names = {"p": ["IVF_BLAS_NPROBE", "IVF_BLAS_REDUCED_NPROBE"], "r": ["IVF_BLAS_REFINE_PASSES"],
                     "c": ["IVF_BLAS_RERANK"]}[part[0]]
            for name in names:
                setattr(graph_mod, name, int(part[1:]))
        method = "ivf-blas"
    ru = resource.getrusage(resource.RUSAGE_SELF)
    t = time.perf_counter()
    g = build_knn_graph(X, int(k), method=method)
    wall = time.perf_counter() - t
    ru2 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = ru2.ru_utime + ru2.ru_stime - ru.ru_utime - ru.ru_stime
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1]
    print(json.dumps({"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": int(hwm) / 1024,
                      "found": g.indices[np.load(queries)].tolist()}))


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    return float(np.mean([len(set(a[:k]) & set(b)) / k for a, b in zip(found, truth)]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    ap.add_argument("--large", action="store_true", help="add n = 1,000,000")
    ap.add_argument("--methods", nargs="+", default=["exact", "ivf-blas", "ivf", "hnsw", "nndescent", "pca128-ivf"])
    ap.add_argument("--data", choices=["clustered", "latent"], default="clustered",
                    help="clustered: 100 separated clusters; latent: overlapping classes (harder)")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--runs", type=int, default=None, help="default: 3 for n <= 50k, else 1")
    ap.add_argument("--exact-max", type=int, default=100_000, help="time exact search up to this n")
    ap.add_argument("--out", default=str(RESULTS / "knn_backends"))
    ap.add_argument("--isolate", action="store_true",
                    help="each build in a child process on memory-mapped vectors: CPU s and peak RSS of the build")
    ap.add_argument("--cache", type=Path, default=Path("/tmp/labelloop-knn-bench"), help="--isolate: where vectors go")
    ap.add_argument("--one", nargs=4, metavar=("NPY", "METHOD", "K", "QUERIES"), help=argparse.SUPPRESS)
    ap.add_argument("--markdown-only", action="store_true", help="rewrite the .md from the .json, run nothing")
    ap.add_argument("--append", action="store_true",
                    help="add rows to an existing --out .json (replacing rows of the same n and method)")
    args = ap.parse_args()
    if args.one:
        return build_one(*args.one)
    sizes = args.sizes + ([1_000_000] if args.large else [])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": {"cores": _n_threads(), "platform": platform.platform(), "python": platform.python_version()},
        "k": args.k,
        "dim": args.dim,
        "queries": args.queries,
        "rows": [],
    }
    if (args.append or args.markdown_only) and out.with_suffix(".json").exists():
        report = json.loads(out.with_suffix(".json").read_text())
    if args.markdown_only:
        return write_markdown(report, out.with_suffix(".md"))
    if "nndescent" in args.methods and not args.isolate:
        if "nndescent_jit" not in report:
            report["nndescent_jit"] = jit_compile_seconds()
            print("pynndescent JIT:", report["nndescent_jit"], flush=True)
        import pynndescent  # warm the JIT in this process so build times below exclude it

        pynndescent.NNDescent(np.random.default_rng(0).standard_normal((500, 8)), metric="cosine", n_neighbors=5)
    for n in sizes:
        npy = args.cache / f"{args.data}_{n}_{args.dim}.npy"
        if args.isolate and npy.exists():   # vectors saved by an earlier --isolate run
            X = np.load(npy, mmap_mode="r")
        elif args.data == "clustered":
            X, _ = make_clustered_embeddings(n, args.dim, seed=0)
        else:  # overlapping classes, 32-d latent structure (benchmarks/refresh_latency.py)
            from refresh_latency import make_latent_embeddings

            X = make_latent_embeddings(n, args.dim)[0]
        q = np.sort(np.random.default_rng(1).choice(n, min(args.queries, n), replace=False))
        t_idx = exact_rows(X, q, args.k + 1)
        if args.isolate:
            args.cache.mkdir(parents=True, exist_ok=True)
            if not npy.exists():
                np.save(npy, X)
            np.save(args.cache / "queries.npy", q)
            del X
        else:
            npy = None
        # exact truth without self (self is the top hit unless duplicates tie with it)
        truth = np.array([[j for j in row if j != i][: args.k] for i, row in zip(q, t_idx)])
        runs = args.runs or (3 if n <= 50_000 else 1)
        for method in args.methods:
            if method == "exact" and n > args.exact_max:
                continue
            times, cpus, rss, rec = [], [], [], None
            for r in range(runs):
                load0 = os.getloadavg()[0]
                t, c = time.perf_counter(), time.process_time()
                if npy is not None:
                    child = json.loads(subprocess.run(
                        [sys.executable, __file__, "--one", str(npy), method, str(args.k), str(args.cache / "queries.npy")],
                        capture_output=True, text=True, check=True).stdout.splitlines()[-1])
                    found = np.array(child["found"])
                    times.append(child["wall_s"])
                    cpus.append(child["cpu_s"])
                    rss.append(child["peak_rss_mb"])
                elif method == "pca128-ivf":
                    idx = pca_ivf(normalize_rows(X), args.k)
                    found = np.array([[j for j in idx[i] if j != i][: args.k] for i in q])
                elif method.startswith("nndescent-nn"):  # NN-descent with another candidate-list size
                    default = graph_mod.NNDESCENT_N_NEIGHBORS
                    graph_mod.NNDESCENT_N_NEIGHBORS = int(method.removeprefix("nndescent-nn"))
                    try:
                        found = build_knn_graph(X, args.k, method="nndescent").indices[q]
                    finally:
                        graph_mod.NNDESCENT_N_NEIGHBORS = default
                else:
                    g = build_knn_graph(X, args.k, method=method)
                    found = g.indices[q]
                if npy is None:
                    times.append(time.perf_counter() - t)
                    cpus.append(time.process_time() - c)
                if rec is None:
                    rec = recall_at_k(found, truth)
                print(f"n={n} {method:11s} run {r}: {times[-1]:8.2f} s {cpus[-1]:8.2f} CPU-s  recall@{args.k} {rec:.4f}  "
                      f"load {load0:.1f}", flush=True)
            report["rows"] = [
                r for r in report["rows"] if (r["n"], r["method"], r.get("data", "clustered")) != (n, method, args.data)
            ]
            report["rows"].append({
                "n": n, "method": method, "data": args.data, "runs": runs, "median_s": round(float(np.median(times)), 3),
                "times_s": [round(x, 3) for x in times], "median_cpu_s": round(float(np.median(cpus)), 3),
                f"recall_at_{args.k}": round(rec, 4),
                **({"peak_rss_mb": round(float(np.median(rss)))} if rss else {}),
                "load_avg_1min": round(os.getloadavg()[0], 1),
            })
        for row in report["rows"]:  # speed-up vs exact at the same size
            ex = [r for r in report["rows"] if r["n"] == row["n"] and r["method"] == "exact"
                  and r.get("data", "clustered") == row.get("data", "clustered")]
            if ex and row["n"] == n:
                row["speedup_vs_exact"] = round(ex[0]["median_s"] / row["median_s"], 2)
        out.with_suffix(".json").write_text(json.dumps(report, indent=2))
    write_markdown(report, out.with_suffix(".md"))


def write_markdown(report: dict, path: Path) -> None:
    k = report["k"]
    lines = [
        "# kNN backends: build time and recall",
        "",
        f"Synthetic {report['dim']}-d vectors: `clustered` = `make_clustered_embeddings` (100 "
        "separated clusters, 16-d local subspaces + noise); `latent` = "
        "`refresh_latency.make_latent_embeddings` (10 overlapping classes x 5 Gaussian clusters "
        f"in a 32-d latent space + noise; harder for IVF cells and NN-descent). k = {k}, recall@{k} "
        f"on {report['queries']} random query rows vs exact search. Machine: {report['machine']['cores']} cores, shared with other jobs "
        "(load average in the table). Full `build_knn_graph` per method.",
        "",
        f"| data | n | method | median build s | CPU s | peak RSS MB | runs | recall@{k} | speed-up vs exact | load |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    order = ["exact", "ivf-blas", "ivf-blas-full", "ivf-blas-p12", "ivf-blas-p14", "ivf-blas-p4", "ivf-blas-p16",
             "ivf-blas-r0", "ivf-blas-r1", "ivf-blas-p4-r1", "ivf-blas-p6-r1", "ivf", "hnsw", "nndescent",
             "nndescent-nn11", "nndescent-nn20", "pca128-ivf"]
    rows = sorted(report["rows"], key=lambda r: (r.get("data", "clustered") != "clustered", r["n"],
                                                 order.index(r["method"]) if r["method"] in order else 99))
    for r in rows:
        lines.append(
            f"| {r.get('data', 'clustered')} | {r['n']:,} | {r['method']} | {r['median_s']:.2f} "
            f"| {r['median_cpu_s'] if 'median_cpu_s' in r else ''} | {r.get('peak_rss_mb', '')} | {r['runs']} | {r[f'recall_at_{k}']:.4f} "
            f"| {r.get('speedup_vs_exact', '')} | {r['load_avg_1min']} |"
        )
    if "nndescent_jit" in report:
        lines += ["", f"pynndescent numba JIT, fresh process: {report['nndescent_jit']} (not in the build times)."]
    if "nndescent_jit_cache" in report:
        lines += ["", report["nndescent_jit_cache"]]
    from labelloop.graph import (DEFAULT_APPROX_METHOD, DEFAULT_EXACT_THRESHOLD, IVF_BLAS_HALF_MIN_N,
                                 IVF_BLAS_KMEANS, IVF_BLAS_NPROBE, IVF_BLAS_REDUCED_ENERGY, IVF_BLAS_REDUCED_MAX_DIM,
                                 IVF_BLAS_REDUCED_NPROBE, IVF_BLAS_REFINE_PASSES, IVF_BLAS_RERANK, IVF_MIN_NPROBE,
                                 IVF_PROBE_FRACTION, NNDESCENT_N_NEIGHBORS)

    lines += [
        "",
        "`ivf-blas` rows: one `--isolate` run each, at load 10-12 (four other jobs on the 2 cores; "
        "the 1M rows of the reduced-space search and the 1M `clustered` row at load 13-17); "
        "`ivf-blas-pN`: N probed lists instead of `graph.IVF_BLAS_NPROBE` (and "
        "`graph.IVF_BLAS_REDUCED_NPROBE`); `-full`: the full-space search at every size (the 1M "
        "`latent` `ivf-blas-full` row is main's `ivf-blas` at 0515eda, 8 full-space probes); "
        "`-rN`: N neighbour-of-neighbour refinement passes (`graph._refine_neighbours`) instead of "
        "`graph.IVF_BLAS_REFINE_PASSES`. "
        "Runs: 3 per method at 10k; 1 at 50k and above (an exact build took ~7 min at 50k on the "
        "shared machine); HNSW and PCA were dropped at 100k after losing at 10k and 50k. "
        "`pca128-ivf` (benchmark only): IVF on a 128-d PCA projection for 3k candidates, "
        "re-ranked by the full cosine. `nndescent-nnN`: NN-descent with a candidate list of N "
        f"instead of `graph.NNDESCENT_N_NEIGHBORS` ({NNDESCENT_N_NEIGHBORS}); the `clustered` nndescent rows up to 100k "
        "were measured when the list was 11 (k + 1), the `latent` rows at 100k (run next to another "
        "benchmark, load ~2.5) chose 30. Build times are wall seconds on a shared machine: compare "
        "methods within one size (same run, similar load), not across tables.",
        "",
        # the settings below are read from labelloop.graph when this file is written
        f"Decision (`labelloop.graph.choose_method`, the one function that chooses; settings read from "
        f"`labelloop.graph` when this file is written): `method=\"auto\"` searches exactly up to "
        f"{DEFAULT_EXACT_THRESHOLD:,} items: no recall loss, at a cost that is still small there (10k: "
        "10.8 s exact vs 2.7 s IVF at load ~10; 50k: 409 s vs 35 s, so not beyond). Above it "
        f"`{DEFAULT_APPROX_METHOD}` at every size: FAISS k-means lists (nlist = sqrt(n), trained on "
        f"{IVF_BLAS_KMEANS[0]} points per list, {IVF_BLAS_KMEANS[1]} iterations), every item probing its "
        f"{IVF_BLAS_NPROBE} nearest lists (a fixed number, where FAISS `ivf` probes {IVF_PROBE_FRACTION:.0%} "
        f"of the lists, at least {IVF_MIN_NPROBE}, so its cost grows with n^2), searched list by list: "
        "the items probing a list are one block scored against the list's members with one "
        "single-threaded BLAS product per worker thread, keeping only scores above each item's "
        "current k-th best; rows are normalised as read (inverse norms computed once; no normalised "
        "copy, the memory-mapped vectors are read in place), then one reverse-neighbour pass. "
        "Measured with `--isolate` (a child process per build on the memory-mapped vectors, as "
        "`Project.graph` reads them; CPU = user + system of every thread; peak RSS = the child's "
        "VmHWM, including the mapped vectors it touched: ~1.5 GB at 1M before the float16 copy below): at 100k it took "
        "6.4-6.5 CPU-s (recall 1.000 `clustered`, 0.965 `latent`), where FAISS `ivf` took 46-163 s "
        "wall (earlier runs, table; 85.6 CPU-s in issue 11) and pynndescent 18-33 s wall plus a "
        "44-121 s compile per process; at 200k `latent` 15.1 CPU-s "
                f"(recall 0.950; with 16 probes 22.2 CPU-s, 0.982). At 1M `latent` the full-space search "
        "(main at 0515eda, row `ivf-blas-full`) took 144 CPU-s at load 11.5, recall 0.877, peak RSS "
        "2,185 MB: 32-d overlapping Gaussians, where a 1M-point 10-NN ball is nearly as wide as a "
        "list, need more probes. From `graph.IVF_BLAS_HALF_MIN_N` items "
        f"({IVF_BLAS_HALF_MIN_N // 1000}k) one pass reads the rows in file order into a float16 copy "
        "of the unit rows (768 MB at 1M x 384, `graph._read_rows`), releasing the memory map's pages "
        "every 32k rows, and everything after reads that copy (cosines move by ~1e-4), not the map: "
        "before, the released pages were faulted in again at random, and the full-space search kept "
        "the whole file mapped. From `graph.IVF_BLAS_REDUCED_MIN_N` items (500k) rows whose sample "
        f"holds {IVF_BLAS_REDUCED_ENERGY:.0%} of its energy in at most {IVF_BLAS_REDUCED_MAX_DIM} principal "
        "directions (`latent`: 32; `clustered`: more, so it stays in the full space) are projected "
        "in the same pass, searched the same way in the reduced space with "
        f"{IVF_BLAS_REDUCED_NPROBE} probes for {IVF_BLAS_RERANK} candidates each, and the candidates "
        "are scored in the full space (rows in list order, 256 at a time, each candidate row "
        "converted once per chunk). Where the CPU went at 1M `latent` (CPU per function, a scratch "
        "script wrapping graph's functions, load 4-8): before, search 44, scoring 11 candidates from the memory map "
        "26 (page faults of released pages), projection 4, the rest ~2 CPU-s; in the 32-d space the "
        "exact top 11 hold recall 0.978 of the true top 10 and the exact top 16 all of it, so the "
        "recall was lost in the search's 11 candidates; on the float16 copy scoring 16 candidates "
        "took 15 CPU-s. The finiteness check of the input (`graph._all_finite`) now reads 65k rows "
        "at a time and releases their pages: `np.isfinite(X).all()` built a 384 MB mask and mapped "
        "the whole file, which was the 1,862 MB peak of every 1M build before. The two 1M "
        "`ivf-blas` rows are the default now, two `--isolate` runs each: `latent` 88.1 / 88.3 "
        "CPU-s, recall 0.958, peak RSS 1,622 MB (load 8-11; the previous default, 11 candidates "
        "re-read from the map, took 95.1 CPU-s, recall 0.948, 1,862 MB in the same session at "
        "load 6-7, and 126.3 CPU-s at load 5.9 before); `clustered` (full space, 8 probes) "
        "102.4 / 103.5 CPU-s, recall 0.996, 1,306 MB (load 8-11, the fast test suite running "
        "beside it; before 130.6 CPU-s, 0.997, 2,504 MB at load 13). So the issue's goal (recall "
        ">= 0.95 in <= 120 CPU-s and <= 2 GB) is met on both synthetic sets (the same build's "
        "CPU-s moved by up to 1.3x between sessions with the load: 77-95 CPU-s for the previous "
        "`latent` default this session). 100k is on the unchanged path (same graphs): `latent` "
        "5.5 CPU-s, `clustered` 5.5, recall 0.965 / 1.000, 523 / 525 MB (load 6-7; 6.5 / 6.4 "
        "CPU-s and 561 / 562 MB before, the difference being the finiteness check's mask). The other 1M rows were measured on the earlier code (no "
        "float16 copy, 11 candidates): `latent` 12 probes 100.1 CPU-s, recall 0.934; 14 probes "
        "116.5 CPU-s, 0.948 (load 13-14, pages not released: 2,233 / 2,297 MB); 16 probes and 16 "
        "candidates reached 0.971 in a scratch run (238 CPU-s on the earlier, slower block code). "
        "Below 500k the full-space search is unchanged (same graphs) on faster block "
        "code (FAISS top-k for the probes and each row's first list, one flat scan for the floors): "
        "200k `latent` 19.3 CPU-s against 25.7 for main's code in the same session (load 6-7), "
        "recall 0.9495 both; 100k `latent` `ivf-blas-full` 7.8 CPU-s (main 9.6 / 11.1 in the same "
        "session, recall 0.9649 all). `ivf-blas-reduced-p12` at 100k: the reduced space (12 probes, "
        "11 candidates) below the 500k threshold, 7.2 CPU-s, recall 0.968. "

        f"Refinement ({IVF_BLAS_REFINE_PASSES} passes by default): after the search and the reverse "
        "pass, rows in IVF-list order, 64 at a time, are scored with one BLAS product against every "
        "neighbour of their neighbours and keep their k best (never worse). It lifts a weak graph a lot "
        "(200k `latent`, 4 probes: 0.83 after the reverse pass -> 0.93, timed by stage in a scratch "
        "script) but costs more than more probes: 200k `latent` "
        "15.6 -> 33.9 CPU-s for 0.950 -> 0.964 (16 probes: 22.2 CPU-s, 0.982); 4 probes + 1 pass "
        "33.3 CPU-s, 0.926; 100k `clustered` 6.0 -> 9.4 CPU-s at recall 1.000 either way. At 1M "
        "`latent` (8 probes + 1 pass) it took 259 CPU-s, recall 0.931, peak RSS 2,200 MB (one run, "
        "load ~10): the pass cost ~115 CPU-s on top of the search for +0.054 recall, so it does not "
        "bring the 1M goal within reach either; it is off by default and kept for the "
        "`ivf-blas-rN` measurements. "
        "Its cost is the random reads of the candidate rows, not the products (200k: gathering "
        "25,600 random rows took 21 ms, their dot products 2.5 ms). "
        "No numba, so no compile in any process. The centroids are kept for adding items "
        "(`extend_knn_graph`, which still searches with FAISS `ivf`, normalising the old rows chunk by "
        "chunk as they are added or searched, no normalised copy of them all; benchmarks/results/graph_update.md). "
        "`pca128-ivf` (FAISS IVF on 128-d PCA, 3k candidates re-ranked) lost recall (0.95 at 50k "
        "`clustered`) for little or no time saved; the reduced space above is chosen by the rows' "
        "energy instead (the `clustered` rows spread theirs, so they stay in the full space).",
    ]
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
