"""The parallel function-call executor: ordering, parallelism, substitution, errors, timeouts, cancellation,
streaming addition. No timing thresholds: overlap and order are asserted from recorded timestamps and events."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

from agentflow.errors import ConfigError, PlanError, StepTimeout, ToolError
from agentflow.executors import Executor, Task, TaskResult, TaskStatus, Tool, ToolRegistry, tool


@tool
async def echo(value: object) -> object:
    """Return the value unchanged."""
    await anyio.sleep(0)
    return value


@tool
async def concat(a: str, b: str = "") -> str:
    """Join two strings."""
    await anyio.sleep(0)
    return a + b


@tool
async def fail(message: str) -> str:
    """Raise an error."""
    raise RuntimeError(message)


@tool
async def forever() -> None:
    """Never return."""
    await anyio.sleep_forever()


def registry(*extra: Tool) -> ToolRegistry:
    return ToolRegistry([echo, concat, fail, forever, *extra])


def overlaps(a: TaskResult, b: TaskResult) -> bool:
    assert a.started_at is not None and b.started_at is not None
    return a.started_at < b.finished_at and b.started_at < a.finished_at


@pytest.mark.anyio
async def test_dependent_starts_after_dependency_finishes() -> None:
    report = await Executor(registry()).run(
        [Task(1, "echo", ("x",)), Task(2, "concat", ("$1", "y")), Task(3, "concat", ("$2",), {"b": "$1"})]
    )
    r = report.results
    assert [r[i].value for i in (1, 2, 3)] == ["x", "xy", "xyx"]
    for dep, dependent in ((1, 2), (2, 3), (1, 3)):
        assert r[dependent].started_at is not None
        assert r[dep].finished_at <= r[dependent].started_at
    assert r[3].ready_at == r[2].finished_at
    assert all(lat >= 0 for lat in report.dispatch_latencies())
    assert len(report.dispatch_latencies()) == 2


@pytest.mark.anyio
async def test_independent_tasks_run_concurrently() -> None:
    started = {1: anyio.Event(), 2: anyio.Event()}

    @tool
    async def rendezvous(me: int, other: int) -> int:
        """Finish only once the other task has started too (deadlocks if run one at a time)."""
        started[me].set()
        await started[other].wait()
        return me

    report = await Executor(registry(rendezvous)).run(
        [Task(1, "rendezvous", (1, 2)), Task(2, "rendezvous", (2, 1)), Task(3, "echo", (["$1", "$2"],))]
    )
    r = report.results
    assert overlaps(r[1], r[2])
    assert r[3].value == [1, 2]


@pytest.mark.anyio
async def test_global_concurrency_cap_is_never_exceeded() -> None:
    state = {"now": 0, "peak": 0}

    @tool
    async def counted(i: int) -> int:
        """Track how many run at once."""
        state["now"] += 1
        state["peak"] = max(state["peak"], state["now"])
        for _ in range(3):
            await anyio.sleep(0)
        state["now"] -= 1
        return i

    report = await Executor(registry(counted), max_concurrency=3).run(
        [Task(i, "counted", (i,)) for i in range(1, 11)]
    )
    assert state["peak"] == 3
    assert all(r.ok for r in report.results.values())


@pytest.mark.anyio
async def test_whole_reference_passes_typed_value_and_field() -> None:
    @tool
    async def route() -> dict[str, object]:
        """A structured result."""
        return {"distance": 12.5, "stops": ["a", "b"]}

    @tool
    async def pace(distance: float, stops: list[str], label: str) -> str:
        """Use typed inputs."""
        assert isinstance(distance, float) and isinstance(stops, list)
        return f"{label}:{distance / len(stops)}"

    report = await Executor(registry(route, pace)).run(
        [
            Task(1, "route"),
            Task(
                2, "pace", kwargs={"distance": "$1.distance", "stops": "${1.stops}", "label": "d=$1.distance"}
            ),
        ]
    )
    assert report.results[2].value == "d=12.5:6.25"


@pytest.mark.anyio
async def test_tool_output_is_never_substituted_again() -> None:
    report = await Executor(registry()).run(
        [
            Task(1, "echo", ("SECRET",)),
            Task(2, "echo", ("contains $1 and ${1}",)),
            Task(3, "concat", ("$2", " / seen: $2")),
        ]
    )
    assert report.results[2].value == "contains SECRET and SECRET"
    report = await Executor(registry()).run(
        [Task(1, "echo", ("SECRET",)), Task(2, "echo", ("$$1 stays",)), Task(3, "concat", ("$2", "|$1"))]
    )
    assert report.results[3].value == "$1 stays|SECRET"
    inject = await Executor(registry()).run(
        [
            Task(1, "echo", ("SECRET",)),
            Task(2, "fail", ("unused",)),
            Task(3, "echo", ("$$1",)),
            Task(4, "concat", ("$3", "$3")),
        ]
    )
    assert inject.results[4].value == "$1$1"


@pytest.mark.anyio
async def test_tool_error_becomes_observation_and_dependents_are_skipped() -> None:
    seen: list[int] = []
    report = await Executor(registry(), on_result=lambda r: seen.append(r.task.id)).run(
        [
            Task(1, "fail", ("boom",)),
            Task(2, "echo", ("$1",)),
            Task(3, "concat", ("$2", "x")),
            Task(4, "echo", ("independent",)),
        ]
    )
    r = report.results
    assert r[1].status is TaskStatus.ERROR
    assert isinstance(r[1].error, ToolError) and "boom" in str(r[1].error)
    assert r[1].observation().startswith("Error: tool 'fail': raised RuntimeError: boom")
    assert r[2].status is TaskStatus.SKIPPED and r[2].started_at is None
    assert "depends on task 1 (fail), which ended error" in str(r[2].error)
    assert r[3].status is TaskStatus.SKIPPED and "depends on task 2" in str(r[3].error)
    assert r[4].ok and r[4].value == "independent"
    assert sorted(seen) == [1, 2, 3, 4]
    assert seen.index(1) < seen.index(2) < seen.index(3)


@pytest.mark.anyio
async def test_invalid_arguments_after_substitution_are_an_error_observation() -> None:
    @tool
    async def number(n: int) -> int:
        """Needs an integer."""
        return n

    report = await Executor(registry(number)).run([Task(1, "echo", ("text",)), Task(2, "number", ("$1",))])
    assert report.results[2].status is TaskStatus.ERROR
    assert "'n'" in str(report.results[2].error) and "'text'" in str(report.results[2].error)


@pytest.mark.anyio
async def test_missing_field_reference_is_an_error_observation() -> None:
    report = await Executor(registry()).run([Task(1, "echo", ({"a": 1},)), Task(2, "echo", ("$1.b",))])
    assert report.results[2].status is TaskStatus.ERROR
    assert "names field 'b'" in str(report.results[2].error)
    assert "available fields: a" in str(report.results[2].error)


@pytest.mark.anyio
async def test_tool_timeout_and_executor_timeout_become_timeout_observations() -> None:
    tools = ToolRegistry([forever.with_options(timeout=0.01), echo])
    report = await Executor(tools).run([Task(1, "forever"), Task(2, "echo", ("$1",)), Task(3, "echo", (1,))])
    assert report.results[1].status is TaskStatus.TIMEOUT
    assert isinstance(report.results[1].error, StepTimeout)
    assert report.results[2].status is TaskStatus.SKIPPED
    assert report.results[3].ok
    report = await Executor(registry(), timeout=0.01).run([Task(1, "forever")])
    assert report.results[1].status is TaskStatus.TIMEOUT


@pytest.mark.anyio
async def test_cancel_one_running_task_skips_its_dependents() -> None:
    executor = Executor(registry())
    async with executor.open() as run:
        run.add(Task(1, "forever"))
        run.add(Task(2, "echo", ("$1",)))
        run.add(Task(3, "echo", ("ok",)))
        assert (await run.result(3)).ok
        run.cancel(1)
        run.close()
        report = await run.wait()
    assert report.results[1].status is TaskStatus.CANCELLED
    assert report.results[2].status is TaskStatus.SKIPPED


@pytest.mark.anyio
async def test_cancel_all_stops_running_and_waiting_tasks() -> None:
    executor = Executor(registry())
    async with executor.open() as run:
        run.add(Task(1, "forever"))
        run.add(Task(2, "echo", ("$1",)))
        await anyio.sleep(0)
        run.cancel()
        report = await run.wait()
        with pytest.raises(PlanError, match="closed"):
            run.add(Task(3, "echo", (1,)))
    assert {r.status for r in report.results.values()} == {TaskStatus.CANCELLED}


@pytest.mark.anyio
async def test_body_exception_cancels_tasks_and_propagates_unchanged() -> None:
    executor = Executor(registry())
    with pytest.raises(KeyError, match="stop"):
        async with executor.open() as run:
            run.add(Task(1, "forever"))
            await anyio.sleep(0)
            raise KeyError("stop")
    assert run.results[1].status is TaskStatus.CANCELLED


@pytest.mark.anyio
async def test_streaming_tasks_start_before_the_plan_is_complete() -> None:
    executor = Executor(registry())
    async with executor.open() as run:
        run.add(Task(1, "echo", ("a",)))
        first = await run.result(1)
        assert first.ok and 2 not in run.results
        run.add(Task(3, "concat", ("$1", "$2")))
        with pytest.raises(PlanError, match="has no task 2"):
            run.steps_to_execution()
        run.add(Task(2, "echo", ("b",)))
        assert (await run.result(3)).value == "ab"
        run.close()
        report = await run.wait()
    assert report.results[3].started_at is not None
    assert report.results[3].started_at > first.finished_at


@pytest.mark.anyio
async def test_async_iterator_of_tasks_is_consumed_while_tasks_run() -> None:
    first_done = anyio.Event()

    async def plan() -> AsyncIterator[Task]:
        yield Task(1, "echo", ("a",))
        await first_done.wait()
        yield Task(2, "concat", ("$1", "b"))

    report = await Executor(registry(), on_result=lambda r: first_done.set()).run(plan())
    assert report.results[2].value == "ab"
    assert (
        report.results[2].started_at is not None
        and report.results[1].finished_at <= report.results[2].ready_at
    )


@pytest.mark.anyio
async def test_plan_mistakes_raise_plan_error() -> None:
    executor = Executor(registry())
    with pytest.raises(PlanError, match="not registered"):
        await executor.run([Task(1, "nope")])
    with pytest.raises(PlanError, match="used twice"):
        await executor.run([Task(1, "echo", (1,)), Task(1, "echo", (2,))])
    with pytest.raises(PlanError, match="never defined: task 2 references \\$5"):
        await executor.run([Task(1, "echo", (1,)), Task(2, "echo", ("$5",))])
    with pytest.raises(PlanError, match="at most 1 positional"):
        await executor.run([Task(1, "echo", (1, 2))])
    with pytest.raises(PlanError, match="closes a dependency cycle: task 2 -> task 3 -> task 2"):
        await executor.run([Task(3, "echo", ("$2",)), Task(2, "echo", ("$3",))])


@pytest.mark.anyio
async def test_close_with_missing_reference_keeps_execution_open() -> None:
    executor = Executor(registry())
    async with executor.open() as run:
        run.add(Task(2, "echo", ("$1",)))
        with pytest.raises(PlanError, match="task 2 references \\$1"):
            run.close()
        run.add(Task(1, "echo", ("late",)))
        run.close()
        report = await run.wait()
    assert report.results[2].value == "late"


def test_executor_rejects_bad_options() -> None:
    with pytest.raises(ConfigError, match="max_concurrency"):
        Executor(registry(), max_concurrency=0)
    with pytest.raises(ConfigError, match="timeout"):
        Executor(registry(), timeout=0)


@pytest.mark.anyio
async def test_report_graph_and_steps_to_execution_reflect_progress() -> None:
    gate = anyio.Event()

    @tool
    async def gated() -> str:
        """Wait for the test."""
        await gate.wait()
        return "g"

    async with Executor(registry(gated)).open() as run:
        run.add(Task(1, "gated"))
        run.add(Task(2, "echo", ("$1",)))
        run.add(Task(3, "echo", ("$2",)))
        assert run.steps_to_execution() == {1: 0, 2: 1, 3: 2}
        gate.set()
        await run.result(2)
        assert run.steps_to_execution() == {3: 0}
        run.close()
        report = await run.wait()
    assert report.graph().levels() == [[1], [2], [3]]
    assert report.values() == {1: "g", 2: "g", 3: "g"}
    assert report.makespan >= 0


@pytest.mark.anyio
async def test_cancel_before_the_task_coroutine_starts_never_calls_the_tool() -> None:
    calls: list[int] = []

    @tool
    async def record(i: int) -> int:
        """Record the call."""
        calls.append(i)
        return i

    async with Executor(registry(record)).open() as run:
        run.add(Task(1, "record", (1,)))
        run.cancel(1)
        run.add(Task(2, "record", (2,)))
        run.cancel()
        report = await run.wait()
    assert calls == []
    assert [r.status for r in report.results.values()] == [TaskStatus.CANCELLED, TaskStatus.CANCELLED]


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.anyio
async def test_executor_runs_on_every_anyio_backend(anyio_backend: str) -> None:
    @tool(max_concurrency=1)
    def sync_double(x: int) -> int:
        """A sync tool (runs in a worker thread)."""
        return 2 * x

    report = await Executor(registry(sync_double), max_concurrency=2).run(
        [Task(1, "sync_double", (1,)), Task(2, "sync_double", ("$1",)), Task(3, "concat", ("a", "b"))]
    )
    assert report.values() == {1: 2, 2: 4, 3: "ab"}


@pytest.mark.anyio
async def test_allowlist_view_limits_what_a_plan_may_call() -> None:
    view = registry().allowlist(["echo"])
    report = await Executor(view).run([Task(1, "echo", ("ok",))])
    assert report.values() == {1: "ok"}
    with pytest.raises(PlanError, match="not allowed here"):
        await Executor(view).run([Task(1, "concat", ("a",))])
