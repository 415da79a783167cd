"""Backbone base class, registry and the deterministic fake backbone.

A backbone turns a batch of items (PIL images or strings) into a float32 array ``(B, dim)``.
A new backbone is a new module with one class that sets ``id``, ``modality``, ``batch_size``,
implements :meth:`Backbone.embed_batch` and is decorated with :func:`register_backbone`.
Heavy libraries (torch, sentence-transformers, scikit-learn) are imported inside the
backbone, never at module import.
"""

from __future__ import annotations

import hashlib
import inspect
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..errors import ValidationError

__all__ = [
    "Backbone",
    "FakeBackbone",
    "register_backbone",
    "register_backbone_loader",
    "get_backbone",
    "available_backbones",
    "default_backbone",
    "MODALITIES",
]

MODALITIES = ("image", "text")

_REGISTRY: dict[str, type[Backbone]] = {}
_LOADERS: dict[str, Callable[[str, Path | None], "Backbone | None"]] = {}
_DEFAULTS = {"image": "efficientnet-lite0", "text": "minilm-l6"}


class Backbone:
    """Base class of every backbone.

    Subclasses take their options as keyword-only ``__init__`` arguments (validated there: a
    backbone is built once, at the public boundary) and implement :meth:`embed_batch`.
    """

    id: ClassVar[str] = ""
    modality: str = "image"                      # "image" | "text"
    modalities: ClassVar[tuple[str, ...]] = ()   # what the class can embed; () -> (modality,)
    batch_size: int = 32
    dim: int = 0                                 # 0 until known (tfidf: after fit)
    needs_fit: bool = False
    hidden: ClassVar[bool] = False               # test-only backbones stay out of listings
    # input sizes (px, ascending; the last is the default) a project chooses among by its
    # images' size (:mod:`labelloop.embed.sizing`), passed as ``image_size``; () = no choice
    image_sizes: ClassVar[tuple[int, ...]] = ()

    def fit(self, inputs: list) -> Backbone:
        """Learn corpus-dependent state (only backbones with ``needs_fit``); returns self."""
        return self

    @property
    def cache_id(self) -> str:
        """``id`` plus everything that changes the output (options, fitted state)."""
        return self.id

    def embed_batch(self, inputs: list) -> np.ndarray:
        """Embed one batch: images are ``PIL.Image.Image`` of any mode/size, texts are ``str``.

        Returns ``(B, dim)`` float32, not necessarily L2-normalised."""
        raise NotImplementedError

    def prepare(self, inputs: list) -> Any:
        """The model-free CPU work of a batch (validation, resizing, tensors), which the
        runner does in a background thread while the previous batch is in the model; returns
        what :meth:`embed_prepared` takes. Default: nothing, the inputs themselves."""
        return inputs

    def embed_prepared(self, prepared: Any) -> np.ndarray:
        """Embed what :meth:`prepare` returned; ``embed_batch(x)`` equals
        ``embed_prepared(prepare(x))``. Default: :meth:`embed_batch`."""
        return self.embed_batch(prepared)

    def embed(self, inputs: Sequence, *, batch_size: int | None = None) -> np.ndarray:
        """Embed any number of items in batches of ``batch_size`` (default: the backbone's)."""
        bs = batch_size or self.batch_size
        if bs < 1:
            raise ValidationError(f"batch_size must be >= 1, got {bs}")
        inputs = list(inputs)
        if not inputs:
            return np.zeros((0, self.dim), dtype=np.float32)
        parts = [self.embed_batch(inputs[lo : lo + bs]) for lo in range(0, len(inputs), bs)]
        return np.concatenate(parts, axis=0)  # (n, dim)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.cache_id!r} ({self.modality}, dim={self.dim})>"

    # ------------------------------------------------------------ helpers for subclasses
    def _check_inputs(self, inputs: list) -> list:
        """Validate a batch: a list of PIL images (image) or of strings (text)."""
        if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Sequence):
            raise ValidationError(
                f"{self.id}: embed_batch takes a list of "
                f"{'PIL images' if self.modality == 'image' else 'strings'}, got {type(inputs).__name__}")
        if self.modality == "text":
            for i, x in enumerate(inputs):
                if not isinstance(x, str):
                    raise ValidationError(
                        f"{self.id}: item {i} is a {type(x).__name__}, not a str; pass texts as strings")
        else:
            from PIL import Image

            for i, x in enumerate(inputs):
                if not isinstance(x, Image.Image):
                    raise ValidationError(
                        f"{self.id}: item {i} is a {type(x).__name__}, not a PIL image; "
                        "open files with PIL.Image.open(path) first")
        return list(inputs)


def _modalities(cls: type[Backbone]) -> tuple[str, ...]:
    return cls.modalities or (cls.modality,)


def register_backbone(cls: type[Backbone]) -> type[Backbone]:
    """Class decorator: make ``cls`` available to :func:`get_backbone` under ``cls.id``."""
    if not cls.id:
        raise ValueError(f"{cls.__name__} has no id")
    bad = [m for m in _modalities(cls) if m not in MODALITIES]
    if bad:
        raise ValueError(f"{cls.__name__}: unknown modality {bad[0]!r}; use one of {MODALITIES}")
    _REGISTRY[cls.id] = cls
    return cls


def register_backbone_loader(prefix: str, fn: Callable[[str, Path | None], Backbone | None]) -> None:
    """Resolve ids starting with ``prefix`` (e.g. ``"adapted-"``) through ``fn(id, project_dir)``.

    ``fn`` returns a Backbone, or None when it does not know the id."""
    _LOADERS[prefix] = fn


