"""The input size of an image backbone, chosen from the project's own images.

A CNN trained at 224 px upscales a 28 px image eight times: 64 times the pixels to push
through the network for detail that is not there. Measured on this machine kind
(``benchmarks/results/adaptation*.md``, EfficientNet-Lite0, 2 cores): Fashion-MNIST (28 px)
at 64 / 112 / 224 px embeds 5,000 images in 14 s / 33 s / ~3 min, with 10-NN accuracy
0.824 / 0.841 / 0.852 and propagation accuracy at 5 labels per class 0.693 / 0.718 / 0.745;
on digits (8 px) 64 px is better than 224 px (10-NN 0.886 against 0.871). So the size is
at most about twice the images' own, and the user is told how to ask for more.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["UPSCALE", "choose_image_size", "median_short_side"]

UPSCALE = 2.0      # feed at most about this many times the images' own resolution
SAMPLE = 200       # image headers read to estimate the median (evenly spaced over the items)


def choose_image_size(median_side: float, sizes: Sequence[int], *, upscale: float = UPSCALE) -> int:
    """The smallest of ``sizes`` (ascending; the last is the backbone's default and the cap)
    that is at least ``upscale`` times ``median_side``; the smallest is the floor."""
    for size in sizes:
        if size >= upscale * median_side:
            return int(size)
    return int(sizes[-1])


def median_short_side(paths: Sequence[str], *, sample: int = SAMPLE) -> float | None:
    """Median of the shorter side of up to ``sample`` images (evenly spaced over ``paths``),
    read from their headers; None when none can be read."""
    from PIL import Image

    if not paths:
        return None
    picks = np.unique(np.linspace(0, len(paths) - 1, num=min(sample, len(paths))).round().astype(int))
    sides = []
    for i in picks:
        try:
            with Image.open(paths[i]) as im:  # reads the header only
                sides.append(min(im.size))
        except (OSError, ValueError):  # moved or damaged since import: embed reports it
            continue
    return float(np.median(sides)) if sides else None
