"""The meta-agent: plans written under the generation schema, repaired with the loader's errors, then run."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from agentflow import Err, Ok, flow, run
from agentflow.agents._meta import (
    BUILTIN_TOOL_REFS,
    GoalRun,
    generation_schema,
    run_goal,
    tools_named,
    write_plan,
)
from agentflow.engines import FunctionEngine, GenerationRequest, TestEngine
from agentflow.errors import InferenceError
from agentflow.plans import AgentSpec, plan_json_schema
from agentflow.plans._tools import resolve_tool
from agentflow.plans.builtin_tools import lookup, word_count
from agentflow.runtime import RunContext

ROOT = Path(__file__).parents[3]
ROW = {"table": "examples/data/planets.csv", "key": "Mars"}
INVALID = {
    "apiVersion": "agentflow/v1",
    "kind": "Plan",
    "name": "broken",
    "steps": [
        {"id": "topic", "tool": "lookup", "args": ROW},
        {"id": "count", "tool": "word_count", "args": {"text": "Row: {{steps.fact}}"}},
        {"id": "fact", "tool": "lookup", "args": ROW},
    ],
}
VALID = {
    "apiVersion": "agentflow/v1",
    "kind": "Plan",
    "name": "fixed",
    "steps": [
        {"id": "fact", "tool": "lookup", "args": ROW},
        {"id": "count", "tool": "word_count", "args": {"text": "Row: {{steps.fact}}"}},
    ],
}


@pytest.fixture(autouse=True)
def _at_repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """``lookup`` reads examples/data/planets.csv relative to the working directory."""
    monkeypatch.chdir(ROOT)


def _scripted(*answers: dict[str, object]) -> tuple[FunctionEngine, list[GenerationRequest]]:
    pending = [json.dumps(a) for a in answers]
    seen: list[GenerationRequest] = []

    def answer(request: GenerationRequest) -> str:
        seen.append(request)
        return pending.pop(0)

    return FunctionEngine(answer), seen


def _tools() -> list[object]:
    return [resolve_tool(ref) for ref in BUILTIN_TOOL_REFS]


def test_generation_schema_admits_the_scripted_plans() -> None:
    schema = generation_schema(_tools())  # type: ignore[arg-type]
    jsonschema.validate(VALID, schema)
    jsonschema.validate(INVALID, schema)


def test_generation_schema_keeps_templates_out_of_the_first_step() -> None:
    schema = generation_schema(_tools())  # type: ignore[arg-type]
    first_refers = {**VALID, "steps": [{"id": "a", "prompt": "use {{steps.b}}"}]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(first_refers, schema)


def test_generation_schema_documents_are_valid_plan_format_documents() -> None:
    schema = generation_schema(_tools(), {"writer": AgentSpec(system="brief")}, max_steps=3)  # type: ignore[arg-type]
    sample = {
        "apiVersion": "agentflow/v1",
        "kind": "Plan",
        "name": "p",
        "steps": [
            {
                "id": "a",
                "parallel": [{"id": "b", "prompt": "x", "agent": "writer"}, {"id": "c", "prompt": "y"}],
            },
            {"id": "d", "tool": "calculator", "args": {"expression": "1 + 2"}},
        ],
    }
    jsonschema.validate(sample, schema)
    jsonschema.validate(sample, plan_json_schema())


@pytest.mark.anyio
async def test_write_plan_repairs_an_invalid_plan_with_the_loader_error() -> None:
    engine, seen = _scripted(INVALID, VALID)
    out = await run(write_plan("count the words of the Mars row"), engine=engine)
    assert isinstance(out, Ok)
    assert out.value.plan.name == "fixed"
    assert out.value.plan.tools == [
        "agentflow.plans.builtin_tools:lookup",
        "agentflow.plans.builtin_tools:word_count",
    ]
    assert len(seen) == 2
    assert seen[0].json_schema is not None and seen[0].json_schema == seen[1].json_schema
    assert seen[1].messages is not None
    repair = seen[1].messages[-1].content
    assert "step 'fact' has not run at this point" in repair
    assert seen[1].messages[-2].role == "assistant" and json.loads(seen[1].messages[-2].content) == INVALID


@pytest.mark.anyio
async def test_write_plan_gives_up_after_bounded_repairs() -> None:
    engine, seen = _scripted(INVALID, INVALID, INVALID)
    out = await run(write_plan("goal", max_repairs=2), engine=engine)
    assert isinstance(out, Err) and isinstance(out.error, InferenceError)
    assert out.error.attempts == 3 and json.loads(out.error.raw) == INVALID
    assert len(seen) == 3


@pytest.mark.anyio
async def test_run_goal_runs_the_plan_as_a_sub_workflow_of_the_caller() -> None:
    engine, _ = _scripted(VALID)

    @flow
    async def caller() -> GoalRun:
        return await run_goal("count the words of the Mars row")

    out = await run(caller, context=RunContext(engine=engine, run_id="parent"))
    assert isinstance(out, Ok)
    row = json.dumps(lookup(ROW["table"], ROW["key"]))
    assert out.value.outputs == {"result": word_count(f"Row: {row}")}
    paths = [e.path for e in out.trace if e.kind == "tool.call"]
    assert paths == ["run_goal/fixed/fact", "run_goal/fixed/count"]


@pytest.mark.anyio
async def test_write_plan_output_from_a_schema_example_engine_loads() -> None:
    out = await run(write_plan("anything"), engine=TestEngine())
    assert isinstance(out, Ok)
    assert out.value.plan.steps


@pytest.mark.anyio
async def test_write_plan_renames_repeated_step_ids() -> None:
    repeated = {
        "apiVersion": "agentflow/v1",
        "kind": "Plan",
        "name": "twice",
        "steps": [
            {"id": "fact", "tool": "lookup", "args": ROW},
            {
                "id": "fact",
                "parallel": [{"id": "fact", "prompt": "a {{steps.fact}}"}, {"id": "fact_2", "prompt": "b"}],
            },
        ],
    }
    engine, seen = _scripted(repeated)
    out = await run(write_plan("goal"), engine=engine)
    assert isinstance(out, Ok) and len(seen) == 1
    from agentflow.plans._loader import walk_steps

    assert [s.id for s in walk_steps(out.value.plan.steps)] == ["fact", "fact_2", "fact_3", "fact_2_2"]


def test_tools_named_finds_the_tools_whose_name_words_the_goal_uses() -> None:
    tools = _tools()
    assert tools_named("Look up the fact about the moon and count its words", tools) == [
        "lookup",
        "word_count",
    ]  # type: ignore[arg-type]
    assert tools_named("Calculate 3 * 7 and split the result", tools) == ["calculator", "split"]  # type: ignore[arg-type]
    assert tools_named("Extract the keywords of this text", tools) == ["keywords"]  # type: ignore[arg-type]
    assert tools_named("Say something about tea", tools) == []  # type: ignore[arg-type]
    assert tools_named("Tell me about the world", tools) == []  # type: ignore[arg-type]


NO_TOOLS = {
    "apiVersion": "agentflow/v1",
    "kind": "Plan",
    "name": "chatty",
    "steps": [{"id": "answer", "prompt": "The moon has about twelve words."}],
}


@pytest.mark.anyio
async def test_write_plan_sends_back_a_plan_that_calls_none_of_the_tools_the_goal_names() -> None:
    engine, seen = _scripted(NO_TOOLS, VALID)
    out = await run(write_plan("Look up Mars and count the words of its row"), engine=engine)
    assert isinstance(out, Ok) and out.value.plan.name == "fixed"
    assert seen[1].messages is not None
    repair = seen[1].messages[-1].content
    assert "too weak for the goal: no step calls lookup, word_count" in repair


@pytest.mark.anyio
async def test_write_plan_refuses_a_weak_plan_when_the_repairs_run_out() -> None:
    engine, _ = _scripted(NO_TOOLS, NO_TOOLS)
    out = await run(run_goal("Look up Mars and count the words of its row", max_repairs=1), engine=engine)
    assert isinstance(out, Err) and isinstance(out.error, InferenceError)
    assert "no step calls lookup, word_count" in str(out.error)
    assert not any(e.kind == "tool.call" or e.path.startswith("run_goal/chatty") for e in out.trace)
