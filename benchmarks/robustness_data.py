"""Robustness suite data: cached embeddings of every (dataset, backbone) pair of issue 10.

Propagation must be robust on data nobody tuned it for. Each dataset comes with its packaged
pretrained backbone and a baseline one (10-NN cosine accuracy / balanced accuracy, all labels,
5-fold, from ``results/robustness_data.md``):

====================  =====  ==================================  ==================  ==================
dataset               n      what it stresses                    pretrained          baseline
====================  =====  ==================================  ==================  ==================
digits                1797   domain gap: ImageNet on 8x8 digits  effnet @112 .89     pixels .98
fashion-mnist         5000   weak features, 10 balanced classes  effnet @112 .84     pixels .81
rotten-tomatoes       5000   weak features, 3 classes (53/39/8)  minilm .66 / .57    tfidf .68 / .72
rotten-tomatoes-plot  5000   imbalanced binary (7.8 % plot)      minilm .95 / .69    tfidf .98 / .91
sms-spam              4862   imbalanced binary (13.2 % spam)     minilm .98 / .96    tfidf .98 / .93
wordnet-nouns         5000   26 long-tailed classes (2..705)     minilm .67 / .47    tfidf .56 / .38
====================  =====  ==================================  ==================  ==================

``--all`` adds Fashion-MNIST at 224 px (the strongest image setting, ~4x the 112 px time).

Every pair goes through ``labelloop.simulate.load_simulation_data(dataset, backbone=...,
n=..., cache_dir="benchmarks/.cache")``, so a benchmark that asks for the same pair finds the
file ``<dataset>-n<n>-s0-<backbone cache id>.npy`` and embeds nothing. Subsets are the
stratified ``n`` of ``labelloop.datasets.load_dataset`` with seed 0.

Backbones that are fitted on the corpus (``tfidf``: its cache id holds a fingerprint of the
fitted vocabulary) cannot be named before they are fitted; where ``load_simulation_data``
raises ``NotReadyError`` for them, this script fits the backbone itself on the same items and
writes the file under the same naming scheme.

For each pair the manifest ``benchmarks/results/robustness_data.json`` (and ``.md``) records
the cache file, its shape, the wall time of embedding it, and a sanity check of how well the
features separate the classes: 10-NN cosine accuracy and balanced accuracy with all labels
(5-fold stratified cross-validation).

Run (niced: embedding is the slow part, ~10-20 min on 2 shared cores):
    make datasets
    PYTHONPATH=src nice -n 10 .venv/bin/python benchmarks/robustness_data.py
    ... --only sms-spam wordnet-nouns     # some datasets
    ... --list                            # the pairs and whether each is cached
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
SEED = 0

# (dataset, n, backbone, backbone options, kind): "pretrained" (the packaged ImageNet / sentence
# model) or "baseline" (raw pixels / TF-IDF). Which of the two separates the classes better is
# measured, not assumed: the manifest's 10-NN columns (pixels win on digits, TF-IDF on Rotten
# Tomatoes and on finding its plot summaries).
SUITE: list[tuple[str, int | None, str, dict, str]] = [
    ("digits", None, "pixels", {}, "baseline"),
    ("digits", None, "efficientnet-lite0", {"image_size": 112}, "pretrained"),
    ("fashion-mnist", 5000, "pixels", {}, "baseline"),
    ("fashion-mnist", 5000, "efficientnet-lite0", {"image_size": 112}, "pretrained"),
    ("fashion-mnist", 5000, "efficientnet-lite0", {"image_size": 224}, "pretrained (--all)"),
    ("rotten-tomatoes", 5000, "tfidf", {}, "baseline"),
    ("rotten-tomatoes", 5000, "minilm-l6", {}, "pretrained"),
    ("rotten-tomatoes-plot", 5000, "tfidf", {}, "baseline"),
    ("rotten-tomatoes-plot", 5000, "minilm-l6", {}, "pretrained"),
    ("sms-spam", None, "tfidf", {}, "baseline"),
    ("sms-spam", None, "minilm-l6", {}, "pretrained"),
    ("wordnet-nouns", 5000, "tfidf", {}, "baseline"),
    ("wordnet-nouns", 5000, "minilm-l6", {}, "pretrained"),
]


def pair_label(dataset: str, backbone: str, options: dict) -> str:
    opts = ",".join(f"{k}={v}" for k, v in sorted(options.items()))
    return f"{dataset} / {backbone}" + (f" ({opts})" if opts else "")


def cache_path(dataset: str, n_items: int, cache_id: str, cache_dir: Path) -> Path:
    """The file ``load_simulation_data`` reads and writes for this pair."""
    return cache_dir / f"{dataset}-n{n_items}-s{SEED}-{cache_id}.npy"


def embed_pair(dataset: str, n: int | None, backbone: str, options: dict, cache_dir: Path):
    """(X, labels, cache file, how) for one pair; ``how`` is 'cached', 'embedded' or
    'embedded (fitted here)'."""
    from labelloop.datasets import load_dataset
    from labelloop.embed import get_backbone
    from labelloop.errors import NotReadyError
    from labelloop.simulate import load_simulation_data

    bb = get_backbone(backbone, **options)
    if not bb.needs_fit:
        ds_len = len(load_dataset(dataset, n=n, seed=SEED).labels)
        path = cache_path(dataset, ds_len, bb.cache_id, cache_dir)
        how = "cached" if path.exists() else "embedded"
        data = load_simulation_data(dataset, backbone=backbone, n=n, seed=SEED, cache_dir=cache_dir,
                                    backbone_options=options or None)
        return data.embeddings, data.labels, path, how
    try:  # a load_simulation_data that fits before naming the cache file does it all
        data = load_simulation_data(dataset, backbone=backbone, n=n, seed=SEED, cache_dir=cache_dir,
                                    backbone_options=options or None)
    except NotReadyError:
        pass
    else:
        ds = load_dataset(dataset, n=n, seed=SEED)
        path = cache_path(dataset, len(ds.items), bb.fit(ds.items).cache_id, cache_dir)
        return data.embeddings, data.labels, path, "load_simulation_data"
    ds = load_dataset(dataset, n=n, seed=SEED)
    bb.fit(ds.items)
    path = cache_path(dataset, len(ds.items), bb.cache_id, cache_dir)
    if path.exists():
        return np.load(path), ds.labels, path, "cached"
    X = bb.embed(ds.items).astype(np.float32)  # (n, dim)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, X)
    return X, ds.labels, path, "embedded (fitted here)"


def knn_check(X: np.ndarray, y: np.ndarray, *, k: int = 10, folds: int = 5) -> dict:
    """10-NN cosine accuracy and balanced accuracy with all labels, stratified k-fold."""
    from sklearn.metrics import balanced_accuracy_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.neighbors import KNeighborsClassifier

    Z = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)  # (n, d) unit rows
    cv = StratifiedKFold(folds, shuffle=True, random_state=0)
    with warnings.catch_warnings():  # classes smaller than `folds` (wordnet's motive: 2) only warn
        warnings.filterwarnings("ignore", message="The least populated class")
        pred = cross_val_predict(KNeighborsClassifier(k, metric="cosine", algorithm="brute"), Z, y, cv=cv)
    return {"knn10_accuracy": round(float((pred == y).mean()), 4),
            "knn10_balanced_accuracy": round(float(balanced_accuracy_score(y, pred)), 4),
            "knn_folds": folds}


def write_markdown(rows: list[dict], path: Path) -> None:
    lines = ["# Robustness suite: cached embeddings", "",
             "Produced by `benchmarks/robustness_data.py`; cache under `benchmarks/.cache/` (gitignored).",
             "Wall time: seconds to embed the pair (TF-IDF: fit included) when its file was first made, "
             "niced, on 2 cores shared with other jobs (load average 4-7), so read it as an upper bound. "
             "10-NN: cosine, all labels, stratified 5-fold; balanced accuracy is the mean per-class recall.",
             "",
             "| dataset | n | classes | backbone | kind | dim | cache file | wall s | 10-NN acc | 10-NN bal. acc |",
             "|---|---:|---:|---|---|---:|---|---:|---:|---:|"]
    def num(v, fmt):
        return format(v, fmt) if isinstance(v, (int, float)) else "?"

    for r in rows:
        opts = ",".join(f"{k}={v}" for k, v in sorted(r.get("options", {}).items()))
        lines.append(f"| {r['dataset']} | {r.get('n', '?')} | {r.get('classes', '?')} | {r.get('backbone', '?')}"
                     f"{' ' + opts if opts else ''} | {r.get('kind', '?')} | {r.get('dim', '?')} | "
                     f"`{r['cache_file']}` | {num(r.get('wall_s'), '.1f')} | "
                     f"{num(r.get('knn10_accuracy'), '.3f')} | {num(r.get('knn10_balanced_accuracy'), '.3f')} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_manifest(args, argv, rows: list[dict], previous: dict, missing: list) -> None:
    """The JSON manifest and its Markdown table; rows of pairs this run did not touch are kept."""
    import torch

    done = {row["cache_file"] for row in rows}
    kept = [r for r in previous.values() if r["cache_file"] not in done]
    meta = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__} "
                       f"({torch.get_num_threads()} threads), load average "
                       f"{' '.join(f'{v:.1f}' for v in os.getloadavg())}",
            "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
            "pairs": rows + kept, "missing": missing}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    write_markdown(rows + kept, args.out.with_suffix(".md"))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", metavar="DATASET", help="only these datasets")
    ap.add_argument("--cache-dir", type=Path, default=CACHE)
    ap.add_argument("--list", action="store_true", help="list the pairs and whether each is cached")
    ap.add_argument("--all", action="store_true",
                    help="also the slow pairs (fashion-mnist at 224 px: ~4x the 112 px time)")
    ap.add_argument("--no-knn", action="store_true", help="skip the 10-NN sanity check")
    ap.add_argument("--out", type=Path, default=RESULTS / "robustness_data.json")
    args = ap.parse_args(argv)

    suite = [p for p in SUITE if (not args.only or p[0] in args.only) and (args.all or "--all" not in p[4])]
    if args.only and (unknown := set(args.only) - {p[0] for p in SUITE}):
        ap.error(f"not in the suite: {', '.join(sorted(unknown))}")
    if args.list:
        for dataset, n, backbone, options, kind in suite:
            print(f"{pair_label(dataset, backbone, options):55s} n={n or 'all'} {kind}")
        print(f"cache files in {args.cache_dir}:")
        for f in sorted(args.cache_dir.glob("*.npy")):
            print("  ", f.name)
        return 0

    from labelloop.errors import MissingDependencyError

    previous = {}
    if args.out.exists():  # keep the wall time measured when a file was first embedded
        for r in json.loads(args.out.read_text()).get("pairs", []):
            previous[r["cache_file"]] = r
    rows, missing = [], []
    for dataset, n, backbone, options, kind in suite:
        label = pair_label(dataset, backbone, options)
        t0 = time.perf_counter()
        try:
            X, y, path, how = embed_pair(dataset, n, backbone, options, args.cache_dir)
        except MissingDependencyError as exc:
            print(f"SKIP {label}: {exc}", flush=True)
            missing.append({"pair": label, "error": str(exc)})
            continue
        wall = time.perf_counter() - t0
        if how == "cached" and path.name in previous:
            wall, how = previous[path.name]["wall_s"], "cached (wall time of the first run)"
        row = {"dataset": dataset, "n": int(len(y)), "classes": int(len(np.unique(y))),
               "class_counts": np.bincount(y).tolist(), "backbone": backbone, "options": options,
               "kind": kind, "dim": int(X.shape[1]), "cache_file": path.name,
               "wall_s": round(wall, 1), "how": how}
        if not args.no_knn:
            row.update(knn_check(X, y))
        rows.append(row)
        print(f"{label:55s} {X.shape} {how:10s} {wall:7.1f} s  "
              f"10-NN {row.get('knn10_accuracy', float('nan')):.3f} "
              f"(balanced {row.get('knn10_balanced_accuracy', float('nan')):.3f})  {path.name}", flush=True)
        write_manifest(args, argv, rows, previous, missing)   # after each pair: a killed run keeps its times

    write_manifest(args, argv, rows, previous, missing)
    print(f"wrote {args.out} and {args.out.with_suffix('.md')}")
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main())
