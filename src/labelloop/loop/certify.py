"""Certified auto-labeling: which machine labels may be accepted, and what it takes to get there.

The precision of the labels a region accepts is estimated on a **random** sample of the items
that region holds, checked by people (DESIGN.md, "Certification"; docs/certification.md):

1. :func:`plan_coverage` chooses the region worth checking: for each candidate region (a grid
   of coverages) it simulates :func:`planned_checks` fresh checks (78 at 95 % / 95 %) drawn
   from it, each right with its item's calibrated confidence (its error rate rescaled by the
   held-out human labels, :func:`error_scale`), runs the test of step 3 on them and keeps the
   largest region whose average certified coverage is within PLAN_HEDGE of the best
   (:func:`expected_certified`). The plan only decides where to draw; it is no evidence.
2. :func:`verify_sample` draws the items a person should check from that region: a sample
   stratified by confidence (the region split into ``n`` equal slices by confidence, one item
   drawn from each), so every item of the region has the same chance ``n / |region|`` of being
   drawn and the sample spans the whole confidence range. While the region can still be
   certified, the next verify batches keep drawing from it; after a wrong check, from the region
   just inside it (:func:`pending_region`).
3. :func:`certify` pools the checked items (the machine's guess *when it was drawn* against the
   person's label, never the clamped prediction after it) and runs a fixed-sequence test
   (:func:`_anytime_region`): regions of a fixed grid from a start outwards, each on the checks
   drawn from a region at least that large and lying in it, each judged by an anytime-valid
   e-process at the full level (:func:`labelloop.autolabel.anytime_passes`), stopping at the
   first that fails. Testing many regions this way costs no labels and no level, and looking
   again after every batch costs none either (Ville's inequality). It also says how many more
   all-correct checks would certify the planned region.

Regions are measured in **coverage**, the share of the eligible items at least as confident as
an item (:func:`coverage_of`), not in raw confidence: the calibration is refitted at every
refresh, so a confidence of 0.97 today is not the 0.97 of the check drawn yesterday, while "the
most confident 70 %" keeps its meaning. Once a region is certified, the next plan looks only at
larger regions (else EXPAND beyond), so certification can grow.

Only randomly drawn checks count: `verify` samples and the random share of ``next`` (uniform
over all unlabeled items, hence uniform over any region). Labels chosen by an active-learning
strategy are the hardest items by design and are never treated as a random sample; nor are the
labels a project starts with, whose predictions are clamped to them.

Pooling checks drawn under earlier predictions is an approximation: each was a uniform draw
from its region at the time, and later predictions (with more labels) are usually at least as
accurate, so the pooled estimate tends to be conservative. The guarantee (a region below the
target is certified at *any* look with chance <= 1 - level) and its assumptions are in
docs/certification.md; tests/test_certify.py and benchmarks/certify_looks.py measure it.
``anytime=False`` (:func:`_largest_region`, :func:`more_needed`) is the one-look
Clopper-Pearson test that the multi-label bars and the detection accept bar still use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..autolabel import (
    DEFAULT_LEVEL,
    DEFAULT_TARGET,
    anytime_lower_bound,
    anytime_min_correct,
    anytime_min_count,
    anytime_passes,
    min_verified_count,
    precision_lower_bound,
)

__all__ = ["candidate_threshold", "verify_sample", "certify", "Certificate", "more_needed",
           "CANDIDATE_SAFETY", "coverage_of", "verify_coverage", "pending_region", "EXPAND"]

#: candidate_threshold (multi-label bars): the region's expected precision is
#: 1 - (1 - target) / CANDIDATE_SAFETY, at target 0.95 0.975
CANDIDATE_SAFETY = 2.0


#: once a region is certified and no larger one is expected to pass, verify checks are drawn from a
#: region this much larger (in coverage), so certification can still grow (a check counts only
#: for regions no larger than the one it was drawn from)
EXPAND = 0.15

#: pending_region: after a wrong check, verify draws from the grid region just inside the most
#: confident wrong one when the plan's sample would otherwise leave too few checks there, if that
#: region is at least this share of the one drawn from before
SHRINK_FLOOR = 0.5

#: regions (coverages) a verify plan chooses among, the Monte-Carlo draws per region, the plan's
#: sample as a multiple of the fewest checks that can certify (see planned_checks), and the hedge:
#: the plan takes the largest region whose expected certified coverage is >= PLAN_HEDGE x the
#: best. The curve is flat near its top, and out-of-fold calibration on few labels was measured
#: underconfident among the most confident items (digits pixels, 50 labels: the top 80 % had
#: mean calibrated confidence 0.961, true precision 0.996), which makes an exact argmax too
#: timid. digits pixels, 12 seeds of simulate.certify_loop: mean machine-label coverage 0.522
#: (hedge 1.0), 0.688 (0.8), 0.688 (0.6, one seed with nothing certified). With the held-out
#: labels' correction (error_scale) and the 0.1 % region grid, digits pixels over 20 seeds:
#: 0.732 (0.8, 5 seeds >= 0.80), 0.777 (0.6, 10 seeds >= 0.80, every seed certified); 0.6
#: without the correction: 0.713 (10 seeds >= 0.80, 2 with nothing).
PLAN_GRID = np.round(np.arange(0.05, 1.0001, 0.05), 2)
PLAN_SIMS = 200
PLAN_SLACK = 1.25
PLAN_HEDGE = 0.6
#: error_scale's prior: the calibrated confidences count as right with the weight of this many
#: expected errors (a region whose held-out labels expect 1.5 errors and hold none: scale 0.25)
PLAN_PRIOR_ERRORS = 0.5

#: the anytime-valid test (certify) tests the regions k / REGION_STEPS (coverage), the same at
#: every look; verify draws from regions on this grid (PLAN_GRID, EXPAND). 0.1 % steps: a wrong
#: check at coverage 0.864 certifies up to 0.863, not 0.85 (on digits, 0.80 of all items or not)
REGION_STEPS = 1000

#: rounds of the anytime test (:func:`_anytime_region`). The first round is tested at this share
#: of the error level 1 - level. A round whose start has not passed after ROUND_LENGTH times the
#: checks its start was set on ends, and the next round starts afresh on the checks after it
#: (earlier ones no longer count) at half the level left, setting its start on twice as many
#: checks: the rounds' levels sum to the whole level (a union bound over rounds), and a project
#: whose first start failed is not stuck for good; with random checks a later round can start
#: in a smaller, surer region.
FIRST_ROUND_SHARE = 0.9
ROUND_LENGTH = 2

#: the one-look fixed-sequence test (_largest_region without anytime) starts at the first region
#: holding this share of all checks (and at least the fewest that can pass): with 2,000 random
#: checks the first test then tolerates a few errors instead of hinging on the ~60 checks of the
#: most confident 3 %
START_SHARE = 0.1


def coverage_of(confidence: np.ndarray, eligible: np.ndarray) -> np.ndarray:
    """(n,) for every item, the share of the eligible items whose confidence is >= its own
    (the coverage of the smallest confidence region that contains it)."""
    conf = np.asarray(confidence, dtype=np.float64)
    pool = np.sort(conf[np.asarray(eligible, bool)])  # (m,) ascending
    if pool.size == 0:
        return np.ones(conf.size)
    return (pool.size - np.searchsorted(pool, conf, side="left")) / pool.size


def verify_coverage(confidence: np.ndarray, eligible: np.ndarray, *, target_precision: float = DEFAULT_TARGET,
                    certified_coverage: float = 0.0, pending: float = 0.0,
                    heldout: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """The coverage verify checks are drawn from.

    ``pending``: the region the last verify checks were drawn from, while it is not certified
    yet and can still be (:func:`pending_region`): keep drawing there, since a check counts only
    for regions no larger than its own and a region that moves with every recalibration would
    never collect enough. Otherwise the planned region (:func:`plan_coverage`) beyond the
    certified one, else the certified one grown by EXPAND (0 when there is nothing to check).
    ``heldout``: see :func:`plan_coverage`."""
    conf = np.asarray(confidence, dtype=np.float64)
    eligible = np.asarray(eligible, bool)
    if not eligible.any():
        return 0.0
    if pending > certified_coverage:
        return float(pending)
    plan = plan_coverage(conf, eligible, target_precision=target_precision, floor=certified_coverage,
                         heldout=heldout)
    if plan <= 0 and certified_coverage > 0:  # no larger region is expected to pass: try a step beyond
        plan = min(1.0, certified_coverage + EXPAND)
    return plan


def pending_region(check_coverage: np.ndarray, check_region: np.ndarray, check_correct: np.ndarray,
                   last_region: float, *, target_precision: float = DEFAULT_TARGET,
                   confidence_level: float = DEFAULT_LEVEL) -> float:
    """Where the next verify checks are drawn while the region of the last ones (``last_region``)
    is not certified yet: that region while more correct checks could still certify it, else 0
    (start afresh) -- except after a wrong check, when the rest of the plan's sample
    (:func:`planned_checks`) drawn from ``last_region`` would leave fewer checks below the most
    confident wrong one than it takes to pass: then the grid region just inside that check, if it
    is at least SHRINK_FLOOR of ``last_region`` and the plan's sample can still fill it.

    Every region holding a wrong check needs about twice the checks to pass (135 instead of 64
    at 95 % / 95 %), and the fixed sequence certifies up to the region just inside it when enough
    checks lie there; the checks drawn so far below it still count for the smaller region (each
    was drawn from a region containing it). Where enough will lie there anyway, the region stays:
    checks that land beyond the wrong one cannot break the certificate. Which region is drawn
    from may depend on earlier answers (docs/certification.md)."""
    if last_region <= 0:
        return 0.0
    cov = np.asarray(check_coverage, dtype=np.float64)
    region = np.asarray(check_region, dtype=np.float64)
    corr = np.asarray(check_correct, dtype=bool)
    level = round_level(confidence_level, 0)

    def counting(rho: float) -> np.ndarray:
        return (cov <= rho + 1e-12) & (region >= rho - 1e-12)

    def can_pass(rho: float) -> bool:
        pool = counting(rho)
        return more_needed(int(corr[pool].sum()), int(pool.sum()), target_precision=target_precision,
                           confidence_level=level, cap=200, anytime=True) is not None

    wrong = counting(last_region) & ~corr
    if wrong.any():
        inner = math.ceil(float(cov[wrong].min()) * REGION_STEPS - 1e-9) / REGION_STEPS - 1.0 / REGION_STEPS
        need = anytime_min_count(target_precision, level)
        left = max(0, planned_checks(target_precision, confidence_level) - int(counting(last_region).sum()))
        below = int(counting(inner).sum()) if inner > 0 else 0
        if (below + left * inner / last_region < need <= below + left and inner >= SHRINK_FLOOR * last_region
                and can_pass(inner)):
            return float(round(inner, 6))
    return float(last_region) if can_pass(last_region) else 0.0


def candidate_threshold(confidence: np.ndarray, *, target_precision: float = DEFAULT_TARGET,
                        safety: float = CANDIDATE_SAFETY) -> float:
    """The lowest confidence t such that the items with confidence >= t have mean confidence
    >= 1 - (1 - target) / safety; inf when even the most confident item falls short."""
    conf = np.sort(np.asarray(confidence, dtype=np.float64))[::-1]  # (m,) descending
    if conf.size == 0:
        return math.inf
    need = 1.0 - (1.0 - target_precision) / safety
    running = np.cumsum(conf) / np.arange(1, conf.size + 1)  # mean of the top m
    # a threshold accepts a whole tie group: only the last item of each group is a choice
    ends = np.r_[conf[1:] != conf[:-1], True]
    ok = np.flatnonzero((running >= need) & ends)
    if ok.size == 0:
        return math.inf
    return float(conf[ok[-1]])


def expected_certified(confidence: np.ndarray, regions: np.ndarray, n_checks: int, *,
                       target_precision: float = DEFAULT_TARGET, confidence_level: float = DEFAULT_LEVEL,
                       sims: int = PLAN_SIMS, seed: int = 0, wrong_scale: np.ndarray | None = None) -> np.ndarray:
    """(R,) the coverage the fixed-sequence test (:func:`_largest_region`) would certify, on
    average, after ``n_checks`` fresh verify checks drawn from each region (coverage in
    ``regions``) the way :func:`verify_sample` draws them, if each item is right with its
    calibrated ``confidence`` (of the eligible items), its chance of being wrong multiplied by
    ``wrong_scale`` (R,) in each region (default 1). A plan, not evidence: it only decides
    where to draw; only the people's answers certify."""
    conf = np.sort(np.asarray(confidence, dtype=np.float64))[::-1]  # (N,) most confident first
    regions = np.asarray(regions, dtype=np.float64)
    confidence_level = round_level(confidence_level, 0)  # a plan counts on the first round
    need_n = anytime_min_count(target_precision, confidence_level)
    out = np.zeros(regions.size)
    if conf.size == 0 or n_checks < need_n:
        return out
    m = np.arange(1, n_checks + 1)
    errs = np.arange(n_checks + 1)
    # (n + 1, n + 1) does m checks with e errors pass? (m = row, e = column)
    passes = anytime_passes(m[:, None] - errs[None, :], m[:, None], target_precision=target_precision,
                            confidence_level=confidence_level)
    passes = np.vstack([np.zeros((1, n_checks + 1), bool), passes])
    rng = np.random.default_rng(seed)
    u = rng.random((sims, n_checks))
    coin = rng.random((sims, n_checks))
    for i, R in enumerate(regions):
        pos = R * (np.arange(n_checks)[None, :] + u) / n_checks  # (sims, n) stratified, ascending
        item = np.minimum((pos * conf.size).astype(np.int64), conf.size - 1)
        right = 1.0 - (1.0 if wrong_scale is None else wrong_scale[i]) * (1.0 - conf[item])
        k_err = np.cumsum(coin > right, axis=1)  # (sims, n) errors among the first m checks
        ok = passes[m[None, :], k_err]  # (sims, n)
        tested = m >= max(need_n, math.ceil(START_SHARE * n_checks))  # where _largest_region starts
        fail = tested[None, :] & ~ok
        first = np.where(fail.any(axis=1), fail.argmax(axis=1), n_checks)  # index of the first failure
        last_ok = first - 1  # the last region before it (the m-th check's coverage)
        cert = np.where(last_ok >= need_n - 1, np.take_along_axis(pos, np.maximum(last_ok, 0)[:, None], 1)[:, 0], 0.0)
        cert = np.where(first == n_checks, R, cert)  # every check passed: the whole region drawn from
        out[i] = cert.mean()
    return out


