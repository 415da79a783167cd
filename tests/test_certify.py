"""Certification of auto-labels (labelloop.loop.certify): the fixed-sequence test, the verify
plan, and that only random draws ever count as a random sample."""

from __future__ import annotations

import numpy as np

import math
import sys

import pytest

from labelloop.autolabel import (
    anytime_log_evalue,
    anytime_lower_bound,
    anytime_min_correct,
    anytime_min_count,
    anytime_passes,
    min_verified_count,
    precision_lower_bound,
)
from labelloop.loop import certify, choose, coverage_of, pending_region
from labelloop.loop.certify import (
    FIRST_ROUND_SHARE,
    PLAN_GRID,
    PLAN_HEDGE,
    PLAN_SLACK,
    REGION_STEPS,
    SHRINK_FLOOR,
    PLAN_PRIOR_ERRORS,
    ROUND_LENGTH,
    error_scale,
    expected_certified,
    plan_coverage,
    planned_checks,
    round_level,
)


def test_the_fixed_sequence_stops_at_the_first_region_that_fails():
    """200 random checks, 2 wrong among the 60 most confident: the first region tested (62+
    checks) fails, so nothing larger is certified -- although the 200 checks together (198
    right, lower bound 0.968) would pass a test of the whole region on its own."""
    cov = np.linspace(0.005, 1.0, 200)
    right = np.ones(200, bool)
    right[[10, 40]] = False
    cert = certify(cov, np.zeros(200, int), right, n_classes=1, candidate=1.0)
    assert not cert.certified and cert.coverage[0] == 0
    # 100 checks, two errors among the least confident: the regions below the first pass, the
    # one holding it (81 checks, 1 wrong: 135 would be needed) ends the sequence, which certifies
    # up to the grid region just inside the wrong check (1 / REGION_STEPS finer than the checks)
    cov = np.linspace(0.01, 1.0, 100)
    late = np.ones(100, bool)
    late[[80, 90]] = False
    cert = certify(cov, np.zeros(100, int), late, n_classes=1, candidate=1.0)
    assert cert.certified and cert.coverage[0] == pytest.approx(cov[80] - 1 / REGION_STEPS)


def test_a_region_checks_were_drawn_from_is_certified_whole():
    """80 all-correct checks (the plan's sample) drawn from the 70 % most confident: the whole
    70 % passes (the region was fixed before the draws), not just up to the least confident check."""
    n = planned_checks(0.95)
    cov = np.sort(np.random.default_rng(0).uniform(0, 0.7, n))
    cert = certify(cov, np.zeros(n, int), np.ones(n, bool), n_classes=1, candidate=0.7,
                   check_region=np.full(n, 0.7))
    assert cert.coverage[0] == 0.7


def test_the_plan_draws_from_the_region_checks_are_expected_to_certify():
    conf = np.r_[np.full(700, 0.999), np.full(300, 0.6)]  # 70 % near-certain, 30 % coin flips
    eligible = np.ones(1000, bool)
    n = planned_checks(0.95)
    assert n == 80  # 1.25 x 64 (the first round's level, certify.FIRST_ROUND_SHARE)
    gain = expected_certified(conf, np.array([0.5, 0.7, 0.9, 1.0]), n)
    # drawing beyond the certain 70 % wastes checks on items that break the certificate
    assert gain[1] > 0.6 and gain[1] > gain[3]
    # the plan: the largest region expected to certify within PLAN_HEDGE of the best one
    grid = PLAN_GRID
    gains = expected_certified(conf, grid, n)
    plan = plan_coverage(conf, eligible)
    assert plan >= 0.7 and gains[grid == plan][0] >= PLAN_HEDGE * gains.max()
    assert (gains[grid > plan] < PLAN_HEDGE * gains.max()).all()
    assert plan_coverage(np.full(1000, 0.7), eligible) == 0.0  # nothing can reach 95 %
    assert expected_certified(conf, np.array([0.7]), 30)[0] == 0.0  # fewer than 64 checks never certify


