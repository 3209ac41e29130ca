"""``{{var}}`` templates in plans: parsing (checked at load time) and rendering (at run time).

A template is text with ``{{ expression }}`` holes. An expression is a root name followed by ``.key``,
``.0`` or ``[0]`` accessors: ``inputs.topic``, ``steps.facts.count``, ``item``, ``loop.index``,
``steps.ideas[2]``. A string that is exactly one hole renders to the value itself (a list stays a list,
a number a number); otherwise each value is written into the text (strings as they are, anything else as
compact JSON).

Rendering redacts: a value that a secret revealed during the run (a tool that returned
``secret("K").reveal()``) is written as ``[secret]`` in every form it takes, so a template never
carries it into a prompt, a tool's arguments or an output (see ``agentflow.secrets``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass

from pydantic import JsonValue

from agentflow.errors import PlanError
from agentflow.secrets import redact, redact_data

__all__ = [
    "Ref",
    "Template",
    "TemplateSyntaxError",
    "parse_template",
    "render_value",
    "template_refs",
    "to_text",
]

_MAX_EXPR = 200
_EXPR = re.compile(r"[A-Za-z_]\w*(?:\.(?:[A-Za-z_]\w*|\d+)|\[\d+\])*")
_PART = re.compile(r"\.([A-Za-z_]\w*|\d+)|\[(\d+)\]")


class TemplateSyntaxError(ValueError):
    """A template cannot be parsed; ``offset`` is the character where the problem starts."""

    def __init__(self, message: str, offset: int) -> None:
        self.offset = offset
        super().__init__(message)


@dataclass(frozen=True)
class Ref:
    """One ``{{ expression }}``: a root name and the accessors after it."""

    root: str
    parts: tuple[str | int, ...]
    text: str

    def __str__(self) -> str:
        return "{{" + self.text + "}}"


@dataclass(frozen=True)
class Template:
    """A parsed template: literal text pieces and references, in order."""

    pieces: tuple[str | Ref, ...]

    @property
    def refs(self) -> tuple[Ref, ...]:
        """The references it contains."""
        return tuple(p for p in self.pieces if isinstance(p, Ref))

    @property
    def is_single_ref(self) -> bool:
        """Whether the whole template is one reference (it then renders to the raw value)."""
        return len(self.pieces) == 1 and isinstance(self.pieces[0], Ref)

    def render(self, lookup: Mapping[str, object]) -> object:
        """Fill the holes from ``lookup`` (root name -> value).

        Raises:
            PlanError: A reference names a root, key or index that does not exist.
        """
        if self.is_single_ref:
            ref = self.pieces[0]
            assert isinstance(ref, Ref)
            value = resolve(ref, lookup)
            return redact_data(value) if isinstance(value, str | list | tuple | Mapping) else value
        out: list[str] = []
        for piece in self.pieces:
            out.append(piece if isinstance(piece, str) else to_text(resolve(piece, lookup)))
        return "".join(out)


def parse_template(text: str) -> Template:
    """Parse ``text`` into literal pieces and ``Ref`` holes (one linear scan).

    Raises:
        TemplateSyntaxError: An unclosed ``{{`` or a hole that is not a reference expression.
    """
    pieces: list[str | Ref] = []
    pos = 0
    while True:
        start = text.find("{{", pos)
        if start < 0:
            break
        end = text.find("}}", start + 2)
        if end < 0:
            raise TemplateSyntaxError("'{{' is not closed by '}}'", start)
        if start > pos:
            pieces.append(text[pos:start])
        raw = text[start + 2 : end]
        expr = raw.strip()
        if len(expr) > _MAX_EXPR or not _EXPR.fullmatch(expr):
            shown = raw if len(raw) <= 40 else raw[:37] + "..."
            raise TemplateSyntaxError(
                f"'{{{{{shown}}}}}' is not a reference; write e.g. {{{{inputs.name}}}} or {{{{steps.some_step.field}}}}",
                start,
            )
        root = re.match(r"[A-Za-z_]\w*", expr)
        assert root is not None
        parts: list[str | int] = []
        for m in _PART.finditer(expr, root.end()):
            name, index = m.group(1), m.group(2)
            if index is not None:
                parts.append(int(index))
            elif name.isdigit():
                parts.append(int(name))
            else:
                parts.append(name)
        pieces.append(Ref(root.group(0), tuple(parts), expr))
        pos = end + 2
    if pos < len(text):
        pieces.append(text[pos:])
    return Template(tuple(pieces))


def template_refs(value: JsonValue) -> list[tuple[str, Template]]:
    """Every template string inside a JSON value (recursing into lists and dicts), parsed."""
    found: list[tuple[str, Template]] = []
    if isinstance(value, str):
        if "{{" in value:
            found.append((value, parse_template(value)))
    elif isinstance(value, list):
        for item in value:
            found.extend(template_refs(item))
    elif isinstance(value, dict):
        for item in value.values():
            found.extend(template_refs(item))
    return found


def resolve(ref: Ref, lookup: Mapping[str, object]) -> object:
    """The value a reference names.

    Raises:
        PlanError: The root, a key or an index does not exist.
    """
    if ref.root not in lookup:
        raise PlanError(f"template {ref}: nothing is called {ref.root!r} here; known: {sorted(lookup)}")
    value = lookup[ref.root]
    walked = ref.root
    for part in ref.parts:
        if isinstance(value, Mapping) and str(part) in value:
            value = value[str(part)]
        elif isinstance(value, list | tuple) and isinstance(part, int) and -len(value) <= part < len(value):
            value = value[part]
        elif isinstance(value, Mapping):
            raise PlanError(
                f"template {ref}: {walked} has no key {part!r}; its keys are {sorted(map(str, value))}"
            )
        elif isinstance(value, list | tuple):
            raise PlanError(f"template {ref}: {walked} has {len(value)} items, so [{part}] does not exist")
        else:
            raise PlanError(
                f"template {ref}: {walked} is a {type(value).__name__} ({to_text(value)[:60]!r}), "
                f"which has no {part!r}"
            )
        walked = f"{walked}.{part}"
    return value


def render_value(value: JsonValue, lookup: Mapping[str, object]) -> object:
    """Render every template string inside a JSON value (a lone ``{{x}}`` keeps ``x``'s type)."""
    if isinstance(value, str):
        return parse_template(value).render(lookup) if "{{" in value else value
    if isinstance(value, list):
        return [render_value(v, lookup) for v in value]
    if isinstance(value, dict):
        return {k: render_value(v, lookup) for k, v in value.items()}
    return value


def to_text(value: object) -> str:
    """How a value is written into template text: strings as they are, the rest as compact JSON
    (revealed secret values redacted)."""
    if isinstance(value, str):
        return redact(value)
    try:
        return redact(json.dumps(value, ensure_ascii=False, separators=(", ", ": "), default=str))
    except (TypeError, ValueError):
        return redact(str(value))
