"""From JSON Schema to an llguidance grammar, and the list of what that grammar leaves unenforced.

llguidance (chosen by ``bench/structured_outputs.py`` on JSONSchemaBench, see the README) compiles a JSON
Schema into a grammar that a token matcher enforces while decoding. It keeps property declaration order,
``required``/optional, ``enum``/``const``, numeric bounds (exclusive too, and ``multipleOf``), string lengths,
``pattern`` (anchored as written: JSON Schema's search semantics), the formats ``date``, ``date-time``,
``time``, ``duration``, ``email``, ``hostname``, ``ipv4``, ``ipv6``, ``uri`` and ``uuid``, array
``minItems``/``maxItems``/``prefixItems``, ``anyOf``, ``allOf``, ``$ref``/``$defs`` with recursion,
``additionalProperties`` and ``patternProperties``.

Everything else degrades instead of failing: the grammar is built leniently (``uniqueItems``, ``not``,
``if``/``then``/``else``, ``dependentRequired``, unknown formats... are dropped from the grammar), ``oneOf``
is decoded as ``anyOf`` (exclusivity is not enforced), a ``pattern`` llguidance cannot compile (look-around,
back-references) is removed, and a schema llguidance rejects altogether is decoded as any JSON value. Each
dropped constraint is returned as an ``Unenforced`` entry, and ``AnswerCheck`` validates it after decoding.
Decoding is compact (no whitespace between tokens), so a small model cannot loop on blank lines.
"""

from __future__ import annotations

import copy
import json
import re
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

__all__ = ["Grammar", "Unenforced", "compile_grammar"]

_COMPILE_OPTIONS: JsonCompileOptions = {
    "lenient": True,
    "coerce_one_of": True,
    "whitespace_flexible": False,
    "item_separator": ",",
    "key_separator": ":",
}
_UNIMPLEMENTED_RE = re.compile(r"Unimplemented keys: \[(.*)\]")
_UNKNOWN_FORMAT_RE = re.compile(r"Unknown format: (.+)")
_SCHEMA_LIST_KEYS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_VALUE_KEYS = (
    "items",
    "additionalProperties",
    "not",
    "contains",
    "if",
    "then",
    "else",
    "propertyNames",
    "additionalItems",
    "unevaluatedProperties",
    "unevaluatedItems",
)
_SCHEMA_MAP_KEYS = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")


@dataclass(frozen=True, slots=True)
class Unenforced:
    """A constraint the decoding grammar does not enforce (it is checked after decoding instead).

    Attributes:
        keyword: The JSON Schema keyword (``uniqueItems``, ``pattern``, ``oneOf``...), ``schema`` when the
            whole schema is decoded as any JSON, or ``warning`` for another llguidance warning.
        at: JSON Pointer of the schema object holding it (``#/properties/tags``).
        reason: Why the grammar leaves it out.
    """

    keyword: str
    at: str
    reason: str

    def __str__(self) -> str:
        return f"{self.keyword} at {self.at}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Grammar:
    """An llguidance grammar for one JSON Schema.

    Attributes:
        text: The grammar, serialized for ``llguidance.LLMatcher``.
        unenforced: Constraints of the schema this grammar does not enforce.
    """

    text: str
    unenforced: tuple[Unenforced, ...]


def compile_grammar(schema: Mapping[str, object]) -> Grammar:
    """Compile ``schema`` to an llguidance grammar; never fails on a schema (see the module docstring).

    Compiling takes microseconds to milliseconds; callers that see the same schema often should cache
    the result (``OutputSpec`` does).
    """
    return _compile(json.dumps(schema))


