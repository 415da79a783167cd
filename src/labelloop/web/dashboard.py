"""Numbers behind the dashboard (its JSON twin, ``/api/dashboard``) and the data of its plots."""

from __future__ import annotations

import math

import numpy as np

from ..project import Project
from .queue import Snapshot

__all__ = ["dashboard_data", "learning_curve", "current_labels", "annotator_rows", "embedding_map"]

UNNAMED = "(unnamed)"   # the annotator of labels given without a name (CLI, Python API)
MAP_POINTS = 4000  # points drawn in the embedding map (a seeded sample of the items)


def _finite(x) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else float(x)


def current_labels(project: Project, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n,) class index of each item's current label and (n,) its source code:
    0 none, 1 human, 2 import, 3 machine (human wins, then import, then machine)."""
    y, src = project.labels_with_source(ids, sources=("human", "import", "machine"))
    return y, (src + 1).astype(np.int8)


def annotator_rows(project: Project) -> list[tuple[int, str, int]]:
    """(item, annotator, class id) of every annotator's label in effect (latest, not withdrawn);
    labels given without a name (``labelloop label`` without ``--annotator``) count as
    :data:`UNNAMED`."""
    return [(i, UNNAMED if who is None else who, k) for i, who, k in project.store.annotator_labels()]


def _agreement(project: Project, rows: list[tuple[int, str, int]]) -> tuple[dict, dict]:
    """Agreement between annotators on shared items, and per-annotator quality figures."""
    from ..audit.annotators import annotator_report, fleiss_kappa_from_annotations, pairwise_cohen_kappa

    col = {cid: c for c, cid in enumerate(project.store.class_ids().values())}
    n_classes = max(len(col), 1)
    table = [(i, a, col[k]) for i, a, k in rows]
    gold = project.gold()
    per: dict = {}
    if table:
        for s in annotator_report(table, gold=gold or None, n_classes=n_classes):
            per[s.annotator] = {"gold_items": s.n_gold, "gold_accuracy": _finite(s.gold_accuracy),
                                "compared": s.n_compared, "consensus_accuracy": _finite(s.consensus_accuracy)}
    by_item: dict[int, list[int]] = {}
    for i, _, c in table:
        by_item.setdefault(i, []).append(c)
    shared = {i for i, v in by_item.items() if len(v) >= 2}
    out: dict = {"items": len(shared)}
    if shared:
        sub = [r for r in table if r[0] in shared]
        out["fleiss_kappa"] = _finite(fleiss_kappa_from_annotations(sub, n_classes=n_classes))
        out["raw_agreement"] = float(np.mean([len(set(by_item[i])) == 1 for i in shared]))
        out["pairs"] = [{"a": a, "b": b, "kappa": _finite(k), "shared": int(n)}
                        for (a, b), (k, n) in pairwise_cohen_kappa(sub, n_classes=n_classes).items()]
    return out, per


def learning_curve(project: Project) -> list[dict]:
    """One point per refresh run: human labels, mean confidence, and the accuracy estimate
    when the run recorded one."""
    pts = []
    for r in project.store.runs("refresh"):
        s = r["summary"]
        est = s.get("estimated_accuracy", s.get("estimate"))
        if isinstance(est, dict):
            est = est.get("accuracy")
        pts.append({"run": r["id"], "human": s.get("human"), "labeled": s.get("labeled"),
                    "mean_confidence": s.get("mean_confidence"),
                    "estimated_accuracy": est if isinstance(est, (int, float)) else None})
    return pts


def _estimate(status: dict) -> dict:
    est = status.get("estimate")
    if isinstance(est, dict):
        acc = est.get("accuracy", est.get("estimate"))
        if isinstance(acc, (int, float)):
            return {"accuracy": float(acc), **{k: v for k, v in est.items() if k != "accuracy"}}
    if isinstance(est, (int, float)):
        return {"accuracy": float(est)}
    return {"accuracy": None,
            "note": est if isinstance(est, str) else
            "no estimate yet: it needs human-verified items the machine had predicted (see `labelloop status`)"}


def dashboard_data(project: Project, snapshot: Snapshot, refresh_status: dict) -> dict:
    st = project.status()
    ids = project.item_ids()
    y, src = current_labels(project, ids)
    rows = annotator_rows(project)
    agreement, per = _agreement(project, rows)
    counts_by = {}
    for _, a, _ in rows:
        counts_by[a] = counts_by.get(a, 0) + 1
    annotators = [{"annotator": a, "labels": n, **per.get(a, {})}
                  for a, n in sorted(counts_by.items(), key=lambda kv: -kv[1])]
    hist = None
    if len(snapshot.item_ids):
        mask = ~np.isin(snapshot.item_ids, ids[src == 1])
        counts, edges = np.histogram(snapshot.confidence[mask], bins=20, range=(0.0, 1.0))
        hist = {"edges": edges.round(4).tolist(), "counts": counts.tolist()}
    return {
        "counts": {"items": int(len(ids)), "human": int((src == 1).sum()), "imported": int((src == 2).sum()),
                   "machine": int((src == 3).sum()), "left": int((src == 0).sum())},
        "estimate": _estimate(st),
        "classes": project.classes,
        "per_class": st.get("per_class", {}),
        "confidence": st.get("confidence"),
        "confidence_histogram": hist,
        "annotators": annotators,
        "agreement": agreement,
        "learning_curve": learning_curve(project),
        "refresh": dict(refresh_status),
        "snapshot": snapshot.to_dict(),
        "status": {k: v for k, v in st.items() if k not in ("per_class",)},
    }


def embedding_map(project: Project, *, n_points: int = MAP_POINTS, seed: int = 0) -> dict | None:
    """The 2-D map of a seeded sample of the items (:meth:`Project.embedding_map`, computed once
    per set of embeddings) with each item's current label, else its prediction."""
    found = project.embedding_map(n_points=n_points, seed=seed)
    if found is None:
        return None
    ids, xy = found
    y, src = current_labels(project, ids)
    pred = project.predictions()
    if pred is not None:
        r = np.minimum(np.searchsorted(pred.item_ids, ids), len(pred.item_ids) - 1)
        ok = (pred.item_ids[r] == ids) & (y < 0) & pred.reached[r]
        y[ok] = pred.label[r[ok]]
    return {"xy": xy, "label": y, "source": src, "classes": project.classes}
