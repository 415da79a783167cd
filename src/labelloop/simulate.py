"""simulate: replay the labeling loop against a dataset whose true labels are known.

An oracle answers each query batch with the true labels; after each batch the loop refreshes
(label propagation, warm-started), calibrates the auto-label threshold on the human labels
(leave-one-out on the graph) and accepts the machine labels above it. Every claim the project
makes about labels saved is measured here.

Per step we record, for ``h`` human labels:

- ``accuracy_unlabeled``: accuracy of the predicted labels on the items without a human label;
- ``accuracy_all``: accuracy of the whole dataset if it were exported now (human labels + the
  prediction for every other item);
- ``auto_precision`` / ``auto_coverage``: true precision of the accepted machine labels and the
  share of all items they cover;
- ``cost_with_autolabel``: human labels needed to finish the dataset with auto-labeling — the
  ``h`` so far plus every item neither labeled nor accepted (a person labels those);
  ``accuracy_with_autolabel`` is the accuracy of that finished dataset.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import ValidationError

from .autolabel import DEFAULT_TARGET  # noqa: E402  (one source: config's target_precision default)
from .config import SETTINGS  # noqa: E402

DEFAULT_K = SETTINGS["k"].default  # the project's default graph k: the simulation replays what ships
TARGETS = (0.90, 0.95, 0.98)
COLD_START_OK = {"random", "typicality", "coreset", "auto"}   # need no probabilities


@dataclass
class SimulationData:
    name: str
    embeddings: np.ndarray   # (n, d)
    labels: np.ndarray       # (n,) true class index
    class_names: list[str]
    backbone: str


def load_simulation_data(dataset: str, *, backbone: str | None = None, n: int | None = None, seed: int = 0,
                         cache_dir: str | Path | None = None, progress: bool = False,
                         backbone_options: dict | None = None) -> SimulationData:
    """Embed a bundled dataset (cached under ``cache_dir`` by dataset, size and backbone)."""
    from .datasets import load_dataset
    from .embed import default_backbone, get_backbone

    ds = load_dataset(dataset, n=n, seed=seed)
    bb = get_backbone(backbone or ("pixels" if dataset == "digits" else default_backbone(ds.modality)),
                      **(backbone_options or {}))
    if bb.needs_fit:  # its cache id depends on the fit (e.g. the TF-IDF vocabulary)
        bb.fit(ds.items)
    cache = None
    if cache_dir is not None:
        cache = Path(cache_dir) / f"{dataset}-n{len(ds.items)}-s{seed}-{bb.cache_id}.npy"
        if cache.exists():
            return SimulationData(dataset, np.load(cache), ds.labels, ds.class_names, bb.id)
    from tqdm.auto import tqdm

    parts = [bb.embed_batch(ds.items[i : i + bb.batch_size])
             for i in tqdm(range(0, len(ds.items), bb.batch_size), disable=not progress, desc=f"embed {dataset}")]
    X = np.concatenate(parts).astype(np.float32)  # (n, d)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, X)
    return SimulationData(dataset, X, ds.labels, ds.class_names, bb.id)


def project_simulation_data(path: Path) -> SimulationData:
    """A project folder as a simulation dataset: its embeddings and, as ground truth, its human
    labels (else imported labels). Only items with a ground-truth label take part."""
    from .errors import NotReadyError
    from .project import Project

    with Project(path) as p:
        ids, X = p.embeddings()
        y = p.label_vector(ids, sources=("human", "import"))
        backbone = (p.store.get_meta("backbone") or {}).get("cache_id", "?")
        classes = p.classes
    keep = y >= 0
    if keep.sum() < 20:
        raise NotReadyError(f"{path} has {int(keep.sum())} items with a label; a simulation needs ground "
                            "truth for at least 20 (import them with --label-column or --labels-from-folders)")
    return SimulationData(Path(path).name, X[keep], y[keep], classes, backbone)


def _logreg_proba(X: np.ndarray, labeled: np.ndarray, y: np.ndarray, n_classes: int) -> np.ndarray:
    """modAL-style baseline model: logistic regression on the labeled items only."""
    from sklearn.linear_model import LogisticRegression

    P = np.full((len(X), n_classes), 1.0 / n_classes)
    present = np.unique(y[labeled])
    if len(present) < 2:
        P[:, present[0]] = 1.0
        P /= P.sum(1, keepdims=True)
        return P
    from threadpoolctl import threadpool_limits

    clf = LogisticRegression(max_iter=500, C=10.0)
    with threadpool_limits(1, user_api="blas"):  # small fits: threads only contend (see Project.audit)
        clf.fit(X[labeled], y[labeled])
    P[:] = 0.0
    P[:, clf.classes_] = clf.predict_proba(X)
    return P


def _logreg_heldout(X: np.ndarray, labeled: np.ndarray, y: np.ndarray, n_classes: int, *, folds: int = 5,
                    seed: int = 0) -> np.ndarray:
    """(L, C) out-of-fold logistic-regression probabilities of the labeled items."""
    out = np.full((len(labeled), n_classes), 1.0 / n_classes)
    order = np.random.default_rng(seed).permutation(len(labeled))
    for f in range(min(folds, len(labeled))):
        hold = order[f::folds]
        train = np.setdiff1d(np.arange(len(labeled)), hold)
        if len(train):
            out[hold] = _logreg_proba(X, labeled[train], y, n_classes)[labeled[hold]]
    return out


def _propagator(S, n_classes: int, *, temperature, n_iter: int | None, prior=None, candidates_of=None):
    """``propagate(y_hidden)`` for :func:`labelloop.loop.predict.calibrated_predictions`.
    ``candidates_of``: the full label vector; then it returns the class-prior candidates
    (``class_prior auto``, as ``Project.refresh``), normalised to ``prior`` as the label shares."""
    from .loop.predict import prior_candidates
    from .propagate import LabelPropagation

    def propagate(y: np.ndarray):
        lp = LabelPropagation(temperature=temperature, n_iter=n_iter, class_prior=prior).fit(S, y, n_classes=n_classes)
        if candidates_of is not None:
            return prior_candidates(lp.Y_, candidates_of, n_classes, shares=prior)
        return lp.predict_proba()

    return propagate


def _checks_arrays(checks: list[tuple[int, float, int, float]], y_true: np.ndarray):
    """(coverage, guess, correct, region) of the randomly drawn items, judged by the oracle."""
    if not checks:
        return np.zeros(0), np.zeros(0, np.int64), np.zeros(0, bool), np.zeros(0)
    item, cov, guess, region = (np.array(v) for v in zip(*checks))
    return (cov.astype(np.float64), guess.astype(np.int64), guess == y_true[item.astype(np.int64)],
            region.astype(np.float64))


def _draws(P: np.ndarray, labeled: np.ndarray, choice) -> list[tuple[int, float, int, float]]:
    """(item, coverage, guess, region drawn from) of a Choice's random or verify rows under ``P``."""
    from .loop import coverage_of

    eligible = np.ones(len(P), bool)
    eligible[labeled] = False
    cov = coverage_of(P.max(1), eligible)
    return [(int(r), float(cov[r]), int(P[r].argmax()), float(region))
            for r, k, region in zip(choice.rows, choice.kinds, choice.regions) if k != "strategy"]