def plan_coverage(confidence: np.ndarray, eligible: np.ndarray, *, target_precision: float = DEFAULT_TARGET,
                  confidence_level: float = DEFAULT_LEVEL, n_checks: int | None = None,
                  floor: float = 0.0, heldout: tuple[np.ndarray, np.ndarray] | None = None) -> float:
    """The region (coverage) verify checks should be drawn from: the one where ``n_checks``
    (default :func:`planned_checks`) fresh checks would certify the most on average
    (:func:`expected_certified`), among regions larger than ``floor`` (what is certified
    already); 0 when no region is expected to certify anything. ``heldout``: (calibrated
    confidence, correct) of the human labels scored held out, which rescale each region's
    error rate (:func:`error_scale`)."""
    conf = np.asarray(confidence, dtype=np.float64)[np.asarray(eligible, bool)]
    n_checks = planned_checks(target_precision, confidence_level) if n_checks is None else n_checks
    grid = PLAN_GRID[PLAN_GRID > floor + 1e-9]
    if conf.size == 0 or grid.size == 0:
        return 0.0
    gain = expected_certified(conf, grid, n_checks, target_precision=target_precision,
                              confidence_level=confidence_level, wrong_scale=error_scale(conf, heldout, grid))
    if gain.max() <= floor:
        return 0.0
    # the largest region within PLAN_HEDGE of the best: see PLAN_HEDGE
    return float(grid[np.flatnonzero(gain >= PLAN_HEDGE * gain.max())[-1]])


