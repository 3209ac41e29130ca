"""The schema-derived ``max_tokens`` and how ``infer``/``infer_json`` use it and report a cut-off answer."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from agentflow import Err, infer, run
from agentflow.engines import Completion, FunctionEngine, GenerationRequest, Usage
from agentflow.errors import InferenceError
from agentflow.plans._infer_json import infer_json
from agentflow.structured import MAX_TOKENS, MIN_TOKENS, OutputSpec, estimate_max_tokens

pytestmark = pytest.mark.anyio


class Short(BaseModel):
    ok: bool


class Tree(BaseModel):
    value: int
    children: list[Tree] = []


def test_budget_grows_with_the_bounds_and_stays_clamped() -> None:
    small = estimate_max_tokens({"type": "string", "maxLength": 10})
    large = estimate_max_tokens({"type": "string", "maxLength": 300})
    assert MIN_TOKENS <= small < large <= MAX_TOKENS
    assert estimate_max_tokens(Short.model_json_schema()) == MIN_TOKENS
    assert (
        estimate_max_tokens({"type": "array", "items": {"type": "string"}, "minItems": 10_000}) == MAX_TOKENS
    )


def test_budget_of_a_recursive_schema_is_finite() -> None:
    assert MIN_TOKENS < estimate_max_tokens(Tree.model_json_schema()) < MAX_TOKENS


def test_budget_covers_the_longest_enum_member() -> None:
    members = ["x" * 200, "y"]
    assert estimate_max_tokens({"enum": members}) >= len(json.dumps(members[0])) // 2


async def test_infer_without_max_tokens_asks_for_the_schema_budget() -> None:
    seen: list[GenerationRequest] = []

    def answer(request: GenerationRequest) -> str:
        seen.append(request)
        return '{"ok": true}'

    out = await run(infer(Short, "fine?"), engine=FunctionEngine(answer))
    assert out.unwrap() == Short(ok=True)
    assert seen[0].max_tokens == OutputSpec(Short.model_json_schema()).max_tokens


async def test_a_cut_off_answer_is_reported_with_the_budget() -> None:
    def answer(request: GenerationRequest) -> Completion:
        return Completion('{"ok": tr', Usage(completion_tokens=request.max_tokens), "length")

    out = await run(infer(Short, "fine?", max_tokens=48, max_repairs=0), engine=FunctionEngine(answer))
    assert isinstance(out, Err) and isinstance(out.error, InferenceError)
    assert "max_tokens=48 cut the answer off after 48 tokens; raise it" in str(out.error)


async def test_infer_json_names_the_unmet_constraint_and_path() -> None:
    schema: dict[str, object] = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1, "maximum": 5}},
        "required": ["n"],
    }
    answers = iter(['{"n": 1000000000000000}', '{"n": 3}'])
    seen: list[GenerationRequest] = []

    def answer(request: GenerationRequest) -> str:
        seen.append(request)
        return next(answers)

    out = await run(infer_json(schema, "pick"), engine=FunctionEngine(answer))  # type: ignore[arg-type]
    assert out.unwrap() == {"n": 3}
    assert seen[0].max_tokens == OutputSpec(schema).max_tokens
    repair = seen[1].messages[-1].content if seen[1].messages else ""
    assert "$.n" in repair and "[maximum]" in repair
