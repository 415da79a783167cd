"""Label efficiency: accuracy on the unlabeled items vs. random labels per class.

For each dataset and backbone the items are embedded once (cached under benchmarks/.cache/),
L2-normalised, and then, for 1, 2, 5, 10, 20 random labels per class and 5 seeds, compared:

- labelloop: ``build_knn_graph(k=10, method="exact")`` + ``LabelPropagation(T=0.01, 20 steps,
  clamped)`` (Bai et al.'s formulation),
- scikit-learn ``LabelSpreading(kernel="knn", n_neighbors=10)`` (its defaults otherwise),
- a cosine kNN classifier trained on the labeled items only, k = min(10, labels per class),
  and the variant k = min(10, n_labeled),
- the classifier head ``labelloop train`` fits on frozen features (prototypes up to 5 labels
  per class, then a linear head), alone and averaged with propagation: does the "second
  opinion" help?
- the ceiling: 10-NN cosine accuracy with every label, 5-fold cross-validation.

Run:  python benchmarks/label_efficiency.py            (full: digits + Fashion-MNIST 10k)
      python benchmarks/label_efficiency.py --quick    (smoke run, writes *_quick.* files)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
RESULTS = HERE / "results"
SHOTS = (1, 2, 5, 10, 20)
SEEDS = 5
CHUNK = 512   # embed this many items per cache file, so an interrupted run resumes


# ---------------------------------------------------------------------------- embedding
def embed_cached(ds, ds_key: str, backbone, *, log=print) -> tuple[np.ndarray, dict]:
    """(n, dim) float32 embeddings of ``ds.items``, from chunk files under .cache/ when present.

    Returns the array and the cache's meta: total seconds spent embedding it (over all runs
    that filled it), the number of items embedded, the load average when it finished."""
    folder = CACHE / f"{ds_key}__{backbone.cache_id}"
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "labels.npy", ds.labels)
    parts, seconds, fresh = [], 0.0, 0
    for c, lo in enumerate(range(0, len(ds.items), CHUNK)):
        path = folder / f"chunk{c:04d}.npy"
        if path.exists():
            parts.append(np.load(path))
            continue
        t0 = time.perf_counter()
        Z = backbone.embed(ds.items[lo : lo + CHUNK])  # (chunk, dim)
        seconds += time.perf_counter() - t0
        fresh += len(Z)
        np.save(path, Z)
        parts.append(Z)
        log(f"  {backbone.cache_id}: {lo + len(Z)}/{len(ds.items)} "
            f"({fresh / seconds:.1f} items/s)")
    meta_path = folder / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {"embed_seconds": 0.0, "items": 0}
    if fresh:
        meta = {"embed_seconds": meta["embed_seconds"] + seconds, "items": meta["items"] + fresh,
                "loadavg": os.getloadavg()}
        meta_path.write_text(json.dumps(meta))
    return np.concatenate(parts), meta


# ---------------------------------------------------------------------------- methods
def random_labels(y: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Indices of ``shots`` items per class, drawn with ``default_rng(seed)``."""
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.choice(np.flatnonzero(y == c), size=shots, replace=False)
                           for c in np.unique(y)])


def run_labelloop(graph, y_partial: np.ndarray, n_classes: int) -> tuple[np.ndarray, float, np.ndarray]:
    from labelloop.propagate import LabelPropagation

    from labelloop.propagate import PropagationConvergenceWarning

    # Bai et al. / DESIGN.md: T = 0.01, 20 steps, labeled rows clamped
    with warnings.catch_warnings():
        # a fixed 20 steps is the method (the paper's), not a failure to converge
        warnings.simplefilter("ignore", PropagationConvergenceWarning)
        lp = LabelPropagation(temperature=0.01, n_iter=20).fit(graph, y_partial, n_classes=n_classes)
    return lp.transduction_, float(np.mean(~lp.reached_)), lp.predict_proba()


def run_label_spreading(Xn: np.ndarray, y_partial: np.ndarray) -> np.ndarray:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.semi_supervised import LabelSpreading

    with warnings.catch_warnings():
        # its default max_iter=30 often stops early; we report scikit-learn's defaults as they are
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LabelSpreading(kernel="knn", n_neighbors=10).fit(Xn, y_partial).transduction_


def run_knn(Xn: np.ndarray, y: np.ndarray, labeled: np.ndarray, unlabeled: np.ndarray, k: int) -> np.ndarray:
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(n_neighbors=k, metric="cosine", algorithm="brute")
    return knn.fit(Xn[labeled], y[labeled]).predict(Xn[unlabeled])


def ceiling_10nn(Xn: np.ndarray, y: np.ndarray) -> float:
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    knn = KNeighborsClassifier(n_neighbors=10, metric="cosine", algorithm="brute")
    return float(cross_val_score(knn, Xn, y, cv=StratifiedKFold(5, shuffle=True, random_state=0)).mean())


