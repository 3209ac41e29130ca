"""``OutputSpec``: one JSON Schema's decoding grammar, token budget and answer check, behind one object.

``infer`` and ``infer_json`` build one per call and use three things: ``max_tokens`` (a budget derived from
the schema when the caller gave none), ``check`` (strict JSON + every constraint, or the first unmet one by
name and path, with a cut-off answer reported as such) and ``unenforced`` (what the embedded engine's grammar
leaves to ``check``). Engines read ``grammar`` through ``compile_grammar`` themselves.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property

from pydantic import JsonValue

from ._budget import estimate_max_tokens
from ._grammar import Grammar, Unenforced, compile_grammar
from ._validate import AnswerCheck, Violation

__all__ = ["STRING_CAPS", "OutputSpec", "cap_strings", "close_objects", "cut_off"]

_OPEN_OBJECT_KEYS = ("additionalProperties", "patternProperties", "unevaluatedProperties")
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")
_VALUE_KEYS = ("enum", "const", "examples", "default", "required")


def cut_off(max_tokens: int, completion_tokens: int) -> Violation:
    """The violation of an answer that ``max_tokens`` ended before it was complete.

    >>> print(cut_off(48, 48))
    $: max_tokens=48 cut the answer off after 48 tokens; raise it [max_tokens]
    """
    return Violation(
        "max_tokens",
        "$",
        f"max_tokens={max_tokens} cut the answer off after {completion_tokens} tokens; raise it",
    )


def close_objects(schema: Mapping[str, object]) -> dict[str, object]:
    """A copy of ``schema`` where each object schema with ``properties`` and no rule for other keys is closed.

    Objects combined by ``allOf`` stay open (closing one part would forbid the other parts' keys).

    >>> close_objects({"type": "object", "properties": {"a": {"type": "integer"}}})
    {'type': 'object', 'properties': {'a': {'type': 'integer'}}, 'additionalProperties': False}
    """
    closed = _close(schema, in_all_of=False)
    assert isinstance(closed, dict)
    return closed


def _close(node: object, *, in_all_of: bool) -> object:
    if isinstance(node, list):
        return [_close(v, in_all_of=in_all_of) for v in node]
    if not isinstance(node, Mapping):
        return node
    out: dict[str, object] = {}
    for key, value in node.items():
        if key in _SCHEMA_MAPS and isinstance(value, Mapping):
            out[key] = {k: _close(v, in_all_of=False) for k, v in value.items()}
        elif key in _VALUE_KEYS:
            out[key] = value
        else:
            out[key] = _close(value, in_all_of=key == "allOf")
    closable = not in_all_of and "allOf" not in node and isinstance(node.get("properties"), Mapping)
    if closable and not any(k in node for k in _OPEN_OBJECT_KEYS):
        out["additionalProperties"] = False
    return out


STRING_CAPS: dict[str | None, int] = {None: 288, "email": 100, "hostname": 100, "uri": 200, "url": 200}
"""``maxLength`` given to unbounded strings for decoding, by ``format`` (``None``: no format). Formats not
listed here have a fixed shape (date, uuid...) or are left alone."""


def cap_strings(schema: Mapping[str, object]) -> dict[str, object]:
    """A copy of ``schema`` where each free string (no ``maxLength``/``pattern``/``enum``/``const``) is capped.

    >>> cap_strings({"type": "object", "properties": {"s": {"type": "string"}}})
    {'type': 'object', 'properties': {'s': {'type': 'string', 'maxLength': 288}}}
    """
    capped = _cap(schema)
    assert isinstance(capped, dict)
    return capped


def _cap(node: object) -> object:
    if isinstance(node, list):
        return [_cap(v) for v in node]
    if not isinstance(node, Mapping):
        return node
    out: dict[str, object] = {}
    for key, value in node.items():
        if key in _SCHEMA_MAPS and isinstance(value, Mapping):
            out[key] = {k: _cap(v) for k, v in value.items()}
        elif key in _VALUE_KEYS:
            out[key] = value
        else:
            out[key] = _cap(value)
    fmt = node.get("format")
    cap = STRING_CAPS.get(fmt if isinstance(fmt, str) else None)
    free = not any(k in node for k in ("maxLength", "pattern", "enum", "const"))
    if node.get("type") == "string" and cap is not None and free:
        low = node.get("minLength")
        out["maxLength"] = max(cap, low) if isinstance(low, int) else cap
    return out


class OutputSpec:
    """What a structured answer must be, and how to get and check one.

    Args:
        schema: The answer's JSON Schema, property order as declared (it is sent to engines unchanged).
        where: What the schema belongs to, for error messages (a model name, a plan step).

    Raises:
        ConfigError: The schema is not valid JSON Schema.
    """

    def __init__(self, schema: Mapping[str, object], *, where: str = "schema") -> None:
        self.schema = schema
        self.where = where
        self._check = AnswerCheck(schema, where=where)

    @cached_property
    def decode_schema(self) -> Mapping[str, object]:
        """The schema to decode under: ``schema`` narrowed so that a rambling model still finishes in budget.

        Two narrowings, each of which keeps every decoded answer valid under ``schema``:

        - every object that declares ``properties`` and says nothing about other keys is closed
          (``additionalProperties: false``): a small model fills an open object with made-up keys until the
          budget runs out (it is also what OpenAI's strict structured outputs require);
        - every string without ``maxLength`` or ``pattern`` gets a ``maxLength`` (``STRING_CAPS``): the grammar
          then closes the string instead of letting the model loop inside it until ``max_tokens`` cuts the
          answer off.
        """
        return cap_strings(close_objects(self.schema))

    @cached_property
    def max_tokens(self) -> int:
        """A token budget enough for a compact answer under ``decode_schema`` (see ``estimate_max_tokens``).

        Estimated on the narrowed schema, so a string the model runs on with is closed by the grammar at its
        cap before the budget ends (for text of one token per character or better).
        """
        return estimate_max_tokens(self.decode_schema)

    @cached_property
    def grammar(self) -> Grammar:
        """The embedded engine's decoding grammar (llguidance)."""
        return compile_grammar(self.decode_schema)

    @property
    def unenforced(self) -> tuple[Unenforced, ...]:
        """Constraints the embedded engine's grammar leaves to ``check``."""
        return self.grammar.unenforced

    def check(
        self,
        text: str,
        *,
        cut_off_at: int | None = None,
        completion_tokens: int = 0,
    ) -> JsonValue | Violation:
        """The parsed answer if ``text`` satisfies the schema, else the first unmet constraint.

        Args:
            text: The raw answer.
            cut_off_at: The ``max_tokens`` of the request when the engine stopped for length; an invalid
                answer is then reported as cut off.
            completion_tokens: Tokens the engine generated (for the cut-off message).
        """
        result = self._check.check(text)
        if isinstance(result, Violation) and cut_off_at is not None:
            return cut_off(cut_off_at, completion_tokens or cut_off_at)
        return result

    def violations(self, value: object) -> list[Violation]:
        """Every unmet constraint of an already parsed value (a handful at most); empty when valid."""
        return self._check.violations(value)
