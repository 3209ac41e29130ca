"""The LLMCompiler agent and the ReAct baseline with scripted engines (planner/joiner logic, no model)."""

from __future__ import annotations

import json
import time

import anyio
import pytest

from agentflow import Err, Ok, run
from agentflow.agents import llm_compiler, react
from agentflow.dsl import LLMCall, PlanInvalid
from agentflow.engines import FunctionEngine, GenerationRequest
from agentflow.executors import ToolRegistry

pytestmark = pytest.mark.anyio

POPULATION = {"paris": 2_100_000, "rome": 2_800_000, "oslo": 700_000}


def make_tools(log: list[tuple[str, float, float]]) -> ToolRegistry:
    registry = ToolRegistry()

    async def population(city: str) -> int:
        """Population of a city.

        Args:
            city: The city name.
        """
        start = time.perf_counter()
        await anyio.sleep(0.05)
        log.append((city, start, time.perf_counter()))
        return POPULATION[city.lower()]

    def add(a: int, b: int) -> int:
        """Add two integers.

        Args:
            a: First.
            b: Second.
        """
        return a + b

    registry.register(population)
    registry.register(add)
    return registry


def is_planner(req: GenerationRequest) -> bool:
    return req.json_schema is not None and req.json_schema.get("type") == "array"


def user_text(req: GenerationRequest) -> str:
    assert req.messages is not None
    return req.messages[-1].content


async def test_compiler_runs_independent_calls_in_parallel_and_joins() -> None:
    log: list[tuple[str, float, float]] = []
    tools = make_tools(log)
    plan = [
        {"id": 1, "tool": "population", "args": {"city": "paris"}},
        {"id": 2, "tool": "population", "args": {"city": "rome"}},
        {"id": 3, "tool": "add", "args": {"a": "$1", "b": "$2"}},
    ]
    join_prompts: list[str] = []
    requests: list[GenerationRequest] = []

    def answer(req: GenerationRequest) -> str:
        requests.append(req)
        if is_planner(req):
            return json.dumps(plan)
        join_prompts.append(user_text(req))
        return json.dumps({"action": "finish", "answer": "4900000"})

    out = await run(llm_compiler("Total population of Paris and Rome?", tools), engine=FunctionEngine(answer))
    assert isinstance(out, Ok), out
    result = out.value
    assert result.answer == "4900000"
    assert result.replans == 0
    assert result.results[3].value == 4_900_000
    (_, s1, e1), (_, s2, e2) = sorted(log)
    assert s1 < e2 and s2 < e1, "the two lookups overlapped in time"
    assert '<result id="3"' in join_prompts[0] and "4900000" in join_prompts[0]
    # The joiner continues the planner's conversation, so an engine reuses the planner's prompt and plan.
    planner, joiner = requests
    assert planner.messages is not None and joiner.messages is not None
    assert joiner.messages[: len(planner.messages)] == planner.messages
    assert joiner.messages[len(planner.messages)].role == "assistant"
    assert joiner.messages[len(planner.messages)].content == json.dumps(plan)
    kinds = [e.kind for e in out.trace]
    assert kinds.count("tool.call") == 3
    assert "llm.call" in kinds


async def test_compiler_replans_with_continuing_ids_and_earlier_references() -> None:
    tools = make_tools([])
    plans = iter(
        [
            [{"id": 1, "tool": "population", "args": {"city": "oslo"}}],
            [{"id": 2, "tool": "add", "args": {"a": "$1", "b": 1}}],
        ]
    )
    decisions = iter(
        [
            {"action": "replan", "feedback": "add one to it"},
            {"action": "finish", "answer": "700001"},
        ]
    )
    planner_prompts: list[str] = []

    def answer(req: GenerationRequest) -> str:
        if is_planner(req):
            planner_prompts.append(user_text(req))
            return json.dumps(next(plans))
        return json.dumps(next(decisions))

    out = await run(llm_compiler("Oslo population plus one?", tools), engine=FunctionEngine(answer))
    assert isinstance(out, Ok), out
    assert out.value.replans == 1
    assert [t.id for t in out.value.tasks] == [1, 2]
    assert out.value.results[2].value == 700_001
    assert "add one to it" in planner_prompts[1]
    paths = [e.path for e in out.trace if e.kind == "step.start"]
    assert "compiler/plan" in paths and "compiler/plan[1]" in paths


