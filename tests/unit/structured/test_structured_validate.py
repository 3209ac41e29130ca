"""Answer checks: strict JSON, every JSON Schema constraint named with its path, cut-off answers."""

from __future__ import annotations

import json
from typing import Literal

import pytest
from pydantic import BaseModel, Field

from agentflow.errors import ConfigError
from agentflow.structured import AnswerCheck, OutputSpec, Violation, cut_off, parse_json_strict


class Item(BaseModel):
    name: str = Field(min_length=2, max_length=5, pattern=r"^[a-z]+$")
    score: int = Field(ge=1, le=5)
    ratio: float = Field(gt=0, lt=1)
    code: str = Field(pattern=r"\d{4}")
    day: str = Field(json_schema_extra={"format": "date"})
    kind: Literal["a", "b"]
    tags: list[str] = Field(min_length=1, max_length=2)


GOOD = {
    "name": "abc",
    "score": 3,
    "ratio": 0.5,
    "code": "x1234",
    "day": "2024-02-29",
    "kind": "a",
    "tags": ["t"],
}


@pytest.mark.parametrize(
    ("change", "constraint", "path"),
    [
        ({"name": "a"}, "minLength", "$.name"),
        ({"name": "abcdef"}, "maxLength", "$.name"),
        ({"name": "ABC"}, "pattern", "$.name"),
        ({"score": 0}, "minimum", "$.score"),
        ({"score": 1000000000000000}, "maximum", "$.score"),
        ({"score": 2.5}, "type", "$.score"),
        ({"ratio": 0}, "exclusiveMinimum", "$.ratio"),
        ({"ratio": 1}, "exclusiveMaximum", "$.ratio"),
        ({"code": "12"}, "pattern", "$.code"),
        ({"day": "2023-02-29"}, "format", "$.day"),
        ({"kind": "c"}, "enum", "$.kind"),
        ({"tags": []}, "minItems", "$.tags"),
        ({"tags": ["a", "b", "c"]}, "maxItems", "$.tags"),
        ({"tags": [1]}, "type", "$.tags[0]"),
    ],
)
def test_each_unmet_constraint_is_named_with_its_path(
    change: dict[str, object], constraint: str, path: str
) -> None:
    check = AnswerCheck(Item.model_json_schema())
    assert check.check(json.dumps(GOOD)) == GOOD
    found = check.check(json.dumps({**GOOD, **change}))
    assert isinstance(found, Violation)
    assert (found.constraint, found.path) == (constraint, path)


def test_missing_and_extra_properties_are_named() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "integer"}},
        "required": ["a"],
        "additionalProperties": False,
    }
    check = AnswerCheck(schema)
    missing = check.check("{}")
    extra = check.check('{"a": 1, "b": 2}')
    assert isinstance(missing, Violation) and missing.constraint == "required"
    assert isinstance(extra, Violation) and extra.constraint == "additionalProperties"


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [
        ("date", "2024-01-31", "2024-01-32"),
        ("date-time", "2024-01-31T23:59:59Z", "2024-01-31 23:59:59"),
        ("time", "12:30:00+02:00", "12:30"),
        ("uuid", "123e4567-e89b-42d3-a456-426614174000", "123e4567e89b42d3a456426614174000"),
        ("email", "ada@example.com", "ada.example.com"),
        ("ipv4", "10.0.0.1", "10.0.0.256"),
        ("hostname", "example.com", "-bad-.com"),
        ("uri", "https://example.com/a", "not a uri"),
    ],
)
def test_formats_are_checked(fmt: str, good: str, bad: str) -> None:
    check = AnswerCheck({"type": "string", "format": fmt})
    assert check.check(json.dumps(good)) == good
    found = check.check(json.dumps(bad))
    assert isinstance(found, Violation) and found.constraint == "format" and found.path == "$"


@pytest.mark.parametrize(
    "text",
    ['"a\nb"', '"tab\there"', '{"a": "\x01"}', "NaN", '{"a": Infinity}', '{"a": 1, "a": 2}', '"\\ud800"'],
)
def test_strict_parsing_refuses_what_other_parsers_reject(text: str) -> None:
    found = parse_json_strict(text)
    assert isinstance(found, Violation) and found.constraint == "json"


def test_control_characters_never_reach_the_schema_check() -> None:
    spec = OutputSpec({"type": "object", "properties": {"s": {"type": "string"}}})
    found = spec.check('{"s": "line\nbreak"}')
    assert isinstance(found, Violation) and "control character" in found.message
    assert spec.check('{"s": "line\\nbreak"}') == {"s": "line\nbreak"}


def test_cut_off_answer_names_the_budget() -> None:
    spec = OutputSpec({"type": "object", "properties": {"s": {"type": "string"}}})
    found = spec.check('{"s": "nega-tini-c-c-c', cut_off_at=48, completion_tokens=48)
    assert found == cut_off(48, 48)
    assert "max_tokens=48 cut the answer off after 48 tokens; raise it" in str(found)


def test_a_complete_answer_stopped_for_length_still_counts() -> None:
    assert OutputSpec({"type": "integer"}).check("12", cut_off_at=2, completion_tokens=2) == 12


class Node(BaseModel):
    value: int
    children: list[Node] = []


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = Field(ge=0, le=9)


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Pet(BaseModel):
    pet: Cat | Dog = Field(discriminator="kind")


def test_recursive_and_union_models_are_checked() -> None:
    tree = AnswerCheck(Node.model_json_schema())
    assert tree.check('{"value": 1, "children": [{"value": 2, "children": []}]}') is not None
    deep = tree.check('{"value": 1, "children": [{"value": "x"}]}')
    assert isinstance(deep, Violation) and deep.path == "$.children[0].value"
    pets = AnswerCheck(Pet.model_json_schema())
    assert pets.check('{"pet": {"kind": "dog", "good": true}}') == {"pet": {"kind": "dog", "good": True}}
    wrong = pets.check('{"pet": {"kind": "cat", "lives": 10}}')
    assert isinstance(wrong, Violation) and wrong.path.startswith("$.pet")


def test_an_invalid_schema_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="the answer schema of step x is not valid JSON Schema"):
        OutputSpec({"type": "no-such-type"}, where="the answer schema of step x")


def test_a_pattern_python_cannot_compile_is_reported_not_raised() -> None:
    found = AnswerCheck({"type": "string", "pattern": "\\p{L}+"}).check('"abc"')
    assert (
        isinstance(found, Violation)
        and found.constraint == "pattern"
        and "cannot be checked" in found.message
    )
