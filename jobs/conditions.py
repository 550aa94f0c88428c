"""Conditions on pipeline steps: `when = "width < 1024"`, `when = "batch == 1 and kind != 'animate'"`.

A small language over a result's values, checked once when a pipeline is declared and evaluated without
`eval`: the text is parsed with Python's own parser (ast, mode "eval") and only these nodes are accepted:
names (the result's values), numbers, strings, True/False/None, comparisons (== != < <= > >= in, not in,
chained as in Python), `and`, `or`, `not`, unary minus, + - * / and parentheses. Anything else (calls,
attributes, subscripts, lambdas, comprehensions, f-strings...) is refused with a sentence naming it, so
nothing in a condition can run code, read a file or loop. Texts are bounded in length and nesting.
"""

from __future__ import annotations

import ast
import operator
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

MAX_LENGTH = 200  # characters of one condition
MAX_DEPTH = 20  # nesting of the parsed expression
MAX_NUMBER = 10**12  # no arithmetic on huge numbers (a condition compares sizes and counts)

_COMPARE = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
            ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
            ast.NotIn: lambda a, b: a not in b}
_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_WORDS = {ast.Call: "calls", ast.Attribute: "attributes (a.b)", ast.Subscript: "indexing (a[b])",
          ast.Lambda: "lambdas", ast.IfExp: "if-else", ast.NamedExpr: ":=", ast.JoinedStr: "f-strings",
          ast.ListComp: "comprehensions", ast.SetComp: "comprehensions", ast.DictComp: "comprehensions",
          ast.GeneratorExp: "comprehensions", ast.Await: "await", ast.Starred: "*", ast.Dict: "dictionaries",
          ast.Set: "sets"}
_SYMBOLS = {ast.Pow: "**", ast.Mod: "%", ast.FloorDiv: "//", ast.LShift: "<<", ast.RShift: ">>", ast.BitOr: "|",
            ast.BitAnd: "&", ast.BitXor: "^", ast.MatMult: "@", ast.Invert: "~", ast.UAdd: "unary +"}


class ConditionError(ValueError):
    """A condition that cannot be used (when declared) or evaluated; str() says why."""


@dataclass(frozen=True)
class Condition:
    """A checked condition; `holds(values)` evaluates it over a result's values."""

    text: str
    _tree: ast.Expression

    @classmethod
    def parse(cls, text: str, names: set[str] | None = None) -> Condition:
        """Check `text` (and, with `names`, that it uses only those values); ConditionError when it cannot be used."""
        if not isinstance(text, str) or not text.strip():
            raise ConditionError("A condition is empty: write one like \"width < 1024\".")
        if len(text) > MAX_LENGTH:
            raise ConditionError(f"A condition may have at most {MAX_LENGTH} characters (this one has {len(text)}).")
        try:
            with warnings.catch_warnings():  # "invalid decimal literal" and the like: the refusal says it
                warnings.simplefilter("ignore")
                tree = ast.parse(text.strip(), mode="eval")
        except (SyntaxError, ValueError) as error:  # ValueError: a NUL in the text
            raise ConditionError(f"The condition {text!r} is not one the bot can read ({_reason(error)}).") from None
        _check(tree.body, text, names, 0)
        return cls(text, tree)

    def holds(self, values: Mapping[str, Any]) -> bool:
        """Whether the condition is true for these values; ConditionError naming a missing value or a
        comparison that makes no sense (a number against a text)."""
        return bool(_value(self._tree.body, values, self.text))


def _check(node: ast.AST, text: str, names: set[str] | None, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise ConditionError(f"The condition {text!r} is nested too deeply.")
    if isinstance(node, ast.BoolOp):
        parts = node.values
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        parts = [node.operand]
    elif isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        parts = [node.left, node.right]
    elif isinstance(node, ast.Compare):
        parts = [node.left, *node.comparators]
        if any(type(op) not in _COMPARE for op in node.ops):
            raise ConditionError(f"The condition {text!r} uses a comparison the bot does not take (is, is not).")
    elif isinstance(node, ast.Name):
        if names is not None and node.id not in names:
            raise ConditionError(f"The condition {text!r} names {node.id!r}, which is not a value of a result "
                                 f"(one of {', '.join(sorted(names))}).")
        return
    elif isinstance(node, ast.Constant):
        if not isinstance(node.value, (int, float, str, bool, type(None))) or (
                isinstance(node.value, (int, float)) and not isinstance(node.value, bool)
                and abs(node.value) > MAX_NUMBER):
            raise ConditionError(f"The condition {text!r} has a value the bot does not take ({node.value!r:.40}).")
        return
    elif isinstance(node, (ast.Tuple, ast.List)):  # `kind in ("txt2img", "img2img")`
        parts = node.elts
    else:
        symbol = _SYMBOLS.get(type(getattr(node, "op", None)))
        what = f"the operator {symbol}" if symbol else _WORDS.get(type(node), f"a {type(node).__name__}")
        raise ConditionError(f"The condition {text!r} uses {what}, which conditions cannot have.")
    for part in parts:
        _check(part, text, names, depth + 1)


def _value(node: ast.AST, values: Mapping[str, Any], text: str) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        if node.id in ("true", "false"):
            return node.id == "true"
        if node.id not in values:
            raise ConditionError(f"The condition {text!r} needs {node.id!r}, which this result does not have.")
        return values[node.id]
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_value(item, values, text) for item in node.elts)
    if isinstance(node, ast.BoolOp):
        if isinstance(node.op, ast.And):
            return all(_value(part, values, text) for part in node.values)
        return any(_value(part, values, text) for part in node.values)
    try:
        if isinstance(node, ast.UnaryOp):
            operand = _value(node.operand, values, text)
            return (not operand) if isinstance(node.op, ast.Not) else -_number(operand)
        if isinstance(node, ast.BinOp):  # numbers only: "a" * 10**12 would be a string of a terabyte
            left, right = _number(_value(node.left, values, text)), _number(_value(node.right, values, text))
            return _number(_ARITHMETIC[type(node.op)](left, right))
        left = _value(node.left, values, text)
        for op, right_node in zip(node.ops, node.comparators):
            right = _value(right_node, values, text)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    except (TypeError, ZeroDivisionError, OverflowError) as error:
        raise ConditionError(f"The condition {text!r} cannot be worked out for this result ({error}).") from None


def _number(value: Any) -> int | float:
    """`value` if it is a number of a sensible size (arithmetic takes nothing else)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"arithmetic needs numbers, not {type(value).__name__}")
    if abs(value) > MAX_NUMBER * MAX_NUMBER:
        raise OverflowError("a number too large")
    return value


def _reason(error: Exception) -> str:
    message = getattr(error, "msg", None) or str(error)
    return str(message).split("\n")[0][:80]
