"""What every query strategy shares: the :class:`Selection` result, input validation, the
:class:`Strategy` base class and the registry.

A strategy is a stateless function of (class probabilities, kNN graph, embeddings, labeled
ids, unlabeled ids, n, seed). Public functions and ``Strategy.select`` validate once, here;
the private ``_select`` implementations trust a :class:`SelectionInputs`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ..errors import PoolExhaustedError, ValidationError

if TYPE_CHECKING:  # the graph module is a sibling stage; only its two arrays are read here
    from ..graph import KnnGraph

__all__ = [
    "Selection",
    "SelectionInputs",
    "Strategy",
    "register_strategy",
    "get_strategy",
    "available_strategies",
    "validate_inputs",
]

# What to run to obtain an input a strategy needs (ValidationError messages).
HOW_TO_GET = {
    "probabilities": "class probabilities (run `labelloop refresh` first: it propagates labels)",
    "embeddings": "embeddings (run `labelloop refresh` first: it embeds every item)",
    "graph": "the kNN graph (run `labelloop refresh` first: it builds the graph)",
    "rule_votes": "votes of labeling functions (add a rule, `labelloop rules add NAME --label CLASS --contains "
                  "WORDS`, or switch one on, `labelloop rules on NAME`; then run `labelloop refresh`)",
}

# Largest temporary block (bytes) of a chunked similarity product: bounds memory at 100k x 384.
CHUNK_BYTES = 64 * 2**20


@dataclass
class Selection:
    """Items to show a human next, most useful first."""

    indices: np.ndarray  # (n,) int64, distinct unlabeled item ids in priority order
    scores: np.ndarray  # (n,) float64, the strategy's score (meaning documented per strategy)
    reasons: list[str]  # one short human sentence per item
    strategy: str  # name of the strategy that produced it (e.g. "margin+diverse")
    details: dict[str, Any] = field(default_factory=dict)  # e.g. auto's phase and why

    def __len__(self) -> int:
        return len(self.indices)


@dataclass
class SelectionInputs:
    """Validated inputs of one query; private strategy code trusts these."""

    n: int
    labeled: np.ndarray  # (L,) int64
    unlabeled: np.ndarray  # (U,) int64
    n_items: int
    probabilities: np.ndarray | None = None  # (n_items, C) float
    graph: KnnGraph | None = None
    embeddings: np.ndarray | None = None  # (n_items, d), not necessarily normalised
    labels: np.ndarray | None = None  # (L,) int64 class of each labeled item, or None
    class_names: list[str] | None = None
    seed: int = 0
    rule_votes: np.ndarray | None = None  # (n_items, C) votes of the active rules per class
    rule_proba: np.ndarray | None = None  # (n_items, C) the rules' label model; zero rows: no vote

    def rng(self, salt: int = 0) -> np.random.Generator:
        return np.random.default_rng([self.seed, salt])

    def class_name(self, c: int) -> str:
        return f"'{self.class_names[c]}'" if self.class_names is not None else f"'{c}'"

    def with_n(self, n: int) -> SelectionInputs:
        return replace(self, n=n)


def _ids(name: str, value: Any) -> np.ndarray:
    a = np.asarray(value)
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    if a.ndim != 1 or not np.issubdtype(a.dtype, np.integer):
        raise ValidationError(
            f"{name} must be a 1-D array of integer item ids, got shape {a.shape} "
            f"and dtype {a.dtype}"
        )
    return a.astype(np.int64, copy=False)


def validate_inputs(
    *,
    strategy: str,
    requires: Sequence[str] = (),
    n: Any,
    labeled: Any,
    unlabeled: Any,
    probabilities: Any = None,
    graph: Any = None,
    embeddings: Any = None,
    labels: Any = None,
    class_names: Sequence[str] | None = None,
    seed: int = 0,
    rule_votes: Any = None,
    rule_proba: Any = None,
) -> SelectionInputs:
    """Check every input once and return them as a :class:`SelectionInputs`.

    Raises ValidationError for a bad ``n``, a missing required input, wrong shapes or ids;
    PoolExhaustedError when fewer than ``n`` unlabeled items are left.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValidationError(f"n must be a whole number of items to select, got {n!r}")
    if n <= 0:
        raise ValidationError(f"n must be at least 1, got {n}")
    n = int(n)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValidationError(f"seed must be an integer, got {seed!r}")
    given = {"probabilities": probabilities, "graph": graph, "embeddings": embeddings, "rule_votes": rule_votes}
    for key in requires:
        if given[key] is None:
            raise ValidationError(f"strategy {strategy!r} needs {HOW_TO_GET[key]}")

    sizes: dict[str, int] = {}
    if probabilities is not None:
        probabilities = np.asarray(probabilities)
        if probabilities.ndim != 2 or probabilities.shape[1] < 1:
            raise ValidationError(
                f"probabilities must have shape (n_items, n_classes), got {probabilities.shape}"
            )
        if not np.issubdtype(probabilities.dtype, np.floating):
            probabilities = probabilities.astype(np.float64)
        if not np.isfinite(probabilities).all() or (probabilities < -1e-6).any():
            raise ValidationError("probabilities must be finite and non-negative")
        sums = probabilities.sum(axis=1)
        if len(sums) and not np.allclose(sums, 1.0, atol=1e-3):
            raise ValidationError(
                f"each row of probabilities must sum to 1 (sums range {sums.min():.3g} to "
                f"{sums.max():.3g}); pass class probabilities, not scores or logits"
            )
        sizes["probabilities"] = probabilities.shape[0]
    if embeddings is not None:
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2 or embeddings.shape[1] < 1:
            raise ValidationError(
                f"embeddings must have shape (n_items, dim), got {embeddings.shape}"
            )
        if not np.issubdtype(embeddings.dtype, np.floating):
            embeddings = embeddings.astype(np.float32)
        if not np.isfinite(embeddings).all():
            raise ValidationError("embeddings contain NaN or infinite values; re-embed the items")
        sizes["embeddings"] = embeddings.shape[0]
    if graph is not None:
        gi = getattr(graph, "indices", None)
        gs = getattr(graph, "similarities", None)
        if gi is None or gs is None:
            raise ValidationError(
                "graph must be a labelloop.graph.KnnGraph (with .indices and .similarities)"
            )
        gi, gs = np.asarray(gi), np.asarray(gs)
        if gi.ndim != 2 or gi.shape != gs.shape:
            raise ValidationError(
                f"graph.indices and graph.similarities must have one (n_items, k) shape, "
                f"got {gi.shape} and {gs.shape}"
            )
        sizes["graph"] = gi.shape[0]
    rule_votes, rule_proba = _rule_arrays(rule_votes, rule_proba, probabilities, sizes)
    if len(set(sizes.values())) > 1:
        got = ", ".join(f"{k} has {v}" for k, v in sizes.items())
        raise ValidationError(f"inputs disagree on the number of items: {got} rows")

    labeled = _ids("labeled", labeled)
    unlabeled = _ids("unlabeled", unlabeled)
    both = np.concatenate([labeled, unlabeled])
    if sizes:
        n_items = next(iter(sizes.values()))
    else:
        n_items = int(both.max()) + 1 if both.size else 0
    if both.size and (both.min() < 0 or both.max() >= n_items):
        raise ValidationError(
            f"item ids must lie in [0, {n_items}), got ids from {both.min()} to {both.max()}"
        )
    if np.unique(unlabeled).size != unlabeled.size:
        raise ValidationError("unlabeled contains repeated item ids")
    if np.unique(labeled).size != labeled.size:
        raise ValidationError("labeled contains repeated item ids")
    if np.unique(both).size != both.size:
        raise ValidationError("an item id is both in labeled and in unlabeled")

    if labels is not None:
        labels = _ids("labels", labels)
        if labels.shape != labeled.shape:
            raise ValidationError(
                f"labels must give one class per labeled item: {labels.shape[0]} labels "
                f"for {labeled.shape[0]} labeled items"
            )
        n_classes = probabilities.shape[1] if probabilities is not None else None
        if labels.size and (labels.min() < 0 or (n_classes and labels.max() >= n_classes)):
            raise ValidationError(f"labels must be class indices in [0, {n_classes})")
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if probabilities is not None and len(class_names) != probabilities.shape[1]:
            raise ValidationError(
                f"{len(class_names)} class names for {probabilities.shape[1]} probability columns"
            )

    if unlabeled.size == 0:
        raise PoolExhaustedError("no unlabeled items are left to select from")
    if n > unlabeled.size:
        raise PoolExhaustedError(
            f"asked for {n} items but only {unlabeled.size} unlabeled items are left; "
            f"ask for at most {unlabeled.size}"
        )
    return SelectionInputs(
        n=n,
        labeled=labeled,
        unlabeled=unlabeled,
        n_items=n_items,
        probabilities=probabilities,
        graph=graph,
        embeddings=embeddings,
        labels=labels,
        class_names=class_names,
        seed=int(seed),
        rule_votes=rule_votes,
        rule_proba=rule_proba,
    )


