"""Safe ``where`` expressions over an item's metadata: parsed once, evaluated by a small
interpreter (never :func:`eval`).

    meta.camera == 7 and meta.site in ("north", "east")
    meta["shot at"] >= 20 or not meta.flagged
    len(text) > 200

Names: ``meta`` (the columns kept at import; ``meta.x`` and ``meta["x"]``, a missing column is
None), ``text`` (the item's text, "" for an image). Operators: ``and or not``, comparisons
(``== != < <= > >= in not in``), ``+ - * / %``, literals, lists / tuples; functions ``len``,
``lower``, ``upper``, ``str``, ``int``, ``float``, ``abs``. A CSV cell is text: compared with a
number it is read as a number when it is one (``"7" == 7``). A comparison that cannot be made
(None, text against a non-numeric string) is False, so the rule abstains on that item.
"""

from __future__ import annotations

import ast
import operator
from typing import Any

from ..errors import ValidationError

__all__ = ["Expression"]

_COMPARE = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
           ast.Div: operator.truediv, ast.Mod: operator.mod}
_FUNCTIONS = {"len": len, "lower": lambda s: str(s).lower(), "upper": lambda s: str(s).upper(),
              "str": str, "int": int, "float": float, "abs": abs}
_NAMES = ("meta", "text")


class _Abstain(Exception):
    """An operation that cannot be made on this item: the rule does not vote."""


class Expression:
    """A parsed, checked ``where`` expression; ``Expression(src)(meta, text)`` -> bool."""

    def __init__(self, source: str, *, rule: str = "where"):
        self.source = source
        try:
            tree = ast.parse(source.strip(), mode="eval")
        except SyntaxError as exc:
            raise ValidationError(
                f"rule {rule!r}: {source!r} is not a valid expression ({exc.msg}); write e.g. "
                "--where \"meta.camera == 7\"") from None
        self._tree = tree.body
        for node in ast.walk(tree):
            problem = _check(node)
            if problem:
                raise ValidationError(f"rule {rule!r}: {problem} in {source!r}; a where rule may use "
                                      "meta.COLUMN, text, comparisons, and / or / not, + - * / %, "
                                      f"literals and {', '.join(_FUNCTIONS)}")

    def __call__(self, meta: dict, text: str | None = None) -> bool:
        try:
            return bool(_eval(self._tree, {"meta": meta, "text": text or ""}))
        except (_Abstain, TypeError, ValueError, ZeroDivisionError, OverflowError):
            return False


def _check(node: ast.AST) -> str | None:
    allowed = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.UAdd,
               ast.Compare, ast.BinOp, ast.Constant, ast.List, ast.Tuple, ast.Name, ast.Load,
               ast.Attribute, ast.Subscript, ast.Call, *_COMPARE, *_BINARY)
    if not isinstance(node, allowed):
        return f"{type(node).__name__} is not allowed"
    if isinstance(node, ast.Name) and node.id not in _NAMES and node.id not in _FUNCTIONS:
        return f"unknown name {node.id!r} (use meta.{node.id} for a metadata column)"
    if isinstance(node, (ast.Attribute, ast.Subscript)):
        if not (isinstance(node.value, ast.Name) and node.value.id == "meta"):
            return "only meta.COLUMN / meta[\"COLUMN\"] may be looked up"
        if isinstance(node, ast.Subscript) and not (isinstance(node.slice, ast.Constant)
                                                     and isinstance(node.slice.value, str)):
            return "meta[...] takes a quoted column name"
    if isinstance(node, ast.Call):
        if not (isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS) or node.keywords:
            return "only the functions " + ", ".join(_FUNCTIONS) + " may be called (positional arguments)"
    return None


def _number(v: Any) -> Any:
    """A string that reads as a number, as that number (CSV cells are strings)."""
    if isinstance(v, str):
        try:
            return int(v)
        except ValueError:
            try:
                return float(v)
            except ValueError:
                return v
    return v


def _compare(op, a, b) -> bool:
    if isinstance(op, (ast.In, ast.NotIn)):
        if a is None or b is None:
            raise _Abstain
        if isinstance(b, list) and any(isinstance(x, (int, float)) for x in b):
            a = _number(a)
        return _COMPARE[type(op)](a, b)
    if a is None or b is None:
        if isinstance(op, (ast.Eq, ast.NotEq)):
            return _COMPARE[type(op)](a, b)
        raise _Abstain
    if isinstance(a, (int, float)) != isinstance(b, (int, float)):
        a, b = _number(a), _number(b)
    return _COMPARE[type(op)](a, b)


def _eval(node: ast.AST, env: dict) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in env:
            return env[node.id]
        raise _Abstain  # a function name used as a value
    if isinstance(node, ast.Attribute):
        return env["meta"].get(node.attr)
    if isinstance(node, ast.Subscript):
        return env["meta"].get(node.slice.value)
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_eval(e, env) for e in node.elts]
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            return all(_eval(v, env) for v in node.values)
        return any(_eval(v, env) for v in node.values)
    if isinstance(node, ast.UnaryOp):
        v = _eval(node.operand, env)
        if isinstance(node.op, ast.Not):
            return not v
        v = _number(v)
        return -v if isinstance(node.op, ast.USub) else +v
    if isinstance(node, ast.BinOp):
        a, b = _eval(node.left, env), _eval(node.right, env)
        if a is None or b is None:
            raise _Abstain
        if isinstance(a, str) != isinstance(b, str):
            a, b = _number(a), _number(b)
        return _BINARY[type(node.op)](a, b)
    if isinstance(node, ast.Compare):
        left = _eval(node.left, env)
        for op, comp in zip(node.ops, node.comparators):
            right = _eval(comp, env)
            if not _compare(op, left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.Call):
        args = [_eval(a, env) for a in node.args]
        if any(a is None for a in args):
            raise _Abstain
        return _FUNCTIONS[node.func.id](*args)
    raise _Abstain  # unreachable: _check admitted only the nodes above