async def test_compiler_sends_an_invalid_plan_back_with_its_error() -> None:
    tools = make_tools([])
    plans = iter(
        [
            [
                {"id": 1, "tool": "population", "args": {"city": "rome"}},
                {"id": 2, "tool": "add", "args": {"a": "$5", "b": 1}},
            ],
            [{"id": 2, "tool": "population", "args": {"city": "oslo"}}],
        ]
    )
    seen: list[str] = []

    def answer(req: GenerationRequest) -> str:
        if is_planner(req):
            seen.append(user_text(req))
            return json.dumps(next(plans))
        return json.dumps({"action": "finish", "answer": "ok"})

    out = await run(llm_compiler("Rome?", tools, max_plan_repairs=1), engine=FunctionEngine(answer))
    assert isinstance(out, Ok), out
    assert len(seen) == 2
    assert "invalid" in seen[1] and "$5" in seen[1]
    # Task 1 of the invalid plan had already started; the repair continues with id 2.
    assert sorted(out.value.results) == [1, 2]
    assert any(isinstance(e, PlanInvalid) for e in out.trace)
    # Both planner calls are traced (and charged), the invalid one too.
    planner_calls = [e for e in out.trace if isinstance(e, LLMCall) and e.role == "planner"]
    assert [c.valid for c in planner_calls] == [False, True]
    # The bad line stopped the first stream early, before the engine reported usage.
    assert [c.status for c in planner_calls] == ["aborted", "ok"]
    assert planner_calls[1].prompt_tokens > 0


async def test_compiler_turns_tool_errors_into_observations() -> None:
    tools = make_tools([])

    def answer(req: GenerationRequest) -> str:
        if is_planner(req):
            return json.dumps([{"id": 1, "tool": "population", "args": {"city": "atlantis"}}])
        assert "Error" in user_text(req)
        return json.dumps({"action": "finish", "answer": "unknown"})

    out = await run(llm_compiler("Atlantis?", tools), engine=FunctionEngine(answer))
    assert isinstance(out, Ok), out
    assert out.value.results[1].ok is False


async def test_compiler_text_format_streams_tasks() -> None:
    tools = make_tools([])

    def answer(req: GenerationRequest) -> str:
        if req.json_schema is None:
            return 'Thought: look both up\n1. population("paris")\n2. population(city="oslo")\n3. join()\n'
        return json.dumps({"action": "finish", "answer": "done"})

    out = await run(llm_compiler("Paris and Oslo?", tools, plan_format="text"), engine=FunctionEngine(answer))
    assert isinstance(out, Ok), out
    assert sorted(r.value for r in out.value.results.values()) == [700_000, 2_100_000]  # type: ignore[type-var]


async def test_compiler_gives_up_after_replan_budget_with_a_forced_answer() -> None:
    tools = make_tools([])

    def answer(req: GenerationRequest) -> str:
        if is_planner(req):
            first = 1 + user_text(req).count("Previous plan")
            return json.dumps([{"id": first, "tool": "population", "args": {"city": "rome"}}])
        return json.dumps({"action": "replan", "feedback": "more"})

    out = await run(llm_compiler("?", tools, max_replans=1), engine=FunctionEngine(answer))
    assert isinstance(out, Ok), out
    assert out.value.finished is False
    assert out.value.replans == 1


async def test_react_calls_one_tool_per_turn_then_answers() -> None:
    tools = make_tools([])
    turns = iter(
        [
            {"thought": "first", "action": {"tool": "population", "args": {"city": "paris"}}},
            {"thought": "second", "action": {"tool": "population", "args": {"city": "rome"}}},
            {"thought": "done", "action": {"final_answer": "Rome is bigger"}},
        ]
    )
    prompts: list[str] = []

    def answer(req: GenerationRequest) -> str:
        prompts.append(user_text(req))
        return json.dumps(next(turns))

    out = await run(react("Which is bigger?", tools), engine=FunctionEngine(answer))
    assert isinstance(out, Ok), out
    assert out.value.answer == "Rome is bigger"
    assert out.value.steps == 3
    assert [r.value for r in out.value.results.values()] == [2_100_000, 2_800_000]
    assert "2100000" in prompts[1]


async def test_react_without_engine_fails_clearly() -> None:
    out = await run(react("?", make_tools([])))
    assert isinstance(out, Err)
    assert "engine" in str(out.error)
