"""Self-supervised adaptation vs. frozen ImageNet features vs. raw pixels.

For scikit-learn digits (1,797) and a stratified Fashion-MNIST subset (5,000 of the train
split) every feature set is scored the same way:

- 10-NN accuracy with all labels: leave-one-out majority vote of the 10 nearest neighbours
  (cosine, ``build_knn_graph(k=10, method="exact")``);
- propagation accuracy on the unlabeled items with 1 / 5 / 10 random labels per class
  (5 seeds): ``LabelPropagation(T=0.01, 20 steps, clamped)`` on that graph (Bai et al.);
- the diagnostic's verdict (``labelloop.adapt.diagnose``) with 5 labels per class (seed 0).

Feature sets: ``pixels`` (the project's baseline backbone, 16 px gray), frozen ImageNet
EfficientNet-Lite0 at 224 px (its native size) and at the adaptation size (64 px), and the
adapted backbones (SimCLR, BYOL, SwAV) trained here on the same images without labels, saved
in a throw-away project folder and embedded through ``get_backbone(id, project_dir=...)``.
SwAV runs with its defaults (2 global crops + 6 small 32 px crops, epsilon 0.05, 3 Sinkhorn
iterations, temperature 0.1, prototypes frozen for the first epoch, no queue) and the number
of prototypes ``labelloop adapt`` picks for a project with the dataset's classes (3 per class).
The frozen and pixel embeddings are cached under ``benchmarks/.cache/`` (format shared with
label_efficiency.py); adaptation always runs. Wall and process-CPU seconds of every stage are
recorded with the load average (the machine is shared: CPU seconds are the stabler figure).

Both adaptations run the same number of optimiser steps on each dataset (``--steps``), with
the augmentations ``adapt`` picks by default (grayscale: crops, flips, small rotations,
brightness / contrast, blur); on digits SimCLR also runs with the ``characters`` preset (no
mirror flips), the one a user labeling characters would pick (``adapt --augment characters``).

Run:  python benchmarks/adaptation.py            (full, writes results/adaptation.{json,md})
      python benchmarks/adaptation.py --add-to adaptation --methods swav --digits-methods swav:characters
                                                (only these rows, added to results/adaptation.*; the
                                                baselines and the rows already there are kept)
      python benchmarks/adaptation.py --quick    (Fashion-MNIST 1k, 40 steps, 2 seeds, no 224 px
                                                 baseline; writes results/adaptation_quick.*)
"""

from __future__ import annotations

import os

# Must precede the first torch import: with OpenMP's default spin-waiting, 2 torch threads on
# a 2-core machine shared with other jobs ran a tiny training ~20x slower than with 1 thread;
# passive waiting removed the slowdown (measured while writing this benchmark).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

HERE = Path(__file__).resolve().parent
CACHE = HERE / ".cache"
RESULTS = HERE / "results"
SHOTS = (1, 5, 10)
SEEDS = 5
CHUNK = 512


# ------------------------------------------------------------------------------ timing
@contextmanager
def timed(store: dict, key: str):
    w0, c0 = time.perf_counter(), time.process_time()
    yield
    store[key] = {"wall_s": round(time.perf_counter() - w0, 2), "cpu_s": round(time.process_time() - c0, 2),
                  "loadavg_1m": round(os.getloadavg()[0], 2)}


def embed_cached(ds, ds_key: str, backbone, *, log=print) -> tuple[np.ndarray, dict]:
    """(n, dim) embeddings of ``ds.items``, from chunk files under .cache/ when present, and
    the timing of the run(s) that computed them (``adapt_timing.json`` beside the chunks)."""
    folder = CACHE / f"{ds_key}__{backbone.cache_id}"
    folder.mkdir(parents=True, exist_ok=True)
    timing_path = folder / "adapt_timing.json"
    timing = json.loads(timing_path.read_text()) if timing_path.exists() else {"wall_s": 0.0, "cpu_s": 0.0, "items": 0}
    parts, fresh = [], 0
    for c, lo in enumerate(range(0, len(ds.items), CHUNK)):
        path = folder / f"chunk{c:04d}.npy"
        if path.exists():
            parts.append(np.load(path))
            continue
        w0, c0 = time.perf_counter(), time.process_time()
        Z = backbone.embed(ds.items[lo : lo + CHUNK])  # (chunk, dim)
        timing["wall_s"] += time.perf_counter() - w0
        timing["cpu_s"] += time.process_time() - c0
        timing["items"] += len(Z)
        fresh += len(Z)
        np.save(path, Z)
        parts.append(Z)
        log(f"  {backbone.cache_id}: {lo + len(Z)}/{len(ds.items)}")
    if fresh:
        timing["loadavg_1m"] = round(os.getloadavg()[0], 2)
        timing_path.write_text(json.dumps(timing))
    timing = {**timing, "cached": not fresh}
    if timing["items"] != len(ds.items):  # filled by another script: its timing is not known here
        timing = {"cached": True, "note": "computed by another benchmark; time not recorded"}
    return np.concatenate(parts), timing


