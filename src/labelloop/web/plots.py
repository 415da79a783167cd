"""Dashboard pictures: matplotlib (Agg, no pyplot state) rendered to PNG bytes on the server."""

from __future__ import annotations

import io
import threading

import numpy as np

__all__ = ["PLOTS", "render"]

_LOCK = threading.Lock()   # matplotlib's font cache and text layout are not thread-safe
W, H, DPI = 6.4, 3.6, 100
SOURCE_NAMES = {0: "predicted / none", 1: "human", 2: "import", 3: "machine"}


def _figure(height: float = H):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(W, height), dpi=DPI, layout="constrained")
    return fig, fig.add_subplot()


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _empty(ax, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True, color="#666", transform=ax.transAxes)
    ax.set_axis_off()


def learning_curve(data: dict, _map=None) -> bytes:
    fig, ax = _figure()
    pts = [p for p in data["learning_curve"] if p.get("human") is not None]
    if not pts:
        _empty(ax, "No refresh yet: the curve starts with the first labels.")
        return _png(fig)
    x = np.array([p["human"] for p in pts], dtype=float)
    conf = np.array([np.nan if p["mean_confidence"] is None else p["mean_confidence"] for p in pts])
    ax.plot(x, conf, "o-", ms=3, color="#7a8ca3", label="mean confidence (all items)")
    est = np.array([np.nan if p["estimated_accuracy"] is None else p["estimated_accuracy"] for p in pts])
    if np.isfinite(est).any():
        ax.plot(x, est, "o-", ms=3, color="#1f6feb", label="estimated accuracy")
    else:
        ax.set_title("no accuracy estimate recorded yet: mean confidence shown", fontsize=9, color="#666")
    ax.set_xlabel("human labels")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _png(fig)


def confidence(data: dict, _map=None) -> bytes:
    fig, ax = _figure()
    h = data.get("confidence_histogram")
    if not h or not sum(h["counts"]):
        _empty(ax, "No predictions yet: label a few items per class.")
        return _png(fig)
    edges = np.array(h["edges"])
    ax.bar(edges[:-1], h["counts"], width=np.diff(edges), align="edge", color="#1f6feb", edgecolor="white")
    ax.set_xlabel("confidence of the predicted class")
    ax.set_ylabel("items")
    ax.set_xlim(0, 1)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def class_balance(data: dict, _map=None) -> bytes:
    fig, ax = _figure()
    per = data.get("per_class") or {}
    if not per:
        _empty(ax, "No classes yet.")
        return _png(fig)
    names = list(per)
    y = np.arange(len(names))
    left = np.zeros(len(names))
    colors = {"human": "#1a7f37", "import": "#bf8700", "machine": "#8250df", "predicted": "#afb8c1"}
    for key in ("human", "import", "machine"):
        v = np.array([per[n][key] for n in names], dtype=float)
        ax.barh(y, v, left=left, color=colors[key], label=key)
        left += v
    pred = np.array([per[n]["predicted"] for n in names], dtype=float)
    if pred.any():  # the propagated prediction of every item, drawn as an outline behind the labels
        ax.barh(y, pred, height=0.9, fill=False, edgecolor="#57606a", linewidth=0.8, label="predicted (all items)")
    ax.set_yticks(y, [n if len(n) <= 18 else n[:17] + "…" for n in names], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("items")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return _png(fig)


def annotators(data: dict, _map=None) -> bytes:
    rows = (data.get("annotators") or [])[:25]
    fig, ax = _figure(height=min(H, 1.1 + 0.3 * max(len(rows), 1)))   # as tall as the list
    if not rows:
        _empty(ax, "No human labels yet.")
        return _png(fig)
    names = [r["annotator"] for r in rows]
    ax.barh(np.arange(len(rows)), [r["labels"] for r in rows], height=0.6, color="#1a7f37")
    ax.set_yticks(np.arange(len(rows)), names, fontsize=8)
    ax.invert_yaxis()
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_xlabel("labels in effect")
    return _png(fig)


def embedding_map(data: dict, m: dict | None = None) -> bytes:
    fig, ax = _figure()
    if m is None:
        _empty(ax, "No embeddings yet: run `labelloop embed`.")
        return _png(fig)
    from matplotlib import colormaps

    xy, y, src, classes = m["xy"], m["label"], m["source"], m["classes"]
    cmap = colormaps["tab20" if len(classes) > 10 else "tab10"]
    none = y < 0
    ax.scatter(xy[none, 0], xy[none, 1], s=4, c="#d0d7de", label="no label", linewidths=0)
    for c in range(len(classes)):
        sel = (y == c) & (src != 1)
        if sel.any():
            ax.scatter(xy[sel, 0], xy[sel, 1], s=5, color=cmap(c % cmap.N), linewidths=0,
                       label=classes[c][:18])
        hum = (y == c) & (src == 1)
        if hum.any():
            ax.scatter(xy[hum, 0], xy[hum, 1], s=22, color=cmap(c % cmap.N), edgecolors="black", linewidths=0.6)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"{len(xy)} items (black edge: human label)", fontsize=9, color="#444")
    if len(classes) <= 20:
        ax.legend(fontsize=7, markerscale=2, loc="center left", bbox_to_anchor=(1, 0.5), frameon=False)
    return _png(fig)


PLOTS = {
    "learning-curve": learning_curve,
    "confidence": confidence,
    "class-balance": class_balance,
    "embedding-map": embedding_map,
    "annotators": annotators,
}


def render(name: str, data: dict, emb_map: dict | None = None) -> bytes:
    """PNG bytes of the named plot (see ``PLOTS``)."""
    with _LOCK:
        return PLOTS[name](data, emb_map)
