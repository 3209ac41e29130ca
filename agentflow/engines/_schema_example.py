"""Deterministic example instances of JSON Schemas, for test engines answering ``json_schema`` requests.

Covers the subset pydantic v2 emits: ``object``/``properties``/``required``, ``enum``/``const``, ``string``
(lengths and common formats), ``integer``/``number`` (bounds and ``multipleOf``), ``boolean``, ``null``,
``array`` (``items``, ``prefixItems``, ``minItems``/``maxItems``, ``uniqueItems``), ``anyOf``/``oneOf``/``allOf``,
type lists, ``pattern`` (the shortest string of the regular expression's own structure), and ``$ref`` into
``$defs``/``definitions``. The same schema always yields the same value, and the value is the smallest valid
one this generator can find: optional properties are left out, arrays hold their minimum number of items, and
of ``anyOf``/``oneOf`` the first branch whose example satisfies the whole union is taken. The random-schema
test ``tests/unit/structured/test_structured_examples.py`` checks every value against the full schema.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import cast

from agentflow.errors import ConfigError

from ._types import JsonSchema

__all__ = ["example_from_schema"]

_FORMATS: dict[str, str] = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00Z",
    "duration": "P1D",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "hostname": "example.com",
}

_MAX_DEPTH = 32


def example_from_schema(schema: JsonSchema) -> object:
    """A deterministic JSON value that validates against ``schema``.

    Args:
        schema: A JSON Schema (as ``pydantic.BaseModel.model_json_schema()`` returns it).

    Returns:
        A JSON-compatible Python value (dict, list, str, int, float, bool or None).

    Raises:
        ConfigError: The schema has an unresolvable ``$ref`` or only recursive required fields.

    >>> example_from_schema({"type": "object", "properties": {"n": {"type": "integer", "minimum": 3}},
    ...                      "required": ["n"]})
    {'n': 3}
    """
    return _Generator(schema).value(schema, variant=0, depth=0)


class _Generator:
    def __init__(self, root: JsonSchema) -> None:
        self._root = root
        # The root's validator (jsonschema, formats checked), built on the first union; lives for one call.
        self._validator: Callable[[JsonSchema, object], bool] | None = None

    def _valid(self, schema: JsonSchema, value: object) -> bool:
        if self._validator is None:
            self._validator = _validator_for(self._root)
        return self._validator(schema, value)

    def value(self, schema: JsonSchema, *, variant: int, depth: int) -> object:
        if depth > _MAX_DEPTH:
            raise ConfigError(
                f"JSON Schema nests deeper than {_MAX_DEPTH} levels through required fields "
                "(a recursive model whose recursive field is required?); make the recursive field optional"
            )
        d = depth + 1
        ref = schema.get("$ref")
        if isinstance(ref, str):
            return self.value(self._resolve(ref), variant=variant, depth=d)
        if "const" in schema:
            return schema["const"]
        enum = schema.get("enum")
        if isinstance(enum, Sequence) and not isinstance(enum, str) and enum:
            return enum[variant % len(enum)]
        for key in ("anyOf", "oneOf"):
            branches = _schemas(schema.get(key))
            if branches:
                non_null = [b for b in branches if b.get("type") != "null"]
                ordered = non_null + [b for b in branches if b.get("type") == "null"]
                candidates = [self.value(b, variant=variant, depth=d) for b in ordered]
                return next((c for c in candidates if self._valid(schema, c)), candidates[0])
        parts = _schemas(schema.get("allOf"))
        if parts:
            merged: dict[str, object] = {k: v for k, v in schema.items() if k != "allOf"}
            for part in parts:
                part_ref = part.get("$ref")
                merged = _merge(merged, self._resolve(part_ref) if isinstance(part_ref, str) else part)
            return self.value(merged, variant=variant, depth=d)
        kind = schema.get("type")
        if isinstance(kind, list):
            names = [k for k in kind if isinstance(k, str)]
            kind = next((k for k in names if k != "null"), names[0] if names else None)
        if kind is None:
            if "properties" in schema or "required" in schema:
                kind = "object"
            elif "items" in schema or "prefixItems" in schema:
                kind = "array"
        match kind:
            case "object":
                return self._object(schema, variant=variant, depth=d)
            case "array":
                return self._array(schema, variant=variant, depth=d)
            case "string":
                return _string(schema, variant)
            case "integer":
                return _integer(schema, variant)
            case "number":
                return _number(schema, variant)
            case "boolean":
                return variant % 2 == 0
            case _:
                return None

    def _resolve(self, ref: str) -> JsonSchema:
        if not ref.startswith("#"):
            raise ConfigError(f"cannot resolve JSON Schema $ref {ref!r}: only local '#/...' references work")
        node: object = self._root
        for part in ref[1:].split("/"):
            if not part:
                continue
            key = part.replace("~1", "/").replace("~0", "~")
            if not isinstance(node, Mapping) or key not in node:
                raise ConfigError(f"JSON Schema $ref {ref!r} points at nothing; define it under '$defs'")
            node = node[key]
        if not isinstance(node, Mapping):
            raise ConfigError(f"JSON Schema $ref {ref!r} does not point at a schema object")
        return node

    def _object(self, schema: JsonSchema, *, variant: int, depth: int) -> dict[str, object]:
        props = schema.get("properties")
        properties: Mapping[str, object] = props if isinstance(props, Mapping) else {}
        required_raw = schema.get("required")
        required = [r for r in required_raw if isinstance(r, str)] if isinstance(required_raw, list) else []
        out: dict[str, object] = {}
        for name in required:
            sub = properties.get(name)
            out[name] = (
                self.value(sub, variant=variant, depth=depth) if isinstance(sub, Mapping) else "example"
            )
        min_props = schema.get("minProperties")
        if isinstance(min_props, int):
            extra = schema.get("additionalProperties")
            optional = [n for n in properties if n not in out]
            while len(out) < min_props and optional:
                name = optional.pop(0)
                sub = properties[name]
                out[name] = (
                    self.value(sub, variant=variant, depth=depth) if isinstance(sub, Mapping) else None
                )
            i = 0
            while len(out) < min_props:
                out[f"key{i}"] = (
                    self.value(extra, variant=variant, depth=depth)
                    if isinstance(extra, Mapping)
                    else "example"
                )
                i += 1
        return out

    def _array(self, schema: JsonSchema, *, variant: int, depth: int) -> list[object]:
        prefix = _schemas(schema.get("prefixItems"))
        items = schema.get("items")
        min_items = schema.get("minItems")
        count = max(min_items if isinstance(min_items, int) else 0, len(prefix))
        out: list[object] = []
        for i in range(count):
            if i < len(prefix):
                sub: JsonSchema = prefix[i]
            elif isinstance(items, Mapping):
                sub = items
            else:
                sub = {}
            out.append(self.value(sub, variant=variant + i, depth=depth))
        return out


def _schemas(raw: object) -> list[JsonSchema]:
    if isinstance(raw, Sequence) and not isinstance(raw, str):
        return [s for s in raw if isinstance(s, Mapping)]
    return []


def _merge(a: Mapping[str, object], b: Mapping[str, object]) -> dict[str, object]:
    out = dict(a)
    for key, value in b.items():
        current = out.get(key)
        if key == "properties" and isinstance(current, Mapping) and isinstance(value, Mapping):
            out[key] = {**current, **value}
        elif key == "required" and isinstance(current, list) and isinstance(value, list):
            out[key] = [*current, *(r for r in value if r not in current)]
        else:
            out.setdefault(key, value)
    return out


def _validator_for(root: JsonSchema) -> Callable[[JsonSchema, object], bool]:
    """``valid(subschema, value)`` with ``$ref``s resolved against ``root`` (deferred jsonschema import)."""
    import jsonschema
    import jsonschema.validators

    from agentflow.structured import FORMATS

    checker = jsonschema.FormatChecker(formats=())
    for name, fn in FORMATS.items():
        checker.checks(name, raises=(ValueError, TypeError))(fn)  # type: ignore[type-var]
    cls = jsonschema.validators.validator_for(dict(root), default=jsonschema.Draft202012Validator)
    base = cls(dict(root), format_checker=checker)

    def valid(schema: JsonSchema, value: object) -> bool:
        try:
            return bool(base.evolve(schema=dict(schema)).is_valid(value))  # type: ignore[arg-type]
        except (re.error, jsonschema.exceptions.RefResolutionError, RecursionError):
            return False

    return valid


def _string(schema: JsonSchema, variant: int) -> str:
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _FORMATS:
        return _FORMATS[fmt]
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        found = _from_pattern(pattern)
        if found is not None:
            return found
    base = "example" if variant == 0 else f"example{variant}"
    min_len = schema.get("minLength")
    max_len = schema.get("maxLength")
    if isinstance(min_len, int) and len(base) < min_len:
        base = base + "x" * (min_len - len(base))
    if isinstance(max_len, int) and len(base) > max_len:
        base = base[len(base) - max_len :] if variant else base[:max_len]
    return base


def _bounds(schema: JsonSchema) -> tuple[float | None, float | None, bool, bool]:
    lo = schema.get("minimum")
    hi = schema.get("maximum")
    xlo = schema.get("exclusiveMinimum")
    xhi = schema.get("exclusiveMaximum")
    low: float | None = float(lo) if isinstance(lo, int | float) else None
    high: float | None = float(hi) if isinstance(hi, int | float) else None
    low_open = high_open = False
    if isinstance(xlo, int | float) and not isinstance(xlo, bool) and (low is None or xlo >= low):
        low, low_open = float(xlo), True
    if isinstance(xhi, int | float) and not isinstance(xhi, bool) and (high is None or xhi <= high):
        high, high_open = float(xhi), True
    return low, high, low_open, high_open


def _integer(schema: JsonSchema, variant: int) -> int:
    low, high, low_open, high_open = _bounds(schema)
    step_raw = schema.get("multipleOf")
    step = int(step_raw) if isinstance(step_raw, int | float) and step_raw >= 1 else 1
    lo = None if low is None else (math.floor(low) + 1 if low_open else math.ceil(low))
    hi = None if high is None else (math.ceil(high) - 1 if high_open else math.floor(high))
    start = lo if lo is not None else (min(0, hi) if hi is not None else 0)
    value = start + variant
    if hi is not None and value > hi:
        value = start
    value = -(-value // step) * step
    if hi is not None and value > hi:
        value = (hi // step) * step
    return value


def _number(schema: JsonSchema, variant: int) -> float | int:
    low, high, low_open, high_open = _bounds(schema)
    step = schema.get("multipleOf")
    if isinstance(step, int | float) and step > 0:
        lo_i = None if low is None else math.ceil(low / step) + (1 if low_open and low % step == 0 else 0)
        hi_i = (
            None if high is None else math.floor(high / step) - (1 if high_open and high % step == 0 else 0)
        )
        k = lo_i if lo_i is not None else (min(0, hi_i) if hi_i is not None else 0)
        return k * step
    if low is None and high is None:
        return float(variant)
    if low is not None and high is not None:
        if low_open or high_open:
            return (low + high) / 2
        return low
    if low is not None:
        return low + 1.0 if low_open else low
    assert high is not None
    return high - 1.0 if high_open else min(0.0, high)


_CATEGORY_CHARS = {
    "CATEGORY_DIGIT": "0",
    "CATEGORY_NOT_DIGIT": "a",
    "CATEGORY_WORD": "a",
    "CATEGORY_NOT_WORD": " ",
    "CATEGORY_SPACE": " ",
    "CATEGORY_NOT_SPACE": "a",
}
_PROBES = "a0Az _-.x@"


def _from_pattern(pattern: str) -> str | None:
    """The shortest string built from ``pattern``'s structure that it matches, or None (look-arounds...)."""
    sre_parse = importlib.import_module("re._parser")  # the parser behind re.compile (Python >= 3.11)
    try:
        parsed = sre_parse.parse(pattern)
        text = _emit(parsed, {})
        compiled = re.compile(pattern)
    except (re.error, ValueError, RecursionError, _Unsolvable):
        return None
    return text if compiled.search(text) else None