def evaluate(X: np.ndarray, y: np.ndarray, shots_list, n_seeds: int, *, log=print) -> dict:
    from labelloop.adapt.finetune import fit_head
    from labelloop.graph import build_knn_graph, normalize_rows

    Xn = normalize_rows(X)                                   # (n, d) unit rows
    C = int(y.max()) + 1
    t0 = time.perf_counter()
    graph = build_knn_graph(Xn, k=10, method="exact")
    graph_s = time.perf_counter() - t0
    out = {"ceiling_10nn_5fold": ceiling_10nn(Xn, y), "graph_seconds": graph_s, "by_shots": {}}
    for shots in shots_list:
        if shots > np.bincount(y).min():
            continue
        acc = {"labelloop": [], "label_spreading": [], "knn": [], "knn_k_min10_nlabeled": [], "head": [],
               "labelloop_plus_head": []}
        unreached, lp_seconds = [], []
        for seed in range(n_seeds):
            labeled = random_labels(y, shots, seed)
            mask = np.zeros(len(y), dtype=bool)
            mask[labeled] = True
            unl = np.flatnonzero(~mask)
            y_partial = np.where(mask, y, -1)
            t0 = time.perf_counter()
            pred, frac, P_lp = run_labelloop(graph, y_partial, C)
            lp_seconds.append(time.perf_counter() - t0)
            unreached.append(frac)
            acc["labelloop"].append(float(np.mean(pred[unl] == y[unl])))
            acc["label_spreading"].append(float(np.mean(run_label_spreading(Xn, y_partial)[unl] == y[unl])))
            acc["knn"].append(float(np.mean(run_knn(Xn, y, labeled, unl, min(10, shots)) == y[unl])))
            acc["knn_k_min10_nlabeled"].append(
                float(np.mean(run_knn(Xn, y, labeled, unl, min(10, len(labeled))) == y[unl])))
            # the transfer-learning head `labelloop train` fits on frozen features (prototypes up
            # to 5 labels per class, then a linear head), alone and averaged with propagation
            P_head = fit_head(Xn, y_partial, n_classes=C, seed=seed).predict_proba(Xn)   # (n, C)
            acc["head"].append(float(np.mean(P_head.argmax(1)[unl] == y[unl])))
            P_mix = 0.5 * (P_lp / np.maximum(P_lp.sum(1, keepdims=True), 1e-12) + P_head)
            acc["labelloop_plus_head"].append(float(np.mean(P_mix.argmax(1)[unl] == y[unl])))
        out["by_shots"][str(shots)] = {
            m: {"mean": float(np.mean(v)), "std": float(np.std(v)), "values": v} for m, v in acc.items()
        } | {"labelloop_unreached_fraction": float(np.mean(unreached)),
             "labelloop_fit_seconds_median": float(np.median(lp_seconds))}
        r = out["by_shots"][str(shots)]
        log(f"  {shots:>2}/class  labelloop {r['labelloop']['mean']:.3f}  "
            f"LabelSpreading {r['label_spreading']['mean']:.3f}  kNN {r['knn']['mean']:.3f}  "
            f"head {r['head']['mean']:.3f}  labelloop+head {r['labelloop_plus_head']['mean']:.3f}")
    return out


# ---------------------------------------------------------------------------- report
def machine() -> dict:
    import torch

    try:
        load = os.getloadavg()
    except OSError:
        load = None
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "loadavg_at_end": load}