def test_after_a_wrong_check_verify_draws_just_inside_it_when_too_few_would_land_there():
    """40 checks drawn from the 90 % most confident. All right: the region stays. One wrong at
    coverage 0.6: the plan's other 40 checks from the 90 % would leave about 53 below it, fewer
    than the 64 it takes to pass, so the next come from the 59.9 % (the 26 right ones below it
    still count there). Wrong at 0.8: about 71 would land below it anyway, and those beyond it
    cannot break the certificate, so the region stays. Wrong among the most confident (below
    SHRINK_FLOOR of the region): the region stays too (135 checks can still pass it)."""
    assert planned_checks(0.95) == 80 and anytime_min_count(0.95, round_level(0.95, 0)) == 64
    cov = (np.arange(40) + 0.5) / 40 * 0.9
    region = np.full(40, 0.9)
    right = np.ones(40, bool)
    assert pending_region(cov, region, right, 0.9) == 0.9
    for at, expected in ((0.6, 0.599), (0.8, 0.9), (0.02, 0.9)):
        c, wrong = cov.copy(), right.copy()
        i = int(np.argmin(abs(cov - at)))
        c[i], wrong[i] = at, False
        assert pending_region(c, region, wrong, 0.9) == expected, at
    assert 0.02 < SHRINK_FLOOR * 0.9
    # checks drawn from a smaller region do not count for a larger one: nothing moves
    assert pending_region(c, np.full(40, 0.5), wrong, 0.9) == 0.9


def test_the_held_out_labels_correct_the_plan_where_the_calibration_understates_the_top():
    """Calibrated confidences from 0.999 down to 0.9, as a calibration fitted on all labels at
    once may say where the items are more often right: 80 checks from the whole are expected to
    meet a wrong one among the less confident, so the plan stops short of it. 50 held-out labels
    spread over the same confidences, all right, say the errors are rarer: the plan draws from
    all items. A quarter of them wrong moves it the other way; without held-out labels nothing
    changes."""
    conf = np.linspace(0.999, 0.9, 1000)
    eligible = np.ones(1000, bool)
    grid = np.array([0.5, 1.0])
    assert (error_scale(conf, None, grid) == 1).all()
    held = conf[::20]
    right = (held, np.ones(held.size, bool))
    scale = error_scale(conf, right, grid)  # (0 wrong + prior) / (expected + prior)
    assert scale[1] == pytest.approx(PLAN_PRIOR_ERRORS / ((1 - held).sum() + PLAN_PRIOR_ERRORS))
    assert scale[1] < scale[0] < 1  # fewer held-out labels in the top half: less evidence
    plain = plan_coverage(conf, eligible)
    assert plain < 1.0 and plan_coverage(conf, eligible, heldout=right) == 1.0
    wrong = (held, np.arange(held.size) % 4 > 0)  # every fourth wrong
    assert (error_scale(conf, wrong, grid) > 1).all()
    assert plan_coverage(conf, eligible, heldout=wrong) < plain


def test_the_compressed_region_grid_certifies_what_the_whole_grid_does():
    """_round_region tests only the grid regions where which checks count can change (and their
    neighbours): on random pools of checks, drawn from several regions, the anytime test ends
    at the same region, count and bound as on every k / REGION_STEPS."""
    cert_mod = sys.modules["labelloop.loop.certify"]
    rng = np.random.default_rng(3)
    full = lambda cov, region: np.arange(1, REGION_STEPS + 1) / REGION_STEPS  # noqa: E731
    certified = 0
    for t in range(12):
        m = int(rng.integers(70, 160))
        region = rng.choice([0.5, 0.77, 0.9, 1.0], size=m)
        cov = region * rng.random(m)
        correct = rng.random(m) < [0.97, 0.99, 1.0][t % 3]
        fine = cert_mod._anytime_region(cov, region, correct, target=0.95, level=0.95)[:4]
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(cert_mod, "_region_grid", full)
            whole = cert_mod._anytime_region(cov, region, correct, target=0.95, level=0.95)[:4]
        assert fine == whole
        certified += fine[0] > 0
    assert certified >= 3  # the comparison covers certificates, not only "nothing"