class _Unsolvable(Exception):
    pass


def _emit(items: object, groups: dict[int, str]) -> str:
    out: list[str] = []
    for op, arg in items:  # type: ignore[attr-defined]
        name = str(op)
        if name == "LITERAL":
            out.append(chr(arg))
        elif name == "NOT_LITERAL":
            out.append("a" if chr(arg) != "a" else "b")
        elif name == "ANY":
            out.append("a")
        elif name == "IN":
            out.append(_in_class(arg))
        elif name in ("MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"):
            low, _high, sub = arg
            out.append(_emit(sub, groups) * low)
        elif name == "SUBPATTERN":
            group, _add, _del, sub = arg
            text = _emit(sub, groups)
            if group is not None:
                groups[group] = text
            out.append(text)
        elif name == "ATOMIC_GROUP":
            out.append(_emit(arg, groups))
        elif name == "BRANCH":
            out.append(_emit(arg[1][0], groups))
        elif name == "GROUPREF":
            out.append(groups.get(arg, ""))
        elif name == "AT":
            continue
        else:  # ASSERT, ASSERT_NOT, GROUPREF_EXISTS, CATEGORY outside a class...
            raise _Unsolvable(name)
    return "".join(out)


def _in_class(items: list[tuple[object, object]]) -> str:
    negated = any(str(op) == "NEGATE" for op, _ in items)
    if not negated:
        op, arg = items[0]
        name = str(op)
        if name == "LITERAL":
            return chr(arg)  # type: ignore[arg-type]
        if name == "RANGE":
            return chr(arg[0])  # type: ignore[index]
        if name == "CATEGORY":
            return _CATEGORY_CHARS.get(str(arg), "a")
        raise _Unsolvable(name)
    # A negated class: the first probe character it admits.
    body = "".join(_class_source(op, arg) for op, arg in items if str(op) != "NEGATE")
    for probe in _PROBES:
        if re.fullmatch(f"[^{body}]", probe):
            return probe
    raise _Unsolvable("negated class")


def _class_source(op: object, arg: object) -> str:
    name = str(op)
    if name == "LITERAL":
        return re.escape(chr(arg))  # type: ignore[arg-type]
    if name == "RANGE":
        lo, hi = cast(tuple[int, int], arg)
        return f"{re.escape(chr(lo))}-{re.escape(chr(hi))}"
    if name == "CATEGORY":
        return {"CATEGORY_DIGIT": r"\d", "CATEGORY_WORD": r"\w", "CATEGORY_SPACE": r"\s"}.get(str(arg), "")
    return ""