# --------------------------------------------------------------------------- evaluation
def random_labels(y: np.ndarray, shots: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.choice(np.flatnonzero(y == c), size=shots, replace=False)
                           for c in np.unique(y)])


def evaluate(X: np.ndarray, y: np.ndarray, shots_list, seeds: int) -> dict:
    from labelloop.adapt.diagnose import diagnose
    from labelloop.graph import build_knn_graph, normalize_rows
    from labelloop.propagate import LabelPropagation, affinity_matrix

    Z = normalize_rows(X)
    graph = build_knn_graph(Z, k=10, method="exact")
    n, c = len(y), int(y.max()) + 1
    # leave-one-out 10-NN: majority vote of the neighbours (self excluded by the graph)
    votes = np.zeros((n, c))
    np.add.at(votes, (np.repeat(np.arange(n), graph.k), y[graph.indices].ravel()), 1.0)
    knn = float((votes.argmax(1) == y).mean())
    S = affinity_matrix(graph, temperature=0.01)
    prop = {}
    for shots in shots_list:
        accs = []
        for seed in range(seeds):
            lab = random_labels(y, shots, seed)
            y_part = np.full(n, -1)
            y_part[lab] = y[lab]
            P = LabelPropagation(temperature=0.01, n_iter=20).fit(S, y_part, n_classes=c).predict_proba()
            mask = y_part < 0
            accs.append(float((P.argmax(1)[mask] == y[mask]).mean()))
        prop[str(shots)] = {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "runs": accs}
    y5 = np.full(n, -1)
    lab = random_labels(y, 5, 0)
    y5[lab] = y[lab]
    d = diagnose(graph, y5, Z)
    return {"knn10_all_labels": knn, "propagation": prop,
            "diagnose_5_per_class": {"verdict": d.verdict, "loo_accuracy": d.loo_accuracy,
                                     "propagation_accuracy": d.propagation_accuracy,
                                     "loo_interval": list(d.loo_interval), "homophily": d.homophily,
                                     "silhouette": d.silhouette}}