def _step_metrics(P: np.ndarray, y_true: np.ndarray, labeled: np.ndarray, checks, *, target_precision: float,
                  per_class: bool = True, certified_coverage: float = 0.0, batch_ends: list[int] = (),
                  heldout=None) -> dict:
    """What the loop would do and how right it is, given calibrated predictions ``P``: accuracy,
    calibration error on the unlabeled items, and auto-labels certified by the random checks
    (the same :func:`labelloop.loop.certify` that ``Project.autolabel`` runs)."""
    from .loop import certify, coverage_of, expected_calibration_error, verify_coverage
    from .propagate import prediction_summary

    n, C = P.shape
    s = prediction_summary(P)
    pred, conf = s["label"], s["confidence"]
    mask_u = np.ones(n, dtype=bool)
    mask_u[labeled] = False
    correct_pred = pred == y_true
    cand = verify_coverage(conf, mask_u, target_precision=target_precision, certified_coverage=certified_coverage,
                           heldout=heldout)
    c_cov, c_guess, c_corr, c_region = _checks_arrays(checks, y_true)
    cert = certify(c_cov, c_guess, c_corr, n_classes=C, candidate=cand, check_region=c_region,
                   target_precision=target_precision, per_class=per_class, batch_ends=batch_ends)
    accept = mask_u & cert.accepts(coverage_of(conf, mask_u), pred)
    n_acc = int(accept.sum())
    rest = int(mask_u.sum()) - n_acc
    return dict(accuracy_unlabeled=float(correct_pred[mask_u].mean()) if mask_u.any() else 1.0,
                accuracy_all=float((correct_pred | ~mask_u).mean()),
                mean_confidence_unlabeled=float(conf[mask_u].mean()) if mask_u.any() else 1.0,
                ece_unlabeled=expected_calibration_error(conf[mask_u], correct_pred[mask_u]) if mask_u.any() else 0.0,
                random_checks=int(c_cov.size), certified=bool(cert.certified),
                certified_coverage=float(cert.coverage.max()) if C else 0.0, auto_accepted=n_acc,
                auto_precision=float(correct_pred[accept].mean()) if n_acc else None, auto_coverage=n_acc / n,
                cost_with_autolabel=int(len(labeled) + rest),
                accuracy_with_autolabel=float((len(labeled) + rest + int(correct_pred[accept].sum())) / n),
                more_needed=cert.more_needed)


