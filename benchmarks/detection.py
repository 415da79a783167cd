"""Detection pre-labels vs. the number of human-labeled images — on SYNTHETIC scenes.

No labeled detection data ships in a package here, so the scenes are made
(:mod:`labelloop.detect.synthetic`): Fashion-MNIST objects of 5 classes (T-shirt-top, Trouser,
Sneaker, Bag, Ankle-boot), tinted and pasted 1-4 per image on random textured backgrounds,
14-48 px on 128 x 128 px images, overlapping up to IoU 0.3, boxes known exactly. The objects
of the training scenes and of the held-out scenes come from disjoint Fashion-MNIST images.

For each training size n (the first n of 200 training scenes) the detector of
``labelloop.detect`` is trained with its default, size-based schedule on CPU (1 thread, seed
0), then predicts two held-out sets of 100 scenes each:

- **test**: mAP@0.5 and mAP@0.5:0.95 (COCO-style, 101 points), and what reviewing every
  test image's pre-labels would take (``detect.accept.review_image``: boxes accepted unchanged,
  corrected, drawn from scratch, deleted) against drawing every box by hand;
- **reviewed** (stands for images people checked at random): picks the box threshold (the
  one giving the most exactly-right images there) and the image-confidence bar whose accepted
  images reach target precision 0.9 with a one-sided 95 % Clopper-Pearson lower bound
  (``detect.accept.accept_threshold``); the bar is then applied to the test images: the share
  auto-accepted and the share of those that are exactly right (realised precision).

An image is "right" when all its boxes are accepted unchanged and none is missing or extra.

Run:  nice python benchmarks/detection.py            (writes results/detection.{json,md})
      nice python benchmarks/detection.py --sizes 10,25 --test 30   (a quick look)
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # see benchmarks/adaptation.py

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

CLASSES = ["T-shirt-top", "Trouser", "Sneaker", "Bag", "Ankle-boot"]
TARGET = 0.9
BOX_THRESHOLDS = np.round(np.arange(0.2, 0.81, 0.05), 2)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,25,50,100,200")
    ap.add_argument("--test", type=int, default=100, help="scenes in each held-out set (test, reviewed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "detection"))
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    from labelloop.detect.accept import accept_threshold, image_confidence, review_image
    from labelloop.detect.metrics import evaluate_detections
    from labelloop.detect.synthetic import make_scenes, object_pool
    from labelloop.detect.train import DetectConfig, train_detector

    sizes = [int(s) for s in args.sizes.split(",")]
    t0 = time.perf_counter()
    patches, labels, names = object_pool("fashion-mnist", classes=CLASSES, n_per_class=400, seed=args.seed)
    idx = np.arange(len(patches))
    tr, ho = idx % 2 == 0, idx % 2 == 1          # disjoint Fashion-MNIST images for train / held-out
    train = make_scenes([patches[i] for i in idx[tr]], labels[tr], names, max(sizes), seed=args.seed + 1)
    hold_p, hold_l = [patches[i] for i in idx[ho]], labels[ho]
    reviewed = make_scenes(hold_p, hold_l, names, args.test, seed=args.seed + 2)
    test = make_scenes(hold_p, hold_l, names, args.test, seed=args.seed + 3)
    data_s = time.perf_counter() - t0
    n_boxes_test = sum(len(t) for t in test.targets)

    rows = []
    for n in sizes:
        w0, c0 = time.perf_counter(), time.process_time()
        det = train_detector(train.images[:n], train.targets[:n], len(names),
                             DetectConfig(device="cpu", num_threads=1, seed=args.seed), class_names=names)
        train_wall, train_cpu = time.perf_counter() - w0, time.process_time() - c0
        p0 = time.process_time()
        pred_r, pred_t = det.predict(reviewed.images), det.predict(test.images)
        pred_cpu = time.process_time() - p0
        m = evaluate_detections(pred_t, test.targets, num_classes=len(names))

        # box threshold: most exactly-right reviewed images
        def right(preds, truths, tau):
            return np.array([review_image(p, t, box_threshold=tau).right for p, t in zip(preds, truths, strict=True)])

        tau = max(BOX_THRESHOLDS, key=lambda t: (right(pred_r, reviewed.targets, t).sum(), -t))
        conf_r = np.array([image_confidence(p, box_threshold=tau) for p in pred_r])
        bar = accept_threshold(conf_r, right(pred_r, reviewed.targets, tau), target_precision=TARGET)
        conf_t = np.array([image_confidence(p, box_threshold=tau) for p in pred_t])
        right_t = right(pred_t, test.targets, tau)
        acc = conf_t >= bar
        reviews = [review_image(p, t, box_threshold=tau) for p, t in zip(pred_t, test.targets, strict=True)]
        work = {k: int(sum(getattr(r, k) for r in reviews)) for k in ("unchanged", "corrected", "drawn", "deleted")}
        rows.append({
            "n_train": n, "boxes_train": int(sum(len(t) for t in train.targets[:n])),
            "trainable_blocks": det.config.trainable_blocks, "epochs": det.config.epochs,
            "map50": m.map50, "map": m.map, "ap50_per_class": m.to_dict()["ap50_per_class"],
            "box_threshold": float(tau), "accept_bar": bar,
            "reviewed_right": int(right(pred_r, reviewed.targets, tau).sum()),
            "test_right": int(right_t.sum()),
            "accepted_share": float(acc.mean()), "accepted": int(acc.sum()),
            "accepted_precision": float(right_t[acc].mean()) if acc.any() else None,
            **work, "train_wall_s": round(train_wall, 1), "train_cpu_s": round(train_cpu, 1),
            "predict_cpu_s": round(pred_cpu, 1), "load1": os.getloadavg()[0],
        })
        print(json.dumps(rows[-1]), flush=True)

    import torch as _t

    meta = {"generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "python benchmarks/detection.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {_t.__version__}, 1 thread",
            "data_s": round(data_s, 1), "test_images": args.test, "test_boxes": n_boxes_test,
            "classes": names, "total_wall_s": round(time.perf_counter() - t0, 1)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    out.with_suffix(".md").write_text(render(meta, rows))
    print(render(meta, rows))
    return 0


def render(meta: dict, rows: list[dict]) -> str:
    def f(v, d=3):
        return "–" if v is None else (f"{v:.{d}f}" if isinstance(v, float) else str(v))

    lines = [
        "# Detection benchmark (synthetic scenes)",
        "",
        f"Generated {meta['generated']} by `{meta['command'].strip()}` on {meta['machine']}; whole run "
        f"{meta['total_wall_s']} s wall on a machine shared with other jobs (load average per row).",
        "",
        "**Synthetic data**: Fashion-MNIST objects of 5 classes "
        f"({', '.join(meta['classes'])}) tinted and pasted 1-4 per image on random textures, 14-48 px on "
        "128 x 128 px images, overlap up to IoU 0.3; training and held-out objects from disjoint "
        f"Fashion-MNIST images. Held-out: {meta['test_images']} test images ({meta['test_boxes']} boxes) and "
        f"{meta['test_images']} 'reviewed' images (calibration). One seed: differences of a few points "
        "between rows are within noise.",
        "",
        "## Pre-label quality vs. labeled images",
        "",
        "| train images (boxes) | backbone blocks trained | epochs | mAP@0.5 | mAP@0.5:0.95 | train CPU s | load |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['n_train']} ({r['boxes_train']}) | {r['trainable_blocks']} | {r['epochs']} | "
                     f"{f(r['map50'])} | {f(r['map'])} | {r['train_cpu_s']} | {r['load1']:.1f} |")
    lines += [
        "",
        f"## Image-level auto-accept at target precision {TARGET} (95 % Clopper-Pearson bar from the reviewed set)",
        "",
        "| train images | box threshold | right images (reviewed / test) | bar (image confidence) | "
        "test images accepted | realised precision of accepted |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        bar = "none reached" if not np.isfinite(r["accept_bar"]) else f"{r['accept_bar']:.3f}"
        lines.append(f"| {r['n_train']} | {r['box_threshold']:.2f} | {r['reviewed_right']} / {r['test_right']} | "
                     f"{bar} | {r['accepted']} ({r['accepted_share']:.0%}) | {f(r['accepted_precision'])} |")
    lines += [
        "",
        "## Human work to review every test image's pre-labels",
        "",
        f"By hand: draw all {meta['test_boxes']} boxes. With pre-labels (at the box threshold above): ",
        "",
        "| train images | accepted unchanged | corrected (class or box) | drawn from scratch | deleted (extra) |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['n_train']} | {r['unchanged']} | {r['corrected']} | {r['drawn']} | {r['deleted']} |")
    lines += ["", "Unchanged: IoU >= 0.5 and the right class; corrected: IoU >= 0.5 with the wrong class or "
              "0.1 <= IoU < 0.5; matching greedy by score (`labelloop.detect.accept.review_image`).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
