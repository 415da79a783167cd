"""Embedding speed against the bare model: ``labelloop embed`` (decode, preprocess, forward,
cache writes) over the model alone on the same inputs, for EfficientNet-Lite0 and MiniLM.

    python benchmarks/embed_speed.py                       # 128 images at 224 px, 1024 texts, 3 runs
    python benchmarks/embed_speed.py --before /work/main/src   # also time another checkout's embed

Every measurement runs in a fresh process (the allocator settings an embed makes are
process-wide and must not leak into the bare runs), loads the model and embeds one full
warm-up batch first, then times only the work:

- ``bare image``: ``features(net, x)`` on already-preprocessed tensors, batches of 64,
  in a process with glibc's default allocator settings (``bare``) and with the ones embed
  uses (``bare+malloc``); the faster of the two is the baseline;
- ``bare text``: ``SentenceTransformer.encode(all texts, batch_size=64)`` (which sorts the
  whole list by length), both allocator settings likewise;
- ``embed``: ``Project.embed`` on a fresh project of the same inputs (JPEG files / texts
  imported from a CSV), so every item is embedded and written to the cache.

Reported: CPU seconds (user + system of the whole process during the timed part, all
threads), wall seconds, minor page faults, medians of ``--runs`` runs; the speed ratio
``bare CPU-s / embed CPU-s`` (1.0 = embedding costs nothing beyond the model) and the same in
wall time. Images: synthetic 320x240 JPEGs (smooth colour fields plus noise); texts:
synthetic sentences of 3-200 words (log-normal lengths), in random order.
Writes benchmarks/results/embed_speed.json and .md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
SRC = Path(__file__).resolve().parents[1] / "src"
WORDS = ("the a of and to in is was for on that with as by it this be at from or an are his "
         "her which one had not but all were they have she there their when we been what would "
         "market river light music garden winter station paper window story doctor engine "
         "village animal letter island summer machine memory teacher country picture history "
         "quickly slowly bright quiet heavy narrow gentle ancient sudden strange").split()


# ----------------------------------------------------------------------------- data
def make_images(folder: Path, n: int, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:240, 0:320].astype(np.float32)
    for i in range(n):
        a = rng.uniform(0.005, 0.05, size=(3, 2))
        p = rng.uniform(0, 6.3, size=3)
        img = np.stack([127 + 100 * np.sin(a[c, 0] * xx + a[c, 1] * yy + p[c]) for c in range(3)], -1)
        img += rng.normal(0, 12, img.shape)                      # (240, 320, 3)
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / f"{i:05d}.jpg", quality=90)


def make_texts(path: Path, n: int, seed: int = 0) -> None:
    import csv

    rng = np.random.default_rng(seed)
    lengths = np.clip(rng.lognormal(3.0, 0.9, n), 3, 200).astype(int)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text"])
        for i, m in enumerate(lengths):
            w.writerow([f"{i} " + " ".join(rng.choice(WORDS, m))])


# ----------------------------------------------------------------------------- one timed run
def _usage() -> tuple[float, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_minflt


def _sys() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


def worker(mode: str, modality: str, data: Path, image_size: int) -> dict:
    """One measurement in this (fresh) process; returns its figures."""
    import torch

    if mode == "bare+malloc":
        from labelloop.allocator import tune_allocator

        tune_allocator()
    if modality == "image":
        from labelloop.embed.efficientnet import EfficientNetLite0Backbone, features, preprocess_images
        from labelloop.ingest import load_image

        bb = EfficientNetLite0Backbone(image_size=image_size)
        paths = sorted((data / "images").glob("*.jpg"))
        bb.embed_batch([load_image(p) for p in paths[:64]])      # load weights, warm up
        if mode.startswith("bare"):
            xs = [preprocess_images([load_image(p) for p in paths[lo : lo + 64]], image_size)
                  for lo in range(0, len(paths), 64)]             # (64, 3, S, S) each
            net = bb._net()

            def work():
                with torch.inference_mode():
                    for x in xs:
                        features(net, x).float().numpy()
        else:
            from labelloop import Project

            p = Project.init(Path(tempfile.mkdtemp(dir=data)) / "p", modality="image")
            p.import_(data / "images")

            def work():
                p.embed("efficientnet-lite0", image_size=image_size)
    else:
        from labelloop.embed.minilm import MiniLMBackbone, load_minilm

        import csv

        with (data / "texts.csv").open() as f:
            texts = [r["text"] for r in csv.DictReader(f)]
        MiniLMBackbone().embed_batch(texts[:64])                 # load weights, warm up
        if mode.startswith("bare"):
            model = load_minilm()

            def work():
                model.encode(texts, batch_size=64, convert_to_numpy=True, show_progress_bar=False)
        else:
            from labelloop import Project

            p = Project.init(Path(tempfile.mkdtemp(dir=data)) / "p", modality="text")
            p.import_(data / "texts.csv", text_column="text")

            def work():
                p.embed("minilm-l6")
    cpu0, flt0 = _usage()
    sys0, t0 = _sys(), time.perf_counter()
    work()
    wall = time.perf_counter() - t0
    cpu1, flt1 = _usage()
    return {"cpu_s": cpu1 - cpu0, "sys_s": _sys() - sys0, "wall_s": wall, "minor_faults": flt1 - flt0}


def run_one(mode: str, modality: str, data: Path, image_size: int, src: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    out = subprocess.run(
        [sys.executable, __file__, "--worker", mode, "--modality", modality, "--data", str(data),
         "--image-size", str(image_size)],
        env=env, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{mode} {modality} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- driver
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--texts", type=int, default=1024)
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--before", type=Path, default=None,
                    help="src/ of another checkout whose embed is timed too (as 'embed (before)')")
    ap.add_argument("--modalities", default="image,text")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--modality", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--data", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.modality, args.data, args.image_size)))
        return

    modes = [("bare", SRC), ("bare+malloc", SRC), ("embed", SRC)]
    if args.before:
        modes.append(("embed (before)", args.before.resolve()))
    results: dict = {"images": args.images, "texts": args.texts, "image_size": args.image_size,
                     "runs": args.runs, "load_start": os.getloadavg()[0], "modalities": {}}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        make_images(data / "images", args.images)
        make_texts(data / "texts.csv", args.texts)
        for modality in args.modalities.split(","):
            runs: dict[str, list[dict]] = {m: [] for m, _ in modes}
            for r in range(args.runs):        # interleaved, so load drifts hit every mode alike
                for mode, src in modes:
                    res = run_one(mode.split(" ")[0], modality, data, args.image_size, src)
                    runs[mode].append(res)
                    print(f"{modality} run {r} {mode:15s} cpu {res['cpu_s']:.2f} s (sys {res['sys_s']:.2f}) "
                          f"wall {res['wall_s']:.2f} s faults {res['minor_faults']}", flush=True)
            med = {m: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for m, rs in runs.items()}
            base = min(("bare", "bare+malloc"), key=lambda m: med[m]["cpu_s"])
            base_wall = min(med["bare"]["wall_s"], med["bare+malloc"]["wall_s"])
            for m in med:
                med[m]["ratio_cpu"] = med[base]["cpu_s"] / med[m]["cpu_s"]
                med[m]["ratio_wall"] = base_wall / med[m]["wall_s"]
            results["modalities"][modality] = {"baseline": base, "median": med, "runs": runs}
    results["load_end"] = os.getloadavg()[0]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "embed_speed.json").write_text(json.dumps(results, indent=1))
    write_markdown(results, " ".join(sys.argv[1:]))


def write_markdown(res: dict, argv: str) -> None:
    names = {"image": f"EfficientNet-Lite0, {res['images']} images at {res['image_size']} px",
             "text": f"MiniLM-L6, {res['texts']} texts"}
    lines = [
        "# Embedding speed against the bare model", "",
        f"`python benchmarks/embed_speed.py {argv}`".replace(" `", "`"), "",
        f"Medians of {res['runs']} runs, each in a fresh process (interleaved); 2 cores shared with "
        f"other jobs, load average {res['load_start']:.1f} at the start, {res['load_end']:.1f} at the end. "
        "CPU s = user + system of the process during the timed part; ratio = bare / this "
        "(1.0: embedding costs nothing beyond the model). The baseline is the faster bare run "
        "(default allocator or the one embed sets).", "",
    ]
    for modality, r in res["modalities"].items():
        lines += [f"## {names[modality]}", "",
                  "| run | CPU s | of which system | wall s | minor faults | speed vs bare (CPU) | speed vs bare (wall) |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for m, v in r["median"].items():
            lines.append(f"| {m}{' (baseline)' if m == r['baseline'] else ''} | {v['cpu_s']:.2f} | {v['sys_s']:.2f} | "
                         f"{v['wall_s']:.2f} | {v['minor_faults']:,.0f} | {v['ratio_cpu']:.2f} | {v['ratio_wall']:.2f} |")
        lines.append("")
    (RESULTS / "embed_speed.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