def _verify_until_certified(conf, correct, *, seed, budget=120, batch=10, target=0.95):
    """verify batches drawn by ``choose`` on fixed calibrated scores, each check answered by
    ``correct``; the loop of `next --strategy verify` + `autolabel`, without refreshes.
    Returns (checks spent when first certified or None, the certificate then)."""
    n = conf.size
    P = np.c_[conf, 1 - conf]  # class 0 predicted for every item
    eligible = np.ones(n, bool)
    cov_now = coverage_of(conf, eligible)
    drawn, region = [], []
    cert, last = None, 0.0
    while len(drawn) < budget:
        covs, regs = cov_now[drawn], np.asarray(region, float)
        pending = pending_region(covs, regs, correct[drawn], last) if last else 0.0
        unl = np.setdiff1d(np.arange(n), drawn)
        ch = choose("verify", batch, labeled=np.asarray(drawn, np.int64), unlabeled=unl, probabilities=P,
                    seed=seed + len(drawn), verify_eligible=np.isin(np.arange(n), unl), pending_coverage=pending)
        last = ch.details["coverage"]
        # a check's coverage is measured among the items still eligible when it was drawn
        cov_drawn = coverage_of(conf, np.isin(np.arange(n), unl))
        for r, reg in zip(ch.rows, ch.regions):
            drawn.append(int(r))
            region.append(reg)
            cov_now[r] = cov_drawn[r]
        d = np.asarray(drawn)
        cert = certify(cov_now[d], np.zeros(d.size, int), correct[d], n_classes=2, candidate=last,
                       check_region=np.asarray(region, float), target_precision=target)
        if cert.certified:
            return len(drawn), cert
    return None, cert


def test_a_calibrated_synthetic_set_certifies_with_the_planned_number_of_checks():
    """5,000 items whose scores are calibrated (right with probability = score): verify checks
    drawn where the plan says certify a large share, typically within the planned 78 checks,
    and what is accepted then meets the target. (The one-look Clopper-Pearson test certified 6
    of 8; the anytime-valid test, which cannot let its start shrink past a wrong check, 5 when
    it was held to the whole level at its first round, 4 at the 90 % of it it now spends there
    to leave later rounds a level, certify.FIRST_ROUND_SHARE.)"""
    rng = np.random.default_rng(0)
    spent, shares, precisions = [], [], []
    for seed in range(8):
        conf = np.clip(1 - rng.beta(1, 60, 5000) - 0.08 * (rng.random(5000) < 0.15), 0, 1)
        correct = rng.random(5000) < conf
        used, cert = _verify_until_certified(conf, correct, seed=seed)
        if used is None:
            continue
        accept = cert.accepts(coverage_of(conf, np.ones(5000, bool)), np.zeros(5000, int))
        spent.append(used)
        shares.append(accept.mean())
        precisions.append(correct[accept].mean())
    assert len(spent) >= 4, spent
    assert np.median(spent) <= planned_checks(0.95) + 10 and min(spent) >= anytime_min_count(0.95), spent
    assert np.median(shares) > 0.6 and min(precisions) >= 0.95, (shares, precisions)


def test_actively_chosen_labels_never_count_as_random_checks():
    """A simulated run with margin sampling and no random share has no certification checks at
    all, so nothing is ever certified however many labels it collects; with the random share of
    ``auto`` only the random rows are checks."""
    from labelloop.simulate import SimulationData, run_one

    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 8)) * 4
    y = np.repeat(np.arange(3), 100)
    data = SimulationData("blobs", (centers[y] + rng.normal(size=(300, 8))).astype(np.float32), y,
                          ["a", "b", "c"], "test")
    margin = run_one(data, "margin", budget=90, step=30, seed=0)
    assert all(r["random_checks"] == 0 and not r["certified"] and r["auto_accepted"] == 0 for r in margin)
    ch = choose("margin", 20, labeled=np.arange(0, 300, 10), unlabeled=np.setdiff1d(np.arange(300), np.arange(0, 300, 10)),
                probabilities=np.full((300, 3), 1 / 3), explore=0.25, seed=0)
    assert [g for k, g in zip(ch.kinds, ch.regions) if k == "strategy"] == [None] * ch.kinds.count("strategy")
    assert ch.kinds.count("random") == 5 and all(g == 1.0 for k, g in zip(ch.kinds, ch.regions) if k == "random")


def _ever_passes(p: float, n: int, passes) -> float:
    """Exact chance that k right of m checks pass ``passes`` at some m <= n, each check right
    with probability ``p`` and a look after every check (dynamic programming over k)."""
    alive = np.zeros(n + 1)  # alive[k]: chance of k right so far and no pass yet
    alive[0], hit, k = 1.0, 0.0, np.arange(n + 1)
    for m in range(1, n + 1):
        alive = np.r_[0.0, alive[:-1]] * p + alive * (1 - p)
        ok = passes(k, np.full(n + 1, m)) & (k <= m)
        hit += alive[ok].sum()
        alive[ok] = 0.0
    return float(hit)