def _refresh_proba(S, y, C: int, head, prior, source: str, chosen: np.ndarray, *, lp=None, temperature,
                   n_iter: int | None, seed: int):
    """Calibrated predictions as ``Project.refresh`` makes them: propagation normalised to
    ``prior``; while no random draws measure the class shares (``source`` not "random") the
    prior is chosen on held-out labels (``class_prior auto``, loop.predict.choose_class_prior);
    calibrated on the labels no strategy ``chosen`` once there are 30. ``lp``: a fitted model
    to warm-update. Returns ``(P, lp, (confidence, correct) of the held-out human labels)``."""
    from .loop.predict import calibrated_predictions, prior_candidates
    from .propagate import LabelPropagation

    choose_prior = source != "random"
    if lp is None:
        lp = LabelPropagation(temperature=temperature, n_iter=n_iter, class_prior=prior).fit(S, y, n_classes=C)
    else:
        lp.class_prior = prior
        lp.update(y)
    P_raw = prior_candidates(lp.Y_, y, C, shares=prior) if choose_prior else lp.predict_proba()
    rep = ~chosen if ((y >= 0) & ~chosen).sum() >= 30 else None
    P = calibrated_predictions(P_raw, head(y, None), lp.reached_, y, _propagator(
        S, C, temperature=temperature, n_iter=n_iter, prior=prior, candidates_of=y if choose_prior else None),
        head, score=rep, seed=seed)[0]
    return P.proba, lp, (P.heldout_proba.max(1), P.heldout_proba.argmax(1) == y[P.heldout_rows])