def error_scale(confidence: np.ndarray, heldout: tuple[np.ndarray, np.ndarray] | None,
                regions: np.ndarray) -> np.ndarray:
    """(R,) how much more often than their calibrated ``confidence`` (the eligible items') says
    the machine labels of each region (coverage) are wrong, as the held-out human labels tell:
    (wrong held-out labels + PLAN_PRIOR_ERRORS) / (errors their confidences expect +
    PLAN_PRIOR_ERRORS), over the held-out labels whose confidence would place them in the region.
    1 without held-out labels. A calibration fitted on all held-out labels at once understates the
    accuracy of the most confident ones (see PLAN_HEDGE); this corrects the plan where the labels
    show it, and only the plan: it is no evidence."""
    regions = np.asarray(regions, dtype=np.float64)
    if heldout is None or len(heldout[0]) == 0:
        return np.ones(regions.size)
    h_conf = np.asarray(heldout[0], dtype=np.float64)
    h_wrong = ~np.asarray(heldout[1], dtype=bool)
    pool = np.sort(np.asarray(confidence, dtype=np.float64))  # (N,) ascending
    h_cov = (pool.size - np.searchsorted(pool, h_conf, side="left")) / max(pool.size, 1)  # (m,)
    inside = h_cov[None, :] <= regions[:, None] + 1e-12  # (R, m)
    wrong = (inside & h_wrong[None, :]).sum(axis=1)
    expected = (inside * (1.0 - h_conf)[None, :]).sum(axis=1)
    return (wrong + PLAN_PRIOR_ERRORS) / (expected + PLAN_PRIOR_ERRORS)


