"""Tool calls journaled one by one (``Executor.run(..., journal=task_journal(scope))``) on a real SQLite
journal, results read back as their tools' return types, ``Execution.restore``, and task results as journal
values.

Tool bodies never await, so a cancellation cannot cut a call in half (each call ran whole or not at all).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import anyio
import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, JsonValue, TypeAdapter

from agentflow import Err, Ok, run
from agentflow.dsl import Flow, StepReplayed, current_scope, flow, named
from agentflow.errors import PlanError, ResumeError, SerializationError, StepTimeout, ToolError
from agentflow.executors import (
    ExecutionReport,
    Executor,
    Task,
    TaskResult,
    TaskStatus,
    Tool,
    ToolRegistry,
    task_journal,
    with_tool_types,
)

pytestmark = pytest.mark.anyio


class Distance(BaseModel):
    km: float


CALLS: Counter[str] = Counter()
CANCEL: list[anyio.CancelScope] = []  # a scope to cancel right after the next call of ``double``


async def distance(a: str, b: str) -> Distance:
    """Distance between two towns."""
    CALLS[f"distance({a}, {b})"] += 1
    return Distance(km=float(len(a) + len(b)))


async def double(x: float) -> float:
    """Twice ``x``."""
    CALLS[f"double({x})"] += 1
    if CANCEL:
        CANCEL.pop().cancel()
    return 2 * x


async def broken(x: int) -> int:
    """Always fails."""
    CALLS[f"broken({x})"] += 1
    raise ValueError(f"no {x}")


async def opaque() -> object:
    """Returns something JSON cannot hold."""
    CALLS["opaque()"] += 1
    return object()


TOOLS = ToolRegistry([distance, double, broken, opaque])

TRIP = [
    Task(1, "distance", kwargs={"a": "oslo", "b": "rome"}),
    Task(2, "distance", kwargs={"a": "rome", "b": "paris"}),
    Task(3, "double", kwargs={"x": "$1.km"}),
    Task(4, "broken", kwargs={"x": 4}),
]


EVERY_CALL_ONCE = {"distance(oslo, rome)": 1, "distance(rome, paris)": 1, "double(8.0)": 1, "broken(4)": 1}


@pytest.fixture(autouse=True)
def _fresh() -> None:
    CALLS.clear()
    CANCEL.clear()


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "journal.db")


def trip(tasks: list[Task], reports: list[ExecutionReport], seen: list[TaskResult]) -> Flow[dict[str, str]]:
    """A step ``trip`` that runs ``tasks`` with each call journaled; yields the observations by task id."""

    @flow
    async def body() -> dict[str, str]:
        scope = current_scope()
        assert scope is not None
        report = await Executor(TOOLS).run(tasks, journal=task_journal(scope), on_result=seen.append)
        reports.append(report)
        return {str(i): r.observation() for i, r in report.results.items()}

    return named("trip", body())


async def test_resumed_execution_makes_no_call_again_that_ended(db: str) -> None:
    reports: list[ExecutionReport] = []
    with anyio.CancelScope() as scope:
        CANCEL.append(scope)
        await run(trip(TRIP, reports, []), run_id="r", journal=db)
    assert scope.cancelled_caught and not reports
    assert CALLS == EVERY_CALL_ONCE
    seen: list[TaskResult] = []
    out = await run(trip(TRIP, reports, seen), run_id="r", journal=db)
    assert isinstance(out, Ok), out
    assert CALLS == EVERY_CALL_ONCE
    # The recorded results come back as the tools returned them: a model, a number, the error's class.
    results = reports[0].results
    assert results[1].value == Distance(km=8.0) and results[3].value == 16.0
    assert isinstance(results[4].error, ToolError) and results[4].error.tool == "broken"
    assert out.value == {
        "1": '{"km": 8.0}',
        "2": '{"km": 9.0}',
        "3": "16.0",
        "4": "Error: tool 'broken': raised ValueError: no 4",
    }
    replayed = {e.path for e in out.trace if isinstance(e, StepReplayed)}
    assert replayed == {"trip/[1]/distance", "trip/[2]/distance", "trip/[3]/double", "trip/[4]/broken"}
    # A replayed result is not a call: on_result (the ToolCall events) hears of none.
    assert seen == []


async def test_call_the_journal_recorded_differently_fails_the_resume(db: str) -> None:
    with anyio.CancelScope() as scope:
        CANCEL.append(scope)
        await run(trip(TRIP, [], []), run_id="r", journal=db)
    other = [TRIP[0], Task(2, "distance", kwargs={"a": "rome", "b": "oslo"}), *TRIP[2:]]
    out = await run(trip(other, [], []), run_id="r", journal=db)
    assert isinstance(out, Err) and isinstance(out.error, ResumeError), out
    assert out.error.where == "trip/[2]/distance"
    assert 'an earlier attempt called distance(a="rome", b="paris") as task 2' in out.error.message
    assert 'this attempt calls distance(a="rome", b="oslo")' in out.error.message


async def test_result_the_journal_cannot_hold_fails_the_run_naming_the_call(db: str) -> None:
    out = await run(trip([Task(1, "opaque")], [], []), run_id="r", journal=db)
    assert isinstance(out, Err) and isinstance(out.error, SerializationError), out
    assert out.error.where == "trip/[1]/opaque" and out.error.path == "result.value"
    assert "object is not JSON-serializable" in out.error.message


async def test_execution_without_a_journal_records_nothing() -> None:
    reports: list[ExecutionReport] = []
    out = await run(trip(TRIP[:3], reports, []))
    assert isinstance(out, Ok) and reports[0].results[3].value == 16.0


async def test_restored_result_feeds_dependents_without_a_call() -> None:
    told: list[int] = []
    recorded = TaskResult(TRIP[0], TaskStatus.OK, {"km": 8.0}, ready_at=1.0, started_at=2.0, finished_at=3.0)
    async with Executor(TOOLS).open(on_result=lambda r: told.append(r.task.id)) as execution:
        execution.restore(recorded)
        execution.add(Task(2, "double", kwargs={"x": "$1.km"}))
        execution.close()
        report = await execution.wait()
    assert CALLS == {"double(8.0)": 1} and told == [2]
    assert report.results[1].value == Distance(km=8.0)  # read as the tool's return type
    assert report.results[1].started_at is None  # it ran in another attempt, not here
    assert report.results[2].value == 16.0


async def test_restore_refuses_what_add_refuses() -> None:
    recorded = TaskResult(TRIP[0], TaskStatus.OK, {"km": 8.0})
    async with Executor(TOOLS).open() as execution:
        execution.restore(recorded)
        with pytest.raises(PlanError, match="task id 1 is used twice"):
            execution.restore(recorded)
        with pytest.raises(PlanError, match="tool 'teleport': is not registered"):
            execution.restore(TaskResult(Task(2, "teleport"), TaskStatus.OK, 1))
        execution.close()
        with pytest.raises(PlanError, match="the execution is closed"):
            execution.restore(TaskResult(Task(3, "double", kwargs={"x": 1}), TaskStatus.OK, 2.0))


def test_typed_result_reads_a_json_value_as_the_declared_return_type() -> None:
    tool = TOOLS.get("distance")
    assert tool.returns is Distance
    assert tool.typed_result({"km": 3.0}) == Distance(km=3.0)
    assert tool.typed_result("not a distance") == "not a distance"  # it returned something else: kept
    spec = Tool.from_spec({"name": "lookup", "parameters": {"type": "object", "properties": {}}})
    assert spec.returns is None and spec.typed_result({"km": 3.0}) == {"km": 3.0}
    assert TOOLS.get("double").with_options(timeout=1.0).returns is float
    # JSON has no infinity: the journal writes it as a string, and a float tool reads it back as one.
    stored = TypeAdapter(TaskResult).dump_json(TaskResult(TRIP[2], TaskStatus.OK, float("inf")))
    assert b'"value":"Infinity"' in stored
    assert TOOLS.get("double").typed_result("Infinity") == float("inf")


def test_task_results_keep_status_value_and_error_through_the_journal_encoding() -> None:
    adapter = TypeAdapter(TaskResult)
    failed = TaskResult(TRIP[3], TaskStatus.ERROR, error=ToolError("broken", "raised ValueError: no 4"))
    late = TaskResult(TRIP[2], TaskStatus.TIMEOUT, error=StepTimeout("task double", 2.0), started_at=1.0)
    for result in (failed, late, TaskResult(TRIP[0], TaskStatus.OK, {"km": 8.0})):
        back = adapter.validate_json(adapter.dump_json(result))
        assert (back.task, back.status, back.value, back.started_at) == (
            result.task,
            result.status,
            result.value,
            result.started_at,
        )
        assert type(back.error) is type(result.error) and str(back.error) == str(result.error)
        assert back.observation() == result.observation()
    assert adapter.validate_json(adapter.dump_json(late)).task.deps == frozenset({1})


def test_with_tool_types_reads_results_inside_a_step_value_as_their_tools_types() -> None:
    stored = {
        1: TaskResult(TRIP[0], TaskStatus.OK, Distance(km=8.0)),
        2: TaskResult(Task(2, "gone"), TaskStatus.OK, {"km": 1}),
    }
    plain = TypeAdapter(dict[int, TaskResult])
    typed: TypeAdapter[dict[int, TaskResult]] = TypeAdapter(with_tool_types(dict[int, TaskResult], TOOLS))  # type: ignore[arg-type]
    text = plain.dump_json(stored)
    assert plain.validate_json(text)[1].value == {"km": 8.0}
    back = typed.validate_json(text)
    assert back[1].value == Distance(km=8.0)
    assert back[2].value == {"km": 1}  # a tool this agent does not have: left as stored


class Point(BaseModel):
    x: int
    label: str


json_values: st.SearchStrategy[JsonValue] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=10,
)
values: st.SearchStrategy[object] = (
    json_values
    | st.builds(Point, x=st.integers(), label=st.text())
    | st.lists(st.builds(Point, x=st.integers(), label=st.text()), max_size=2)
)


@given(values)
def test_observation_of_a_value_and_of_its_journaled_form_are_the_same(value: object) -> None:
    """What the model is shown of a replayed result is what it was shown of the live one."""
    adapter = TypeAdapter(TaskResult)
    live = TaskResult(Task(1, "t"), TaskStatus.OK, value)
    assert adapter.validate_json(adapter.dump_json(live)).observation() == live.observation()
