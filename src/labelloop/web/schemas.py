"""Request and error bodies of the HTTP API (their OpenAPI schema is generated from these).

Types are strict: an item id is a JSON integer (not ``true``, not ``1.0``, not ``"1"``) that fits
an SQLite integer; unknown fields are refused. Every error has the body :class:`ErrorOut`, and
:data:`ERROR_RESPONSES` documents it for each 4xx status the app answers with.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from ..store import class_name_pattern
from .actions import MAX_GUIDELINES

__all__ = ["ErrorOut", "ERROR_RESPONSES", "ItemId", "ClassName", "USER_NAME_PATTERN", "ID_LIST_PATTERN", "MAX_ITEM_ID", "LoginIn", "LabelIn", "UndoIn", "SkipIn", "ReleaseIn",
           "ClassIn", "Decision", "ReviewIn", "AuditIn", "UserIn", "UserChange", "GuidelinesIn", "GuidelinesOut", "RuleSwitchIn",
           "NovelFindIn", "NovelClassIn", "BoxIn", "BoxesIn", "ClassSetIn"]

# the largest integer every JSON client reads exactly (JavaScript numbers are doubles); the store
# itself allows up to 2**63 - 1 (SQLite INTEGER), far beyond any project
ID_LIST_PATTERN = r"^( *[0-9]{1,18} *)?(,( *[0-9]{1,18} *)?)*$"   # "12, 40,7": what _parse_ids takes
USER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$"
MAX_ITEM_ID = 2**53 - 1


def _json_integer(v):
    """A JSON integer: 12 or 12.0 (JSON Schema's integer), never true / false or a string."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(f"must be a JSON integer such as 12, not {type(v).__name__} {str(v)[:20]!r}")
    if isinstance(v, float):
        if not v.is_integer():
            raise ValueError(f"must be a whole number, not {v}")
        v = int(v)
    return v


ItemId = Annotated[int, Field(ge=1, le=MAX_ITEM_ID, description="item id (a JSON integer)"),
                   BeforeValidator(_json_integer)]
Key = Annotated[str | None, Field(min_length=1, max_length=100,
                                  description="idempotency key: a retry with the same key is stored once")]
ClassName = Annotated[str, Field(min_length=1, max_length=200, pattern=class_name_pattern(),
                                 description="class name: one line of visible text")]


class ErrorOut(BaseModel):
    """The body of every error answer."""

    error: str = Field(description="kind of error: auth, forbidden, csrf, validation, unknown_item, "
                                   "unknown_class, not_ready, not_found, media_changed, too_large, "
                                   "too_many_attempts, ...")
    detail: str = Field(description="what was wrong and how to fix it")


ERROR_RESPONSES: dict[int | str, dict] = {
    status: {"model": ErrorOut, "description": text} for status, text in (
        (400, "the body could not be read (not UTF-8 JSON)"),
        (401, "not logged in, or an unknown or expired session or token"),
        (403, "the role does not allow this, or a missing CSRF token"),
        (404, "no such item, page or endpoint"),
        (409, "not ready: an earlier step is needed first"),
        (413, "request body too large"),
        (422, "invalid request: which field and why"),
        (429, "too many failed logins, or the server is busy checking logins"),
    )
}


class _Body(BaseModel):
    # strict: JSON true is no item id, "yes" is no boolean; unknown fields are refused
    model_config = ConfigDict(extra="forbid", strict=True)


class LoginIn(_Body):
    name: str = Field(max_length=64)
    password: str | None = Field(default=None, max_length=1000, description="password, or leave out and send token")
    token: str | None = Field(default=None, max_length=200)


class LabelIn(_Body):
    item: ItemId
    label: ClassName
    key: Key = None


class ClassSetIn(_Body):
    item: ItemId
    classes: list[ClassName] = Field(max_length=1000, description="the classes that apply ([]: none does)")


class UndoIn(_Body):
    key: Key = None


class SkipIn(_Body):
    item: ItemId


class ReleaseIn(_Body):
    items: list[ItemId] = Field(max_length=50, description="items the page held and no longer shows")


class ClassIn(_Body):
    name: ClassName


class Decision(_Body):
    item: ItemId
    label: ClassName


class ReviewIn(_Body):
    items: list[Decision] = Field(min_length=1, max_length=5000)
    key: Key = None


class AuditIn(_Body):
    item: ItemId
    label: ClassName
    action: Literal["fix", "keep"]


class UserIn(_Body):
    name: str = Field(pattern=USER_NAME_PATTERN, description="letters, digits and . _ @ -")
    role: Literal["admin", "reviewer", "annotator"] = "annotator"
    token: bool = Field(default=False, description="give an API token instead of a password")
    password: str | None = Field(default=None, min_length=8, max_length=1000,
                                 description="leave out to have one generated (shown once)")


class UserChange(_Body):
    action: Literal["activate", "deactivate", "password", "token"]


class RuleSwitchIn(_Body):
    active: bool = Field(description="true switches the rule on, false off (its votes are kept either way)")


class NovelFindIn(_Body):
    batch: str | None = Field(default=None, max_length=200,
                              description="only this batch's unlabeled items, new relative to the batches before it")


class NovelClassIn(_Body):
    name: str = Field(min_length=1, max_length=200, description="the new class")


Pixels = Annotated[float, Field(allow_inf_nan=False, ge=-1e6, le=1e6, description="image pixels")]


class BoxIn(_Body):
    """One box of an image as the editor saves it (image pixels, top-left origin)."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    id: Annotated[int | None, Field(ge=1, le=MAX_ITEM_ID,
                                    description="the stored box this one is (leave out for a new box)")] = None
    x: Pixels
    y: Pixels
    w: Pixels
    h: Pixels
    class_: ClassName = Field(alias="class")


class BoxesIn(_Body):
    boxes: list[BoxIn] = Field(max_length=500, description="every box the image has after the edit ([] = none)")


class GuidelinesIn(_Body):
    text: str = Field(max_length=MAX_GUIDELINES,
                      description=f"Markdown or plain text, at most {MAX_GUIDELINES} characters; \"\" clears them")


class GuidelinesOut(BaseModel):
    """The labeling guidelines, as written and as the pages show them."""

    text: str = Field(description="as written (Markdown or plain text); \"\" when there are none")
    html: str = Field(description="the text rendered safely: a Markdown subset, everything else escaped")
    updated: float | None = Field(description="when they were last saved (Unix time); null if never")
    by: str | None = Field(description="who saved them last")
    max_length: int = Field(description="the most characters the text may have")
