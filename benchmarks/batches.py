"""New batches and a new class: the batch workflow (`next --batch` + `novel`) against labeling a
random share of each batch (issue 14, part 2).

A stream of scikit-learn digits (raw pixels, the bundled ``digits`` set) arrives in 5 batches;
one class (``--new-class``, default 9) appears only from batch 3 on. An oracle stands in for
the person. For each batch, as it arrives (`import --batch bK`, `embed`):

- ``batch``:     `novel --batch bK` first (from batch 2 on); a cluster whose examples show a
                 class the project does not have yet -> `novel --add-class --cluster K` and the
                 person labels the listed examples; then rounds of `next --batch bK --n 10`
                 (strategy auto) + `refresh` until the batch's labels are 95 % accurate;
- ``next-only``: the same without `novel` (a new class is created when `next` happens to
                 serve one of its items: the person labels it with --new-classes);
- ``random``:    rounds of 10 random items of the batch until 95 % (`next --strategy random --batch`);
- ``random10``:  a random 10 % of each batch, once: accuracy reached.

Accuracy of a batch = share of its items whose label in effect (human, else the propagated
prediction; no auto-labeling) equals the truth: the oracle decides when 95 % is reached, so
the label counts are the fewest a workflow could stop at. Each round's accuracy of every
earlier batch is kept too ("keep 95 % on every batch").

    PYTHONPATH=src nice python benchmarks/batches.py --seeds 3 --out benchmarks/results/batches
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from labelloop import Project
from labelloop.datasets import load_dataset

TARGET = 0.95
ROUND = 10
MAX_LABELS_PER_BATCH = 400
N_BATCHES = 5
FIRST_NEW = 3  # the new class's items arrive in batches FIRST_NEW .. N_BATCHES


def make_stream(labels: np.ndarray, new_class: int, seed: int) -> list[np.ndarray]:
    """Item indices of each batch: the other classes spread evenly over every batch, the new
    class over batches FIRST_NEW..N_BATCHES."""
    rng = np.random.default_rng(seed)
    old = rng.permutation(np.flatnonzero(labels != new_class))
    new = rng.permutation(np.flatnonzero(labels == new_class))
    parts = np.array_split(old, N_BATCHES)
    new_parts = np.array_split(new, N_BATCHES - FIRST_NEW + 1)
    for b in range(FIRST_NEW - 1, N_BATCHES):
        parts[b] = rng.permutation(np.concatenate([parts[b], new_parts[b - FIRST_NEW + 1]]))
    return parts


class Oracle:
    def __init__(self, ds, root: Path):
        self.ds, self.root = ds, root
        self.truth: dict[str, str] = {}   # external id -> class name

    def write_batch(self, b: int, idx: np.ndarray) -> Path:
        folder = self.root / f"b{b}"
        folder.mkdir(parents=True)
        for i in idx:
            self.ds.items[i].save(folder / f"{i:05d}.png")
            self.truth[f"{i:05d}.png"] = self.ds.class_names[int(self.ds.labels[i])]
        return folder

    def majority(self, p: Project, cluster: int, run: int) -> str:
        """The true class most members of a `novel` cluster have, with its share."""
        ids = np.load(p.store.run_dir(run) / "clusters.npz")[f"cluster_{cluster}"]
        names = [self.truth[it.external_id] for it in p.store.items(ids.tolist())]
        top = max(sorted(set(names)), key=names.count)
        return f"{top} ({names.count(top)}/{len(names)})"

    def label(self, p: Project, item_ids: list[int]) -> int:
        refs = {it.id: it.external_id for it in p.store.items(item_ids)}
        return p.label([(i, self.truth[refs[i]]) for i in item_ids], annotator="oracle", create_classes=True).appended


def batch_accuracy(p: Project, oracle: Oracle, batch: str) -> float:
    rows = p.rows(batch=batch)
    return float(np.mean([r["label"] == oracle.truth[r["external_id"]] for r in rows]))


def run_workflow(kind: str, ds, streams: list[np.ndarray], seed: int, new_name: str) -> dict:
    work = Path(tempfile.mkdtemp(prefix=f"bench-batches-{kind}-"))
    oracle = Oracle(ds, work / "data")
    p = Project.init(work / "proj", modality="image")
    p.set_setting("head_weight", 0)   # propagation only: the same model in every workflow
    out = {"kind": kind, "seed": seed, "batches": [], "surfaced": None}
    total = 0
    try:
        for b, idx in enumerate(streams, start=1):
            name = f"b{b}"
            p.import_(oracle.write_batch(b, idx), batch=name)
            p.embed("pixels")
            in_batch = 0
            acc = None
            if p.classes and p.store.latest_labels("human"):
                p.refresh()
                acc = batch_accuracy(p, oracle, name)
            if kind == "batch" and b >= 2:   # what `novel` shows when the batch arrives, before any label
                found = p.novel(batch=name)
                out.setdefault("novel_at_arrival", {})[name] = {
                    "labels_so_far": total, "novel_items": found["novel_items"], "threshold": found["threshold"],
                    "clusters": [(c["size"], oracle.majority(p, c["cluster"], found["run"])) for c in found["clusters"]]}
            if kind == "random10":
                picked = p.next(max(1, round(0.1 * len(idx))), strategy="random", batch=name)
                in_batch += oracle.label(p, [r["item"] for r in picked])
                p.refresh()
                acc = batch_accuracy(p, oracle, name)
            else:
                while (acc is None or acc < TARGET) and in_batch < MAX_LABELS_PER_BATCH:
                    if kind == "batch" and len(p.store.latest_labels("human")) >= 2 and new_name not in p.classes:
                        found = p.novel(batch=name)
                        for c in found["clusters"]:
                            shown = [oracle.truth[e["ref"]] for e in c["examples"]]
                            top = max(sorted(set(shown)), key=shown.count)
                            if top not in p.classes and shown.count(top) * 2 > len(shown):
                                r = p.add_class_from_cluster(top, c["cluster"])
                                in_batch += oracle.label(p, [e["item"] for e in r["examples"]])
                                if out["surfaced"] is None and top == new_name:
                                    out["surfaced"] = {"by": "novel", "batch": b, "labels_in_batch": in_batch
                                                       - len(r["examples"]), "labels_total": total + in_batch
                                                       - len(r["examples"]), "cluster_size": c["size"],
                                                       "cluster_share_new": None}
                                break
                    strategy = "random" if kind == "random" else "auto"
                    picked = p.next(ROUND, strategy=strategy, batch=name)
                    if not picked:
                        break
                    had = new_name in p.classes
                    in_batch += oracle.label(p, [r["item"] for r in picked])
                    if not had and new_name in p.classes and out["surfaced"] is None:
                        out["surfaced"] = {"by": "next", "batch": b, "labels_in_batch": in_batch,
                                           "labels_total": total + in_batch}
                    p.refresh()
                    acc = batch_accuracy(p, oracle, name)
            total += in_batch
            est = (p.status(batch=name).get("estimate") or {}).get("accuracy")
            out["batches"].append({"batch": name, "items": int(len(idx)), "labels": in_batch, "accuracy": round(acc, 4),
                                   "estimated": est,
                                   "earlier": {f"b{e}": round(batch_accuracy(p, oracle, f"b{e}"), 4)
                                               for e in range(1, b)}})
        out["labels"] = total
        out["final"] = {f"b{e}": round(batch_accuracy(p, oracle, f"b{e}"), 4) for e in range(1, N_BATCHES + 1)}
        out["drift"] = [{k: d[k] for k in ("batch", "shift", "auto_labeled_share", "estimate", "largest_change")}
                        for d in p.drift()["batches"]]
    finally:
        p.close()
        shutil.rmtree(work, ignore_errors=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--new-class", type=int, default=9)
    ap.add_argument("--workflows", default="batch,next-only,random,random10")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/batches"))
    args = ap.parse_args()
    ds = load_dataset("digits")
    new_name = ds.class_names[args.new_class]
    t0, c0 = time.perf_counter(), time.process_time()
    results = []
    for seed in range(args.seeds):
        streams = make_stream(ds.labels, args.new_class, seed)
        for kind in args.workflows.split(","):
            r = run_workflow(kind, ds, streams, seed, new_name)
            results.append(r)
            print(json.dumps({k: r[k] for k in ("kind", "seed", "labels", "surfaced", "final")}), flush=True)
    meta = {"command": "PYTHONPATH=src nice python benchmarks/batches.py " + " ".join(
                f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
            "load_average": os.getloadavg(), "wall_s": round(time.perf_counter() - t0, 1),
            "cpu_s": round(time.process_time() - c0, 1), "items": len(ds.labels), "new_class": new_name,
            "batches": N_BATCHES, "first_new": FIRST_NEW, "target": TARGET, "round": ROUND}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "runs": results}, indent=1, default=float))
    args.out.with_suffix(".md").write_text(report(meta, results))
    print(report(meta, results))


def report(meta: dict, results: list[dict]) -> str:
    kinds = list(dict.fromkeys(r["kind"] for r in results))
    seeds = sorted({r["seed"] for r in results})
    lines = [f"# New batches and a new class (digits, class {meta['new_class']} from batch {meta['first_new']})", "",
             f"`{meta['command']}`", "",
             f"{meta['items']} digits in {meta['batches']} batches, oracle labels, target {meta['target']:.0%} "
             f"true accuracy per batch, rounds of {meta['round']}; {len(seeds)} seeds (streams). "
             f"Wall {meta['wall_s']} s, CPU {meta['cpu_s']} s, load average {', '.join(f'{x:.2f}' for x in meta['load_average'])}.",
             "", "## Human labels per batch (median over seeds) and the lowest final accuracy of any batch", "",
             "| workflow | " + " | ".join(f"b{b}" for b in range(1, meta['batches'] + 1))
             + " | total | min final accuracy | batches >= 95 % at the end |",
             "|---" * (meta["batches"] + 4) + "|"]
    for k in kinds:
        rs = [r for r in results if r["kind"] == k]
        per = [int(np.median([r["batches"][b]["labels"] for r in rs])) for b in range(meta["batches"])]
        tot = int(np.median([r["labels"] for r in rs]))
        mins = [min(r["final"].values()) for r in rs]
        ok = [sum(v >= meta["target"] for v in r["final"].values()) for r in rs]
        lines.append(f"| {k} | " + " | ".join(map(str, per)) + f" | {tot} | {np.median(mins):.3f} "
                     f"({min(mins):.3f}-{max(mins):.3f}) | {np.median(ok):.0f} of {meta['batches']} |")
    lines += ["", "## When the new class was found", "",
              "| workflow | seed | found by | batch | labels in that batch before | labels in all |", "|---|---|---|---|---|---|"]
    for r in results:
        s = r["surfaced"]
        if r["kind"] == "random10":
            continue
        lines.append(f"| {r['kind']} | {r['seed']} | " + (f"{s['by']} | b{s['batch']} | {s['labels_in_batch']} | "
                     f"{s['labels_total']} |" if s else "not found | - | - | - |"))
    lines += ["", "## What `novel --batch bK` showed when each batch arrived (batch workflow)", "",
              "| seed | batch | labels so far | threshold | novel items | clusters: size, true majority (share) |",
              "|---|---|---|---|---|---|"]
    for r in results:
        for b, v in (r.get("novel_at_arrival") or {}).items():
            cl = "; ".join(f"{size}: {maj}" for size, maj in v["clusters"]) or "none"
            lines.append(f"| {r['seed']} | {b} | {v['labels_so_far']} | {v['threshold']:.2f} | {v['novel_items']} | {cl} |")
    lines += ["", "## Accuracy of each batch when its labeling stopped (median over seeds)", "",
              "| workflow | " + " | ".join(f"b{b}" for b in range(1, meta['batches'] + 1)) + " |",
              "|---" * (meta["batches"] + 1) + "|"]
    for k in kinds:
        rs = [r for r in results if r["kind"] == k]
        lines.append(f"| {k} | " + " | ".join(f"{np.median([r['batches'][b]['accuracy'] for r in rs]):.3f}"
                                             for b in range(meta["batches"])) + " |")
    lines += ["", "## Drift report of the batch workflow (seed 0, at the end)", "",
              "| batch | shift vs earlier | estimated accuracy | largest change |", "|---|---|---|---|"]
    r0 = next((r for r in results if r["kind"] == "batch" and r["seed"] == 0), None)
    for d in (r0 or {}).get("drift", []):
        ch = d["largest_change"]
        change = f"{ch['class']} {ch['earlier']:.3f} -> {ch['now']:.3f}" if ch else "-"
        shift = "-" if d["shift"] is None else d["shift"]
        lines.append(f"| {d['batch']} | {shift} | {d['estimate']['accuracy']} | {change} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
