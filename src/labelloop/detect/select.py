"""Which images a person should box next (active learning for detection).

- **Cold start** (no image pre-labeled yet): typicality over the image embeddings
  (:func:`labelloop.select.typicality_sampling`): the densest image of each large cluster
  with no reviewed image, so the first boxes cover what the data holds.
- **With pre-labels**: image uncertainty ``1 - image_confidence`` (:mod:`.accept`): the
  detector is as unsure of an image as of its least sure decision, a box kept just above the
  box threshold or dropped just below it. Images not pre-labeled yet (added since) rank first
  (uncertainty 1: nothing is known about them). The top ``10 n`` are clustered on their
  embeddings and the most uncertain of each cluster is kept
  (:func:`labelloop.select.diversity.diversify`), so twenty picks are not twenty near-copies
  of one hard scene.

Stateless: everything comes in as arguments; nothing here reads the store.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..select.base import Selection, SelectionInputs, top_n, validate_inputs
from ..select.coverage import typicality_sampling
from ..select.diversity import diversify
from .accept import image_confidence
from .boxes import ImageBoxes

__all__ = ["image_uncertainty", "select_images"]


def image_uncertainty(preds: Sequence[ImageBoxes | None], *, box_threshold: float) -> np.ndarray:
    """``(n,)`` ``1 - image_confidence`` of each pre-label; 1 where there is none (``None``)."""
    return np.array([1.0 if p is None else 1.0 - image_confidence(p, box_threshold=box_threshold) for p in preds],
                    dtype=np.float64)


def select_images(embeddings: np.ndarray, labeled: np.ndarray, unlabeled: np.ndarray, n: int, *,
                  uncertainty: np.ndarray | None, prelabeled: np.ndarray | None = None,
                  seed: int = 0) -> Selection:
    """``n`` rows of ``unlabeled`` to review next, most useful first.

    ``embeddings``: ``(N, d)``; ``labeled`` / ``unlabeled``: row indices (reviewed or accepted /
    candidates); ``uncertainty``: ``(N,)`` from :func:`image_uncertainty`, ``None`` before
    any pre-label; ``prelabeled``: ``(N,)`` bool, which rows have a pre-label (their reasons
    say so)."""
    if uncertainty is None:
        sel = typicality_sampling(embeddings, labeled, unlabeled, n, seed=seed)
        return Selection(sel.indices, sel.scores, [f"no pre-labels yet: {r}" for r in sel.reasons],
                         "detect-cold-start", sel.details)
    inputs = validate_inputs(strategy="detect-uncertainty", requires=("embeddings",), n=n, labeled=labeled,
                             unlabeled=unlabeled, embeddings=embeddings, seed=seed)
    unc = np.asarray(uncertainty, dtype=np.float64)
    known = np.ones(len(unc), dtype=bool) if prelabeled is None else np.asarray(prelabeled, dtype=bool)

    def least_sure(inp: SelectionInputs) -> Selection:
        pos = top_n(unc[inp.unlabeled], inp.n, inp.rng())
        rows = inp.unlabeled[pos]
        reasons = [f"least sure decision: image confidence {1 - unc[r]:.2f}" if known[r]
                   else "not pre-labeled yet (run labelloop prelabel)" for r in rows]
        return Selection(rows, unc[rows], reasons, "detect-uncertainty")

    return diversify(least_sure, inputs)
