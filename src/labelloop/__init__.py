"""labelloop: label image and text datasets with as few human labels as possible.

The public surface is small: :class:`Project` does everything the CLI does. Heavy modules are
imported on first use, so ``import labelloop`` and ``labelloop --help`` stay fast.
"""

from __future__ import annotations

from importlib import import_module

from .errors import (
    AuthError,
    LabelloopError,
    MissingDependencyError,
    NotReadyError,
    PoolExhaustedError,
    ProjectError,
    UnknownClassError,
    UnknownItemError,
    ValidationError,
)

__version__ = "0.1.0"

_LAZY = {
    "Project": ".project",
    "LabelPropagation": ".propagate",
    "KnnGraph": ".graph",
    "build_knn_graph": ".graph",
    "get_backbone": ".embed",
    "register_backbone": ".embed",
    "load_dataset": ".datasets",
}

__all__ = sorted([
    "__version__",
    "AuthError",
    "LabelloopError",
    "MissingDependencyError",
    "NotReadyError",
    "PoolExhaustedError",
    "ProjectError",
    "UnknownClassError",
    "UnknownItemError",
    "ValidationError",
    *_LAZY,
])


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'labelloop' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
