"""Server-rendered HTML: Jinja2 templates (``web/templates/``) with autoescape on, so every
value from the project or the user is HTML-escaped. No page has inline script (the CSP
forbids it); data for the page script travels in ``<script type="application/json">``
blocks (the ``json_block`` filter), which browsers never execute."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from urllib.parse import urlencode

from fastapi.responses import HTMLResponse
from markupsafe import Markup, escape

from .auth import User, has_role

__all__ = ["page", "TEMPLATES_DIR", "NAV", "PLOTS"]

TEMPLATES_DIR = Path(__file__).parent / "templates"
NAV = [  # (path, title, minimum role)
    ("/queue", "Label", "annotator"),
    ("/review", "Review", "reviewer"),
    ("/audit", "Audit", "reviewer"),
    ("/dashboard", "Dashboard", "reviewer"),
    ("/users", "Users", "admin"),
    ("/guidelines", "Guidelines", "reviewer"),   # annotators read them on the queue page
    ("/rules", "Rules", "reviewer"),             # labeling functions: reviewers read, admins switch
    ("/novel", "New classes", "reviewer"),       # candidate new classes; add one from a cluster
]
PLOTS = [  # (name, what the picture shows): the dashboard's figures, /plots/<name>.png
    ("learning-curve", "Learning curve: accuracy estimate and mean confidence vs human labels"),
    ("confidence", "Confidence of the machine's predictions (items without a human label)"),
    ("class-balance", "Class balance by label source"),
    ("embedding-map", "2-D PCA map of the embeddings, coloured by current label"),
    ("annotators", "Labels per annotator"),
]


def json_block(data, element_id: str) -> Markup:
    """Data for the page script; '<', '>' and '&' escaped so no string can close the element."""
    text = json.dumps(data, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e") \
        .replace("&", "\\u0026")
    return Markup(f'<script type="application/json" id="{escape(element_id)}">{text}</script>')


def num(v, digits: int = 3) -> str:
    """A table number: — for none, 3 decimals for floats, thousands separators for ints."""
    from jinja2 import Undefined

    if v is None or isinstance(v, Undefined):
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def urlencode_dict(query: dict, **more) -> str:
    return urlencode({**query, **more})


@cache
def _env():
    from jinja2 import Environment, FileSystemLoader

    env = Environment(loader=FileSystemLoader(TEMPLATES_DIR), autoescape=True, auto_reload=False)
    env.filters.update(json_block=json_block, num=num, urlencode_dict=urlencode_dict)
    env.globals.update(nav=NAV, has_role=has_role, plots=PLOTS)
    return env


def page(template: str, *, title: str, user: User | None = None, csrf: str | None = None, page_id: str = "",
         status_code: int = 200, wide: bool = False, flash: str | None = None, **data) -> HTMLResponse:
    """The HTML response of ``template`` in the common layout (``base.html``)."""
    html = _env().get_template(template).render(title=title, user=user, csrf=csrf, page=page_id, wide=wide,
                                                flash=flash, **data)
    return HTMLResponse(html, status_code=status_code)