def run_one(data: SimulationData, strategy: str, *, budget: int, step: int, seed: int,
            model: str = "propagation", target_precision: float = DEFAULT_TARGET, k: int = DEFAULT_K,
            temperature: float | str = "auto", n_iter: int | None = 100, graph=None,
            explore: float | None = None) -> list[dict]:
    """One strategy, one seed: the per-step records. Queries go through
    :func:`labelloop.loop.choose` (``explore``: share of each batch drawn at random once
    predictions exist; default 0.2 for ``auto``, 0 otherwise), predictions are calibrated on
    held-out labels and auto-labels certified by the random checks, as ``Project`` does."""
    from .graph import build_knn_graph, normalize_rows
    from .loop import choose, class_prior, predict
    from .loop.predict import embedding_head
    from .propagate import affinity_matrix

    X = normalize_rows(data.embeddings)
    y_true = data.labels
    n, C = len(y_true), len(data.class_names)
    head = embedding_head(X, C)  # head_weight "auto", as Project.refresh
    graph = graph if graph is not None else build_knn_graph(X, k=k)
    S = affinity_matrix(graph, temperature=temperature)
    rng = np.random.default_rng(seed)
    labeled = np.zeros(0, dtype=np.int64)
    chosen = np.zeros(n, bool)  # picked by a query strategy: never calibrated or certified on
    checks: list[tuple[int, float, int]] = []  # (item, coverage, guess) of random draws
    batch_ends: list[int] = []  # len(checks) after each step's draws (the looks a certificate keeps)
    drawn: list[int] = []  # rows drawn uniformly at random (the class prior's sample)
    P: np.ndarray | None = None
    lp = None
    records = []
    while len(labeled) < min(budget, n):
        m = min(step, budget - len(labeled), n - len(labeled))
        unl = np.setdiff1d(np.arange(n), labeled)
        if P is None and strategy not in COLD_START_OK:
            pick = rng.choice(unl, size=m, replace=False)        # same cold start for every seed
        else:
            ch = choose(strategy, m, labeled=labeled, unlabeled=unl, probabilities=P, graph=graph, embeddings=X,
                        labels=y_true[labeled] if len(labeled) else None, class_names=data.class_names,
                        seed=seed + len(labeled), explore=explore, target_precision=target_precision)
            pick = ch.rows
            chosen[[r for r, kind in zip(ch.rows, ch.kinds) if kind == "strategy"]] = True
            drawn += [int(r) for r, kind in zip(ch.rows, ch.kinds) if kind == "random"]
            if P is not None:
                checks += _draws(P, labeled, ch)
                batch_ends.append(len(checks))
        labeled = np.concatenate([labeled, pick])
        y = np.full(n, -1, dtype=np.int64)
        y[labeled] = y_true[labeled]
        t0 = time.perf_counter()
        if model == "logreg":
            P_raw, reached = _logreg_proba(X, labeled, y_true, C), np.ones(n, bool)
            P = predict(P_raw, reached, y, (labeled, _logreg_heldout(X, labeled, y_true, C, seed=seed))).proba
        else:
            # as Project.refresh: the class shares of the randomly drawn labels, once there are enough
            drawn_mask = np.zeros(n, bool)
            drawn_mask[drawn] = True
            prior, source = class_prior(y, C, drawn=drawn_mask, chosen=chosen)
            # class_prior auto, as Project.refresh: until random draws measure the shares, the
            # prior is chosen on held-out labels (loop.predict.choose_class_prior)
            P, lp, _ = _refresh_proba(S, y, C, head, prior, source, chosen, lp=lp, temperature=temperature,
                                      n_iter=n_iter, seed=seed)
        seconds = time.perf_counter() - t0
        certified = records[-1]["certified_coverage"] if records else 0.0
        records.append(dict(strategy=strategy, model=model, seed=seed, human_labels=int(len(labeled)),
                            refresh_seconds=seconds,
                            **_step_metrics(P, y_true, labeled, checks, target_precision=target_precision,
                                            certified_coverage=certified, batch_ends=batch_ends)))
    return records