@pytest.mark.parametrize("target,level", [(0.95, 0.95), (0.9, 0.99), (0.99, 0.9), (0.8, 0.9875)])
def test_the_fewest_right_checks_table_gives_the_same_decision_as_the_test(target, level):
    """certify judges every (check, region) pair by ``correct >= anytime_min_correct(...)[checked]``:
    the same decision as anytime_passes for every count up to 300 (and a table cut from a
    larger cached one agrees with a fresh one)."""
    m = np.arange(301)[None, :]
    k = np.minimum(np.arange(301)[:, None], m)
    table = anytime_min_correct(300, target, level)
    assert table.shape == (301,)
    assert ((k >= table[m]) == anytime_passes(k, m, target_precision=target, confidence_level=level)).all()
    assert (anytime_min_correct(1000, target, level)[:301] == table).all()
    assert table[anytime_min_count(target, level)] == anytime_min_count(target, level)


def test_the_anytime_test_needs_about_as_many_checks_as_clopper_pearson_and_holds_at_every_look():
    """The e-process (a mixture of bets on "right" at the odds of the target, autolabel.BET_*):
    62 all-right checks certify 95 % (Clopper-Pearson at one look: 59); a look after every
    single check up to 1,000, at precision exactly 95 %, passes in 4.8 % of runs (Ville: <= 5 %),
    where Clopper-Pearson looked at as often passes in 23 %."""
    assert anytime_min_count(0.95) == 62 and min_verified_count(0.95) == 59
    m = np.arange(400)
    assert [int(np.argmax(anytime_passes(m - e, m))) for e in (1, 3)] == [135, 247]  # 1 and 3 wrong
    assert math.isclose(float(np.exp(anytime_log_evalue(62, 62, 0.95))), 20.4994, abs_tol=1e-3)
    assert float(anytime_lower_bound(62, 62)) == pytest.approx(0.95) and float(anytime_lower_bound(61, 61)) < 0.95
    assert anytime_lower_bound(0, 10) == 0.0
    anytime = _ever_passes(0.95, 1000, lambda k, m: anytime_passes(k, m))
    cp = _ever_passes(0.95, 1000, lambda k, m: precision_lower_bound(k, m) >= 0.95)
    assert round(anytime, 4) == 0.0476 and round(cp, 4) == 0.2307


def test_a_region_below_the_target_is_rarely_certified_at_any_look():
    """A flat 94 % precise pool, 200 uniform checks with a certificate after every 20: some look
    certifies a region truly below 95 % in at most ~5 % of runs (Clopper-Pearson in place of the
    anytime test: 11 %; benchmarks/results/certify_looks.md)."""
    rng = np.random.default_rng(3)
    n, reps, wrong = 2000, 150, 0
    cov_item = (np.arange(n) + 1) / n
    for _ in range(reps):
        right = rng.random(n) < 0.94
        truth = np.cumsum(right) / np.arange(1, n + 1)  # true precision of every top region
        d = rng.choice(n, 200, replace=False)
        bad = False
        for m in range(20, 201, 20):
            cert = certify(cov_item[d[:m]], np.zeros(m, int), right[d[:m]], n_classes=1, candidate=1.0,
                           per_class=False)
            bad |= cert.certified and truth[int(round(cert.coverage[0] * n)) - 1] < 0.95
        wrong += bad
    assert wrong / reps <= 0.05, wrong


