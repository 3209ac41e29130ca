"""JSON Schema for tool arguments: normalizing dialects (BFCL, Gorilla, NESTFUL-style) and validating calls.

Function specs found in the wild are "JSON-Schema-like". The Berkeley Function Calling Leaderboard writes
``"type": "dict"`` / ``"float"`` / ``"tuple"`` / ``"any"``, marks optional properties with ``"optional": true`` (or
lists them as ``"optional": [...]`` on the object), and other sets write ``"required": true`` on a property.
:func:`normalize_schema` turns all of these into standard JSON Schema (draft 2020-12) so that one validator and one
grammar generator can consume them.
"""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import JsonValue

from agentflow.errors import ConfigError

__all__ = ["JsonSchemaValidator", "normalize_schema"]

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


class JsonSchemaValidator:
    """Validates argument objects against a (normalized) JSON Schema with draft 2020-12 semantics."""

    def __init__(self, schema: Mapping[str, JsonValue], *, where: str = "parameters") -> None:
        """Check the schema itself and prepare a validator.

        Raises:
            ConfigError: The schema is not a valid JSON Schema.
        """
        import jsonschema  # deferred: a heavy import (tests/unit/test_import_cost.py)

        try:
            jsonschema.Draft202012Validator.check_schema(dict(schema))
        except jsonschema.SchemaError as exc:
            raise ConfigError(f"schema at {where} is not valid JSON Schema: {exc.message}") from exc
        self._validator = jsonschema.Draft202012Validator(dict(schema))

    def errors(self, instance: object) -> list[str]:
        """Return one line per violation (``argument 'a.b': 3 is not of type 'string'``), empty when valid."""
        lines: list[str] = []
        for error in sorted(self._validator.iter_errors(instance), key=lambda e: [str(p) for p in e.path]):
            path = ".".join(str(p) for p in error.absolute_path)
            lines.append(f"argument {path!r}: {error.message}" if path else error.message)
        return lines