def certify_loop(data: SimulationData, *, start_per_class: int = 5, batch: int = 10, budget: int = 130,
                 target_precision: float = DEFAULT_TARGET, seed: int = 0, k: int = DEFAULT_K,
                 temperature: float | str = "auto",
                 n_iter: int | None = 100, stop_when_certified: bool = True) -> list[dict]:
    """The certification path a user follows: ``start_per_class`` random labels per class, then
    only ``next --strategy verify`` batches answered by the oracle until ``budget`` human
    labels; after each batch, what ``autolabel`` would accept and how precise it truly is, the
    region (coverage) the next batch is drawn from (``drawn_from``), the true precision of the
    most confident regions (``top_precision``: coverage -> precision) and the wrong checks so far
    (``wrong_checks``: (coverage, region drawn from, index) each), which say why certification
    stops where it does (benchmarks/certify_diagnose.py)."""
    from .graph import build_knn_graph, normalize_rows
    from .loop import choose, class_prior, pending_region
    from .loop.predict import embedding_head
    from .propagate import affinity_matrix

    X = normalize_rows(data.embeddings)
    y_true = data.labels
    n, C = len(y_true), len(data.class_names)
    head = embedding_head(X, C)  # head_weight "auto", as Project.refresh
    graph = build_knn_graph(X, k=k)
    S = affinity_matrix(graph, temperature=temperature)
    rng = np.random.default_rng(seed)
    labeled = np.concatenate([rng.choice(np.flatnonzero(y_true == c), size=min(start_per_class, int((y_true == c).sum())),
                                         replace=False) for c in range(C) if (y_true == c).any()])
    checks: list[tuple[int, float, int]] = []
    batch_ends: list[int] = []  # len(checks) after each verify batch
    records = []
    last_region = 0.0
    while True:
        y = np.full(n, -1, dtype=np.int64)
        y[labeled] = y_true[labeled]
        # as Project.refresh: verify checks are neither actively chosen nor uniform draws over
        # every item, so the prior comes from the shares of all labels and is chosen on held-out ones
        prior, source = class_prior(y, C, drawn=np.zeros(n, bool), chosen=np.zeros(n, bool))
        P, _, heldout = _refresh_proba(S, y, C, head, prior, source, np.zeros(n, bool), temperature=temperature,
                                       n_iter=n_iter, seed=seed)
        certified = records[-1]["certified_coverage"] if records else 0.0
        rec = dict(seed=seed, human_labels=int(len(labeled)),
                   **_step_metrics(P, y_true, labeled, checks, target_precision=target_precision,
                                   certified_coverage=certified, batch_ends=batch_ends, heldout=heldout))
        records.append(rec)
        c_cov, _, c_corr, c_region = _checks_arrays(checks, y_true)
        rec["top_precision"] = _top_precision(P, y_true, labeled)
        rec["wrong_checks"] = [(round(float(c), 4), round(float(g), 4), int(i))
                               for i, (c, g) in enumerate(zip(c_cov, c_region)) if not c_corr[i]]
        rec["drawn_from"] = None
        if (rec["certified"] and stop_when_certified) or len(labeled) >= budget:
            break
        unl = np.setdiff1d(np.arange(n), labeled)
        pending = pending_region(c_cov, c_region, c_corr, last_region, target_precision=target_precision) \
            if last_region > rec["certified_coverage"] else 0.0
        ch = choose("verify", min(batch, budget - len(labeled)), labeled=labeled, unlabeled=unl, probabilities=P,
                    seed=seed + len(labeled), target_precision=target_precision,
                    certified_coverage=rec["certified_coverage"], pending_coverage=pending, verify_heldout=heldout)
        last_region = rec["drawn_from"] = float(ch.details.get("coverage", 0.0))
        if len(ch.rows) == 0:
            break
        checks += _draws(P, labeled, ch)
        batch_ends.append(len(checks))
        labeled = np.concatenate([labeled, ch.rows])
    return records


#: the regions (coverage of the unlabeled items) certify_loop reports the true precision of
TOP_REGIONS = (0.6, 0.7, 0.8, 0.863, 0.9, 1.0)