PLUGIN_GROUP = "labelloop.backbones"
_plugins_loaded = False


def _ensure_builtin() -> None:
    """Register the built-in backbones, then the plugins, once per process.

    A plugin is a module named by an entry point in the group ``labelloop.backbones``;
    importing it calls :func:`register_backbone` / :func:`register_backbone_loader`."""
    global _plugins_loaded
    # importing the modules registers the built-in backbones (cheap: no heavy imports)
    from . import efficientnet, minilm, pixels, tfidf  # noqa: F401

    if _plugins_loaded:
        return
    _plugins_loaded = True
    from importlib.metadata import entry_points

    for ep in entry_points(group=PLUGIN_GROUP):
        try:
            ep.load()
        except Exception as exc:  # a broken plugin must not take the built-in backbones down
            warnings.warn(f"backbone plugin {ep.name!r} ({ep.value}) failed to load: {exc}",
                          RuntimeWarning, stacklevel=3)


def available_backbones(modality: str | None = None, *, include_hidden: bool = False) -> list[str]:
    """Registered backbone ids, sorted; only those that embed ``modality`` when given."""
    _ensure_builtin()
    if modality is not None and modality not in MODALITIES:
        raise ValidationError(f"unknown modality {modality!r}; use one of {', '.join(MODALITIES)}")
    return sorted(
        bid for bid, cls in _REGISTRY.items()
        if (include_hidden or not cls.hidden) and (modality is None or modality in _modalities(cls))
    )


def default_backbone(modality: str) -> str:
    """The pretrained backbone a project of this modality uses unless told otherwise."""
    if modality not in _DEFAULTS:
        raise ValidationError(f"unknown modality {modality!r}; use one of {', '.join(MODALITIES)}")
    return _DEFAULTS[modality]


def get_backbone(backbone_id: str, *, project_dir: Path | str | None = None, **options: Any) -> Backbone:
    """Build the backbone ``backbone_id`` with ``options`` (e.g. ``image_size=112``).

    Ids not in the registry are offered to the loaders registered with
    :func:`register_backbone_loader` (adapted backbones stored in ``project_dir``)."""
    _ensure_builtin()
    cls = _REGISTRY.get(backbone_id)
    if cls is None:
        for prefix, fn in _LOADERS.items():
            if backbone_id.startswith(prefix):
                bb = fn(backbone_id, Path(project_dir) if project_dir is not None else None)
                if bb is not None:
                    return bb
        known = ", ".join(available_backbones())
        raise ValidationError(f"unknown backbone {backbone_id!r}; known backbones: {known}")
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = sorted(k for k in options if k not in params or k == "self")
    if unknown and not takes_any:
        allowed = sorted(k for k, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY)
        raise ValidationError(
            f"backbone {backbone_id!r} has no option {unknown[0]!r}; "
            f"its options are: {', '.join(allowed) or '(none)'}")
    return cls(**options)


def to_rgb(img: Any, background: tuple[int, int, int] = (255, 255, 255)) -> Any:
    """Any PIL image as 8-bit RGB: transparency composited over ``background`` (white),
    16-bit / 32-bit grayscale rescaled to 0..255 rather than clipped."""
    from PIL import Image

    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16") or (img.mode == "I" and a.max(initial=0) > 255):
            a = a / 257.0  # 0..65535 -> 0..255
        elif img.mode == "F" and a.max(initial=0) <= 1.0:
            a = a * 255.0  # float images in [0, 1]
        img = Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8))  # (h, w) -> "L"
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, background + (255,))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return img.convert("RGB")


def content_digest(x: Any) -> bytes:
    """sha256 of an item's content: the decoded pixels (mode, size, bytes) or the UTF-8 text."""
    h = hashlib.sha256()
    if isinstance(x, str):
        h.update(b"text\0" + x.encode("utf-8"))
    else:
        h.update(f"image\0{x.mode}\0{x.size[0]}x{x.size[1]}\0".encode())
        h.update(x.tobytes())
        if x.mode in ("P", "PA"):  # indices mean nothing without their palette
            h.update(bytes(x.getpalette() or []))
    return h.digest()


@register_backbone
class FakeBackbone(Backbone):
    """Deterministic stand-in for tests: each item maps to a fixed Gaussian vector.

    The vector is drawn from a generator seeded by the sha256 of the item's content, so equal
    content gives equal vectors, in any batch. Works for images and texts (``modality``)."""

    id = "fake"
    modalities = MODALITIES
    batch_size = 16
    hidden = True

    def __init__(self, *, modality: str = "image", dim: int = 16) -> None:
        if modality not in MODALITIES:
            raise ValidationError(f"fake backbone: unknown modality {modality!r}; use one of {MODALITIES}")
        if not isinstance(dim, int) or dim < 1:
            raise ValidationError(f"fake backbone: dim must be a positive int, got {dim!r}")
        self.modality = modality
        self.dim = dim

    @property
    def cache_id(self) -> str:
        return f"fake-{self.modality}-{self.dim}"

    def embed_batch(self, inputs: list) -> np.ndarray:
        inputs = self._check_inputs(inputs)
        out = np.empty((len(inputs), self.dim), dtype=np.float32)  # (B, dim)
        for i, x in enumerate(inputs):
            seed = int.from_bytes(content_digest(x)[:8], "little")
            out[i] = np.random.default_rng(seed).standard_normal(self.dim)
        return out
