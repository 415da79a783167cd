"""The three kinds of labeling function and how each is evaluated on an item.

- ``contains``: any of the keywords occurs in the item's text (case-insensitive, whole words;
  a keyword of several words matches them separated by any whitespace) -> the rule's label.
- ``where``: a safe expression over the item's metadata is true (:mod:`.expression`) -> label.
- ``python``: a plain function ``item -> class name | None`` from a file the user gives. It
  runs the user's own code, in this process, with the user's rights: the file's source is kept
  in the project (its provenance) and executed again for items imported later.

A rule votes for one class or abstains; votes are never annotations.
"""

from __future__ import annotations

import hashlib
import re
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ValidationError
from .expression import Expression

__all__ = ["KINDS", "RuleItem", "compile_rule", "keyword_pattern", "python_functions", "source_digest", "evaluate",
           "validate_rule_name"]

KINDS = ("contains", "where", "python")
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}$")


@dataclass(frozen=True)
class RuleItem:
    """What a rule sees of an item (a python rule gets this object)."""

    id: int
    text: str | None
    meta: dict = field(default_factory=dict)   # the table's other columns, kept at import
    external_id: str | None = None
    uri: str | None = None                       # an image's path
    modality: str = "text"


def validate_rule_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValidationError(f"rule name {name!r} must be 1-100 letters, digits, '_', '.' or '-' "
                              "(e.g. refund or night_camera7)")
    return name


def keyword_pattern(keywords: Iterable[str]) -> re.Pattern:
    """One case-insensitive pattern matching any keyword as whole words."""
    words = [" ".join(k.split()) for k in keywords if k and k.strip()]
    if not words:
        raise ValidationError("--contains needs at least one keyword, e.g. --contains refund,chargeback")
    alternatives = "|".join(r"\s+".join(re.escape(w) for w in kw.split(" ")) for kw in words)
    # (?<!\w) / (?!\w) rather than \b: a keyword may start or end with a non-word character ("c++")
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)", re.IGNORECASE)


def python_functions(source: str, *, filename: str = "<rules>") -> dict[str, Callable]:
    """Execute a file of labeling functions (the user's own code) and return its public
    top-level functions by name (those whose name does not start with '_')."""
    try:
        code = compile(source, filename, "exec")
    except SyntaxError as exc:
        raise ValidationError(f"{filename}: line {exc.lineno}: {exc.msg}; fix the file and run add-py again") from None
    module = types.ModuleType("labelloop_user_rules")
    module.__file__ = filename
    try:
        exec(code, module.__dict__)   # noqa: S102 - the user's own labeling functions, by design
    except Exception as exc:  # the user's code may raise anything while it loads
        raise ValidationError(f"{filename} raised {type(exc).__name__}: {exc} while loading; "
                              "fix the file and run add-py again") from None
    return {name: fn for name, fn in vars(module).items()
            if isinstance(fn, types.FunctionType) and not name.startswith("_")
            and fn.__module__ == module.__name__}


def source_digest(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def compile_rule(name: str, kind: str, definition: dict, label: str | None) -> Callable[[RuleItem], str | None]:
    """The rule as a function item -> class name | None (abstain)."""
    if kind == "contains":
        pattern = keyword_pattern(definition["keywords"])
        return lambda item: label if item.text and pattern.search(item.text) else None
    if kind == "where":
        expr = Expression(definition["expression"], rule=name)
        return lambda item: label if expr(item.meta, item.text) else None
    if kind == "python":
        fns = python_functions(definition["source"], filename=definition.get("file", "<rules>"))
        fn = fns.get(definition["function"])
        if fn is None:
            raise ValidationError(f"rule {name!r}: its stored source no longer defines {definition['function']}()")
        return fn
    raise ValidationError(f"rule {name!r}: unknown kind {kind!r}; kinds: {', '.join(KINDS)}")


def evaluate(name: str, rule: Callable[[RuleItem], str | None], items: Iterable[RuleItem]
             ) -> list[tuple[int, str]]:
    """(item id, class name) for every item the rule votes on."""
    votes = []
    for item in items:
        try:
            out = rule(item)
        except Exception as exc:  # a python rule is the user's code: it may raise anything
            raise ValidationError(
                f"rule {name!r} raised {type(exc).__name__}: {exc} on item {item.external_id or item.id}; "
                f"fix the function (return None to abstain) or switch it off with `labelloop rules off {name}`"
            ) from None
        if out is None or out == "":
            continue
        if not isinstance(out, str):
            raise ValidationError(f"rule {name!r} returned {out!r} on item {item.external_id or item.id}; "
                                  "a labeling function returns a class name (str) or None to abstain")
        votes.append((item.id, out))
    return votes
