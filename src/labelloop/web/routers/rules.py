"""Labeling functions (rules): the page and its JSON twin. Reviewers read each rule's report
(``Project.rules_report``: coverage, overlap, conflict, estimated accuracy, accuracy on human
labels) and provenance; admins switch a rule off and on again (``Project.set_rule_active``).
A switch keeps the rule's votes; predictions change at the next refresh, requested at once."""

from __future__ import annotations

import time
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from ...errors import ValidationError
from .. import actions
from ..auth import has_role
from ..context import Admin, AdminForm, Ctx, Principal, Reviewer, WebContext, check_csrf, form_value, read_form
from ..render import page
from ..schemas import RuleSwitchIn

router = APIRouter(tags=["rules"])

ADD_EXAMPLES = [  # what the page shows when there is no rule yet (README, `labelloop rules --help`)
    "labelloop rules -p PROJECT add refund --label billing --contains refund,chargeback",
    'labelloop rules -p PROJECT add night --label night --where "meta.camera == 7"',
    "labelloop rules -p PROJECT add-py mylfs.py",
]


def _when(t: float | None) -> str | None:
    return None if t is None else time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def rules_data(ctx: WebContext) -> dict:
    """``Project.rules_report`` of the read-only project, plus when each rule was made or
    switched and which active rules have not run on the newest items yet (the next refresh
    runs them). Computed once per state of labels, rules and settings."""
    project = ctx.readers.project()
    store = project.store
    stored = store.rules()
    newest = store.max_item_id()
    key = (ctx.version(store), newest, project.setting("label_model"), project.setting("rule_trust"),
           tuple((r["id"], r["active"], r["changed"], r["votes_through"]) for r in stored))

    def compute() -> dict:
        report = project.rules_report()
        for row in report["rules"]:
            row["created_at"], row["changed_at"] = _when(row["created"]), _when(row["changed"])
        report["pending"] = [r["name"] for r in stored if r["active"] and r["votes_through"] < newest]
        report["add_examples"] = ADD_EXAMPLES
        return report

    return ctx.cached("rules", key, compute)


@router.get("/api/rules")
def api_rules(p: Reviewer, ctx: Ctx):
    """Every labeling function with its provenance, state and report (coverage, overlap,
    conflict, estimated accuracy from the label model, accuracy on human labels with n)."""
    return rules_data(ctx)


async def _switch(ctx: WebContext, p: Principal, name: str, active: bool) -> dict:
    rule = await ctx.write(lambda s: actions.set_rule_active(s, p.user, name, active))
    ctx.refresher.request()   # the switch changes predictions at this refresh
    return rule


@router.post("/api/rules/{name}")
async def api_switch_rule(name: str, body: RuleSwitchIn, p: Admin, ctx: Ctx):
    """Switch a rule on (``active: true``) or off (admins); its votes are kept, predictions
    change at the next refresh (requested at once)."""
    rule = await _switch(ctx, p, name, body.active)
    return {"name": rule["name"], "active": rule["active"], "changed_by": rule["changed_by"],
            "changed": rule["changed"]}


@router.get("/rules", include_in_schema=False)
def rules_page(p: Reviewer, ctx: Ctx, done: str = "", rule: str = ""):
    data = rules_data(ctx)
    flash = None
    if done in ("on", "off") and any(r["name"] == rule for r in data["rules"]):
        flash = f"Rule {rule} switched {done}. Predictions change at the next refresh" + (
            ", which the server has started." if ctx.refresher.enabled else
            " (this server was started without refreshes: run `labelloop refresh`).")
    return page("rules.html", title="Rules", user=p.user, csrf=p.csrf or "", page_id="rules", wide=True,
                flash=flash, data=data, admin=has_role(p.user, "admin"), refreshing=ctx.refresher.enabled)


@router.post("/rules", include_in_schema=False)
async def rules_form(request: Request, p: AdminForm, ctx: Ctx):
    form = await read_form(request)
    check_csrf(p, form_value(form, "csrf_token"))
    action, name = form_value(form, "action"), form_value(form, "name")
    if action not in ("on", "off"):
        raise ValidationError("action must be 'on' or 'off'")
    await _switch(ctx, p, name, action == "on")
    return RedirectResponse("/rules?" + urlencode({"done": action, "rule": name}), status_code=303)
