"""Small deterministic tools that plans may use without widening the tool allowlist.

Reference them from a plan as ``agentflow.plans.builtin_tools:<name>``. Each is a typed function, so the
registry derives its argument schema and description from the signature and docstring.
"""

from __future__ import annotations

import ast
import csv
import difflib
import math
import operator
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

__all__ = ["MAX_TABLE_BYTES", "calculator", "keywords", "lookup", "split", "word_count"]

MAX_TABLE_BYTES = 1024 * 1024
"""Largest table file ``lookup`` reads."""

_WORD = re.compile(r"[A-Za-z0-9']+")
_STOP = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "for",
        "from",
        "has",
        "have",
        "in",
        "is",
        "it",
        "its",
        "of",
        "on",
        "or",
        "that",
        "the",
        "this",
        "to",
        "was",
        "were",
        "with",
    ]
)


def word_count(text: str) -> int:
    """Count the words in a text.

    Args:
        text: The text to count.
    """
    return len(_WORD.findall(text))


def _table_path(table: str) -> Path:
    """The table file, if it is a visible ``.csv`` file of at most ``MAX_TABLE_BYTES`` under the working
    directory (symbolic links resolved first)."""
    root = Path.cwd().resolve()
    path = (root / table.strip()).resolve()
    if not path.is_relative_to(root):
        raise ValueError(
            f"table {table!r} is outside the working directory {str(root)!r}; lookup reads only files under it"
        )
    if any(part.startswith(".") for part in path.relative_to(root).parts):
        raise ValueError(
            f"table {table!r} is a hidden file or inside a hidden folder; lookup does not read those"
        )
    if path.suffix.lower() != ".csv":
        raise ValueError(
            f"table {table!r} is not a .csv file; give a CSV file whose first column holds the keys"
        )
    if not path.is_file():
        raise ValueError(f"there is no table file {table!r} under {str(root)!r}; check the path")
    size = path.stat().st_size
    if size > MAX_TABLE_BYTES:
        raise ValueError(f"table {table!r} is {size} bytes, more than the {MAX_TABLE_BYTES} lookup reads")
    return path


def lookup(table: str, key: str) -> dict[str, str]:
    """Look a key up in a CSV table and return its row (column name -> value).

    The key is matched against the table's first column, ignoring case and surrounding spaces. An
    unknown key is an error naming the closest keys, never a made-up answer.

    Args:
        table: A .csv file under the working directory with a header row, e.g. 'examples/data/planets.csv'
            (files outside it and hidden files are refused).
        key: The value of the row's first column, e.g. 'Mars'.
    """
    path = _table_path(table)
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"table {table!r} has no rows under its header")
    first = next(iter(rows[0]))
    keys = {str(row[first]).strip().casefold(): row for row in rows}
    row = keys.get(key.strip().casefold())
    if row is None:
        names = [str(r[first]).strip() for r in rows]
        close = difflib.get_close_matches(key.strip(), names, n=3, cutoff=0.5)
        hint = f"did you mean {', '.join(map(repr, close))}? " if close else ""
        raise ValueError(
            f"no row {key.strip()!r} in table {table!r} (column {first!r}); {hint}"
            f"its {len(names)} keys include {', '.join(names[:12])}"
        )
    return {str(k): str(v) for k, v in row.items() if k is not None}


def split(text: str, separator: str = ",") -> list[str]:
    """Split a text into trimmed, non-empty parts.

    Args:
        text: The text to split.
        separator: Where to split (default ',').
    """
    if not separator:
        raise ValueError("separator must not be empty")
    return [part.strip() for part in text.split(separator) if part.strip()]


def keywords(text: str, n: int = 3) -> list[str]:
    """The most frequent words of a text, ignoring common stop words (ties broken alphabetically).

    Args:
        text: The text to scan.
        n: How many keywords to return.
    """
    counts = Counter(w.lower() for w in _WORD.findall(text) if w.lower() not in _STOP and len(w) > 2)
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return [word for word, _ in ranked[: max(0, n)]]


_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_MAX_POWER = 1000
# Integers stay exact (``10**20 % 7``) but no intermediate may exceed this many bits: a big-integer
# power or product holds the GIL while it computes, so ``((9**999)**999)**999`` must be refused
# from the operands' sizes, before it starts. Float results end at about 2**1024 anyway.
_MAX_BITS = 8192


def _result_bits(op: ast.operator, left: float, right: float) -> int:
    """A lower bound on the bit length of ``left op right`` for integer operands (0 otherwise)."""
    if not (isinstance(left, int) and isinstance(right, int)):
        return 0
    if isinstance(op, ast.Pow) and right > 0 and abs(left) > 1:
        return (abs(left).bit_length() - 1) * right
    if isinstance(op, ast.Mult):
        return left.bit_length() + right.bit_length() - 1
    return 0


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Expression):
        return _eval(node.body)
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        left, right = _eval(node.left), _eval(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > _MAX_POWER:
            raise ValueError(f"exponent {right} is too large (at most {_MAX_POWER})")
        bits = _result_bits(node.op, left, right)
        if bits > _MAX_BITS:
            raise ValueError(
                f"an intermediate result would have more than {bits} bits (at most {_MAX_BITS}, about "
                f"{int(_MAX_BITS * math.log10(2))} digits); the calculator is for numbers a float can hold"
            )
        try:
            value = _BINARY[type(node.op)](left, right)
        except OverflowError:
            raise ValueError("a result is too large for a float (beyond about 1.8e308)") from None
        if isinstance(value, complex):
            raise ValueError("a result is not a real number (a negative number to a fractional power)")
        return value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _UNARY[type(node.op)](_eval(node.operand))
    raise ValueError(
        f"unsupported expression {ast.dump(node)[:60]}; use numbers, + - * / // % ** and parentheses"
    )


def calculator(expression: str) -> float:
    """Evaluate an arithmetic expression safely (numbers, + - * / // % ** and parentheses).

    Args:
        expression: For example '(3 + 4) * 2'.
    """
    if len(expression) > 200:
        raise ValueError("expression is longer than 200 characters")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as exc:
        raise ValueError(f"{expression!r} is not an arithmetic expression: {exc.msg}") from None
    try:
        value = float(_eval(tree))
    except ValueError as exc:
        raise ValueError(f"{expression!r}: {exc}") from None
    except OverflowError:
        raise ValueError(f"{expression!r} is too large for a float (beyond about 1.8e308)") from None
    if not math.isfinite(value):
        raise ValueError(f"{expression!r} does not evaluate to a finite number")
    return value
