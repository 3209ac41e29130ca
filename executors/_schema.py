"""JSON Schema for tool arguments: normalizing dialects (BFCL, Gorilla, NESTFUL-style) and validating calls.

Function specs found in the wild are "JSON-Schema-like". The Berkeley Function Calling Leaderboard writes
``"type": "dict"`` / ``"float"`` / ``"tuple"`` / ``"any"``, marks optional properties with ``"optional": true`` (or
lists them as ``"optional": [...]`` on the object), and other sets write ``"required": true`` on a property.
:func:`normalize_schema` turns all of these into standard JSON Schema (draft 2020-12) so that one validator and one
grammar generator can consume them.

Schemas may come from untrusted places (a plan's ``pattern:``, an MCP server's tool list), so
:class:`JsonSchemaValidator` bounds what validating costs and reaches: ``pattern`` and
``patternProperties`` run on a regular-expression engine without backtracking (the Rust ``regex``
crate inside pydantic-core: linear time in the input, so ``^(a+)+$`` cannot stall a check; patterns
that need backtracking, i.e. look-around and back-references, are refused when the validator is
built), and ``$ref`` never fetches anything over the network.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import JsonValue

from agentflow.errors import ConfigError

if TYPE_CHECKING:
    import jsonschema

__all__ = ["JsonSchemaValidator", "normalize_schema", "safe_regex_search"]

_TYPE_ALIASES: dict[str, str | None] = {
    "string": "string",
    "str": "string",
    "text": "string",
    "integer": "integer",
    "int": "integer",
    "long": "integer",
    "number": "number",
    "float": "number",
    "double": "number",
    "boolean": "boolean",
    "bool": "boolean",
    "array": "array",
    "list": "array",
    "tuple": "array",
    "object": "object",
    "dict": "object",
    "hashmap": "object",
    "null": "null",
    "none": "null",
    "any": None,
}

_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_VALUES = ("items", "additionalProperties", "not", "contains", "if", "then", "else")


def _truthy(flag: JsonValue) -> bool:
    if isinstance(flag, str):
        return flag.strip().lower() in ("true", "yes", "1")
    return bool(flag)


def _map_type(raw: JsonValue, where: str) -> str | None:
    if not isinstance(raw, str) or raw.strip().lower() not in _TYPE_ALIASES:
        known = ", ".join(sorted(k for k in _TYPE_ALIASES))
        raise ConfigError(f"schema at {where}: unknown type {raw!r}; use one of {known}")
    return _TYPE_ALIASES[raw.strip().lower()]


def normalize_schema(schema: Mapping[str, JsonValue], *, where: str = "parameters") -> dict[str, JsonValue]:
    """Return a standard JSON Schema equivalent of a JSON-Schema-like dialect schema.

    Args:
        schema: A schema in standard JSON Schema or one of the dialects described in the module docstring.
        where: Where the schema came from, for error messages (``"math.factorial.parameters"``).

    Returns:
        A new dict; the input is not modified.

    Raises:
        ConfigError: An unknown type name or a malformed ``properties`` / ``required`` entry.
    """
    if not isinstance(schema, Mapping):
        raise ConfigError(f"schema at {where}: expected an object, got {type(schema).__name__} {schema!r}")
    out: dict[str, JsonValue] = {}
    for key, value in schema.items():
        if key in ("optional", "required", "properties"):
            continue
        if key == "type":
            if isinstance(value, list):
                mapped = [_map_type(t, where) for t in value]
                if None not in mapped:
                    out["type"] = list(dict.fromkeys(t for t in mapped if t is not None))
            else:
                mapped_one = _map_type(value, where)
                if mapped_one is not None:
                    out["type"] = mapped_one
        elif key in _SCHEMA_LISTS and isinstance(value, list):
            out[key] = [_normalize_sub(v, f"{where}.{key}[{i}]") for i, v in enumerate(value)]
        elif key in _SCHEMA_VALUES and isinstance(value, Mapping):
            out[key] = normalize_schema(value, where=f"{where}.{key}")
        elif key in ("$defs", "definitions", "patternProperties") and isinstance(value, Mapping):
            out[key] = {k: _normalize_sub(v, f"{where}.{key}.{k}") for k, v in value.items()}
        else:
            out[key] = value
    properties = schema.get("properties")
    if properties is not None:
        if not isinstance(properties, Mapping):
            raise ConfigError(f"schema at {where}: 'properties' must be an object, got {properties!r}")
        required = _required_list(schema, where)
        optional = schema.get("optional")
        optional_names = {str(n) for n in optional} if isinstance(optional, list) else set()
        new_props: dict[str, JsonValue] = {}
        for name, prop in properties.items():
            if not isinstance(prop, Mapping):
                raise ConfigError(f"schema at {where}.{name}: expected an object, got {prop!r}")
            if "required" in prop and isinstance(prop["required"], (bool, str)) and _truthy(prop["required"]):
                required.append(name)
            if "optional" in prop and not isinstance(prop["optional"], list) and _truthy(prop["optional"]):
                optional_names.add(name)
            new_props[name] = normalize_schema(prop, where=f"{where}.{name}")
        out["properties"] = new_props
        final: list[JsonValue] = [
            n for n in dict.fromkeys(required) if n not in optional_names and n in new_props
        ]
        if final:
            out["required"] = final
    elif isinstance(schema.get("required"), list):
        names: list[JsonValue] = [*_required_list(schema, where)]
        out["required"] = names
    return out


def _normalize_sub(value: JsonValue, where: str) -> JsonValue:
    return normalize_schema(value, where=where) if isinstance(value, Mapping) else value


def _required_list(schema: Mapping[str, JsonValue], where: str) -> list[str]:
    required = schema.get("required")
    if required is None or isinstance(required, bool):
        return []
    if not isinstance(required, list) or not all(isinstance(n, str) for n in required):
        raise ConfigError(f"schema at {where}: 'required' must be a list of names, got {required!r}")
    return [str(n) for n in required]


@functools.lru_cache(maxsize=512)
def _regex(pattern: str) -> Any:
    """A compiled linear-time matcher for ``pattern`` (cached: schemas reuse their patterns)."""
    from pydantic_core import SchemaValidator, core_schema

    return SchemaValidator(core_schema.str_schema(pattern=pattern, regex_engine="rust-regex"))


def safe_regex_search(pattern: str, text: str) -> bool:
    """Whether ``pattern`` matches anywhere in ``text`` (JSON Schema ``pattern`` semantics), in linear time.

    Raises:
        ConfigError: The pattern is invalid or needs backtracking (look-around, back-references).

    >>> safe_regex_search("^(a+)+$", "a" * 50_000 + "!")
    False
    """
    return bool(_compiled(pattern).isinstance_python(text))


def _compiled(pattern: str, where: str | None = None) -> Any:
    from pydantic_core import SchemaError

    try:
        return _regex(pattern)
    except SchemaError as exc:
        detail = " ".join(str(exc).split())
        detail = detail.split("error:", 1)[-1].strip() if "error:" in detail else detail
        at = f"schema at {where}: " if where else ""
        raise ConfigError(
            f"{at}the pattern {pattern!r} cannot be used ({detail[:200]}); patterns run on a "
            "regex engine without backtracking: rewrite it without look-around or back-references"
        ) from None


def _patterns(schema: object, where: str) -> Iterator[tuple[str, str]]:
    """Every (pattern, where) in a schema: ``pattern`` values and ``patternProperties`` keys."""
    if isinstance(schema, Mapping):
        for key, value in schema.items():
            here = f"{where}.{key}"
            if key == "pattern" and isinstance(value, str):
                yield value, here
            elif key == "patternProperties" and isinstance(value, Mapping):
                yield from ((str(p), f"{here}[{p!r}]") for p in value)
                for sub in value.values():
                    yield from _patterns(sub, here)
            elif key not in ("enum", "const", "default", "examples"):
                yield from _patterns(value, here)
    elif isinstance(schema, list):
        for i, item in enumerate(schema):
            yield from _patterns(item, f"{where}[{i}]")


def _uses_unevaluated_with_patterns(schema: object) -> bool:
    if isinstance(schema, Mapping):
        if "unevaluatedProperties" in schema and _mentions(schema, "patternProperties"):
            return True
        return any(
            _uses_unevaluated_with_patterns(v) for k, v in schema.items() if k not in ("enum", "const")
        )
    if isinstance(schema, list):
        return any(_uses_unevaluated_with_patterns(v) for v in schema)
    return False


def _mentions(schema: object, keyword: str) -> bool:
    if isinstance(schema, Mapping):
        return keyword in schema or any(
            _mentions(v, keyword) for k, v in schema.items() if k not in ("enum", "const")
        )
    if isinstance(schema, list):
        return any(_mentions(v, keyword) for v in schema)
    return False


# jsonschema keyword functions (validator, value, instance, schema) -> errors, with linear-time regexes.


def _pattern(validator: Any, pattern: str, instance: object, schema: object) -> Iterator[Any]:
    from jsonschema import ValidationError

    if validator.is_type(instance, "string") and not safe_regex_search(pattern, instance):  # type: ignore[arg-type]
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: Mapping[str, object], instance: object, schema: object
) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    assert isinstance(instance, Mapping)
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if safe_regex_search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(
    validator: Any, allowed: object, instance: object, schema: Mapping[str, Any]
) -> Iterator[Any]:
    from jsonschema import ValidationError

    if not validator.is_type(instance, "object"):
        return
    assert isinstance(instance, Mapping)
    properties = schema.get("properties", {})
    patterns = list(schema.get("patternProperties", {}))
    extras = sorted(
        (k for k in instance if k not in properties and not any(safe_regex_search(p, k) for p in patterns)),
        key=str,
    )
    if validator.is_type(allowed, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], allowed, path=extra)
    elif not allowed and extras:
        names = ", ".join(repr(e) for e in extras)
        if patterns:
            yield ValidationError(
                f"{names} {'does' if len(extras) == 1 else 'do'} not match any of the regexes: "
                + ", ".join(repr(p) for p in sorted(patterns))
            )
        else:
            yield ValidationError(
                f"Additional properties are not allowed ({names} {'was' if len(extras) == 1 else 'were'} unexpected)"
            )


@functools.cache
def _validator_class() -> type[jsonschema.Draft202012Validator]:
    import jsonschema

    cls: type[jsonschema.Draft202012Validator] = jsonschema.validators.extend(  # type: ignore[no-untyped-call]
        jsonschema.Draft202012Validator,
        {
            "pattern": _pattern,
            "patternProperties": _pattern_properties,
            "additionalProperties": _additional_properties,
        },
    )
    return cls


def _no_remote(uri: str) -> Any:
    import referencing.exceptions

    raise referencing.exceptions.NoSuchResource(ref=uri)  # type: ignore[call-arg]


class JsonSchemaValidator:
    """Validates argument objects against a (normalized) JSON Schema with draft 2020-12 semantics.

    Patterns run in linear time and ``$ref`` never leaves the schema (see the module docstring).
    """

    def __init__(self, schema: Mapping[str, JsonValue], *, where: str = "parameters") -> None:
        """Check the schema itself and prepare a validator.

        Raises:
            ConfigError: The schema is not a valid JSON Schema, or uses a pattern that needs backtracking.
        """
        import jsonschema  # deferred: a heavy import (tests/unit/test_import_cost.py)
        import referencing

        for pattern, here in _patterns(schema, where):  # first: the Rust parser also bounds nesting
            _compiled(pattern, here)
        try:
            jsonschema.Draft202012Validator.check_schema(dict(schema))
        except jsonschema.SchemaError as exc:
            raise ConfigError(f"schema at {where} is not valid JSON Schema: {exc.message}") from exc
        except RecursionError:
            raise ConfigError(f"schema at {where} nests too deeply; flatten it") from None
        if _uses_unevaluated_with_patterns(schema):
            raise ConfigError(
                f"schema at {where}: 'unevaluatedProperties' together with 'patternProperties' is not supported "
                "(it would match patterns with a backtracking engine); use 'additionalProperties' instead"
            )
        registry: referencing.Registry[Any] = referencing.Registry(retrieve=_no_remote)  # type: ignore[call-arg]
        self._validator = _validator_class()(dict(schema), registry=registry)

    def errors(self, instance: object) -> list[str]:
        """Return one line per violation (``argument 'a.b': 3 is not of type 'string'``), empty when valid."""
        import referencing.exceptions

        lines: list[str] = []
        try:
            found = sorted(self._validator.iter_errors(instance), key=lambda e: [str(p) for p in e.path])
        except referencing.exceptions.Unresolvable as exc:
            return [
                f"the schema refers to {exc.ref!r}, which is not inside it (remote references are never fetched)"
            ]
        for error in found:
            path = ".".join(str(p) for p in error.absolute_path)
            lines.append(f"argument {path!r}: {error.message}" if path else error.message)
        return lines