def _top_precision(P: np.ndarray, y_true: np.ndarray, labeled: np.ndarray) -> dict[float, float]:
    """The true precision of the machine labels of the most confident ``rho`` of the unlabeled
    items, for each rho in TOP_REGIONS (0.863 of the unlabeled = 80 % of all items on digits at
    130 labels)."""
    from .loop import coverage_of

    unl = np.ones(len(P), bool)
    unl[labeled] = False
    cov = coverage_of(P.max(1), unl)
    right = P.argmax(1) == y_true
    return {rho: round(float(right[unl & (cov <= rho + 1e-12)].mean()), 4) for rho in TOP_REGIONS}


def summarize(records: list[dict], n_items: int) -> list[dict]:
    """Per (strategy, model): curve mean ± std, labels to reach each target, area under the curve."""
    out = []
    keys = sorted({(r["strategy"], r["model"]) for r in records}, key=lambda t: (t[1], t[0]))
    for strategy, model in keys:
        rs = [r for r in records if r["strategy"] == strategy and r["model"] == model]
        seeds = sorted({r["seed"] for r in rs})
        steps = sorted({r["human_labels"] for r in rs})
        acc = np.array([[next((r["accuracy_all"] for r in rs if r["seed"] == s and r["human_labels"] == h), np.nan)
                         for h in steps] for s in seeds])  # (seeds, steps)
        row = dict(strategy=strategy, model=model, seeds=len(seeds), steps=steps,
                   accuracy_mean=np.nanmean(acc, 0).tolist(), accuracy_std=np.nanstd(acc, 0).tolist(),
                   auc=float(np.nanmean(np.trapezoid(acc, steps, axis=1) / (steps[-1] - steps[0])))
                   if len(steps) > 1 else float(np.nanmean(acc)))
        for t in TARGETS:
            need = []
            for s_i in range(len(seeds)):
                hit = [h for h, a in zip(steps, acc[s_i]) if a >= t]
                need.append(hit[0] if hit else None)
            reached = [v for v in need if v is not None]
            row[f"labels_to_{int(t * 100)}"] = float(np.mean(reached)) if len(reached) == len(need) else None
            row[f"saved_x_{int(t * 100)}"] = (n_items / row[f"labels_to_{int(t * 100)}"]
                                             if row[f"labels_to_{int(t * 100)}"] else None)
        # finishing the dataset with auto-labeling: cheapest step whose finished accuracy >= 95 %
        best = []
        for s in seeds:
            ok = [r["cost_with_autolabel"] for r in rs if r["seed"] == s and r["accuracy_with_autolabel"] >= 0.95]
            best.append(min(ok) if ok else n_items)
        row["cost_with_autolabel_95"] = float(np.mean(best))
        row["saved_x_autolabel_95"] = n_items / row["cost_with_autolabel_95"]
        precs = [r["auto_precision"] for r in rs if r["auto_precision"] is not None]
        row["auto_precision_mean"] = float(np.mean(precs)) if precs else None
        out.append(row)
    return out


