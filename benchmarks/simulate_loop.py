"""Issue 3 benchmark: how many human labels does the loop need?

For each dataset, replays the loop with an oracle (`labelloop.simulate`) for every strategy
and 5 seeds, plus a modAL-style baseline (margin sampling with a logistic regression on the
same embeddings, no graph), and writes per dataset `benchmarks/results/simulate-<name>.{json,md,png}`
and a combined `benchmarks/results/simulate.md`.

    python benchmarks/simulate_loop.py                 # all datasets (about 30-60 min on 2 cores)
    python benchmarks/simulate_loop.py --quick         # digits only, 2 seeds, small budget
    python benchmarks/simulate_loop.py --datasets digits,fashion-mnist
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from labelloop.datasets import load_dataset  # noqa: E402
from labelloop.embed import get_backbone  # noqa: E402
from labelloop.simulate import SimulationData, markdown_table, simulate, write_report  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from label_efficiency import embed_cached  # noqa: E402  (the shared, resumable embedding cache)
STRATEGIES = ["random", "least-confidence", "margin", "entropy", "coreset", "typicality", "auto"]
# dataset -> (backbone, subset size, budget, step); backbones: the best available per ASSETS.md
CONFIGS = {
    "digits": ("pixels", None, 300, 10),
    "fashion-mnist": ("efficientnet-lite0", 10_000, 1000, 50),
    "rotten-tomatoes": ("tfidf", 5_000, 1000, 50),  # TF-IDF 10-NN 0.722 > MiniLM 0.682 (ASSETS.md)
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="digits,fashion-mnist,rotten-tomatoes")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--strategies", default=",".join(STRATEGIES))
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--image-size", type=int, default=112, help="EfficientNet input size for 28x28 images")
    args = ap.parse_args()
    sections = []
    names = ["digits"] if args.quick else [d.strip() for d in args.datasets.split(",")]
    for name in names:
        backbone, n, budget, step = CONFIGS[name]
        seeds = 2 if args.quick else args.seeds
        if args.quick:
            budget, step = 100, 10
        t0 = time.perf_counter()
        opts = {"image_size": args.image_size} if backbone == "efficientnet-lite0" else {}
        ds = load_dataset(name, n=n)
        bb = get_backbone(backbone, **opts)
        if bb.needs_fit:
            bb.fit(ds.items)
        X, _ = embed_cached(ds, f"{name}-n{len(ds)}-s0", bb)
        data = SimulationData(name, X, ds.labels, ds.class_names, bb.cache_id)
        embed_s = time.perf_counter() - t0
        result = simulate(data, strategies=[x for x in args.strategies.split(",") if x], budget=budget, step=step, seeds=seeds, baseline=True,
                          target_precision=0.95, progress=print)
        result["embed_seconds"] = round(embed_s, 1)
        write_report(result, args.out)
        sections.append(markdown_table(result) + f"\n![{name}](simulate-{name}.png)\n")
        print(markdown_table(result))
    header = (
        "# Labels needed: active learning + propagation + auto-labeling\n\n"
        f"Command: `python benchmarks/simulate_loop.py{' --quick' if args.quick else ''}` "
        f"on {platform.machine()} ({os.cpu_count()} cores), Python {sys.version.split()[0]}.\n\n"
        "Columns: whole-dataset accuracy (human labels + predicted labels for every other item) "
        "after 50 / 100 / budget human labels (mean ± std over seeds); human labels needed to reach "
        "90 / 95 / 98 % of it ('saved ×' = items / labels); and the cheapest finish with auto-labeling: "
        "human labels so far + every item the calibrated auto-labeler (target precision 0.95) did not "
        "accept, at the first step where that finished dataset is ≥ 95 % accurate ('saved ×' = items / "
        "that cost). `logreg` = modAL-style margin sampling with a logistic regression on the same "
        "embeddings and no graph.\n\n"
    )
    if not args.quick:
        # the combined page covers every dataset simulated so far (runs may be split by dataset)
        sections = []
        for name in CONFIGS:
            path = args.out / f"simulate-{name}.json"
            if path.exists():
                result = json.loads(path.read_text())
                sections.append(markdown_table(result) + f"\nSimulation {result['seconds']:.0f} s"
                                + (f", embedding {result['embed_seconds']:.0f} s" if "embed_seconds" in result else "")
                                + f".\n\n![{name}](simulate-{name}.png)\n")
        (args.out / "simulate.md").write_text(header + "\n".join(sections))


if __name__ == "__main__":
    main()