def _rule_arrays(votes: Any, proba: Any, probabilities: np.ndarray | None, sizes: dict[str, int]
                 ) -> tuple[np.ndarray | None, np.ndarray | None]:
    """Check the rules' (n_items, C) vote counts and label-model distribution; record their rows."""
    out = []
    for key, a in (("rule_votes", votes), ("rule_proba", proba)):
        if a is None:
            out.append(None)
            continue
        a = np.asarray(a, dtype=np.float64)
        width = probabilities.shape[1] if probabilities is not None else None
        if a.ndim != 2 or (width is not None and a.shape[1] != width):
            raise ValidationError(f"{key} must have shape (n_items, n_classes) like the probabilities, "
                                  f"got {a.shape}")
        if not np.isfinite(a).all() or (a < 0).any():
            raise ValidationError(f"{key} must be finite and non-negative")
        sizes[key] = a.shape[0]
        out.append(a)
    if out[1] is not None and out[0] is None:
        raise ValidationError("rule_proba (the rules' label model) needs rule_votes too")
    return out[0], out[1]


# ---------------------------------------------------------------- helpers shared by strategies


def top_n(scores: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of the n highest scores, best first; ties broken by a seeded random order."""
    if n < scores.size:
        kth = np.partition(scores, scores.size - n)[scores.size - n]
        cand = np.flatnonzero(scores >= kth)  # every tie of the n-th score
    else:
        cand = np.arange(scores.size)
    order = np.lexsort((rng.random(cand.size), -scores[cand]))
    return cand[order[:n]]


def unit_rows(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, float32; zero rows stay zero."""
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)  # (m, 1)
    return X / np.where(norms > 0, norms, 1.0)


