"""Unit tests of the schema-to-example generator: pydantic-emitted schemas and generated schemas."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Annotated, Literal

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from agentflow.engines import example_from_schema
from agentflow.errors import ConfigError


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Address(BaseModel):
    street: str
    number: Annotated[int, Field(ge=1, le=9999)]


class Person(BaseModel):
    name: Annotated[str, Field(min_length=3, max_length=10)]
    age: Annotated[int, Field(gt=17, lt=130, multiple_of=5)]
    height: Annotated[float, Field(gt=0.5, le=2.5)]
    ok: bool
    color: Color
    kind: Literal["a", "b"]
    home: Address
    others: list[Address]
    tags: Annotated[list[str], Field(min_length=2)]
    maybe: int | None
    either: int | str
    born: dt.date
    seen: dt.datetime
    scores: dict[str, float]
    pair: tuple[int, str]
    nickname: str = "x"


class Tree(BaseModel):
    label: str
    children: list[Tree] = []


def test_example_validates_against_rich_pydantic_schema() -> None:
    schema = Person.model_json_schema()
    value = example_from_schema(schema)
    jsonschema.validate(value, schema)
    person = Person.model_validate(value)
    assert len(person.tags) == 2
    assert person.age % 5 == 0


def test_example_handles_recursive_model_with_optional_recursion() -> None:
    schema = Tree.model_json_schema()
    value = example_from_schema(schema)
    jsonschema.validate(value, schema)
    assert Tree.model_validate(value).children == []


def test_example_is_deterministic() -> None:
    schema = Person.model_json_schema()
    assert example_from_schema(schema) == example_from_schema(schema)


def test_unresolvable_ref_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="points at nothing"):
        example_from_schema({"$ref": "#/$defs/Missing"})


def test_required_recursion_raises_config_error() -> None:
    schema = {
        "$defs": {
            "Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}, "required": ["next"]}
        },
        "$ref": "#/$defs/Node",
    }
    with pytest.raises(ConfigError, match="recursive"):
        example_from_schema(schema)


def _leaf() -> st.SearchStrategy[dict[str, object]]:
    ints = st.integers(-50, 50)
    return st.one_of(
        st.builds(lambda: {"type": "boolean"}),
        st.builds(lambda: {"type": "null"}),
        st.builds(
            lambda lo, span, step: {
                "type": "integer",
                "minimum": lo,
                "maximum": lo + span * step,
                "multipleOf": step,
            },
            ints,
            st.integers(1, 5),
            st.integers(1, 4),
        ),
        st.builds(
            lambda lo, span: {"type": "integer", "exclusiveMinimum": lo, "exclusiveMaximum": lo + span},
            ints,
            st.integers(2, 9),
        ),
        st.builds(
            lambda lo, span: {"type": "number", "exclusiveMinimum": lo, "maximum": lo + span},
            ints,
            st.integers(1, 9),
        ),
        st.builds(lambda hi: {"type": "number", "exclusiveMaximum": hi}, ints),
        st.builds(
            lambda lo, extra: {"type": "string", "minLength": lo, "maxLength": lo + extra},
            st.integers(0, 12),
            st.integers(0, 5),
        ),
        st.builds(
            lambda vals: {"enum": vals},
            st.lists(st.one_of(st.integers(), st.text(max_size=3)), min_size=1, max_size=4),
        ),
        st.builds(
            lambda fmt: {"type": "string", "format": fmt},
            st.sampled_from(["date", "date-time", "email", "uuid"]),
        ),
    )


def _extend(children: st.SearchStrategy[dict[str, object]]) -> st.SearchStrategy[dict[str, object]]:
    return st.one_of(
        st.builds(
            lambda props, n: {"type": "object", "properties": props, "required": sorted(props)[:n]},
            st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), children, max_size=4),
            st.integers(0, 4),
        ),
        st.builds(
            lambda item, lo, unique: {"type": "array", "items": item, "minItems": lo, "uniqueItems": unique},
            children,
            st.integers(0, 3),
            st.booleans(),
        ),
        st.builds(lambda a, b: {"anyOf": [a, b]}, children, children),
        st.builds(lambda a: {"anyOf": [a, {"type": "null"}]}, children),
    )


schemas = st.recursive(_leaf(), _extend, max_leaves=12)


def _unique_ok(schema: dict[str, object]) -> bool:
    """uniqueItems over booleans/nulls/enums can need more distinct values than exist; skip those."""
    if schema.get("type") == "array" and schema.get("uniqueItems"):
        return False
    return all(_unique_ok(v) for v in _children(schema))


def _children(schema: dict[str, object]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    props = schema.get("properties")
    if isinstance(props, dict):
        out.extend(props.values())
    items = schema.get("items")
    if isinstance(items, dict):
        out.append(items)
    branches = schema.get("anyOf")
    if isinstance(branches, list):
        out.extend(branches)
    return out


@settings(max_examples=300, deadline=None)
@given(schemas)
def test_example_validates_for_generated_schemas(schema: dict[str, object]) -> None:
    value = example_from_schema(schema)
    if _unique_ok(schema):
        jsonschema.validate(value, schema)
    else:
        jsonschema.validate(value, _drop_unique(schema))


def _drop_unique(schema: dict[str, object]) -> dict[str, object]:
    out = {k: v for k, v in schema.items() if k != "uniqueItems"}
    props = out.get("properties")
    if isinstance(props, dict):
        out["properties"] = {k: _drop_unique(v) for k, v in props.items()}
    items = out.get("items")
    if isinstance(items, dict):
        out["items"] = _drop_unique(items)
    branches = out.get("anyOf")
    if isinstance(branches, list):
        out["anyOf"] = [_drop_unique(b) for b in branches]
    return out