def test_a_failed_first_round_is_not_final_and_its_checks_no_longer_count():
    """The first round's start (set at the 80th check) holds 2 wrong checks: it never passes.
    After 2 x 80 checks a second round begins on fresh checks only, held to a stricter level
    (122 all-right checks needed instead of 64), and certifies once enough are in."""
    first = planned_checks(0.95)
    assert first == 80
    n1 = ROUND_LENGTH * first  # checks in the failed first round
    cov = np.random.default_rng(1).uniform(0, 0.5, n1 + 400)
    right = np.ones(cov.size, bool)
    right[[3, 7]] = False  # early, in the most confident half: the first round's start fails
    stuck = certify(cov[:n1], np.zeros(n1, int), right[:n1], n_classes=1, candidate=0.5,
                    check_region=np.full(n1, 0.5))
    assert not stuck.certified
    r2 = round_level(0.95, 1)
    assert r2 == pytest.approx(1 - 0.05 * (1 - FIRST_ROUND_SHARE) / 2)
    assert anytime_min_count(0.95, r2) == 122
    after = 2 * math.ceil(PLAN_SLACK * 122)  # the second round sets its start on twice its plan: 306
    early = certify(cov[:n1 + after - 1], np.zeros(n1 + after - 1, int), right[:n1 + after - 1], n_classes=1,
                    candidate=0.5, check_region=np.full(n1 + after - 1, 0.5))
    assert not early.certified and "round 2" in early.reason and early.more_needed == 1
    done = certify(cov[:n1 + after], np.zeros(n1 + after, int), right[:n1 + after], n_classes=1, candidate=0.5,
                   check_region=np.full(n1 + after, 0.5))
    assert done.certified and done.coverage[0] == pytest.approx(0.5)
    assert "the first 160 did not certify" in done.reason


def test_a_region_certified_at_a_batch_end_stays_certified_when_later_checks_land_wrong_inside_it():
    """Ville's inequality bounds the chance that the e-process *ever* crosses its bar, so what a
    look at the end of a batch certified is kept (``batch_ends``); without the batch ends the
    same checks, read at the last look only, certify nothing."""
    rng = np.random.default_rng(0)
    cov = np.r_[np.linspace(0.005, 0.8, 80), rng.uniform(0, 1, 40)]   # 80 checks of the top 80 %, then 40 of all
    region = np.r_[np.full(80, 0.8), np.ones(40)]
    correct = np.ones(120, bool)
    wrong = [85, 95, 105, 115]
    correct[wrong], cov[wrong] = False, 0.3                          # 4 wrong, inside the certified 80 %
    pred = np.zeros(120, np.int64)
    args = dict(n_classes=2, candidate=1.0, check_region=region, per_class=False)
    first = certify(cov[:80], pred[:80], correct[:80], **{**args, "check_region": region[:80]})
    assert first.coverage.max() == pytest.approx(0.8)
    assert certify(cov, pred, correct, **args).coverage.max() == 0.0
    kept = certify(cov, pred, correct, **args, batch_ends=list(range(10, 120, 10)))
    assert kept.certified and kept.coverage.max() == pytest.approx(0.8)
    assert kept.checked == 120 and "once the first 80 checks were in" in kept.reason
    # a look inside a batch is not one of them: cut before the 80th check, nothing was certified yet
    assert certify(cov, pred, correct, **args, batch_ends=[75, 100]).coverage.max() == 0.0


def test_the_held_out_scores_are_read_once_per_refresh(project_factory, tmp_path):
    """The certificate, ``checks_wanted`` and every verify query plan on the held-out labels of
    the current refresh: one read per refresh (the same arrays each time, read-only), the next
    refresh's own ones after it."""
    rng = np.random.default_rng(0)
    words = {"cat": "purr whisker meow paw tail fur".split(), "dog": "bark fetch leash bone wag paw".split()}
    rows = [(f"{c}{i}", " ".join(rng.choice(w, size=5))) for c, w in words.items() for i in range(30)]
    (tmp_path / "a.csv").write_text("id,text\n" + "".join(f"{i},{t}\n" for i, t in rows))
    p = project_factory("text", classes=["cat", "dog"])
    p.import_(tmp_path / "a.csv")
    p.embed("tfidf")
    p.label([(f"{c}{i}", c) for c in words for i in range(4)])
    p.refresh(full=True)
    p.autolabel(target_precision=0.9)
    pred = p.predictions()
    first = p._plan_heldout(pred)
    assert len(first[0]) > 0 and not first[0].flags.writeable
    p.checks_wanted(pred)
    p.next(4, strategy="verify")
    again = p._plan_heldout(pred)
    assert again[0] is first[0] and again[1] is first[1]
    p.label([(f"{c}{i}", c) for c in words for i in range(4, 6)])
    p.refresh(full=True)
    later = p.predictions()
    assert later.run_id != pred.run_id and p._plan_heldout(later)[0] is not first[0]
    assert len(p._plan_heldout(later)[0]) > len(first[0])
