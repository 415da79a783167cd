"""TF-IDF + truncated SVD baseline for text (fitted on the project's own corpus)."""

from __future__ import annotations

import hashlib

import numpy as np

from ..errors import NotReadyError, ValidationError
from .base import Backbone, register_backbone

__all__ = ["TfidfBackbone"]

DEFAULT_DIM = 256           # latent semantic analysis habit: a few hundred components
MAX_FEATURES = 100_000      # most frequent uni+bigrams kept; bounds memory on big corpora


@register_backbone
class TfidfBackbone(Backbone):
    """Sublinear TF-IDF over word 1–2 grams, reduced to ``dim`` dense dimensions by SVD.

    ``dim`` is capped by the fitted vocabulary size and the number of documents."""

    id = "tfidf"
    modality = "text"
    batch_size = 1024
    needs_fit = True

    def __init__(self, *, dim: int = DEFAULT_DIM, seed: int = 0) -> None:
        if not isinstance(dim, int) or isinstance(dim, bool) or dim < 1:
            raise ValidationError(f"tfidf: dim must be a positive int, got {dim!r}")
        self.max_dim = dim
        self.seed = seed
        self.dim = 0
        self.vectorizer_ = None
        self.svd_ = None
        self.fingerprint_: str | None = None

    def fit(self, inputs: list) -> TfidfBackbone:
        """Learn vocabulary, IDF weights and the SVD basis from ``inputs`` (all texts)."""
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer

        texts = self._check_inputs(inputs)
        if not texts:
            raise ValidationError("tfidf: fit needs at least one text")
        vec = TfidfVectorizer(
            sublinear_tf=True, ngram_range=(1, 2), max_features=MAX_FEATURES,
            token_pattern=r"(?u)\b\w+\b",  # keep one-letter words: "a", "I", digits
            dtype=np.float32,
        )
        try:
            X = vec.fit_transform(texts)  # (n, V) sparse, rows L2-normalised
        except ValueError as exc:  # empty vocabulary: only blank / punctuation texts
            raise ValidationError(f"tfidf: cannot fit on these texts ({exc}); they contain no words") from exc
        n, V = X.shape
        dim = min(self.max_dim, V, n)
        svd = TruncatedSVD(n_components=dim, algorithm="randomized", n_iter=7, random_state=self.seed)
        svd.fit(X)
        self.vectorizer_, self.svd_, self.dim = vec, svd, dim
        h = hashlib.sha256()
        h.update("\0".join(sorted(vec.vocabulary_, key=vec.vocabulary_.get)).encode())
        h.update(np.ascontiguousarray(vec.idf_, dtype=np.float64).tobytes())
        h.update(np.ascontiguousarray(svd.components_).tobytes())
        self.fingerprint_ = h.hexdigest()[:12]
        return self

    @property
    def cache_id(self) -> str:
        if self.fingerprint_ is None:
            raise NotReadyError("tfidf: fit() it on the corpus before asking for its cache id")
        return f"tfidf-{self.dim}-{self.fingerprint_}"

    def embed_batch(self, inputs: list) -> np.ndarray:
        if self.svd_ is None:
            raise NotReadyError("tfidf: fit() it on the corpus before embedding")
        texts = self._check_inputs(inputs)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        X = self.vectorizer_.transform(texts)               # (B, V) sparse
        # Z = X V_k: projection on the top-k right singular vectors
        Z = np.asarray(X @ self.svd_.components_.T)         # (B, dim)
        return Z.astype(np.float32, copy=False)