@lru_cache(maxsize=256)
def _compile(schema_json: str) -> Grammar:
    import llguidance

    schema = json.loads(schema_json)
    unenforced: list[Unenforced] = []
    if not isinstance(schema, dict):  # a boolean schema: true admits anything, false nothing we can decode
        return Grammar(_any_json(), (Unenforced("schema", "#", f"the schema is {schema_json}"),))
    prepared = copy.deepcopy(schema)
    for at, holder, key in list(_patterns(prepared, "#")):
        problem = _regex_problem(holder[key] if key == "pattern" else key)
        if problem is None:
            continue
        if key == "pattern":
            del holder["pattern"]
            unenforced.append(Unenforced("pattern", at, f"llguidance cannot compile it ({problem})"))
        else:
            del holder[key]
            unenforced.append(Unenforced("patternProperties", at, f"llguidance cannot compile {key!r}"))
            owner = _owner(prepared, at)
            if owner is not None and owner.get("additionalProperties", True) is not True:
                # Keys that matched the dropped regex would now fall under additionalProperties: admit them.
                del owner["additionalProperties"]
                unenforced.append(Unenforced("additionalProperties", at.rsplit("/", 1)[0], "relaxed with it"))
    for at, node in _subschemas(prepared, "#"):
        if "minProperties" in node and node.get("additionalProperties", True) is not False:
            # llguidance 1.9 counts only undeclared keys toward minProperties on open objects and so
            # rejects valid objects ({"a": 1} under minProperties 1); leave the bound to the check.
            del node["minProperties"]
            unenforced.append(Unenforced("minProperties", at, "llguidance miscounts it on open objects"))
        if "pattern" in node and ("minLength" in node or "maxLength" in node):
            # llguidance 1.9 intersects the pattern with the length bounds wrongly and rejects valid strings
            # ("^(?:\\S+\\s+){0,49}\\S+$" with maxLength 500 refuses a ten-word sentence): keep the pattern.
            for key in ("minLength", "maxLength"):
                if key in node:
                    del node[key]
                    unenforced.append(Unenforced(key, at, "llguidance mishandles it together with pattern"))
        if "oneOf" in node:
            unenforced.append(
                Unenforced("oneOf", at, "decoded as anyOf: exactly-one is checked after decoding")
            )
    reason = ""
    for relax in _RELAXATIONS:
        dropped = relax(prepared)
        unenforced.extend(
            Unenforced(k, at, f"dropped: llguidance rejects the schema ({reason})") for k, at in dropped
        )
        grammar = llguidance.LLMatcher.grammar_from_json_schema(prepared, defaults=_COMPILE_OPTIONS)
        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
        if not is_error:
            for message in messages:
                unenforced.extend(_from_warning(message, prepared))
            return Grammar(grammar, tuple(dict.fromkeys(unenforced)))
        reason = reason or _short(messages[0] if messages else "unknown error")
    return Grammar(_any_json(), (*unenforced, Unenforced("schema", "#", f"llguidance rejects it ({reason})")))


# Each relaxation removes constraints in place (so the set of accepted values only grows) and returns
# (keyword, pointer) for what it removed. They are tried in order until llguidance accepts the schema.
_COMBINING = ("allOf", "not", "if", "then", "else", "dependentSchemas", "propertyNames", "contains")
_STRUCTURAL = frozenset(
    {
        "type",
        "properties",
        "required",
        "items",
        "prefixItems",
        "enum",
        "const",
        "anyOf",
        "oneOf",
        "$ref",
        "$defs",
        "definitions",
        "additionalProperties",
        "$schema",
        "$id",
        "id",
    }
)


_ANNOTATIONS = frozenset({"title", "description", "examples", "default", "$comment", "comment", "deprecated"})


def _keep(schema: dict[str, object]) -> list[tuple[str, str]]:
    return []


def _drop_combinators(schema: dict[str, object]) -> list[tuple[str, str]]:
    dropped: list[tuple[str, str]] = []
    for at, node in list(_subschemas(schema, "#")):
        for key in _COMBINING:
            if key in node:
                del node[key]
                dropped.append((key, at))
        if "patternProperties" in node:
            del node["patternProperties"]
            dropped.append(("patternProperties", at))
            if node.get("additionalProperties", True) is not True:
                del node["additionalProperties"]
                dropped.append(("additionalProperties", at))
    return dropped


def _structure_only(schema: dict[str, object]) -> list[tuple[str, str]]:
    dropped: list[tuple[str, str]] = []
    for at, node in list(_subschemas(schema, "#")):
        for key in [k for k in node if k not in _STRUCTURAL]:
            del node[key]
            if key not in _ANNOTATIONS:
                dropped.append((key, at))
    return dropped


def _type_only(schema: dict[str, object]) -> list[tuple[str, str]]:
    dropped = [(k, "#") for k in schema if k not in ("type", "$schema")]
    kind = schema.get("type")
    schema.clear()
    if kind is not None:
        schema["type"] = kind
    return dropped