def planned_checks(target_precision: float = DEFAULT_TARGET, confidence_level: float = DEFAULT_LEVEL) -> int:
    """The sample a plan counts on: PLAN_SLACK times the fewest checks that can certify
    (78 at 95 % / 95 %), so one wrong check among the least confident ones shrinks the
    certified region instead of voiding it."""
    return int(math.ceil(PLAN_SLACK * anytime_min_count(target_precision, round_level(confidence_level, 0))))


def round_level(level: float, j: int) -> float:
    """The confidence level round ``j`` of the anytime test is held to (FIRST_ROUND_SHARE)."""
    alpha = 1.0 - level
    return 1.0 - (alpha * FIRST_ROUND_SHARE if j == 0 else alpha * (1.0 - FIRST_ROUND_SHARE) * 0.5 ** j)


def verify_sample(confidence: np.ndarray, eligible: np.ndarray, n: int, *, threshold: float,
                  seed: int = 0) -> np.ndarray:
    """Indices of ``n`` eligible items with confidence >= ``threshold``, stratified by
    confidence (one draw per equal slice); fewer if the region is smaller."""
    conf = np.asarray(confidence, dtype=np.float64)
    region = np.flatnonzero(np.asarray(eligible, bool) & (conf >= threshold))
    if region.size <= n:
        return region
    rng = np.random.default_rng(seed)
    region = region[np.argsort(-conf[region], kind="stable")]  # most confident first
    # slice boundaries: n equal parts of the sorted region; one uniform draw inside each
    edges = np.linspace(0, region.size, n + 1)
    lo, hi = np.floor(edges[:-1]).astype(np.int64), np.floor(edges[1:]).astype(np.int64)
    hi = np.maximum(hi, lo + 1)
    picks = lo + (rng.random(n) * (hi - lo)).astype(np.int64)
    return region[np.minimum(picks, region.size - 1)]


