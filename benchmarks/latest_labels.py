"""Reading the current labels of every item, as a project after auto-labeling does all day:
``Project.label_vector`` (``Store.latest_labels`` under it) for the human labels, the accepted
machine labels, and all three sources (what the server's snapshot reads before it shows new
predictions), in this checkout and in another source tree (e.g. main's), in the same run.

    python benchmarks/latest_labels.py --baseline /path/to/main/src     # 100k items, 60k machine labels

A project of ``--n`` text items (no embeddings: only the labels are read) with 100 human labels
and ``--machine`` accepted machine labels is built once with this checkout's code; each variant
then opens it in a child process (its own code) and times, in CPU seconds of that process:

- ``first``: the first read of each source set, with a newly opened project (what a new CLI
  process pays);
- ``again``: the same read after one new human label (what a running server pays per label);
- ``unchanged``: the read repeated with nothing new.

Medians of ``--runs`` reads each. Writes benchmarks/results/latest_labels.json / .md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SRC = Path(__file__).resolve().parent.parent / "src"
SOURCES = {"human": ("human",), "machine": ("machine",), "all three": ("human", "import", "machine")}

CHILD = r"""
import json, statistics, sys, time
from labelloop.project import Project
path, runs = sys.argv[1], int(sys.argv[2])
sets = json.loads(sys.argv[3])
out = {}
for name, sources in sets.items():
    p = Project(path)   # its own store: nothing remembered from the sets before
    ids = p.item_ids()
    first_class = next(iter(p.store.class_ids().values()))
    t = time.process_time(); y = p.label_vector(ids, sources=tuple(sources)); first = time.process_time() - t
    again, same = [], []
    for r in range(runs):
        p.store.add_annotations([(int(ids[1000 + r]), first_class)], source="human", annotator="bench")
        t = time.process_time(); p.label_vector(ids, sources=tuple(sources)); again.append(time.process_time() - t)
        t = time.process_time(); y2 = p.label_vector(ids, sources=tuple(sources)); same.append(time.process_time() - t)
    out[name] = {"first": first, "again": statistics.median(again), "unchanged": statistics.median(same),
                 "labeled": int((y2 >= 0).sum())}
    p.close()
print(json.dumps(out))
"""


def build(path: Path, n: int, machine: int) -> None:
    import hashlib

    import numpy as np

    from labelloop import Project

    p = Project.init(path, modality="text", classes=[f"c{c}" for c in range(10)])
    texts = [f"item {i}" for i in range(n)]
    p.store.add_items([{"external_id": str(i), "text": x, "modality": "text",
                        "content_hash": hashlib.sha256(x.encode()).hexdigest()} for i, x in enumerate(texts)])
    ids = p.store.item_ids()
    rng = np.random.default_rng(0)
    cid = list(p.store.class_ids().values())
    rows = rng.permutation(len(ids))
    p.store.add_annotations([(int(ids[r]), cid[r % 10]) for r in rows[:100]], source="human", annotator="seed")
    p.store.add_annotations([(int(ids[r]), cid[r % 10]) for r in rows[100:100 + machine]], source="machine",
                            annotator="autolabel")
    p.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--machine", type=int, default=60_000, help="accepted machine labels")
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument("--baseline", type=Path, default=None, help="another source tree (e.g. main's src)")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/labelloop-latest-labels"))
    args = ap.parse_args()
    shutil.rmtree(args.dir, ignore_errors=True)
    base = args.dir / "base"
    build(base, args.n, args.machine)
    variants = {"this": SRC} | ({"baseline": args.baseline} if args.baseline else {})
    result = {"n": args.n, "machine_labels": args.machine, "runs": args.runs,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared)",
              "command": "python benchmarks/latest_labels.py " + " ".join(sys.argv[1:]),
              "load_average_before": list(os.getloadavg()), "variants": {}}
    for name, src in variants.items():
        path = args.dir / name
        shutil.copytree(base, path)
        got = subprocess.run([sys.executable, "-c", CHILD, str(path), str(args.runs),
                              json.dumps({k: list(v) for k, v in SOURCES.items()})],
                             env={**os.environ, "PYTHONPATH": str(src)}, check=True, capture_output=True, text=True)
        result["variants"][name] = {"src": str(src), **json.loads(got.stdout)}
        print(name, result["variants"][name], flush=True)
    result["load_average_after"] = list(os.getloadavg())
    shutil.rmtree(args.dir, ignore_errors=True)
    (RESULTS / "latest_labels.json").write_text(json.dumps(result, indent=2))
    names = list(variants)
    lines = [f"# Current labels of {args.n:,} items with {args.machine:,} accepted machine labels", "",
             f"Command: `{result['command']}` on {result['machine']}. Load average (1/5/15 min) before "
             f"{[round(x, 2) for x in result['load_average_before']]}, after "
             f"{[round(x, 2) for x in result['load_average_after']]}. CPU ms of `Project.label_vector` in a child "
             f"process per variant; `again` and `unchanged`: medians of {args.runs}.", "",
             "| sources | read | " + " | ".join(names) + (" | ratio |" if len(names) > 1 else " |"),
             "|---|---|" + "---:|" * (len(names) + (len(names) > 1))]
    for s in SOURCES:
        for read in ("first", "again", "unchanged"):
            vals = [result["variants"][n][s][read] * 1000 for n in names]
            ratio = f" {vals[1] / vals[0]:.1f}x |" if len(vals) > 1 and vals[0] > 0 else (" - |" if len(vals) > 1 else "")
            lines.append(f"| {s} | {read} | " + " | ".join(f"{v:.1f}" for v in vals) + " |" + ratio)
    lines += ["", "Ratio = baseline / this. `first`: the first read in a process; `again`: after one new human "
              "label; `unchanged`: nothing new since the last read."]
    (RESULTS / "latest_labels.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
