"""The labelloop web app: labeling queue, review, audit, dashboard (``labelloop serve``).

Needs the ``web`` extra (fastapi, uvicorn, jinja2); imported only by ``labelloop serve`` and tests.
"""

from __future__ import annotations

__all__ = ["create_app"]


def create_app(*args, **kwargs):
    """See :func:`labelloop.web.app.create_app`."""
    try:
        from .app import create_app as _create
    except ImportError as exc:  # fastapi / uvicorn missing
        from ..errors import MissingDependencyError

        if getattr(exc, "name", None) in ("fastapi", "starlette", "pydantic", "uvicorn", "jinja2", "markupsafe"):
            raise MissingDependencyError.for_extra(exc.name, "web") from exc
        raise
    return _create(*args, **kwargs)
