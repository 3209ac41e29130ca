"""Reading a Google-style docstring: the summary and the ``Args:`` section's per-parameter descriptions."""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

__all__ = ["Docstring", "parse_docstring"]

_SECTION = re.compile(r"^(\w[\w ]*):\s*$")
_ARG = re.compile(r"^\*{0,2}(\w+)\s*(?:\(([^)]*)\))?\s*:\s*(.*)$")
_ARG_SECTIONS = frozenset({"Args", "Arguments", "Parameters", "Params", "Keyword Args", "Keyword Arguments"})


@dataclass(frozen=True)
class Docstring:
    """The parts of a docstring that describe a tool.

    Attributes:
        summary: The text before the first section, paragraphs joined by blank lines.
        params: Parameter name -> description (continuation lines joined by spaces).
    """

    summary: str = ""
    params: dict[str, str] = field(default_factory=dict)


def parse_docstring(doc: str | None) -> Docstring:
    """Split a Google-style docstring into its summary and ``Args:`` descriptions.

    Args:
        doc: The raw docstring (``fn.__doc__``), or None.

    Returns:
        The summary and the parameter descriptions; unknown sections are ignored.
    """
    if not doc:
        return Docstring()
    lines = inspect.cleandoc(doc).splitlines()
    summary: list[str] = []
    params: dict[str, str] = {}
    section: str | None = None
    section_indent = 0
    current: str | None = None
    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        header = _SECTION.match(line)
        if header is not None and indent == 0:
            section = header.group(1)
            current = None
            section_indent = -1
            continue
        if section is None:
            summary.append(stripped)
            continue
        if section not in _ARG_SECTIONS or not stripped:
            continue
        if section_indent < 0:
            section_indent = indent
        arg = _ARG.match(stripped)
        if indent <= section_indent and arg is not None:
            current = arg.group(1)
            params[current] = arg.group(3).strip()
        elif current is not None and indent > section_indent:
            params[current] = f"{params[current]} {stripped}".strip()
    text = "\n".join(summary).strip()
    paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", text) if p.strip()]
    return Docstring(summary="\n\n".join(paragraphs), params=params)