_RELAXATIONS = (_keep, _drop_combinators, _structure_only, _type_only)


def _owner(schema: dict[str, object], pointer: str) -> dict[str, object] | None:
    """The schema object holding the member at ``pointer`` (``#/a/patternProperties`` -> ``#/a``)."""
    parent = pointer.rsplit("/", 1)[0]
    for at, node in _subschemas(schema, "#"):
        if at == parent:
            return node
    return None


def _any_json() -> str:
    import llguidance

    return str(llguidance.LLMatcher.grammar_from_json_schema({}, defaults=_COMPILE_OPTIONS))


@lru_cache(maxsize=1024)
def _regex_problem(pattern: object) -> str | None:
    import llguidance

    if not isinstance(pattern, str):
        return f"the pattern {pattern!r} is not a string"
    try:
        with warnings.catch_warnings():  # FutureWarning on "[[" and the like: the schema's business
            warnings.simplefilter("ignore")
            re.compile(pattern)
    except re.error as exc:
        return f"not a regular expression: {exc}"
    grammar = llguidance.LLMatcher.grammar_from_json_schema(
        {"type": "string", "pattern": pattern}, defaults=_COMPILE_OPTIONS
    )
    is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    return _short(messages[0] if messages else "unknown error") if is_error else None


def _short(message: str) -> str:
    one_line = " ".join(message.split())
    return one_line if len(one_line) <= 200 else one_line[:197] + "..."


def _from_warning(message: str, schema: dict[str, object]) -> Iterator[Unenforced]:
    m = _UNIMPLEMENTED_RE.search(message)
    if m is not None:
        keys = [k.strip().strip('"') for k in m.group(1).split(",") if k.strip()]
        found = False
        for at, node in _subschemas(schema, "#"):
            for key in keys:
                if key in node:
                    found = True
                    yield Unenforced(key, at, "llguidance does not implement it")
        if not found:
            yield Unenforced(",".join(keys), "#", "llguidance does not implement it")
        return
    m = _UNKNOWN_FORMAT_RE.search(message)
    if m is not None:
        name = m.group(1).strip()
        found = False
        for at, node in _subschemas(schema, "#"):
            if node.get("format") == name:
                found = True
                yield Unenforced("format", at, f"llguidance does not know the format {name!r}")
        if not found:
            yield Unenforced("format", "#", f"llguidance does not know the format {name!r}")
        return
    if "oneOf" in message:
        return  # reported per oneOf already
    yield Unenforced("warning", "#", _short(message))


def _pointer(at: str, key: str | int) -> str:
    return f"{at}/{str(key).replace('~', '~0').replace('/', '~1')}"


def _subschemas(node: object, at: str) -> Iterator[tuple[str, dict[str, object]]]:
    """Every schema object inside ``node`` with its JSON Pointer, ``node`` first (depth-first)."""
    stack: list[tuple[object, str]] = [(node, at)]
    while stack:
        item, where = stack.pop()
        if not isinstance(item, dict):
            continue
        yield where, item
        children: list[tuple[object, str]] = []
        for key in _SCHEMA_LIST_KEYS:
            value = item.get(key)
            if isinstance(value, list):
                children.extend((v, _pointer(_pointer(where, key), i)) for i, v in enumerate(value))
        for key in _SCHEMA_VALUE_KEYS:
            value = item.get(key)
            if isinstance(value, dict):
                children.append((value, _pointer(where, key)))
            elif key == "items" and isinstance(value, list):
                children.extend((v, _pointer(_pointer(where, key), i)) for i, v in enumerate(value))
        for key in _SCHEMA_MAP_KEYS:
            value = item.get(key)
            if isinstance(value, dict):
                children.extend((v, _pointer(_pointer(where, key), k)) for k, v in value.items())
        stack.extend(reversed(children))


def _patterns(schema: dict[str, object], at: str) -> Iterator[tuple[str, dict[str, object], str]]:
    """``(pointer, holder, key)`` for each ``pattern`` (key ``"pattern"``) and ``patternProperties`` regex."""
    for where, node in _subschemas(schema, at):
        if "pattern" in node:
            yield where, node, "pattern"
        props = node.get("patternProperties")
        if isinstance(props, dict):
            for regex in list(props):
                yield _pointer(where, "patternProperties"), props, regex