def _passes(k, m, *, target: float, level: float, anytime: bool) -> np.ndarray:
    """Whether k right of m checks certify ``target``: the anytime-valid test
    (:func:`labelloop.autolabel.anytime_passes`) or the one-look Clopper-Pearson bound."""
    if anytime:
        return anytime_passes(k, m, target_precision=target, confidence_level=level)
    return precision_lower_bound(k, m, confidence_level=level) >= target


def _min_count(target: float, level: float, anytime: bool) -> int:
    """Fewest checks that can pass :func:`_passes` (all right)."""
    return anytime_min_count(target, level) if anytime else min_verified_count(target, level)


def more_needed(correct: int, checked: int, *, target_precision: float = DEFAULT_TARGET,
                confidence_level: float = DEFAULT_LEVEL, cap: int = 10_000, anytime: bool = False) -> int | None:
    """Fewest further all-correct checks x with which correct + x right of checked + x pass
    (:func:`_passes`); None if more than ``cap`` would be needed."""
    x = max(0, _min_count(target_precision, confidence_level, anytime) - checked)
    while x <= cap:  # blocks of 100 steps, one vectorised test each
        xs = [x]
        while len(xs) < 100 and xs[-1] <= cap:
            xs.append(xs[-1] + (1 if xs[-1] < 100 else max(1, xs[-1] // 20)))
        xs = np.array([v for v in xs if v <= cap])
        ok = _passes(correct + xs, checked + xs, target=target_precision, level=confidence_level, anytime=anytime)
        if ok.any():
            return int(xs[np.argmax(ok)])
        x = int(xs[-1]) + (1 if xs[-1] < 100 else max(1, int(xs[-1]) // 20))   # the block's next step
    return None


@dataclass
class Certificate:
    """What the random checks say: the certified coverage (per predicted class) and how far
    from certified it is."""

    coverage: np.ndarray          # (C,) accept the items within this coverage; 0 = not certified
    certified: bool
    checked: int                  # random checks in the pool
    correct: int
    precision_estimate: float     # among the checks the certified regions hold (nan: none)
    precision_lower: float
    reason: str
    candidate: float              # the coverage worth certifying now
    checked_in_candidate: int = 0
    correct_in_candidate: int = 0
    more_needed: int | None = None  # further all-correct checks that would certify the candidate

    def accepts(self, coverage: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        """(n,) bool: items (their current coverage and predicted class) the certificate accepts."""
        return np.asarray(coverage) <= self.coverage[np.asarray(predicted, dtype=np.int64)] + 1e-12

    def to_dict(self) -> dict:
        f = lambda v: None if v is None or not np.isfinite(v) else round(float(v), 6)  # noqa: E731
        return {"certified": self.certified, "random_checks": self.checked, "correct": self.correct,
                "certified_coverage": f(float(self.coverage.max())) if self.coverage.size else 0.0,
                "precision_estimate": f(self.precision_estimate), "precision_lower": f(self.precision_lower),
                "candidate_coverage": f(self.candidate), "checks_in_candidate": self.checked_in_candidate,
                "more_needed": self.more_needed, "reason": self.reason}


def _largest_region(cov: np.ndarray, region: np.ndarray, correct: np.ndarray, *, target: float, level: float,
                    min_count: int, anytime: bool = False) -> tuple[float, int, int, float]:
    """The largest coverage rho a fixed-sequence test certifies.

    A region rho is tested on the checks drawn from a region at least rho large
    (``region >= rho``) and lying within it (``cov <= rho``): a uniform sample of the top-rho
    items, whose one-sided lower bound of k / m must reach ``target``. The regions are tested in
    a fixed order, most confident first (every check's coverage and every region checks were
    drawn from, ascending), each at the full level, and testing stops at the first that fails
    (Learn-then-Test's fixed sequence: the chance that any region below the target passes stays
    at most 1 - ``level``, however many are tested). The sequence starts at the first region
    holding ``min_count`` checks (fewer can never pass) and START_SHARE of all checks (so
    that with thousands of checks it does not hinge on the few of the most confident items);
    smaller regions are skipped. That depends only on where the checks were drawn, never on
    whether they were right. Returns ``(rho, k, m, lower bound)``;
    rho = 0 when none passes. This one-look test (Clopper-Pearson) is what multi-label bars use;
    ``anytime``: the test valid at every look that :func:`certify` runs (:func:`_anytime_region`)."""
    if cov.size == 0:
        return 0.0, 0, 0, 0.0
    if anytime:
        return _anytime_region(cov, region, correct, target=target, level=level)[:4]
    rho = np.unique(np.r_[cov, region])  # (R,) regions tested, ascending
    rho = rho[rho > 0]
    k = np.zeros(rho.size, np.int64)
    m = np.zeros(rho.size, np.int64)
    for s in range(0, rho.size, 512):  # (r, m) blocks: bounded memory
        pool = (cov[None, :] <= rho[s:s + 512, None] + 1e-12) & (region[None, :] >= rho[s:s + 512, None] - 1e-12)
        m[s:s + 512] = pool.sum(axis=1)
        k[s:s + 512] = (pool & correct[None, :]).sum(axis=1)
    tested = m >= max(min_count, math.ceil(START_SHARE * cov.size))
    fails = np.flatnonzero(tested & ~_passes(k, m, target=target, level=level, anytime=anytime))
    stop = int(fails[0]) if fails.size else rho.size  # the sequence ends at its first failure
    ok = np.flatnonzero(tested[:stop])
    if ok.size == 0:
        return 0.0, 0, 0, 0.0
    i = int(ok[-1])  # the largest region that passed before the first failure
    lb = anytime_lower_bound(k[i], m[i], confidence_level=level) if anytime \
        else precision_lower_bound(k[i], m[i], confidence_level=level)
    return float(rho[i]), int(k[i]), int(m[i]), float(lb)


@dataclass(frozen=True)
class _Round:
    index: int     # 0 for the first round
    first: int     # the index of its first check
    level: float   # the confidence level it is held to (round_level)
    start_after: int  # checks of the round in before its start is set


def _rounds(target: float, level: float):
    """The anytime test's rounds, in order (FIRST_ROUND_SHARE, ROUND_LENGTH): round j is held to
    :func:`round_level` and sets its start once 2^j x PLAN_SLACK x its fewest passing checks are in."""
    first, j = 0, 0
    while True:
        lv = round_level(level, j)
        after = 2 ** j * int(math.ceil(PLAN_SLACK * anytime_min_count(target, lv)))
        yield _Round(j, first, lv, after)
        first += ROUND_LENGTH * after
        j += 1


def _anytime_region(cov: np.ndarray, region: np.ndarray, correct: np.ndarray, *, target: float,
                    level: float) -> tuple[float, int, int, float, _Round]:
    """:func:`_largest_region` valid at every look: ``(rho, k, m, lower bound, round)``.

    The checks arrive in the order given (the order they were drawn) and are cut into rounds
    (:func:`_rounds`): a round that has not certified after ROUND_LENGTH x the checks it set its
    start on ends, and only the checks after it count for the next, which is held to a stricter
    level; the levels of all rounds sum to ``level``'s error, so the guarantee holds over every
    round and every look (a union bound), and a failed start is not final. Within a round
    (:func:`_round_region`) the regions tested are a fixed grid from a start outwards."""
    for rnd in _rounds(target, level):
        end = rnd.first + ROUND_LENGTH * rnd.start_after
        res, passed_at = _round_region(cov[rnd.first:], region[rnd.first:], correct[rnd.first:], target=target,
                                       level=rnd.level, start_after=rnd.start_after)
        if cov.size <= end or (passed_at is not None and passed_at < end - rnd.first):
            return (*res, rnd)
    raise AssertionError("unreachable: rounds grow without bound")


def _region_grid(cov: np.ndarray, region: np.ndarray) -> np.ndarray:
    """(G,) the regions of the fixed grid k / REGION_STEPS that :func:`_round_region` tests, less
    those that cannot differ from both neighbours: which checks count for a region changes only
    at the first grid region holding a check (its coverage rounded up) and the first one beyond
    a region checks were drawn from, so the grid regions next to those points (and the largest,
    1) stand for all others. The fixed sequence run on them ends where it ends on the whole grid,
    at the same region, without an (m, REGION_STEPS) table."""
    g = REGION_STEPS
    edges = np.r_[np.ceil(np.asarray(cov) * g - 1e-6), np.floor(np.asarray(region) * g + 1e-6) + 1]
    ks = np.unique(np.clip((edges[:, None] + np.arange(-1, 2)[None, :]).ravel(), 1, g))
    return np.r_[ks[ks < g], g].astype(np.float64) / g


def _running_count(flags: np.ndarray) -> np.ndarray:
    """(m, G) int32 running sums of (m, G) flags down the first axis, computed along the last
    axis of the transpose: numpy's cumsum down the first axis of a C-ordered table is ~4x slower
    (2,000 checks x 1,000 regions: 29 ms against 8)."""
    return np.cumsum(np.ascontiguousarray(flags.T), axis=1, dtype=np.int32).T


def _round_region(cov: np.ndarray, region: np.ndarray, correct: np.ndarray, *, target: float, level: float,
                  start_after: int) -> tuple[tuple[float, int, int, float], int | None]:
    """One round of :func:`_anytime_region`: ``((rho, k, m, lower bound), the index of the check
    at which its start first passed, or None)``.

    The regions tested are a fixed grid (k / REGION_STEPS), each judged by its anytime-valid
    e-process (:func:`labelloop.autolabel.anytime_passes`) on the checks that count for it
    (drawn from a region at least that large and lying in it). The fixed sequence starts at a
    region *s* and goes outwards, stopping at the first region that does not pass (too few
    checks or too many wrong). *s* is set by replaying the checks in order: once
    ``start_after`` checks are in (80 at 95 % / 95 % in the first round: the sample a plan
    counts on, :func:`planned_checks`), *s* is the smallest region holding enough checks to pass
    (64), so a wrong check among the less confident ones only ends the sequence there; later *s*
    moves inwards (to the smallest region holding enough checks) only at a check after which
    *s* itself passes. A start that fails stays where it is for the rest of the round: letting
    it shrink past a wrong check would give every shrink a fresh chance to pass by luck
    (measured: a flat 94 %-precise pool was then wrongly certified in 11 % of runs looked at
    every 10 checks, against 5 % allowed). The rule depends on the checks only, never on when
    anyone looks, so every look sees the same sequence."""
    none = (0.0, 0, 0, 0.0)
    if cov.size == 0:
        return none, None
    rho = _region_grid(cov, region)  # (G,)
    need = anytime_min_count(target, level)
    inside = (cov[:, None] <= rho[None, :] + 1e-9) & (region[:, None] >= rho[None, :] - 1e-9)  # (m, G)
    m_run = _running_count(inside)  # (m, G) checks counting for each region after each check
    k_run = _running_count(inside & correct[:, None])
    enough = m_run >= need
    first = np.where(enough.any(axis=1), enough.argmax(axis=1), -1)  # (m,) smallest region holding enough
    first[:start_after - 1] = -1  # no start before the round's sample is in
    passes = k_run >= anytime_min_correct(cov.size, target, level)[m_run]  # (m, G): anytime_passes, by lookup
    start, passed_at = -1, None
    for j in np.flatnonzero(first >= 0):
        if start < 0 or passes[j, start]:
            start = min(int(first[j]), start) if start >= 0 else int(first[j])
        if passed_at is None and passes[j, start]:
            passed_at = int(j)
    if start < 0:
        return none, passed_at
    k, m, ok = k_run[-1, start:], m_run[-1, start:], passes[-1, start:]  # (G - start,)
    stop = int(np.argmin(ok)) if not ok.all() else ok.size  # the sequence ends at its first failure
    if stop == 0:
        return none, passed_at
    i = stop - 1
    lb = float(anytime_lower_bound(k[i], m[i], confidence_level=level))
    return (float(rho[start + i]), int(k[i]), int(m[i]), lb), passed_at


def certify(check_coverage: np.ndarray, check_predicted: np.ndarray, check_correct: np.ndarray, *,
            n_classes: int, candidate: float, check_region: np.ndarray | None = None,
            target_precision: float = DEFAULT_TARGET, confidence_level: float = DEFAULT_LEVEL,
            per_class: bool = True, anytime: bool = True, batch_ends: Sequence[int] = ()) -> Certificate:
    """The largest regions random checks certify: (m,) coverage and predicted class of each
    checked item when it was drawn, whether the person's label agreed, and ``check_region``:
    the coverage of the region it was drawn from (1 for the random share of `next`, which draws
    from all items; default 1). A check only counts for regions no larger than the one it was
    drawn from: 50 checks of the most confident half say nothing about the rest. ``candidate``:
    the coverage verify draws from now. Per predicted class where a class has enough checks of
    its own, else one region for all.

    ``batch_ends``: the numbers of checks (in the order given) after which a batch of draws was
    complete. With the anytime test a region certified at any of these looks stays certified
    (the largest such, per class): the test's e-processes cross their bar at some look with
    probability at most the error level whenever a region's precision is below the target
    (Ville's inequality), so keeping what a look certified costs no validity, while later
    checks drawn further out no longer take it back by landing wrong inside it."""
    cov = np.asarray(check_coverage, dtype=np.float64)
    region = np.ones_like(cov) if check_region is None else np.asarray(check_region, dtype=np.float64)
    pred = np.asarray(check_predicted, dtype=np.int64)
    corr = np.asarray(check_correct, dtype=bool)
    need_n = _min_count(target_precision, round_level(confidence_level, 0) if anytime else confidence_level, anytime)
    rho, k, m, lower, rnd, coverage = _certified_at(cov, region, pred, corr, n_classes=n_classes,
                                                    target=target_precision, level=confidence_level,
                                                    per_class=per_class, anytime=anytime, need_n=need_n)
    kept_at = None
    for e in sorted({int(e) for e in batch_ends if 0 < int(e) < cov.size}) if anytime else ():
        r = _certified_at(cov[:e], region[:e], pred[:e], corr[:e], n_classes=n_classes, target=target_precision,
                          level=confidence_level, per_class=per_class, anytime=anytime, need_n=need_n)
        if r[5].max() > coverage.max() + 1e-12:
            rho, k, m, lower, kept_at = *r[:4], e
        coverage = np.maximum(coverage, r[5])
    certified = bool((coverage > 0).any())
    counts = np.arange(cov.size) >= rnd.first  # the checks of the current round
    in_cand = (cov <= candidate + 1e-12) & (region >= candidate - 1e-12) & counts
    kc, mc = int(corr[in_cand].sum()), int(in_cand.sum())
    need = more_needed(kc, mc, target_precision=target_precision, confidence_level=rnd.level,
                       anytime=anytime) if candidate > 0 else None
    if need is not None and anytime:  # the sequence starts once the round's sample is in (_anytime_region)
        need = max(need, rnd.start_after - int(counts.sum()))
    earlier = "" if kept_at is not None else (f" (round {rnd.index + 1} of checks: the first {rnd.first} did not certify and no longer "
               f"count; this round is held to {rnd.level:.2%} confidence)") if rnd.first else ""
    if certified:
        reason = (f"certified: the {coverage.max():.0%} most confident machine labels; {m} random checks drawn "
                  f"from there, {k} correct: precision >= {lower:.3f} at {confidence_level:.0%} confidence")
        if kept_at is not None:
            reason += (f" (certified once the first {kept_at} checks were in; a certificate valid at every "
                       "look is kept)")
        if need and candidate > coverage.max():
            reason += (f"; {need} more correct checks would certify the {candidate:.0%} most confident "
                       f"(`labelloop next --strategy verify --n {need}`)")
    elif candidate <= 0:
        reason = (f"no region of the predictions is expected to reach {target_precision:.0%} precision "
                  "yet: label more items (`labelloop next`) and refresh")
    elif need is None:
        reason = (f"{mc} random checks of the {candidate:.0%} most confident machine labels, {kc} correct: "
                  f"they do not reach {target_precision:.0%}; label more items (`labelloop next`) and refresh")
    else:
        reason = (f"{mc} random checks of the {candidate:.0%} most confident machine labels, {kc} correct; "
                  f"{need} more correct checks would certify {target_precision:.0%} precision: "
                  f"run `labelloop next --strategy verify --n {need}`")
    reason += earlier
    return Certificate(coverage=coverage, certified=certified, checked=int(cov.size), correct=int(corr.sum()),
                       precision_estimate=k / m if m else float("nan"), precision_lower=lower, reason=reason,
                       candidate=float(candidate), checked_in_candidate=mc, correct_in_candidate=kc,
                       more_needed=need if not certified or candidate > coverage.max() else None)


def _certified_at(cov: np.ndarray, region: np.ndarray, pred: np.ndarray, corr: np.ndarray, *, n_classes: int,
                  target: float, level: float, per_class: bool, anytime: bool, need_n: int):
    """What :func:`certify` finds on these checks alone: ``(rho, k, m, lower, round, (C,) coverage)``."""
    if anytime:
        rho, k, m, lower, rnd = _anytime_region(cov, region, corr, target=target, level=level)
    else:
        rho, k, m, lower = _largest_region(cov, region, corr, target=target, level=level, min_count=need_n)
        rnd = _Round(0, 0, level, 0)
    coverage = np.full(n_classes, rho)
    if per_class:
        for c in range(n_classes):
            own = pred == c
            if own.sum() >= need_n:  # the class's own evidence, even when it says "nothing"
                coverage[c] = _largest_region(cov[own], region[own], corr[own], target=target,
                                              level=level, min_count=need_n, anytime=anytime)[0]
    return rho, k, m, lower, rnd, coverage
