"""The one exception tree of labelloop.

Every error a user can cause is a :class:`LabelloopError`; the CLI prints its message and
exits with ``exit_code``; the web app answers with ``http_status`` and a JSON body
``{"error": kind, "detail": message}``. Anything else escaping is a bug.

    LabelloopError
    ├── ProjectError            project missing, already exists, wrong modality, bad config
    │   └── ReadOnlyError       a write through a read-only connection (the web app's readers)
    ├── ValidationError         bad argument or bad value from the user (names the fix)
    │   └── UnknownItemError    an item reference that matches no item
    │   └── UnknownClassError   a class name the project does not have
    ├── NotReadyError           a step needs an earlier step first (embed before refresh ...)
    ├── MissingDependencyError  an optional dependency is missing; message has the install command
    ├── PoolExhaustedError      active learning asked for more items than are left
    └── AuthError               web app: not logged in / not allowed
"""

from __future__ import annotations

__all__ = [
    "LabelloopError",
    "ProjectError",
    "ReadOnlyError",
    "ValidationError",
    "UnknownItemError",
    "UnknownClassError",
    "NotReadyError",
    "MissingDependencyError",
    "PoolExhaustedError",
    "AuthError",
]


class LabelloopError(Exception):
    """Base of every error a user can cause."""

    exit_code = 2
    http_status = 400
    kind = "error"


class ProjectError(LabelloopError):
    kind = "project"
    http_status = 409


class ReadOnlyError(ProjectError):
    kind = "read_only"


class ValidationError(LabelloopError, ValueError):
    kind = "validation"
    http_status = 422


class UnknownItemError(ValidationError, KeyError):
    kind = "unknown_item"
    http_status = 404

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class UnknownClassError(ValidationError, KeyError):
    kind = "unknown_class"
    http_status = 422

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class NotReadyError(LabelloopError):
    kind = "not_ready"
    http_status = 409


class MissingDependencyError(LabelloopError, ImportError):
    kind = "missing_dependency"
    http_status = 500

    @classmethod
    def for_extra(cls, module: str, extra: str) -> "MissingDependencyError":
        return cls(
            f"{module!r} is not installed; install it with: "
            f"pip install -c constraints.txt 'labelloop[{extra}]'"
        )


class PoolExhaustedError(LabelloopError):
    kind = "pool_exhausted"
    http_status = 409


class AuthError(LabelloopError):
    kind = "auth"
    http_status = 401
