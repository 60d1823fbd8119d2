"""Safe column expressions for ``derive`` and ``filter`` steps, parsed with :mod:`ast`, never ``eval``.

Grammar: column names and literals (numbers, strings, booleans, ``None``) combined with
``+ - * / // % **``, unary ``-``/``+``, comparisons (chained too), ``and``/``or``/``not`` and the
functions ``abs(x)``, ``round(x, n)``, ``isnull(x)``, ``notnull(x)``, ``coalesce(a, b, ...)``.
Anything else (attributes, subscripts, lambdas, other calls, comprehensions) is rejected at config
load time.  Evaluation works on anything with column lookup by name (a pandas DataFrame) and uses
only the operators of the values it finds, so this module imports nothing heavy.
"""

from __future__ import annotations

import ast
import operator
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

_BINOPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_CMPOPS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
}
_FUNCTIONS = {"abs": (1, 1), "round": (1, 2), "isnull": (1, 1), "notnull": (1, 1), "coalesce": (2, 16)}
MAX_LENGTH = 1000


class ExpressionError(ValueError):
    """An expression outside the safe grammar, or one referring to a missing column."""


@dataclass(frozen=True)
class Expression:
    """A parsed expression: ``columns`` it reads and :meth:`evaluate` over a frame."""

    text: str
    tree: ast.expr
    columns: frozenset[str]

    def evaluate(self, frame: Any) -> Any:
        """Value of the expression per row (a Series) or a scalar if it reads no column."""
        missing = [c for c in sorted(self.columns) if c not in frame.columns]
        if missing:
            raise ExpressionError(f"expression {self.text!r} refers to missing column(s) {missing}")
        return _eval(self.tree, frame)


@lru_cache(maxsize=256)
def parse_expression(text: str) -> Expression:
    """Parse and validate ``text``; raises :class:`ExpressionError` with the offending construct."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionError("expression must be a non-empty string")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"expression longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError as exc:
        raise ExpressionError(f"invalid expression {text!r}: {exc.msg}") from None
    columns: set[str] = set()
    _validate(tree, columns, text)
    return Expression(text=text, tree=tree, columns=frozenset(columns))


def _validate(node: ast.AST, columns: set[str], text: str) -> None:
    if isinstance(node, ast.Name):
        if node.id in _FUNCTIONS:
            raise ExpressionError(f"{node.id!r} is a function; call it as {node.id}(...)")
        columns.add(node.id)
    elif isinstance(node, ast.Constant):
        if not isinstance(node.value, (int, float, str, bool, type(None))):
            raise ExpressionError(f"unsupported literal {node.value!r} in {text!r}")
    elif isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        _validate(node.left, columns, text)
        _validate(node.right, columns, text)
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd, ast.Not)):
        _validate(node.operand, columns, text)
    elif isinstance(node, ast.BoolOp):
        for value in node.values:
            _validate(value, columns, text)
    elif isinstance(node, ast.Compare) and all(type(op) in _CMPOPS for op in node.ops):
        for child in (node.left, *node.comparators):
            _validate(child, columns, text)
    elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _FUNCTIONS:
        low, high = _FUNCTIONS[node.func.id]
        if node.keywords or not low <= len(node.args) <= high:
            raise ExpressionError(f"{node.func.id}() takes {low}..{high} positional arguments in {text!r}")
        for arg in node.args:
            _validate(arg, columns, text)
    else:
        construct = ast.unparse(node) if isinstance(node, ast.expr) else type(node).__name__
        raise ExpressionError(
            f"{construct!r} is not allowed in {text!r}: use column names, literals, arithmetic, "
            f"comparisons, and/or/not and {', '.join(_FUNCTIONS)}()"
        )


def _eval(node: ast.expr, frame: Any) -> Any:
    if isinstance(node, ast.Name):
        return frame[node.id]
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.BinOp):
        return _BINOPS[type(node.op)](_eval(node.left, frame), _eval(node.right, frame))
    if isinstance(node, ast.UnaryOp):
        value = _eval(node.operand, frame)
        if isinstance(node.op, ast.USub):
            return -value
        if isinstance(node.op, ast.UAdd):
            return value
        return ~value if hasattr(value, "__invert__") and not isinstance(value, (bool, int)) else not value
    if isinstance(node, ast.BoolOp):
        values = [_eval(v, frame) for v in node.values]
        result = values[0]
        for value in values[1:]:
            result = (result & value) if isinstance(node.op, ast.And) else (result | value)
        return result
    if isinstance(node, ast.Compare):
        left, result = _eval(node.left, frame), None
        for op, comparator in zip(node.ops, node.comparators, strict=True):
            right = _eval(comparator, frame)
            part = _CMPOPS[type(op)](left, right)
            result = part if result is None else (result & part)
            left = right
        return result
    if isinstance(node, ast.Call):
        assert isinstance(node.func, ast.Name)
        args = [_eval(a, frame) for a in node.args]
        return _call(node.func.id, args, frame)
    raise ExpressionError(f"unsupported node {type(node).__name__}")  # unreachable after _validate


def _call(name: str, args: list[Any], frame: Any) -> Any:
    first = args[0]
    if name == "abs":
        return abs(first)
    if name == "round":
        digits = int(args[1]) if len(args) > 1 else 0
        return first.round(digits) if hasattr(first, "round") else round(first, digits)
    if name in ("isnull", "notnull"):
        if hasattr(first, "isna"):
            return first.isna() if name == "isnull" else first.notna()
        return (first is None) == (name == "isnull")
    # coalesce: first non-null value per row
    result = first
    for other in args[1:]:
        result = result.fillna(other) if hasattr(result, "fillna") else (other if result is None else result)
    return result
