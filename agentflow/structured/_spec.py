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

__all__ = ["OutputSpec", "close_objects", "cut_off"]

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
        """The schema to decode under: ``schema`` with every object that declares ``properties`` closed.

        An object without ``additionalProperties`` admits any extra key; a small model fills that space with
        rambling keys until the budget runs out. Closing such objects (``additionalProperties: false``) only
        narrows what may be decoded, so every decoded answer still satisfies ``schema``. It is also what
        OpenAI's strict structured outputs require.
        """
        return close_objects(self.schema)

    @cached_property
    def max_tokens(self) -> int:
        """A token budget enough for a compact answer (see ``estimate_max_tokens``)."""
        return estimate_max_tokens(self.schema)

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
