"""What a person should label next: one decision for ``Project.next``, ``simulate`` and the web
queue.

- a query strategy from :mod:`labelloop.select` picks most of the batch;
- once predictions exist, a share ``explore`` of the batch is drawn uniformly at random from
  the unlabeled items (``auto``: 20 %): uncertainty sampling only asks about hard items, and the
  random ones are an unbiased sample for certifying auto-labels and for ``diagnose``;
- ``verify`` draws the whole batch at random from the region auto-labeling could accept
  (:mod:`labelloop.loop.certify`): those checks certify machine labels.

Every chosen row carries its ``kind`` ("strategy", "random" or "verify"); callers record it
with the machine's guess at that moment, which is what certification compares against.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..autolabel import DEFAULT_TARGET
from .certify import coverage_of, verify_coverage, verify_sample

__all__ = ["Choice", "choose", "default_explore", "BATCH_RANDOM", "DEFAULT_EXPLORE", "VERIFY"]

#: share of an ``auto`` batch drawn at random once predictions exist
DEFAULT_EXPLORE = 0.2
VERIFY = "verify"
#: the kind of a random draw from one batch (``within``): random within the batch only, so it
#: never counts as a uniform check of the whole project (certification, the class prior)
BATCH_RANDOM = "batch-random"
#: verify when no region is expected to reach the target: sample the most confident quarter
FALLBACK_REGION = 0.25


def default_explore(strategy: str) -> float:
    return DEFAULT_EXPLORE if strategy == "auto" else 0.0


@dataclass
class Choice:
    rows: np.ndarray                  # (m,) chosen rows, most useful first
    scores: list[float]
    reasons: list[str]
    kinds: list[str]                  # "strategy" | "random" | "batch-random" | "verify" per row
    strategy: str
    details: dict = field(default_factory=dict)
    threshold: float | None = None    # verify: the region's confidence threshold
    regions: list = field(default_factory=list)  # per row: coverage of the region it was drawn
                                                 # uniformly from (1.0 random, None strategy)

    @property
    def random_rows(self) -> np.ndarray:
        return self.rows[[k != "strategy" for k in self.kinds]] if len(self.rows) else self.rows


def choose(strategy: str, n: int, *, labeled: np.ndarray, unlabeled: np.ndarray,
           probabilities: np.ndarray | None, graph=None, embeddings: np.ndarray | None = None,
           labels: np.ndarray | None = None, class_names: list[str] | None = None, seed: int = 0,
           explore: float | None = None, target_precision: float = DEFAULT_TARGET,
           verify_eligible: np.ndarray | None = None, certified_coverage: float = 0.0,
           candidates: np.ndarray | None = None, pending_coverage: float = 0.0,
           verify_heldout: tuple[np.ndarray, np.ndarray] | None = None,
           rule_votes: np.ndarray | None = None, rule_proba: np.ndarray | None = None,
           within: np.ndarray | None = None) -> Choice:
    """Choose ``n`` rows to label. ``labeled`` / ``unlabeled``: row indices; ``probabilities``:
    (n_items, C) calibrated predictions or None before the first refresh; ``labels``: the class
    of each ``labeled`` row. ``verify_eligible``: (n_items,) bool rows a verify check may draw
    (default: the unlabeled rows); ``certified_coverage``: the share auto-labeling has certified
    so far (verify then draws from a region :data:`~labelloop.loop.certify.EXPAND` larger);
    ``pending_coverage``: the region the last checks came from, kept until it is certified
    (:func:`~labelloop.loop.certify.verify_coverage`); ``verify_heldout``: (calibrated confidence,
    correct) of the held-out human labels, which correct the verify plan where the calibration
    understates the top (:func:`~labelloop.loop.certify.error_scale`).
    ``candidates``: the rows of ``unlabeled`` the strategy ranks (a bounded sample keeps a
    long-running server's ranking fast); the random share is still drawn from all of
    ``unlabeled``, so it stays an unbiased sample. ``rule_votes`` / ``rule_proba``: (n_items, C)
    votes of the active labeling functions and their label model (None without rules): what
    ``conflict`` ranks by, and ``auto`` after its cold start.
    ``within``: (n_items,) bool, only these rows may be chosen (one batch: ``next --batch``);
    the random share is then a random sample of them, not of the whole dataset, and
    ``verify`` refuses it (certification needs draws from the whole region)."""
    from ..errors import NotReadyError, ValidationError
    from ..select import available_strategies, get_strategy

    unlabeled = np.asarray(unlabeled, dtype=np.int64)
    random_reason = "random sample: keeps the auto-label precision estimate unbiased"
    if within is not None:
        if strategy == VERIFY:
            raise ValidationError("verify certifies auto-labels over the whole project: its checks must be drawn "
                                  "from all items, not one batch; drop --batch")
        unlabeled = unlabeled[np.asarray(within, dtype=bool)[unlabeled]]
        if candidates is not None:
            candidates = np.intersect1d(candidates, unlabeled)
        random_reason = "random sample of this batch: measures how well the model handles it"
    random_kind = "random" if within is None else BATCH_RANDOM
    if strategy == VERIFY:
        if probabilities is None:
            raise NotReadyError("verify checks the machine's labels: run `labelloop refresh` first")
        conf = probabilities.max(axis=1)
        if verify_eligible is None:
            verify_eligible = np.zeros(len(conf), bool)
            verify_eligible[unlabeled] = True
        cov = verify_coverage(conf, verify_eligible, target_precision=target_precision,
                              certified_coverage=certified_coverage, pending=pending_coverage, heldout=verify_heldout)
        reason = "random check of the {share:.0%} most confident machine labels: certifies auto-labeling"
        if cov <= 0 and verify_eligible.any():
            # no region is expected to reach the target yet: check the most confident quarter,
            # which says how far off it is (and the checks are labels like any other)
            cov = FALLBACK_REGION
            reason = (f"random check of the most confident {{share:.0%}} of the machine labels (none is "
                      f"expected to reach {target_precision:.0%} yet)")
        region = coverage_of(conf, verify_eligible) <= cov + 1e-12
        t = float(conf[region & verify_eligible].min()) if (region & verify_eligible).any() else np.inf
        rows = verify_sample(conf, verify_eligible, n, threshold=t, seed=seed)
        reason = reason.format(share=cov)
        return Choice(rows, [float(conf[r]) for r in rows], [reason] * len(rows), [VERIFY] * len(rows),
                      VERIFY, {"threshold": t, "coverage": cov, "region": int((verify_eligible & region).sum())},
                      threshold=t, regions=[float(cov)] * len(rows))
    if strategy not in available_strategies():
        raise ValidationError(f"unknown strategy {strategy!r}; available: "
                              f"{', '.join(available_strategies() + [VERIFY])}")
    if explore is None:
        explore = default_explore(strategy)
    n_random = int(round(explore * n)) if probabilities is not None and n > 1 else 0
    sel = get_strategy(strategy).select(
        n=n - n_random, labeled=labeled, unlabeled=unlabeled if candidates is None else candidates,
        probabilities=probabilities, graph=graph,
        embeddings=embeddings, labels=labels if len(labeled) else None,
        class_names=class_names if probabilities is not None else None, seed=seed,
        **(dict(rule_votes=rule_votes, rule_proba=rule_proba) if probabilities is not None else {}))
    rows = list(np.asarray(sel.indices, dtype=np.int64))
    scores, reasons = list(map(float, sel.scores)), list(sel.reasons)
    kind = "random" if strategy == "random" else "strategy"
    kinds = [kind] * len(rows)
    rest = np.setdiff1d(unlabeled, rows)
    if n_random and len(rest):
        extra = np.random.default_rng(seed).choice(rest, size=min(n_random, len(rest)), replace=False)
        rows += extra.tolist()
        scores += [0.0] * len(extra)
        reasons += [random_reason] * len(extra)
        kinds += [random_kind] * len(extra)
    return Choice(np.asarray(rows, dtype=np.int64), scores, reasons, kinds, sel.strategy, sel.details,
                  regions=[1.0 if k == "random" else None for k in kinds])
