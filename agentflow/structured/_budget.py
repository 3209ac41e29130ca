"""A ``max_tokens`` budget derived from a JSON Schema, for callers that give none.

The estimate is an upper bound on the tokens of a compact answer that a reasonable model writes: every
structural character counts as a token, keys count one token per three characters plus their quotes, bounded
strings and arrays count their maximum, and unbounded ones get a fixed allowance (``FREE_STRING_TOKENS``
per string, ``FREE_ARRAY_ITEMS`` items per array, ``FREE_OBJECT_ENTRIES`` extra entries per open object).
Recursive ``$ref``s are followed ``RECURSION_DEPTH`` levels deep. The result is clamped to
``[MIN_TOKENS, MAX_TOKENS]``: the grammar ends generation as soon as the value is complete, so a generous
budget only costs time when a model rambles inside a free string.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence

__all__ = ["MAX_TOKENS", "MIN_TOKENS", "estimate_max_tokens"]

FREE_STRING_TOKENS = 96
MAX_STRING_TOKENS = 512  # a maxLength counts one token per character, up to this
FREE_ARRAY_ITEMS = 8
FREE_OBJECT_ENTRIES = 4
RECURSION_DEPTH = 2
MIN_TOKENS = 16
MAX_TOKENS = 4096

_FORMAT_TOKENS = {
    "date": 8,
    "date-time": 16,
    "time": 10,
    "duration": 8,
    "uuid": 28,
    "email": 24,
    "hostname": 24,
    "ipv4": 10,
    "ipv6": 24,
    "uri": 48,
}


def estimate_max_tokens(schema: Mapping[str, object]) -> int:
    """Tokens enough for a compact JSON answer to ``schema`` (see the module docstring).

    >>> estimate_max_tokens({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]})
    16
    """
    total = _Estimator(schema).tokens(schema, ())
    return max(MIN_TOKENS, min(MAX_TOKENS, math.ceil(total)))


class _Estimator:
    def __init__(self, root: Mapping[str, object]) -> None:
        self._root = root

    def tokens(self, schema: object, refs: tuple[str, ...]) -> float:
        if not isinstance(schema, Mapping):
            return 8.0  # ``true``: any value; allow a short one
        ref = schema.get("$ref")
        if isinstance(ref, str):
            if refs.count(ref) >= RECURSION_DEPTH:
                return 2.0  # the recursion's way out (null, [] or {}) is short
            target = self._resolve(ref)
            return self.tokens(target, (*refs, ref)) if target is not None else 8.0
        if "const" in schema:
            return _json_tokens(schema["const"])
        enum = schema.get("enum")
        if isinstance(enum, Sequence) and not isinstance(enum, str) and enum:
            return max(_json_tokens(v) for v in enum)
        options: list[float] = []
        for key in ("anyOf", "oneOf"):
            branches = schema.get(key)
            if isinstance(branches, Sequence) and not isinstance(branches, str):
                options.extend(self.tokens(b, refs) for b in branches)
        all_of = schema.get("allOf")
        if isinstance(all_of, Sequence) and not isinstance(all_of, str):
            options.append(sum(self.tokens(b, refs) for b in all_of))
        kinds = schema.get("type")
        names: list[str] = []
        if isinstance(kinds, str):
            names = [kinds]
        elif isinstance(kinds, list):
            names = [k for k in kinds if isinstance(k, str)]
        if not names and not options:
            if "properties" in schema or "additionalProperties" in schema:
                names = ["object"]
            elif "items" in schema or "prefixItems" in schema:
                names = ["array"]
            else:
                names = ["string"]
        options.extend(self._typed(schema, name, refs) for name in names)
        return max(options) if options else 8.0

    def _typed(self, schema: Mapping[str, object], kind: str, refs: tuple[str, ...]) -> float:
        match kind:
            case "object":
                return self._object(schema, refs)
            case "array":
                return self._array(schema, refs)
            case "string":
                return _string(schema)
            case "integer" | "number":
                return _number(schema)
            case _:
                return 2.0  # boolean, null

    def _object(self, schema: Mapping[str, object], refs: tuple[str, ...]) -> float:
        total = 2.0
        props = schema.get("properties")
        if isinstance(props, Mapping):
            for name, sub in props.items():
                total += _key_tokens(str(name)) + self.tokens(sub, refs)
        extra = schema.get("additionalProperties")
        if extra is not False and not (isinstance(props, Mapping) and props and extra is None):
            entry = _key_tokens("entry_key") + (
                self.tokens(extra, refs) if isinstance(extra, Mapping) else 8.0
            )
            max_props = schema.get("maxProperties")
            count = min(FREE_OBJECT_ENTRIES, max_props) if isinstance(max_props, int) else FREE_OBJECT_ENTRIES
            total += count * entry
        return total

    def _array(self, schema: Mapping[str, object], refs: tuple[str, ...]) -> float:
        prefix = schema.get("prefixItems")
        items = schema.get("items")
        total = 2.0
        prefix_list = prefix if isinstance(prefix, list) else items if isinstance(items, list) else []
        for sub in prefix_list:
            total += 1 + self.tokens(sub, refs)
        rest = items if isinstance(items, Mapping) else None
        if rest is None and not prefix_list:
            rest = {}
        if rest is not None:
            lo = schema.get("minItems")
            hi = schema.get("maxItems")
            count = hi if isinstance(hi, int) else FREE_ARRAY_ITEMS
            if isinstance(lo, int):
                count = max(count, lo)
            count = max(0, count - len(prefix_list))
            total += count * (1 + self.tokens(rest, refs))
        return total

    def _resolve(self, ref: str) -> object:
        if not ref.startswith("#"):
            return None
        node: object = self._root
        for part in ref[1:].split("/"):
            if not part:
                continue
            key = part.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and key in node:
                node = node[key]
            elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
                node = node[int(key)]
            else:
                return None
        return node


def _json_tokens(value: object) -> float:
    return 2.0 + len(json.dumps(value)) / 2


def _key_tokens(name: str) -> float:
    return 3.0 + len(name) / 3


def _string(schema: Mapping[str, object]) -> float:
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _FORMAT_TOKENS:
        return float(_FORMAT_TOKENS[fmt])
    hi = schema.get("maxLength")
    if isinstance(hi, int):
        return 2.0 + min(hi, MAX_STRING_TOKENS)
    lo = schema.get("minLength")
    if isinstance(lo, int) and lo > FREE_STRING_TOKENS:
        return 2.0 + lo
    return 2.0 + FREE_STRING_TOKENS


def _number(schema: Mapping[str, object]) -> float:
    bounds = [schema.get(k) for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")]
    digits = [len(str(b)) for b in bounds if isinstance(b, int | float) and not isinstance(b, bool)]
    return 2.0 + max(digits) if len(digits) >= 2 else 12.0
