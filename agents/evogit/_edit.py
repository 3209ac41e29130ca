"""The mutation edit format: pick a region of a file, ask the LLM for its replacement, validate it.

A region is one of (in order of preference):

* the lines between ``EVOLVE-BLOCK-START`` and ``EVOLVE-BLOCK-END`` marker comments, in any file;
* a function or method of a Python file (found with ``ast``, decorators included);
* a whole non-Python file.

The model must answer with the complete new region in one fenced code block. ``apply_reply``
accepts it only if the block is there, a function region still defines the same function, the
edited file still parses (``ast.parse`` for Python) and the region actually changed; otherwise it
returns a ``Rejected`` value saying why (an expected outcome, not an exception).
"""

from __future__ import annotations

import ast
import random
import re
import textwrap
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "Applied",
    "EditResult",
    "Region",
    "Rejected",
    "apply_reply",
    "extract_code_block",
    "find_regions",
    "mutation_prompt",
    "pick_region",
]

_MAX_CONTEXT_CHARS = 6000
_START = "EVOLVE-BLOCK-START"
_END = "EVOLVE-BLOCK-END"
_FENCE_RE = re.compile(r"```[ \t]*([\w+-]*)[^\n]*\n(.*?)(?:\n```|\Z)", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Region:
    """A replaceable span of a file: lines ``[start, end)`` (0-based) of ``path``.

    Attributes:
        path: File path relative to the repository root (``/`` separators).
        start: First line of the region.
        end: One past the last line.
        kind: ``block`` (between markers), ``function`` (a Python def) or ``file``.
        name: The function name (``function``), else a label.
        indent: Leading whitespace of the region's first line (function regions are re-indented to it).
    """

    path: str
    start: int
    end: int
    kind: Literal["block", "function", "file"]
    name: str
    indent: str = ""

    def text(self, source: str) -> str:
        """The region's current text in ``source``."""
        return "".join(source.splitlines(keepends=True)[self.start : self.end])

    @property
    def label(self) -> str:
        """``path:name`` for commit messages and notes."""
        return f"{self.path}:{self.name}"


@dataclass(frozen=True, slots=True)
class Applied:
    """A validated edit: the whole new file text."""

    new_source: str
    region: Region


@dataclass(frozen=True, slots=True)
class Rejected:
    """An edit that was not applied, and why."""

    reason: str
    region: Region


EditResult = Applied | Rejected


def _is_python(path: str) -> bool:
    return path.endswith((".py", ".pyi"))


def find_regions(path: str, source: str) -> list[Region]:
    """The regions of ``source`` (the file at ``path``) a mutation may rewrite.

    >>> src = "def f(x):\\n    return x\\n\\n\\ndef g():\\n    pass\\n"
    >>> [(r.name, r.start, r.end) for r in find_regions("m.py", src)]
    [('f', 0, 2), ('g', 4, 6)]
    """
    lines = source.splitlines(keepends=True)
    blocks: list[Region] = []
    start: int | None = None
    for i, line in enumerate(lines):
        if _START in line:
            start = i + 1
        elif _END in line and start is not None:
            if i > start:
                indent = lines[start][: len(lines[start]) - len(lines[start].lstrip())]
                blocks.append(Region(path, start, i, "block", f"block{len(blocks)}", indent))
            start = None
    if blocks:
        return blocks
    if _is_python(path):
        try:
            tree = ast.parse(source)
        except SyntaxError:
            return []
        regions: list[Region] = []
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno is not None:
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)]) - 1
                line = lines[first]
                regions.append(
                    Region(
                        path,
                        first,
                        node.end_lineno,
                        "function",
                        node.name,
                        line[: len(line) - len(line.lstrip())],
                    )
                )
        return sorted(regions, key=lambda r: r.start)
    if source.strip():
        return [Region(path, 0, len(lines), "file", path.rsplit("/", 1)[-1])]
    return []


def pick_region(regions: list[Region], rng: random.Random) -> Region | None:
    """A random region, or ``None`` when there is none."""
    return rng.choice(regions) if regions else None


def mutation_prompt(source: str, region: Region, *, goal: str, fitness: float | None) -> str:
    """The user prompt asking the LLM to rewrite ``region`` of ``source``."""
    what = {
        "function": f"the function `{region.name}`",
        "block": "the code between the EVOLVE-BLOCK markers",
        "file": f"the file `{region.path}`",
    }[region.kind]
    lang = "python" if _is_python(region.path) else ""
    score = "" if fitness is None else f"The current version scores {fitness:g} (higher is better).\n"
    keep = f"Keep the name and the parameters of `{region.name}`. " if region.kind == "function" else ""
    context = (
        f"File `{region.path}`:\n```{lang}\n{source.rstrip()}\n```\n\n"
        if len(source) <= _MAX_CONTEXT_CHARS
        else f"(`{region.path}` is {len(source)} characters long; only the part to rewrite is shown.)\n\n"
    )
    return (
        f"{context}Goal: {goal}\n{score}"
        f"Rewrite {what} so that it scores higher. {keep}"
        f"Reply with only the complete new version of {what} in one ```{lang} code block.\n\n"
        f"Current version:\n```{lang}\n{textwrap.dedent(region.text(source)).rstrip()}\n```"
    )


def extract_code_block(reply: str) -> str | None:
    """The body of the first fenced code block in ``reply`` (an unterminated last block counts).

    >>> extract_code_block("Here:\\n```python\\nx = 1\\n```\\nDone")
    'x = 1'
    >>> extract_code_block("no code") is None
    True
    """
    match = _FENCE_RE.search(reply)
    if match is None:
        return None
    body = match.group(2)
    return body if body.strip() else None


def apply_reply(source: str, region: Region, reply: str) -> EditResult:
    """Validate the LLM's ``reply`` for ``region`` and build the edited file.

    Args:
        source: The file's current text.
        region: The region that was asked for.
        reply: The model's raw answer.

    Returns:
        ``Applied`` with the new file text, or ``Rejected`` with the reason.
    """
    block = extract_code_block(reply)
    if block is None:
        return Rejected("the reply has no fenced code block", region)
    lines = source.splitlines(keepends=True)
    if region.kind == "function":
        code = textwrap.dedent(block).strip("\n") + "\n"
        try:
            tree = ast.parse(code)
        except SyntaxError as exc:
            return Rejected(f"the new function does not parse: {exc.msg} (line {exc.lineno})", region)
        defs = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
        if not any(d.name == region.name for d in defs):
            return Rejected(f"the reply does not define `{region.name}`", region)
        new_region = textwrap.indent(code, region.indent, lambda line: bool(line.strip()))
    elif region.kind == "block":
        code = textwrap.dedent(block).strip("\n") + "\n"
        new_region = textwrap.indent(code, region.indent, lambda line: bool(line.strip()))
    else:
        new_region = block if block.endswith("\n") else block + "\n"
    old_region = "".join(lines[region.start : region.end])
    if _normalize(new_region) == _normalize(old_region):
        return Rejected("the reply repeats the current code unchanged", region)
    new_source = "".join(lines[: region.start]) + new_region + "".join(lines[region.end :])
    if _is_python(region.path):
        try:
            ast.parse(new_source)
        except SyntaxError as exc:
            return Rejected(f"the edited file does not parse: {exc.msg} (line {exc.lineno})", region)
    if "<<<<<<<" in new_region or ">>>>>>>" in new_region:
        return Rejected("the reply contains merge conflict markers", region)
    return Applied(new_source, region)


def _normalize(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.strip().splitlines())
