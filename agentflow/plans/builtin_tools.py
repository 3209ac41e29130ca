"""Small deterministic tools that plans may use without widening the tool allowlist.

Reference them from a plan as ``agentflow.plans.builtin_tools:<name>``. Each is a typed function, so the
registry derives its argument schema and description from the signature and docstring.
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections import Counter
from collections.abc import Callable

__all__ = ["FACTS", "calculator", "keywords", "lookup", "split", "word_count"]

FACTS: dict[str, str] = {
    "tea": "Tea is brewed from the leaves of Camellia sinensis and was first drunk in China.",
    "coffee": "Coffee is brewed from roasted seeds of Coffea plants and originated in Ethiopia.",
    "python": "Python is a programming language created by Guido van Rossum, first released in 1991.",
    "llama": "The llama is a domesticated South American camelid used as a pack animal.",
    "moon": "The Moon orbits Earth every 27.3 days at an average distance of 384,400 km.",
    "honey": "Honey is made by bees from flower nectar and keeps for a very long time.",
    "kv cache": "A KV cache stores attention keys and values so a shared prompt prefix is computed once.",
}
"""The table ``lookup`` reads (lower-case keys)."""

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


def lookup(key: str) -> str:
    """Look a topic up in a small local fact table.

    Args:
        key: The topic, e.g. 'tea' or 'python' (case and surrounding spaces are ignored).
    """
    wanted = key.strip().lower()
    if wanted in FACTS:
        return FACTS[wanted]
    return f"no fact about {key.strip()!r}; known topics: {', '.join(sorted(FACTS))}"


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
        return _BINARY[type(node.op)](left, right)
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
    value = float(_eval(tree))
    if not math.isfinite(value):
        raise ValueError(f"{expression!r} does not evaluate to a finite number")
    return value
