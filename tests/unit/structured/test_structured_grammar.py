"""Grammars from JSON Schema: what llguidance enforces token by token, and what is reported instead.

The tokenizer here is a byte-level vocabulary (one token per byte, plus end-of-sequence), so no model file is
needed; llguidance works on bytes, so what a byte tokenizer accepts is what any vocabulary accepts.
"""

from __future__ import annotations

import json
from typing import Literal

import llguidance
import numpy as np
import pytest
from pydantic import BaseModel, Field

from agentflow.structured import STRING_CAPS, Grammar, OutputSpec, TokenMatcher, compile_grammar

EOS = 256


class _Bytes:
    eos_token_id = EOS
    bos_token_id = None
    tokens = [bytes([i]) for i in range(256)] + [b"\xff<eos>"]
    special_token_ids = (EOS,)

    def __call__(self, text: bytes) -> list[int]:
        return list(text)


TOKENIZER = llguidance.LLTokenizer(llguidance.TokenizerWrapper(_Bytes()))


def accepts(grammar: Grammar, text: str) -> bool:
    matcher = TokenMatcher(TOKENIZER, grammar)
    tokens = list(text.encode("utf-8"))
    return matcher.consume_all(tokens) == len(tokens) and matcher.accepting


class Answer(BaseModel):
    reasoning: str
    answer: int


def test_properties_decode_in_declaration_order() -> None:
    grammar = OutputSpec(Answer.model_json_schema()).grammar
    assert accepts(grammar, '{"reasoning":"because","answer":4}')
    assert not accepts(grammar, '{"answer":4,"reasoning":"because"}')
    matcher = TokenMatcher(TOKENIZER, grammar)
    matcher.consume_all(list(b'{"'))
    allowed = matcher.allowed()
    assert allowed[ord("r")] and not allowed[ord("a")]  # the first key can only be "reasoning"


class Constrained(BaseModel):
    rating: int = Field(ge=1, le=5)
    share: float = Field(gt=0, lt=1)
    code: str = Field(pattern=r"^\d{4}$")
    name: str = Field(min_length=2, max_length=4)
    day: str = Field(json_schema_extra={"format": "date"})
    at: str = Field(json_schema_extra={"format": "date-time"})
    id: str = Field(json_schema_extra={"format": "uuid"})
    mail: str = Field(json_schema_extra={"format": "email"})
    mood: Literal["up", "down"]
    tags: list[str] = Field(min_length=1, max_length=2)
    note: str | None = None


VALID = {
    "rating": 5,
    "share": 0.25,
    "code": "2024",
    "name": "abc",
    "day": "2024-02-29",
    "at": "2024-02-29T12:00:00Z",
    "id": "123e4567-e89b-42d3-a456-426614174000",
    "mail": "ada@example.com",
    "mood": "up",
    "tags": ["x"],
}


@pytest.mark.parametrize(
    "change",
    [
        {"rating": 1000000000000000},
        {"rating": 0},
        {"share": 1},
        {"code": "123"},
        {"name": "a"},
        {"name": "abcde"},
        {"day": "2024-13-01"},
        {"at": "yesterday"},
        {"id": "not-a-uuid"},
        {"mail": "nobody"},
        {"mood": "sideways"},
        {"tags": []},
        {"tags": ["a", "b", "c"]},
        {"extra": 1},
    ],
)
def test_grammar_enforces_each_listed_constraint(change: dict[str, object]) -> None:
    spec = OutputSpec(Constrained.model_json_schema())
    assert spec.unenforced == ()
    compact = {"separators": (",", ":")}
    assert accepts(spec.grammar, json.dumps(VALID, **compact))  # type: ignore[arg-type]
    assert accepts(spec.grammar, json.dumps({**VALID, "note": None}, **compact))  # type: ignore[arg-type]
    assert not accepts(spec.grammar, json.dumps({**VALID, **change}, **compact))  # type: ignore[arg-type]


def test_strings_never_hold_raw_control_characters() -> None:
    grammar = compile_grammar({"type": "string"})
    assert accepts(grammar, '"a\\nb"')
    assert not accepts(grammar, '"a\nb"')
    assert not accepts(grammar, '"a\x01b"')


class Tree(BaseModel):
    value: int
    children: list[Tree] = []


class Cat(BaseModel):
    kind: Literal["cat"]
    lives: int = Field(ge=0, le=9)


class Dog(BaseModel):
    kind: Literal["dog"]
    good: bool


class Pet(BaseModel):
    pet: Cat | Dog = Field(discriminator="kind")