# --------------------------------------------------------------------------------- main
def run_dataset(name: str, n: int | None, args, log) -> dict:
    import torch

    from labelloop.adapt.backbone import data_hash, save_adapted_backbone
    from labelloop.adapt.train import (
        AdaptConfig,
        build_view_cache,
        default_prototypes,
        efficientnet_encoder,
        images_to_tensor,
        train_ssl,
    )
    from labelloop.datasets import load_dataset
    from labelloop.embed import get_backbone

    ds = load_dataset(name, n=n)
    y = np.asarray(ds.labels)
    ds_key = f"{name}-n{len(ds.items)}-s0"
    times: dict = {}
    feats: dict[str, np.ndarray] = {}
    log(f"{name}: {len(ds.items)} items, {len(ds.class_names)} classes")

    if not args.add_to:  # adding rows: the baselines are in the results already
        feats["pixels"], times["embed pixels-16"] = embed_cached(ds, ds_key, get_backbone("pixels"), log=log)
    sizes = [] if args.add_to else [args.image_size] + ([args.frozen_size] if args.frozen_size else [])
    for size in sizes:
        feats[f"imagenet-{size}"], times[f"embed imagenet-{size}"] = embed_cached(
            ds, ds_key, get_backbone("efficientnet-lite0", image_size=size), log=log)
        log(f"  imagenet-{size}: {times[f'embed imagenet-{size}']}")

    # the same number of optimiser steps on both datasets: epochs = steps / (n // batch)
    epochs = max(1, round(args.steps / max(1, len(ds.items) // args.batch_size)))
    base = dict(epochs=epochs, image_size=args.image_size, batch_size=args.batch_size,
                trainable_blocks=args.trainable_blocks, view_cache=args.views, seed=0)
    x = images_to_tensor(ds.items, args.image_size)                       # (N, 3, S, S) uint8
    dh = data_hash(ds.items)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        enc = efficientnet_encoder(trainable_blocks=args.trainable_blocks, image_size=args.image_size)
    provenance, view_caches, local_caches = {}, {}, {}
    tag = " (rows added)" if args.add_to else ""
    # "method" or "method:augmentation preset" (default: auto, i.e. grayscale here)
    specs = list(args.methods) + [m for m in args.extra_methods.get(name, []) if m not in args.methods]
    with tempfile.TemporaryDirectory(prefix="labelloop-adapt-bench-") as project:
        for spec in specs:
            method, _, augment = spec.partition(":")
            augment = augment or "auto"
            key = f"adapted-{method}" + (f"-{augment}" if augment != "auto" else "")
            if augment not in view_caches:  # augmented views depend on the augmentation only
                stage = "view cache" + (f" ({augment})" if augment != "auto" else "") + tag
                with timed(times, stage):
                    view_caches[augment] = build_view_cache(x, AdaptConfig(**base, augment=augment), enc,
                                                            progress=False)
                log(f"  {stage} {tuple(view_caches[augment].shape)}: {times[stage]}")
            extra = {}
            if method == "swav":  # as `labelloop adapt` in a project with the dataset's classes
                extra["prototypes"] = default_prototypes(len(ds.items), len(ds.class_names))
            cfg = AdaptConfig(method=method, augment=augment, **base, **extra)
            if method == "swav" and augment not in local_caches:
                stage = "small-crop cache" + (f" ({augment})" if augment != "auto" else "")
                with timed(times, stage):
                    local_caches[augment] = build_view_cache(x, cfg, enc, progress=False, local=True)
                log(f"  {stage} {tuple(local_caches[augment].shape)}: {times[stage]}")
            with timed(times, f"train {spec}"):
                res = train_ssl(x, cfg, progress=False, views=view_caches[augment],
                                local_views=local_caches.get(augment) if method == "swav" else None)
            bid = save_adapted_backbone(project, res, data_sha256=dh, n_images=len(ds.items))
            with timed(times, f"embed {spec}"):
                feats[key] = get_backbone(bid, project_dir=project).embed(ds.items)
            provenance[spec] = {"backbone_id": bid, "loss_history": [round(v, 4) for v in res.history],
                                "steps": res.steps, "augment": res.augment}
            if method == "swav":
                provenance[spec]["swav"] = {k: getattr(res.config, k) for k in (
                    "prototypes", "local_crops", "swav_temperature", "sinkhorn_epsilon", "sinkhorn_iterations",
                    "queue")} | {"local_px": res.config.local_px, "local_views": res.config.local_views,
                                 "freeze_steps": res.config.freeze_steps(len(ds.items) // args.batch_size)}
            log(f"  {spec}: train {times[f'train {spec}']}, loss {res.history[0]:.3f} -> "
                f"{res.history[-1]:.3f}")

    scores = {}
    for key, X in feats.items():
        scores[key] = evaluate(X, y, args.shots, args.seeds)
        p = scores[key]["propagation"]
        log(f"  {key:18s} 10-NN {scores[key]['knn10_all_labels']:.3f}  prop "
            + " / ".join(f"{p[str(s)]['mean']:.3f}" for s in args.shots)
            + f"  diagnose@5: {scores[key]['diagnose_5_per_class']['verdict']}")
    return {"n_items": len(ds.items), "epochs": epochs, "scores": scores, "times": times,
            "adapted": provenance}


def goal_check(results: dict, shots) -> dict:
    """Does each adapted backbone beat pixels and every frozen ImageNet set on every measure?"""
    out = {}
    for name, r in results.items():
        s = r["scores"]
        baselines = [k for k in s if not k.startswith("adapted-")]
        for a in (k for k in s if k.startswith("adapted-")):
            checks = {}
            for measure in ["knn10", *[f"prop@{k}" for k in shots]]:
                def val(key):
                    if measure == "knn10":
                        return s[key]["knn10_all_labels"]
                    return s[key]["propagation"][measure.split("@")[1]]["mean"]
                best = max(baselines, key=val)
                checks[measure] = {"adapted": val(a), "best_baseline": best, "baseline": val(best),
                                   "beats": val(a) > val(best)}
            out[f"{name}/{a}"] = {"all": all(c["beats"] for c in checks.values()), "checks": checks}
    return out


def write_markdown(path: Path, payload: dict) -> None:
    shots = payload["config"]["shots"]
    lines = ["# Adaptation benchmark", "",
             f"Generated {payload['generated']} by `python benchmarks/adaptation.py"
             f"{' --quick' if payload['config']['quick'] else ''}` on {payload['machine']}.", "",
             "Accuracy: 10-NN = leave-one-out 10-NN majority vote with all labels; prop@k = label "
             f"propagation (k=10 graph, T=0.01, 20 clamped steps) with k random labels per class, mean of "
             f"{payload['config']['seeds']} seeds, on the unlabeled items. diagnose@5 = the diagnostic's "
             "verdict with 5 labels per class.", ""]
    for add in payload.get("added", []):
        lines += [f"Rows {', '.join(add['rows'])} added {add['generated']} by `{add['command']}` "
                  f"(load average {add['loadavg_start']} at the start, {add['loadavg_end']} at the end; "
                  f"{add['note']}).", ""]
    for name, r in payload["results"].items():
        lines += [f"## {name} ({r['n_items']} items, adapted for {r['epochs']} epochs)", "",
                  "| features | 10-NN | " + " | ".join(f"prop@{k}" for k in shots) + " | diagnose@5 |",
                  "|---|---|" + "---|" * len(shots) + "---|"]
        for key, sc in r["scores"].items():
            p = sc["propagation"]
            d = sc["diagnose_5_per_class"]
            lines.append(f"| {key} | {sc['knn10_all_labels']:.3f} | "
                         + " | ".join(f"{p[str(k)]['mean']:.3f} ± {p[str(k)]['std']:.3f}" for k in shots)
                         + f" | {d['verdict']} (CV propagation {d['propagation_accuracy']:.2f}) |")
        lines += ["", "| stage | wall s | CPU s | load (1 min) |", "|---|---|---|---|"]
        for stage, t in r["times"].items():
            if "wall_s" not in t:
                lines.append(f"| {stage} | (cached: {t.get('note', '')}) | | |")
                continue
            lines.append(f"| {stage}{' (from cache; time of the run that computed it)' if t.get('cached') else ''}"
                         f" | {round(t['wall_s'], 1)} | {round(t['cpu_s'], 1)} | {t.get('loadavg_1m', '')} |")
        lines.append("")
    lines += ["## Goal: adapted beats pixels and frozen ImageNet at every budget", "",
              "| dataset / backbone | met | " + " | ".join(["10-NN", *[f"prop@{k}" for k in shots]]) + " |",
              "|---|---|" + "---|" * (1 + len(shots))]
    for key, g in payload["goal"].items():
        cells = [f"{c['adapted']:.3f} vs {c['baseline']:.3f} ({c['best_baseline']})" for c in g["checks"].values()]
        lines.append(f"| {key} | {'yes' if g['all'] else 'no'} | " + " | ".join(cells) + " |")
    lines += ["", "Configuration: `" + json.dumps(payload["config"]) + "`", ""]
    path.write_text("\n".join(lines))


def add_rows(args, results: dict, load0: float, log) -> int:
    """Merge the adapted rows of this run into results/<add_to>.{json,md} (under a lock: runs
    for different datasets may add to the same file at the same time)."""
    import fcntl

    path = RESULTS / f"{args.add_to}.json"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{args.add_to}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            return _add_rows(path, args, results, load0, log)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _add_rows(path: Path, args, results: dict, load0: float, log) -> int:
    payload = json.loads(path.read_text())
    old = payload["config"]
    for key in ("steps", "batch_size", "image_size", "trainable_blocks", "views", "seeds", "fashion_n"):
        if old[key] != getattr(args, key):
            raise SystemExit(f"--{key.replace('_', '-')} {getattr(args, key)} differs from {path.name} "
                             f"({old[key]}): rows would not be comparable")
    rows = []
    for name, r in results.items():
        if name not in payload["results"]:
            raise SystemExit(f"{path.name} has no {name} section to add rows to")
        into = payload["results"][name]
        into["scores"].update(r["scores"])
        into["times"].update(r["times"])
        into.setdefault("adapted", {}).update(r["adapted"])
        rows += [f"{name}/{k}" for k in r["scores"]]
    payload.setdefault("added", []).append({
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": "python " + " ".join(["benchmarks/adaptation.py", *sys.argv[1:]]),
        "rows": rows, "loadavg_start": load0, "loadavg_end": round(os.getloadavg()[0], 2),
        "note": f"niceness {os.nice(0)}; baselines and earlier rows not rerun",
        "config": {k: v for k, v in vars(args).items()}})
    payload["goal"] = goal_check(payload["results"], payload["config"]["shots"])
    path.write_text(json.dumps(payload, indent=1) + "\n")
    write_markdown(RESULTS / f"{args.add_to}.md", payload)
    log(f"added {', '.join(rows)} to {path} and .md")
    return 0


def main(argv: list[str] | None = None) -> int:
    from labelloop.adapt.train import AdaptConfig

    d = AdaptConfig()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--datasets", nargs="+", default=["digits", "fashion-mnist"])
    ap.add_argument("--fashion-n", type=int, default=5000)
    ap.add_argument("--methods", nargs="+", default=["simclr", "byol", "swav"],
                    help="method or method:augmentation-preset, e.g. simclr:characters")
    ap.add_argument("--digits-methods", nargs="*", default=["simclr:characters"],
                    help="extra runs on digits only (the preset a user would pick for characters)")
    ap.add_argument("--steps", type=int, default=420,
                    help="optimiser steps per run (420 = 30 epochs of digits at batch 128)")
    ap.add_argument("--batch-size", type=int, default=d.batch_size)
    ap.add_argument("--image-size", type=int, default=d.image_size)
    ap.add_argument("--trainable-blocks", type=int, default=d.trainable_blocks)
    ap.add_argument("--views", type=int, default=8)
    ap.add_argument("--frozen-size", type=int, default=224, help="0: skip the native-size baseline")
    ap.add_argument("--seeds", type=int, default=SEEDS)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=None, help="file stem under results/ (default adaptation[_quick])")
    ap.add_argument("--add-to", default=None, metavar="STEM",
                    help="run only the adapted rows of --methods / --digits-methods and add them to "
                         "results/STEM.{json,md}, keeping its baselines and other rows")
    args = ap.parse_args(argv)
    args.shots = list(SHOTS)
    args.extra_methods = {"digits": args.digits_methods}
    if args.quick:
        args.fashion_n, args.steps, args.seeds, args.frozen_size = min(args.fashion_n, 1000), 40, 2, 0

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()

    def log(msg):
        print(f"[{time.perf_counter() - t0:7.1f}s] {msg}", flush=True)

    load0 = round(os.getloadavg()[0], 2)
    results = {}
    for name in args.datasets:
        results[name] = run_dataset(name, args.fashion_n if name == "fashion-mnist" else None, args, log)
    config = {k: v for k, v in vars(args).items()}
    if args.add_to:
        return add_rows(args, results, load0, log)
    payload = {
        "generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}",
        "config": config,
        "total_wall_s": round(time.perf_counter() - t0, 1),
        "results": results,
        "goal": goal_check(results, args.shots),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    stem = args.out or ("adaptation_quick" if args.quick else "adaptation")
    (RESULTS / f"{stem}.json").write_text(json.dumps(payload, indent=1) + "\n")
    write_markdown(RESULTS / f"{stem}.md", payload)
    log(f"wrote {RESULTS / (stem + '.json')} and .md; total {payload['total_wall_s']} s")
    for key, g in payload["goal"].items():
        log(f"goal {key}: {'met' if g['all'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