def simulate(dataset: str | SimulationData = "digits", *, strategies: Sequence[str] = ("random", "margin", "auto"),
             budget: int = 300, step: int = 10, seeds: int = 5, backbone: str | None = None, n: int | None = None,
             baseline: bool = False, target_precision: float = DEFAULT_TARGET, k: int = DEFAULT_K,
             temperature: float | str = "auto",
             out: str | Path | None = None, cache_dir: str | Path | None = None,
             progress: Callable[[str], None] | None = None) -> dict:
    """Run every strategy for ``seeds`` seeds; with ``baseline`` also margin sampling with a
    logistic regression and no propagation. Writes JSON, a markdown table and a PNG to ``out``."""
    from .graph import build_knn_graph, normalize_rows
    from .select import available_strategies

    unknown = [s for s in strategies if s not in available_strategies()]
    if unknown:
        raise ValidationError(f"unknown strategy {unknown[0]!r}; available: {', '.join(available_strategies())}")
    if budget < 1 or step < 1 or seeds < 1:
        raise ValidationError("--budget, --step and --seeds must be at least 1")
    data = dataset if isinstance(dataset, SimulationData) else load_simulation_data(
        dataset, backbone=backbone, n=n, cache_dir=cache_dir)
    say = progress or (lambda s: None)
    t0 = time.perf_counter()
    graph = build_knn_graph(normalize_rows(data.embeddings), k=k)
    runs = [(s, "propagation") for s in strategies] + ([("margin", "logreg")] if baseline else [])
    records: list[dict] = []
    for strategy, model in runs:
        for seed in range(seeds):
            ts = time.perf_counter()
            records += run_one(data, strategy, budget=budget, step=step, seed=seed, model=model, graph=graph,
                               target_precision=target_precision, k=k, temperature=temperature)
            say(f"{data.name} {strategy}/{model} seed {seed}: accuracy {records[-1]['accuracy_all']:.3f} "
                f"at {records[-1]['human_labels']} labels ({time.perf_counter() - ts:.1f} s)")
    result = dict(dataset=data.name, backbone=data.backbone, items=int(len(data.labels)),
                  classes=data.class_names, budget=budget, step=step, seeds=seeds, k=k, temperature=temperature,
                  target_precision=target_precision, seconds=round(time.perf_counter() - t0, 1),
                  summary=summarize(records, len(data.labels)), records=records)
    if out is not None:
        write_report(result, Path(out))
    return result


def markdown_table(result: dict) -> str:
    n = result["items"]
    lines = [
        f"### {result['dataset']} ({n} items, backbone `{result['backbone']}`, k={result['k']}, "
        f"T={result['temperature']}, step {result['step']}, {result['seeds']} seeds)",
        "",
        "| strategy | model | acc @50 | acc @100 | acc @budget | labels to 90 % | to 95 % | to 98 % "
        "| saved × at 95 % | human labels to finish at ≥95 % with auto-label (saved ×) | auto-label precision | AUC |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def at(row, h):
        if h not in row["steps"]:
            return "–"
        i = row["steps"].index(h)
        return f"{row['accuracy_mean'][i]:.3f} ± {row['accuracy_std'][i]:.3f}"

    def num(v, fmt="{:.0f}"):
        return "not reached" if v is None else fmt.format(v)

    for r in result["summary"]:
        lines.append(
            f"| {r['strategy']} | {r['model']} | {at(r, 50)} | {at(r, 100)} | {at(r, r['steps'][-1])} | "
            f"{num(r['labels_to_90'])} | {num(r['labels_to_95'])} | {num(r['labels_to_98'])} | "
            f"{num(r['saved_x_95'], '{:.1f}×')} | {r['cost_with_autolabel_95']:.0f} ({r['saved_x_autolabel_95']:.1f}×) | "
            f"{num(r['auto_precision_mean'], '{:.3f}')} | {r['auc']:.3f} |")
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for r in result["summary"]:
        h = np.array(r["steps"])
        m, s = np.array(r["accuracy_mean"]), np.array(r["accuracy_std"])
        name = r["strategy"] if r["model"] == "propagation" else f"{r['strategy']} + {r['model']} (no graph)"
        (line,) = ax.plot(h, m, label=name, lw=1.6)
        ax.fill_between(h, m - s, m + s, color=line.get_color(), alpha=0.15)
    ax.set_xlabel("human labels")
    ax.set_ylabel("whole-dataset accuracy (human + predicted)")
    ax.set_title(f"{result['dataset']}: {result['items']} items, backbone {result['backbone']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_report(result: dict, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    stem = f"simulate-{result['dataset']}"
    paths = {"json": out / f"{stem}.json", "markdown": out / f"{stem}.md", "png": out / f"{stem}.png"}
    paths["json"].write_text(json.dumps(result, indent=1))
    paths["markdown"].write_text(markdown_table(result))
    plot(result, paths["png"])
    return paths
