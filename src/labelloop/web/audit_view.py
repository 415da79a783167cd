"""The audit page's data: suspected label errors (:func:`labelloop.audit.audit_labels`), each
with the nearest neighbours whose labels disagree with it, side by side."""

from __future__ import annotations

import numpy as np

from ..errors import LabelloopError, NotReadyError, ReadOnlyError
from .context import item_json

SOURCE_NAMES = {1: "human", 2: "import", 3: "machine"}


def _compute(ctx) -> dict:
    """The full audit of the current labels (cached by the caller): ``Project.audit_labels``,
    the same audit as ``labelloop audit``, without recording a run (readers are read-only)."""
    from .dashboard import current_labels

    project = ctx.readers.project()
    try:
        ids, y, method, res = project.audit_labels()
    except NotReadyError as exc:
        return {"available": False, "detail": f"Nothing to audit yet: {exc}."}
    except ReadOnlyError:   # no stored graph: a read-only reader cannot build one
        return {"available": False, "detail": "Nothing to audit yet: the kNN graph is built by the first "
                                              "refresh (label a few items)."}
    except LabelloopError as exc:
        return {"available": False, "detail": f"The audit could not run: {exc}"}
    src = current_labels(project, ids)[1]
    return {"available": True, "ids": ids, "y": y, "src": src, "classes": project.classes, "result": res,
            "method": ("neighbourhood (kNN graph) + out-of-fold logistic regression, confident learning"
                       if method == "logreg" else "neighbourhood (kNN graph) only, confident learning")}


def audit_view(ctx, *, limit: int = 30, n_neighbours: int = 6) -> dict:
    """JSON of the audit page: the ``limit`` most suspicious labels, each with up to
    ``n_neighbours`` disagreeing neighbours."""
    store = ctx.readers.store()
    confirmations = store.audit_confirmation_count()
    full = ctx.cached("audit", (ctx.version(store), confirmations), lambda: _compute(ctx))
    if not full.get("available"):
        return {"available": False, "detail": full.get("detail"), "suspects": [], "total": 0}
    res, ids, y, src, classes = full["result"], full["ids"], full["y"], full["src"], full["classes"]
    issues = res.issues[:limit]
    rows = sorted({i.item for i in issues} | {j for i in issues for j in i.evidence[:n_neighbours]})
    items = dict(zip(rows, store.items([int(ids[r]) for r in rows]))) if rows else {}
    snap = ctx.refresher.snapshot
    suspects = []
    for iss in issues:
        d = item_json(items[iss.item], snap)
        d.update(given=classes[iss.given_label], source=SOURCE_NAMES.get(int(src[iss.item])),
                 suggested=classes[iss.suggested_label], score=round(iss.score, 4),
                 graph_score=round(iss.graph_score, 4),
                 classifier_score=None if np.isnan(iss.classifier_score) else round(iss.classifier_score, 4))
        d["neighbours"] = []
        for j, lab in zip(iss.evidence[:n_neighbours], iss.evidence_labels[:n_neighbours]):
            nb = item_json(items[j], snap)
            nb.update(label=classes[lab], source=SOURCE_NAMES.get(int(src[j])))
            d["neighbours"].append(nb)
        suspects.append(d)
    return {"available": True, "method": full["method"], "total": len(res.issues),
            "noise_rate": round(float(res.noise_rate), 4), "confirmed_skipped": res.n_confirmed_skipped,
            "classes": classes, "suspects": suspects}