def write_markdown(path: Path, report: dict) -> None:
    m = report["machine"]
    lines = [
        "# Label efficiency: accuracy on the unlabeled items vs. random labels per class",
        "",
        f"Command: `{report['command']}`  ",
        f"Machine: {m['cpu_count']} CPUs ({m['processor']}), {m['platform']}, torch {m['torch']} "
        f"({m['torch_threads']} threads), Python {m['python']}; load average at the end "
        f"{m['loadavg_at_end']} (cores shared with other jobs: read speeds as lower bounds).  ",
        f"Date: {report['date']}. Mean ± std over {report['config']['seeds']} seeds "
        "(seed s draws the labeled items with `default_rng(s)`).",
        "",
        "Methods, all on the same L2-normalised embeddings: **labelloop** = `build_knn_graph(k=10, "
        "method='exact')` + `LabelPropagation(temperature=0.01, n_iter=20)` (clamped); "
        "**LabelSpreading** = scikit-learn `LabelSpreading(kernel='knn', n_neighbors=10)`; "
        "**kNN** = cosine k-NN classifier on the labeled items only, k = min(10, labels per class); "
        "**kNN k=min(10,n_lab)** = the same with k = min(10, number of labeled items) "
        "(at 1 label per class every class gets one vote: ties); "
        "**head** = the classifier head `labelloop train` fits on frozen features "
        "(`adapt.finetune.fit_head`: cosine prototypes for up to 5 labels per class, a linear head "
        "above); **labelloop + head** = the average of the two probability vectors; "
        "**ceiling** = 10-NN cosine, all labels, 5-fold.",
        "",
    ]
    for r in report["results"]:
        lines += [
            f"## {r['dataset']} (n = {r['n']}), {r['backbone']}",
            "",
            f"Backbone `{r['cache_id']}` ({r['dim']}-d){r['note']}; embedding took "
            f"{r['embed_seconds']:.1f} s ({r['n'] / max(r['embed_seconds'], 1e-9):.1f} items/s, 2 cores"
            + (f", load average {r['embed_loadavg'][0]:.0f} when it finished" if r.get("embed_loadavg") else "")
            + f"). Ceiling (10-NN, all labels, 5-fold): **{r['ceiling_10nn_5fold']:.3f}**.",
            "",
            "| labels / class | labelloop | LabelSpreading | kNN | kNN k=min(10,n_lab) | head "
            "| labelloop + head | unreached |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for shots, s in r["by_shots"].items():
            keys = ("labelloop", "label_spreading", "knn", "knn_k_min10_nlabeled", "head", "labelloop_plus_head")
            cells = [f"{s[k]['mean']:.3f} ± {s[k]['std']:.3f}" for k in keys]
            best = max(range(len(keys)), key=lambda i: s[keys[i]]["mean"])
            cells[best] = f"**{cells[best]}**"
            lines.append(f"| {shots} | " + " | ".join(cells) + f" | {s['labelloop_unreached_fraction']:.3f} |")
        lines.append("")
    path.write_text("\n".join(lines))


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: small subsets, 2 seeds, 1/5 labels")
    ap.add_argument("--datasets", nargs="+", default=["digits", "fashion-mnist"])
    ap.add_argument("--backbones", nargs="+", default=["pixels", "efficientnet-lite0"])
    ap.add_argument("--fashion-n", type=int, default=10_000, help="stratified subset of Fashion-MNIST train")
    ap.add_argument("--image-size", type=int, default=112, help="EfficientNet input size")
    ap.add_argument("--seeds", type=int, default=SEEDS)
    ap.add_argument("--out", default=None, help="file stem under results/ (default label_efficiency[_quick])")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from labelloop.datasets import load_dataset
    from labelloop.embed import get_backbone

    shots_list, seeds, fashion_n, image_size = SHOTS, args.seeds, args.fashion_n, args.image_size
    if args.quick:
        shots_list, seeds, fashion_n, image_size = (1, 5), 2, min(fashion_n, 500), 64
    sizes = {"digits": None, "fashion-mnist": fashion_n, "rotten-tomatoes": None}

    results = []
    for name in args.datasets:
        ds = load_dataset(name, n=500 if args.quick else sizes.get(name), seed=0)
        ds_key = f"{name}-n{len(ds)}-s0"
        for spec in args.backbones:
            # "id" or "id:option=int,option=int", e.g. "pixels:size=8"
            bid, _, rest = spec.partition(":")
            opts = {"image_size": image_size} if bid == "efficientnet-lite0" else {}
            opts |= {k: int(v) for k, v in (kv.split("=") for kv in rest.split(",") if kv)}
            bb = get_backbone(bid, **opts)
            if bb.modality != ds.modality:
                continue
            if bb.needs_fit:
                bb.fit(ds.items)
            print(f"{name} (n={len(ds)}) / {bb.cache_id}", flush=True)
            X, meta = embed_cached(ds, ds_key, bb, log=lambda s: print(s, flush=True))
            res = evaluate(X, ds.labels, shots_list, seeds, log=lambda s: print(s, flush=True))
            note = ""
            if bid == "efficientnet-lite0":
                src = "8x8" if name == "digits" else "28x28"
                note = (f", {src} grayscale upsampled to {bb.image_size} px "
                        f"(short side {round(bb.image_size * 256 / 224)}, centre crop)")
            elif bid == "pixels":
                note = f", images resized to {bb.size}x{bb.size}"
            results.append({"dataset": name, "n": len(ds), "backbone": bid, "cache_id": bb.cache_id,
                            "dim": int(X.shape[1]), "embed_seconds": meta["embed_seconds"],
                            "embed_loadavg": meta.get("loadavg"), "note": note} | res)

    report = {
        "command": "python benchmarks/label_efficiency.py" + ("" if argv is None and len(sys.argv) == 1
                                                               else " " + " ".join(argv if argv is not None else sys.argv[1:])),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "config": {"shots": list(shots_list), "seeds": seeds, "fashion_n": fashion_n,
                   "image_size": image_size, "k": 10, "temperature": 0.01, "n_iter": 20},
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = args.out or ("label_efficiency_quick" if args.quick else "label_efficiency")
    (RESULTS / f"{stem}.json").write_text(json.dumps(report, indent=1))
    write_markdown(RESULTS / f"{stem}.md", report)
    print(f"wrote {RESULTS / stem}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
