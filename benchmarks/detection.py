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

**Active-learning round** (``--al``, written to results/detection_al.{json,md}): a detector
trained on the first ``--al-base`` training scenes (25) pre-labels the other 175 (the pool); the
next 25 images to label are picked by ``labelloop next``'s rule for detection
(``detect.select.select_images``: least sure image, one per k-means cluster of the
EfficientNet-Lite0 image embeddings, box threshold from the reviewed set as ``autolabel`` picks
it) or at random (``--al-random`` draws); a detector retrained on the 50 is scored on the test set.

Run:  nice python benchmarks/detection.py            (writes results/detection.{json,md})
      nice python benchmarks/detection.py --sizes 10,25 --test 30   (a quick look)
      nice python benchmarks/detection.py --al       (the active-learning round only)
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10,25,50,100,200")
    ap.add_argument("--test", type=int, default=100, help="scenes in each held-out set (test, reviewed)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "detection"))
    ap.add_argument("--al", action="store_true", help="run the active-learning round only")
    ap.add_argument("--al-base", type=int, default=25, help="images labeled before the round")
    ap.add_argument("--al-n", type=int, default=25, help="images the round adds")
    ap.add_argument("--al-random", type=int, default=3, help="random draws to compare with")
    args = ap.parse_args(argv)
    if args.al:
        return al_round(args, argv)

    import torch

    torch.set_num_threads(1)
    from labelloop.detect.accept import certify_images, image_confidence, review_image
    from labelloop.detect.metrics import evaluate_detections
    from labelloop.detect.train import DetectConfig, train_detector

    sizes = [int(s) for s in args.sizes.split(",")]
    t0 = time.perf_counter()
    names, train, reviewed, test = _scenes(args, max(sizes))
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

        # box threshold (most exactly-right reviewed images) and bar: what `labelloop autolabel` does
        cert = certify_images(pred_r, reviewed.targets, target_precision=TARGET)
        tau, bar = cert.box_threshold, cert.bar
        conf_t = np.array([image_confidence(p, box_threshold=tau) for p in pred_t])
        right_t = np.array([review_image(p, t, box_threshold=tau).right for p, t in zip(pred_t, test.targets, strict=True)])
        acc = conf_t >= bar
        reviews = [review_image(p, t, box_threshold=tau) for p, t in zip(pred_t, test.targets, strict=True)]
        work = {k: int(sum(getattr(r, k) for r in reviews)) for k in ("unchanged", "corrected", "drawn", "deleted")}
        rows.append({
            "n_train": n, "boxes_train": int(sum(len(t) for t in train.targets[:n])),
            "trainable_blocks": det.config.trainable_blocks, "epochs": det.config.epochs,
            "map50": m.map50, "map": m.map, "ap50_per_class": m.to_dict()["ap50_per_class"],
            "box_threshold": float(tau), "accept_bar": bar,
            "reviewed_right": cert.right,
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


def _scenes(args, n_train: int):
    """(class names, training scenes, reviewed scenes, test scenes): disjoint Fashion-MNIST
    objects for training and held-out scenes."""
    from labelloop.detect.synthetic import make_scenes, object_pool

    patches, labels, names = object_pool("fashion-mnist", classes=CLASSES, n_per_class=400, seed=args.seed)
    idx = np.arange(len(patches))
    tr, ho = idx % 2 == 0, idx % 2 == 1          # disjoint Fashion-MNIST images for train / held-out
    train = make_scenes([patches[i] for i in idx[tr]], labels[tr], names, n_train, seed=args.seed + 1)
    hold_p, hold_l = [patches[i] for i in idx[ho]], labels[ho]
    reviewed = make_scenes(hold_p, hold_l, names, args.test, seed=args.seed + 2)
    test = make_scenes(hold_p, hold_l, names, args.test, seed=args.seed + 3)
    return names, train, reviewed, test


def al_round(args, argv) -> int:
    """One active-learning round: ``next``'s pick vs random picks of the next ``al_n`` images."""
    import torch

    torch.set_num_threads(1)
    from labelloop.detect.accept import certify_images
    from labelloop.detect.metrics import evaluate_detections
    from labelloop.detect.select import image_uncertainty, select_images
    from labelloop.detect.train import DetectConfig, train_detector
    from labelloop.embed import get_backbone

    t0 = time.perf_counter()
    pool_n = 200
    names, train, reviewed, test = _scenes(args, pool_n)
    base, n_new = args.al_base, args.al_n

    def fit(rows):
        c0 = time.process_time()
        det = train_detector([train.images[i] for i in rows], [train.targets[i] for i in rows], len(names),
                             DetectConfig(device="cpu", num_threads=1, seed=args.seed), class_names=names)
        m = evaluate_detections(det.predict(test.images), test.targets, num_classes=len(names))
        return det, {"map50": m.map50, "map": m.map, "train_cpu_s": round(time.process_time() - c0, 1),
                     "boxes": int(sum(len(train.targets[i]) for i in rows)), "load1": os.getloadavg()[0]}

    labeled = np.arange(base)
    pool = np.arange(base, pool_n)
    det, first = fit(labeled)
    print(json.dumps({"base": first}), flush=True)
    tau = certify_images(det.predict(reviewed.images), reviewed.targets, target_precision=TARGET).box_threshold
    unc = image_uncertainty(det.predict(train.images), box_threshold=tau)            # (200,)
    e0 = time.process_time()
    bb = get_backbone("efficientnet-lite0")
    X = np.vstack([bb.embed_batch(train.images[lo:lo + 32]) for lo in range(0, pool_n, 32)])   # (200, d)
    embed_cpu = time.process_time() - e0
    picks = {"next (least sure, diverse)": select_images(X, labeled, pool, n_new, uncertainty=unc,
                                                         seed=args.seed).indices}
    rng = np.random.default_rng(args.seed)
    for r in range(args.al_random):
        picks[f"random draw {r + 1}"] = rng.choice(pool, n_new, replace=False)
    rows = []
    for name, pick in picks.items():
        _, res = fit(np.concatenate([labeled, pick]))
        rows.append({"pick": name, "mean_uncertainty": float(unc[pick].mean()), **res})
        print(json.dumps(rows[-1]), flush=True)
    import torch as _t

    meta = {"generated": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "python benchmarks/detection.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {_t.__version__}, 1 thread",
            "base": base, "n_new": n_new, "pool": int(pool.size), "box_threshold": tau, "test_images": args.test,
            "pool_mean_uncertainty": float(unc[pool].mean()), "embed_cpu_s": round(embed_cpu, 1),
            "total_wall_s": round(time.perf_counter() - t0, 1)}
    out = Path(args.out).with_name(Path(args.out).name + "_al")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "base": first, "rows": rows}, indent=2) + "\n")
    out.with_suffix(".md").write_text(render_al(meta, first, rows))
    print(render_al(meta, first, rows))
    return 0


