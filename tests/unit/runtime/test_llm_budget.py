"""Every LLM caller goes through the one call primitive, so ``max_llm_tokens`` stops each of them.

Plan ``output:`` steps (``infer_json``), the meta-agent and memory summarizers used to call the engine
without checking the run's token budget. Each test runs a caller that would keep calling the engine,
and checks that it stops with ``BudgetExceededError``, that nothing after the refusal reached the engine
(every engine call is an ``LLMCall`` event, and their tokens are exactly what the budget charged).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentflow import Err, flow, run
from agentflow.agents import EngineSummarizer
from agentflow.agents._meta import run_goal
from agentflow.dsl import LLMCall, step
from agentflow.engines import FunctionEngine, GenerationRequest, TestEngine
from agentflow.errors import BudgetExceededError
from agentflow.memory import MemoryStore, TemporalMemoryTree
from agentflow.plans import load_plan_text

pytestmark = pytest.mark.anyio

BAD_PLAN = {
    "apiVersion": "agentflow/v1",
    "kind": "Plan",
    "name": "bad",
    "steps": [{"id": "x", "tool": "nope"}],
}


def _calls(out: Err) -> list[LLMCall]:
    return [e for e in out.trace if isinstance(e, LLMCall)]


def _charged_exactly_the_recorded_calls(out: Err, engine_calls: int) -> None:
    assert isinstance(out.error, BudgetExceededError)
    calls = _calls(out)
    assert len(calls) == engine_calls >= 1
    assert out.error.used == sum(c.prompt_tokens + c.completion_tokens for c in calls)
    assert out.error.used >= out.error.limit


async def test_budget_stops_a_plan_output_step_between_repairs() -> None:
    seen: list[GenerationRequest] = []

    def answer(request: GenerationRequest) -> str:
        seen.append(request)
        return json.dumps({"n": "not a number " * 10})  # never valid: infer_json keeps repairing

    loaded = load_plan_text(
        """
apiVersion: agentflow/v1
kind: Plan
name: typed
steps:
  - id: ask
    prompt: Give a number.
    output:
      type: object
      properties: {n: {type: integer}}
      required: [n]
    max_tokens: 64
""",
        file="typed.yaml",
    )
    out = await run(loaded.workflow, engine=FunctionEngine(answer), max_llm_tokens=60)
    assert isinstance(out, Err)
    _charged_exactly_the_recorded_calls(out, len(seen))
    assert len(seen) < 3  # the repair loop (3 attempts) was cut short


async def test_budget_stops_the_meta_agent_while_it_repairs_plans() -> None:
    seen: list[GenerationRequest] = []

    def answer(request: GenerationRequest) -> str:
        seen.append(request)
        return json.dumps(BAD_PLAN)

    out = await run(
        run_goal("count the words of a fact", max_repairs=5),
        engine=FunctionEngine(answer),
        max_llm_tokens=400,
    )
    assert isinstance(out, Err)
    _charged_exactly_the_recorded_calls(out, len(seen))
    assert len(seen) < 6


async def test_budget_stops_a_memory_summarizer_inside_a_step(tmp_path: Path) -> None:
    engine = TestEngine(response="a summary of the notes " * 4)
    store = MemoryStore(tmp_path / "memory.db")
    tree = TemporalMemoryTree(store, "notes", summarizer=EngineSummarizer())

    @step
    async def remember_and_search() -> int:
        for day in range(1, 6):
            await tree.insert(
                f"note {day}: the cat sat on mat number {day}",
                session=f"s{day}",
                at=datetime(2026, 1, day, tzinfo=UTC),
            )
        return len(await tree.search("cat"))

    out = await run(remember_and_search(), engine=engine, max_llm_tokens=50)
    await store.aclose()
    assert isinstance(out, Err)
    summaries = [c for c in _calls(out) if c.role == "summarizer"]
    assert summaries and len(summaries) == len(_calls(out))
    _charged_exactly_the_recorded_calls(out, len(engine.requests))


async def test_summaries_are_recorded_llm_calls_of_the_run(tmp_path: Path) -> None:
    engine = TestEngine(response="cats on mats")
    store = MemoryStore(tmp_path / "memory.db")
    tree = TemporalMemoryTree(store, "notes", summarizer=EngineSummarizer())

    @flow
    async def body() -> int:
        await tree.insert("the cat sat on the mat", session="s1", at=datetime(2026, 1, 1, tzinfo=UTC))
        return len(await tree.search("cat"))

    out = await run(body(), engine=engine)
    await store.aclose()
    calls = [e for e in out.trace if isinstance(e, LLMCall)]
    assert calls and {c.role for c in calls} == {"summarizer"}
    assert any(c.messages is not None and "the cat sat on the mat" in c.messages[-1][1] for c in calls)
    assert all(c.completion == "cats on mats" for c in calls)
    assert len(calls) == len(engine.requests)
