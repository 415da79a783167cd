"""One FastAPI router per area of the web app; each page keeps its JSON twin under /api/.

``auth`` (login, logout, me, schema), ``queue`` (labeling), ``boxes`` (the box editor of
detection projects), ``media`` (images), ``review``
(machine labels), ``audit`` (suspected errors), ``dashboard`` (numbers, plots, export, status),
``users`` (admin), ``guidelines`` (labeling guidelines: all read, admins write), ``rules``
(labeling functions and their report: reviewers read, admins switch them off and on), ``novel``
(candidate new classes: reviewers search and add a class from a cluster)."""

from __future__ import annotations

from . import audit, auth, boxes, dashboard, guidelines, media, novel, queue, review, rules, users

__all__ = ["ROUTERS", "all_routes"]

ROUTERS = [auth.router, queue.router, boxes.router, media.router, review.router, audit.router, dashboard.router, users.router,
           guidelines.router, rules.router, novel.router]


def all_routes() -> list:
    """Every route of the app (FastAPI includes routers lazily, so ``app.routes`` lists them
    only as included-router entries)."""
    return [route for router in ROUTERS for route in router.routes]
