"""Server-rendered HTML. Every value from the project or the user passes through :func:`e`
(HTML-escaped, quotes included); no page has inline script (the CSP forbids it), data for the
script travels in ``<script type="application/json">`` blocks, which browsers never execute."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable, Sequence
from urllib.parse import urlencode

from .auth import User, has_role

NAV = [  # (path, title, minimum role)
    ("/queue", "Label", "annotator"),
    ("/review", "Review", "reviewer"),
    ("/audit", "Audit", "reviewer"),
    ("/dashboard", "Dashboard", "reviewer"),
    ("/users", "Users", "admin"),
]


def e(value) -> str:
    """HTML-escape anything (None -> empty)."""
    return "" if value is None else html.escape(str(value), quote=True)


def json_block(element_id: str, data) -> str:
    """Data for the page script; '<' escaped so no string can close the script element."""
    text = json.dumps(data, ensure_ascii=False).replace("<", "\\u003c").replace(">", "\\u003e") \
        .replace("&", "\\u0026")
    return f'<script type="application/json" id="{e(element_id)}">{text}</script>'


def layout(title: str, body: str, *, user: User | None = None, csrf: str | None = None, page: str = "",
           flash: str | None = None, wide: bool = False) -> str:
    nav = ""
    if user is not None:
        links = "".join(
            f'<a href="{path}"{" class=active" if path == "/" + page else ""}>{e(name)}</a>'
            for path, name, role in NAV if has_role(user, role))
        nav = (f'<nav class="nav"><a class="brand" href="/">labelloop</a>{links}'
               f'<span class="who">{e(user.name)} <small>{e(user.role)}</small></span>'
               f'<form method="post" action="/logout" class="inline">'
               f'<input type="hidden" name="csrf_token" value="{e(csrf)}">'
               f'<button type="submit" class="link">Log out</button></form></nav>')
    flash_html = f'<p class="flash" role="status">{e(flash)}</p>' if flash else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · labelloop</title>"
        f'<meta name="csrf-token" content="{e(csrf)}">'
        '<link rel="icon" href="/static/favicon.svg" type="image/svg+xml">'
        '<link rel="stylesheet" href="/static/style.css">'
        '<script src="/static/app.js" defer></script></head>'
        f'<body data-page="{e(page)}">{nav}<main class="{"wide" if wide else ""}">{flash_html}{body}</main></body></html>'
    )


def login_page(*, csrf: str, next_url: str = "", error: str | None = None) -> str:
    err = f'<p class="error" role="alert">{e(error)}</p>' if error else ""
    body = (
        '<section class="login card"><h1>labelloop</h1><p class="muted">Log in to label, review and audit.</p>'
        f"{err}"
        '<form method="post" action="/login">'
        f'<input type="hidden" name="csrf_token" value="{e(csrf)}">'
        f'<input type="hidden" name="next" value="{e(next_url)}">'
        '<label>User <input name="name" autocomplete="username" required autofocus></label>'
        '<label>Password or token <input name="password" type="password" autocomplete="current-password" required>'
        "</label><button type=submit class=primary>Log in</button></form></section>"
    )
    return layout("Log in", body, page="login")


def error_page(status: int, kind: str, detail: str, *, user: User | None = None, csrf: str | None = None) -> str:
    body = (f'<section class="card"><h1>{status} · {e(kind)}</h1><p>{e(detail)}</p>'
            '<p><a href="/">Back to the start page</a></p></section>')
    return layout(f"{status}", body, user=user, csrf=csrf)


def class_buttons(classes: Sequence[str]) -> str:
    out = []
    for i, c in enumerate(classes):
        key = f"<kbd>{(i + 1) % 10}</kbd>" if i < 10 else "<kbd class=none></kbd>"
        out.append(f'<button type="button" class="cls" data-label="{e(c)}">{key}<span>{e(c)}</span></button>')
    return "".join(out)


def queue_page(*, user: User, csrf: str, classes: Sequence[str], initial: dict) -> str:
    body = (
        '<section class="queue">'
        '<div class="stage" id="stage"><div class="item-view" id="item-view"><p class="muted">Loading…</p></div>'
        '<div class="item-meta" id="item-meta"></div></div>'
        '<aside class="panel">'
        '<div class="guess" id="guess"></div>'
        f'<div class="classes" id="classes">{class_buttons(classes)}</div>'
        '<ul class="keys"><li><kbd>1</kbd>–<kbd>9</kbd> pick a class (<kbd>0</kbd>: the tenth)</li>'
        '<li><kbd>Enter</kbd> accept the guess</li><li><kbd>S</kbd> skip · <kbd>U</kbd> undo</li></ul>'
        '<form id="new-class" class="new-class" autocomplete="off">'
        '<input id="new-class-name" name="name" placeholder="new class" maxlength="200" aria-label="new class name">'
        '<button type="submit">+ class</button></form>'
        '<div class="progress" id="progress"></div>'
        '<div class="toast" id="toast" role="status" aria-live="polite"></div>'
        "</aside></section>"
        + json_block("initial", initial)
    )
    return layout("Label", body, user=user, csrf=csrf, page="queue", wide=True)


def _item_thumb(item: dict, *, size: int = 160) -> str:
    if item.get("media"):
        return (f'<img class="thumb" loading="lazy" src="{e(item["media"])}?w={size}" '
                f'alt="item {e(item["id"])}">')
    return f'<div class="thumb text">{e(item.get("text"))}</div>'


def _options(classes: Iterable[str], selected: str | None, *, blank: str | None = None) -> str:
    out = [f'<option value="">{e(blank)}</option>'] if blank is not None else []
    for c in classes:
        sel = " selected" if c == selected else ""
        out.append(f'<option value="{e(c)}"{sel}>{e(c)}</option>')
    return "".join(out)


def review_page(*, user: User, csrf: str, data: dict, query: dict, flash: str | None = None) -> str:
    classes = data["classes"]
    f = data["filters"]
    filters = (
        '<form method="get" action="/review" class="filters">'
        f'<label>Source <select name="source">{_options(["machine", "predicted"], data["source"])}</select></label>'
        f'<label>Class <select name="label">{_options(classes, f.get("label"), blank="any")}</select></label>'
        f'<label>Confidence ≥ <input name="min_confidence" type="number" step="0.01" min="0" max="1" '
        f'value="{e(f.get("min_confidence"))}"></label>'
        f'<label>≤ <input name="max_confidence" type="number" step="0.01" min="0" max="1" '
        f'value="{e(f.get("max_confidence"))}"></label>'
        f'<label>Order <select name="order">{_options(["desc", "asc"], f.get("order"))}</select></label>'
        '<button type="submit">Filter</button></form>'
    )
    cards = []
    for it in data["items"]:
        cards.append(
            '<label class="card tile">'
            f'<input type="checkbox" name="item" value="{e(it["id"])}" class="pick">'
            f"{_item_thumb(it)}"
            f'<span class="tile-label">{e(it["label"])} <small>{it["confidence"]:.2f}</small></span>'
            f'<select name="label_{e(it["id"])}" aria-label="label of item {e(it["id"])}">'
            f'{_options(classes, it["label"])}</select></label>'
        )
    total, offset, limit = data["total"], data["offset"], data["limit"]
    pager = []
    if offset > 0:
        pager.append(f'<a href="/review?{e(urlencode(query | {"offset": max(0, offset - limit)}))}">← previous</a>')
    if offset + limit < total:
        pager.append(f'<a href="/review?{e(urlencode(query | {"offset": offset + limit}))}">next →</a>')
    grid = (
        '<form method="post" action="/review" id="review-form">'
        f'<input type="hidden" name="csrf_token" value="{e(csrf)}">'
        f'<input type="hidden" name="back" value="{e(urlencode(query))}">'
        '<div class="bar"><label><input type="checkbox" id="pick-all"> select all</label>'
        f'<label>Set selected to <select name="bulk_label">{_options(classes, None, blank="(each as shown)")}'
        "</select></label>"
        '<button type="submit" class="primary" id="accept">Accept selected</button>'
        f'<span class="muted">{total} {e(data["source"])} labels match · showing {offset + 1 if total else 0}–'
        f'{min(offset + limit, total)}</span></div>'
        f'<div class="grid">{"".join(cards) or "<p class=muted>Nothing to review with these filters.</p>"}</div>'
        f'<div class="pager">{" ".join(pager)}</div></form>'
    )
    note = ('<p class="muted">Accepting makes the label human-verified (a human annotation by you); '
            "change a tile's class to fix it.</p>")
    return layout("Review", f"<h1>Review machine labels</h1>{note}{filters}{grid}", user=user, csrf=csrf,
                  page="review", flash=flash, wide=True)


def audit_page(*, user: User, csrf: str, data: dict, flash: str | None = None) -> str:
    if not data.get("available"):
        body = (f'<h1>Audit</h1><section class="card"><p>{e(data.get("detail"))}</p></section>')
        return layout("Audit", body, user=user, csrf=csrf, page="audit")
    classes = data["classes"]
    rows = []
    for s in data["suspects"]:
        neigh = "".join(
            f'<figure class="neigh">{_item_thumb(n, size=96)}<figcaption>{e(n.get("label") or "—")}'
            f' <small>{e(n.get("source") or "")}</small></figcaption></figure>' for n in s["neighbours"])
        rows.append(
            '<article class="card suspect">'
            f'<figure class="main">{_item_thumb(s, size=200)}<figcaption>#{e(s["id"])} {e(s.get("name"))}</figcaption></figure>'
            f'<div class="why"><p>labeled <b>{e(s["given"])}</b> <small>({e(s.get("source"))})</small></p>'
            f'<p>probably <b>{e(s.get("suggested"))}</b></p>'
            f'<p class="muted">P(label wrong) {s["score"]:.2f}</p>'
            f'<form method="post" action="/audit" class="inline">'
            f'<input type="hidden" name="csrf_token" value="{e(csrf)}">'
            f'<input type="hidden" name="item" value="{e(s["id"])}">'
            f'<select name="label">{_options(classes, s.get("suggested"))}</select>'
            '<button type="submit" name="action" value="fix" class="primary">Relabel</button>'
            '<button type="submit" name="action" value="keep">Keep given label</button></form></div>'
            f'<div class="neighbours">{neigh}</div></article>')
    body = (f'<h1>Audit: suspected label errors</h1><p class="muted">{data["total"]} suspects, most suspicious '
            f'first · estimated share of wrong labels {100 * data.get("noise_rate", 0):.1f}% · '
            f'{e(data.get("method"))}</p>'
            '<p class="muted">Each row: the item, its label, and its nearest neighbours whose labels disagree. '
            '<b>Relabel</b> records your label; <b>Keep</b> confirms the given one (not flagged again).</p>'
            + ("".join(rows) or "<p>No suspects.</p>"))
    return layout("Audit", body, user=user, csrf=csrf, page="audit", flash=flash, wide=True)


def _num(v, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return f"{v:,}" if isinstance(v, int) else e(v)


def dashboard_page(*, user: User, csrf: str, data: dict, version: str) -> str:
    c = data["counts"]
    est = data["estimate"]
    interval = (f'<small>95% interval {100 * est["lower"]:.1f}–{100 * est["upper"]:.1f}%</small>'
                if est.get("lower") is not None and est.get("upper") is not None else "")
    est_html = (f'<div class="stat" id="stat-estimate"><b>{100 * est["accuracy"]:.1f}%</b>'
                f'<span>estimated accuracy</span>{interval}</div>'
                if est.get("accuracy") is not None else
                f'<div class="stat"><b>—</b><span>estimated accuracy</span><small>{e(est.get("note"))}</small></div>')
    stats = "".join(
        f'<div class="stat" id="stat-{k}"><b>{_num(c[k])}</b><span>{e(label)}</span></div>'
        for k, label in (("items", "items"), ("human", "human labels"), ("machine", "machine labels"),
                         ("imported", "imported labels"), ("left", "left to label")))
    ann_rows = "".join(
        f"<tr><td>{e(a['annotator'])}</td><td>{_num(a['labels'])}</td><td>{_num(a.get('gold_accuracy'))}</td>"
        f"<td>{_num(a.get('consensus_accuracy'))}</td></tr>" for a in data["annotators"])
    ag = data["agreement"]
    agreement = (f"<p>{ag['items']} items labeled by two or more annotators; Fleiss κ {_num(ag.get('fleiss_kappa'))}, "
                 f"raw agreement {_num(ag.get('raw_agreement'))}</p>" if ag.get("items") else
                 '<p class="muted">No item has labels from two annotators yet: agreement appears when '
                 "consensus routing assigns items to several people.</p>")
    pairs = "".join(f"<tr><td>{e(p['a'])}</td><td>{e(p['b'])}</td><td>{_num(p['kappa'])}</td><td>{p['shared']}</td></tr>"
                    for p in ag.get("pairs", []))
    if pairs:
        agreement += f"<table><tr><th>annotator</th><th>annotator</th><th>Cohen κ</th><th>shared</th></tr>{pairs}</table>"
    refresh = data["refresh"]
    plots = "".join(
        f'<figure class="card plot"><img src="/plots/{name}.png?v={e(version)}" alt="{e(alt)}" loading="lazy">'
        f"<figcaption>{e(alt)}</figcaption></figure>"
        for name, alt in (("learning-curve", "Learning curve: accuracy estimate and mean confidence vs human labels"),
                          ("confidence", "Confidence of the machine's predictions (items without a human label)"),
                          ("class-balance", "Class balance by label source"),
                          ("embedding-map", "2-D PCA map of the embeddings, coloured by current label"),
                          ("annotators", "Labels per annotator")))
    body = (
        f'<h1>Dashboard</h1><section class="stats">{stats}{est_html}</section>'
        f'<p class="muted">Last refresh: {e(refresh.get("state"))}'
        f'{" · " + e(refresh.get("detail")) if refresh.get("detail") else ""}'
        f' · predictions from run {e(data["snapshot"].get("run"))} · queue order: '
        f'{e(data["snapshot"].get("strategy"))}{" (ranking…)" if refresh.get("ranking") == "running" else ""}</p>'
        '<p class="downloads">Export: <a href="/export?format=csv" download>CSV</a> · '
        '<a href="/export?format=jsonl" download>JSONL</a> · <a href="/api/dashboard">JSON</a></p>'
        f'<section class="plots">{plots}</section>'
        '<section class="card"><h2>Annotators</h2>'
        f"<table><tr><th>annotator</th><th>labels</th><th>gold accuracy</th><th>agreement with others</th></tr>{ann_rows}</table>"
        f"<h3>Agreement</h3>{agreement}</section>"
    )
    return layout("Dashboard", body, user=user, csrf=csrf, page="dashboard", wide=True)


def users_page(*, user: User, csrf: str, users: Sequence[dict], shown: dict | None = None,
               flash: str | None = None) -> str:
    secret = ""
    if shown:
        what = "password" if "password" in shown else "API token"
        secret = (f'<section class="card secret"><p>{what} for <b>{e(shown["name"])}</b> — shown once, copy it now:</p>'
                  f'<code>{e(shown.get("password") or shown.get("token"))}</code></section>')
    rows = "".join(
        f"<tr><td>{e(u['name'])}</td><td>{e(u['role'])}</td><td>{'yes' if u['active'] else 'no'}</td><td>"
        f'<form method="post" action="/users" class="inline"><input type="hidden" name="csrf_token" value="{e(csrf)}">'
        f'<input type="hidden" name="name" value="{e(u["name"])}">'
        f'<button name="action" value="{"deactivate" if u["active"] else "activate"}" type="submit">'
        f'{"Deactivate" if u["active"] else "Activate"}</button>'
        f'<button name="action" value="password" type="submit">New password</button>'
        f'<button name="action" value="token" type="submit">New token</button></form></td></tr>'
        for u in users)
    form = (
        '<form method="post" action="/users" class="card add-user">'
        f'<input type="hidden" name="csrf_token" value="{e(csrf)}"><input type="hidden" name="action" value="add">'
        '<label>Name <input name="name" required pattern="[A-Za-z0-9][A-Za-z0-9._@-]{0,63}"></label>'
        f'<label>Role <select name="role">{_options(["annotator", "reviewer", "admin"], "annotator")}</select></label>'
        '<label><input type="checkbox" name="token" value="1"> API token instead of a password</label>'
        '<button type="submit" class="primary">Add user</button></form>'
    )
    body = (f"<h1>Users</h1>{secret}<table><tr><th>name</th><th>role</th><th>active</th><th></th></tr>{rows}</table>"
            f"<h2>Add a user</h2>{form}")
    return layout("Users", body, user=user, csrf=csrf, page="users", flash=flash)