def kmeans_labels(X: np.ndarray, k: int, seed: int, *, max_fit: int | None = None) -> np.ndarray:
    """Cluster ids (m,) of k-means with k clusters on the rows of X.

    ``max_fit``: fit on a seeded random subsample of at most this many rows and assign every
    row to its nearest centre (k-means centres need tens of points per cluster, not 100k).
    MiniBatchKMeans replaces Lloyd when one Lloyd iteration would exceed ~1e9 multiply-adds.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans
    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    m, d = X.shape
    k = min(k, m)
    fit_rows = X
    if max_fit is not None and m > max_fit:
        sub = np.sort(np.random.default_rng(seed).choice(m, max_fit, replace=False))
        fit_rows = X[sub]  # (max_fit, d)
    with warnings.catch_warnings():
        # Duplicate points can leave fewer distinct clusters than k; callers handle that
        # (they fill from the ranking), so sklearn's warning carries no information here.
        warnings.simplefilter("ignore", ConvergenceWarning)
        # One Lloyd iteration costs rows * k * d multiply-adds: above ~1e9 (about a second a
        # step on 2 cores) mini-batches; TypiClust likewise uses MiniBatchKMeans for k > 50.
        if fit_rows.shape[0] * k * d <= 1e9:
            km = KMeans(n_clusters=k, n_init=1, random_state=seed)
        else:
            km = MiniBatchKMeans(
                n_clusters=k, n_init=1, batch_size=max(2048, 4 * k), random_state=seed
            )
        # float64: sklearn's k-means++ upcasts float32 distances block by block, 10x slower.
        # One thread (OpenMP and BLAS): sklearn's k-means makes many small BLAS calls behind
        # OpenMP barriers, which spin when other jobs share the cores; on digits, k = 10-100:
        # 0.7-2.2 s with 2 threads on a busy 2-core machine vs 0.03-0.09 s with one.
        with threadpool_limits(limits=1):
            km.fit(fit_rows.astype(np.float64))
    if fit_rows is X:
        return km.labels_.astype(np.int64)
    centres = km.cluster_centers_.astype(np.float32)  # (k, d)
    # nearest centre: argmin_c ||x - c||^2 = argmax_c (x . c - ||c||^2 / 2)
    half_sq = 0.5 * (centres**2).sum(axis=1)  # (k,)
    out = np.empty(m, dtype=np.int64)
    rows = max(1, CHUNK_BYTES // (4 * k))
    for s in range(0, m, rows):
        out[s : s + rows] = np.argmax(X[s : s + rows] @ centres.T - half_sq, axis=1)
    return out


# ---------------------------------------------------------------- base class and registry

_REGISTRY: dict[str, type[Strategy]] = {}


class Strategy:
    """Base of every query strategy: configuration in ``__init__``, work in ``_select``.

    Subclasses set ``name`` and ``requires`` (inputs that must not be None) and implement
    ``_select(inputs) -> Selection``. Calling ``select(...)`` validates the inputs once.
    """

    name: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ()

    def required_inputs(self) -> tuple[str, ...]:
        return self.requires

    def select(
        self,
        *,
        n: int,
        labeled: Any,
        unlabeled: Any,
        probabilities: Any = None,
        graph: Any = None,
        embeddings: Any = None,
        labels: Any = None,
        class_names: Sequence[str] | None = None,
        seed: int = 0,
        rule_votes: Any = None,
        rule_proba: Any = None,
    ) -> Selection:
        """Choose ``n`` unlabeled items; see :func:`validate_inputs` for the errors raised.
        ``rule_votes`` / ``rule_proba``: what the labeling functions say (``conflict``, ``auto``)."""
        inputs = validate_inputs(
            strategy=self.name,
            requires=self.required_inputs(),
            n=n,
            labeled=labeled,
            unlabeled=unlabeled,
            probabilities=probabilities,
            graph=graph,
            embeddings=embeddings,
            labels=labels,
            class_names=class_names,
            seed=seed,
            rule_votes=rule_votes,
            rule_proba=rule_proba,
        )
        return self._select(inputs)

    __call__ = select

    def _select(self, inputs: SelectionInputs) -> Selection:
        raise NotImplementedError

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({opts})"


def register_strategy(cls: type[Strategy]) -> type[Strategy]:
    """Class decorator: make ``cls`` available as ``get_strategy(cls.name)``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} must set a class attribute `name`")
    _REGISTRY[cls.name] = cls
    return cls


def get_strategy(name: str, **options: Any) -> Strategy:
    """An instance of the strategy registered as ``name``, configured with ``options``."""
    try:
        cls = _REGISTRY[name]
    except KeyError:
        known = ", ".join(available_strategies())
        raise ValidationError(f"unknown strategy {name!r}; choose one of: {known}") from None
    try:
        return cls(**options)
    except TypeError as exc:
        raise ValidationError(f"bad option for strategy {name!r}: {exc}") from None


def available_strategies() -> list[str]:
    """Names of every registered strategy, sorted."""
    return sorted(_REGISTRY)
