"""The run's step budget (``max_steps``): every tool and LLM call is charged, however flows nest and fan out
(issue 18, item 6)."""

from __future__ import annotations

import anyio
import pytest

from agentflow import Err, Ok, flow, generate, par, run
from agentflow.dsl import from_async
from agentflow.engines import TestEngine
from agentflow.errors import ConfigError, StepBudgetExceededError
from agentflow.executors import (
    Executor,
    StepBudget,
    Task,
    TaskStatus,
    ToolRegistry,
    current_step_budget,
    limit_steps,
    step_budget,
    tool,
)
from agentflow.runtime import RunContext

CALLS: list[int] = []


@tool
async def count(n: int) -> int:
    """Record a call.

    Args:
        n: Any number.
    """
    CALLS.append(n)
    await anyio.sleep(0)
    return n


@pytest.fixture(autouse=True)
def _clear() -> None:
    CALLS.clear()


@flow
async def fan_out(width: int, depth: int) -> int:
    """``width ** depth`` tool calls through nested parallel maps."""
    if depth == 0:
        value = await from_async(lambda: count.invoke({"n": 1}))
        assert isinstance(value, int)
        return value
    values = await par.map(lambda _: fan_out(width, depth - 1), range(width))
    return sum(values)


def test_step_budget_refuses_the_call_past_its_limit() -> None:
    budget = StepBudget(2)
    budget.charge("a call of tool 'x'")
    budget.charge("an LLM call")
    with pytest.raises(
        StepBudgetExceededError, match=r"max_steps=2.*a call of tool 'y' was refused"
    ) as caught:
        budget.charge("a call of tool 'y'", "plan/step")
    assert caught.value.where == "plan/step" and budget.used == 2


@pytest.mark.parametrize("limit", [0, -3, True, 2.5])
def test_step_budget_rejects_a_limit_that_is_not_a_positive_integer(limit: int) -> None:
    with pytest.raises(ConfigError, match="max_steps"):
        StepBudget(limit)


def test_nested_budget_charges_its_parent_so_it_cannot_widen_it() -> None:
    outer = StepBudget(3)
    inner = StepBudget(100, parent=outer)
    for _ in range(3):
        inner.charge("x")
    with pytest.raises(StepBudgetExceededError, match="max_steps=3"):
        inner.charge("x")
    assert outer.used == 3


@pytest.mark.anyio
async def test_three_nested_maps_over_20_items_are_stopped_by_max_steps() -> None:
    outcome = await run(fan_out(20, 3), max_steps=100)
    assert isinstance(outcome, Err) and isinstance(outcome.error, StepBudgetExceededError)
    assert len(CALLS) <= 100
    assert current_step_budget() is None


@pytest.mark.anyio
async def test_run_without_max_steps_is_unlimited() -> None:
    outcome = await run(fan_out(5, 3))
    assert isinstance(outcome, Ok) and outcome.value == 125 and len(CALLS) == 125


@pytest.mark.anyio
async def test_llm_calls_count_against_max_steps() -> None:
    @flow
    async def three_calls() -> str:
        for _ in range(3):
            await generate("hello")
        return "done"

    outcome = await run(three_calls(), engine=TestEngine(), max_steps=2)
    assert isinstance(outcome, Err) and isinstance(outcome.error, StepBudgetExceededError)
    assert "an LLM call was refused" in str(outcome.error)


@pytest.mark.anyio
async def test_limit_steps_applies_inside_a_larger_run_budget() -> None:
    outcome = await run(limit_steps(fan_out(4, 2), 10), max_steps=1000)
    assert isinstance(outcome, Err) and isinstance(outcome.error, StepBudgetExceededError)
    assert len(CALLS) <= 10


@pytest.mark.anyio
async def test_limit_steps_cannot_widen_the_run_budget() -> None:
    outcome = await run(limit_steps(fan_out(4, 2), 1000), max_steps=5)
    assert isinstance(outcome, Err) and "max_steps=5" in str(outcome.error)
    assert len(CALLS) <= 5


@pytest.mark.anyio
async def test_run_context_carries_a_step_budget() -> None:
    budget = StepBudget(7)
    outcome = await run(fan_out(3, 2), context=RunContext(steps=budget))
    assert isinstance(outcome, Err) and budget.used == 7


@pytest.mark.anyio
async def test_run_refuses_max_steps_together_with_a_context() -> None:
    out = await run(fan_out(1, 1), context=RunContext(), max_steps=3)
    assert isinstance(out, Err) and isinstance(out.error, ConfigError) and "max_steps" in out.error.message


@pytest.mark.anyio
async def test_executor_task_past_the_budget_fails_without_calling_its_tool() -> None:
    tasks = [Task(i, "count", (i,)) for i in range(1, 5)]
    with step_budget(StepBudget(2)):
        report = await Executor(ToolRegistry([count])).run(tasks)
    statuses = [report.results[i].status for i in range(1, 5)]
    assert statuses.count(TaskStatus.OK) == 2 and statuses.count(TaskStatus.ERROR) == 2
    failed = next(r for r in report.results.values() if not r.ok)
    assert failed.error is not None and isinstance(failed.error.__cause__, StepBudgetExceededError)
    assert "max_steps=2" in failed.observation()
    assert len(CALLS) == 2