def render_al(meta: dict, first: dict, rows: list[dict]) -> str:
    lines = [
        "# Detection: one active-learning round (synthetic scenes)",
        "",
        f"Generated {meta['generated']} by `{meta['command'].strip()}` on {meta['machine']}; whole run "
        f"{meta['total_wall_s']} s wall on a machine shared with other jobs (load average per row).",
        "",
        f"The same synthetic Fashion-MNIST scenes as results/detection.md. A detector trained on "
        f"{meta['base']} labeled scenes pre-labels a pool of {meta['pool']}; {meta['n_new']} more are picked "
        f"and a detector retrained on all {meta['base'] + meta['n_new']} is scored on {meta['test_images']} test "
        f"scenes. Box threshold {meta['box_threshold']:.2f} (chosen on the reviewed set, as autolabel does); "
        f"pool mean uncertainty {meta['pool_mean_uncertainty']:.3f}. One training seed: a few points of mAP "
        "are within noise; the random draws show how much the pick alone moves it.",
        "",
        "| images picked by | mean uncertainty of the pick | boxes in training | mAP@0.5 | mAP@0.5:0.95 | train CPU s | load |",
        "|---|---|---|---|---|---|---|",
        f"| (before the round: {meta['base']} images) | – | {first['boxes']} | {first['map50']:.3f} | "
        f"{first['map']:.3f} | {first['train_cpu_s']} | {first['load1']:.1f} |",
    ]
    for r in rows:
        lines.append(f"| {r['pick']} | {r['mean_uncertainty']:.3f} | {r['boxes']} | {r['map50']:.3f} | "
                     f"{r['map']:.3f} | {r['train_cpu_s']} | {r['load1']:.1f} |")
    return "\n".join(lines) + "\n"


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