def test_recursion_and_discriminated_unions() -> None:
    tree = OutputSpec(Tree.model_json_schema()).grammar
    assert accepts(tree, '{"value":1,"children":[{"value":2,"children":[{"value":3}]}]}')
    assert not accepts(tree, '{"value":1,"children":[{"value":"2"}]}')
    pets = OutputSpec(Pet.model_json_schema()).grammar
    assert accepts(pets, '{"pet":{"kind":"cat","lives":9}}')
    assert accepts(pets, '{"pet":{"kind":"dog","good":true}}')
    assert not accepts(pets, '{"pet":{"kind":"cat","lives":10}}')
    assert not accepts(pets, '{"pet":{"kind":"dog","lives":1}}')


@pytest.mark.parametrize(
    ("schema", "keyword"),
    [
        ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, "uniqueItems"),
        ({"type": "object", "not": {"required": ["x"]}}, "not"),
        ({"type": "string", "pattern": "(?=a)abc"}, "pattern"),
        ({"oneOf": [{"type": "integer"}, {"type": "number"}]}, "oneOf"),
        ({"type": "string", "format": "x-custom"}, "format"),
        ({"type": "object", "properties": {"a": {"type": "integer"}}, "minProperties": 1}, "minProperties"),
    ],
)
def test_what_the_grammar_cannot_enforce_is_reported(schema: dict[str, object], keyword: str) -> None:
    grammar = compile_grammar(schema)
    assert keyword in {u.keyword for u in grammar.unenforced}


def test_a_schema_llguidance_rejects_still_compiles_to_a_weaker_grammar() -> None:
    contradictory = {  # JSONSchemaBench Handwritten/allOfPProp1: llguidance cannot intersect these
        "type": "object",
        "allOf": [
            {"patternProperties": {"^.{1,3}$": False}, "additionalProperties": True},
            {"patternProperties": {"a": True}, "additionalProperties": False},
            {"patternProperties": {"b": True}, "additionalProperties": False},
        ],
        "minProperties": 4,
    }
    grammar = compile_grammar(contradictory)
    assert grammar.unenforced  # reported, never an exception
    assert accepts(grammar, '{"a":1}')
    for boolean in (True, False):
        assert compile_grammar(boolean).unenforced[0].keyword == "schema"  # type: ignore[arg-type]


def test_dropped_pattern_properties_do_not_reject_the_keys_they_admitted() -> None:
    schema = {
        "type": "object",
        "patternProperties": {"(?=x)x.*": {"type": "integer"}},
        "additionalProperties": False,
    }
    grammar = compile_grammar(schema)
    assert {"patternProperties", "additionalProperties"} <= {u.keyword for u in grammar.unenforced}
    assert accepts(grammar, '{"xy":1}')


def test_mask_sets_forbidden_logits_to_minus_infinity_and_completes() -> None:
    matcher = TokenMatcher(TOKENIZER, compile_grammar({"enum": ["yes", "no"]}))
    logits = np.zeros(EOS + 1, dtype=np.float32)
    matcher.mask(logits)
    allowed = {int(i) for i in np.flatnonzero(np.isfinite(logits))}
    assert allowed == {ord('"')}
    assert matcher.consume_all(list(b'"no"')) == 4
    assert matcher.accepting and matcher.complete
    assert not matcher.consume(ord("x")) and matcher.error


def test_open_objects_are_closed_for_decoding_only() -> None:
    spec = OutputSpec(Answer.model_json_schema())
    assert "additionalProperties" not in spec.schema
    assert spec.decode_schema["additionalProperties"] is False
    assert not accepts(spec.grammar, '{"reasoning":"r","answer":1,"more":2}')
    assert spec.check('{"reasoning":"r","answer":1,"more":2}') == {"reasoning": "r", "answer": 1, "more": 2}


def test_free_strings_are_capped_for_decoding_so_the_budget_covers_them() -> None:
    spec = OutputSpec(Answer.model_json_schema())
    cap = STRING_CAPS[None]
    assert spec.decode_schema["properties"]["reasoning"]["maxLength"] == cap  # type: ignore[index]
    long = "x" * (cap + 1)
    assert accepts(spec.grammar, json.dumps({"reasoning": "x" * cap, "answer": 1}, separators=(",", ":")))
    assert not accepts(spec.grammar, json.dumps({"reasoning": long, "answer": 1}, separators=(",", ":")))
    assert spec.check(json.dumps({"reasoning": long, "answer": 1})) == {"reasoning": long, "answer": 1}
    assert spec.max_tokens >= cap + 2
    fixed = OutputSpec({"enum": ["a", "b"], "type": "string"}).decode_schema
    assert "maxLength" not in fixed
