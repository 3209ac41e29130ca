"""The Ray backend on a real local Ray cluster (``ray.init`` with 2 CPUs, started once for this module).

A parallel plan runs through Ray both as DSL steps (``ray_step``/``on_ray`` under ``par``) and as an executor plan
(``RayExecutor``), each with a failing task and a cancelled one; errors come back as values with their original
type and message, cancellation reaches the remote task, and results are journaled on the driver.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import anyio
import pytest
from pydantic import BaseModel

from agentflow import Err, Ok, par, run
from agentflow.dsl import Append, flow, step
from agentflow.errors import StepError, StepTimeout, ToolError
from agentflow.executors import Task, TaskStatus, ToolRegistry, tool
from agentflow.runtime import SqliteJournal

pytestmark = pytest.mark.integration

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'agentflow[ray]')")

from agentflow.executors._ray import RayExecutor, on_ray, ray_step  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> Iterator[None]:
    here = str(Path(__file__).parent)
    root = str(Path(__file__).parents[2])
    path = os.pathsep.join([here, root, *(p for p in sys.path if p)])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    try:
        # Warm both workers (process start, imports) so that the time limits below measure the work only.
        warm = anyio.run(run, par(worker_pid(), worker_pid(), async_add(0, 0)))
        assert isinstance(warm, Ok), warm
        yield
    finally:
        ray.shutdown()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Notes(BaseModel):
    notes: Annotated[list[str], Append] = []


class BadInput(ValueError):
    """A user exception class that must come back as itself."""


# -- remote work -------------------------------------------------------------------------------------------------


@ray_step
def square(x: int) -> int:
    return x * x


@ray_step(name="worker_pid")
def worker_pid() -> int:
    return os.getpid()


@ray_step
async def async_add(a: int, b: int) -> int:
    await anyio.sleep(0)
    return a + b


@ray_step
def explode(x: int) -> int:
    raise BadInput(f"cannot handle {x}")


# The step timeout that cancels a slow remote task (the workers are warm: see the ray_cluster fixture).
CANCEL_AFTER_S = 3.0
# How long a slow remote task runs if nothing cancels it: shorter than the tests' 60 s hang guard, so one
# task that was not cancelled frees its worker for the next test instead of taking the whole module down.
SLOW_TASK_S = 40.0


def _sleep_and_mark(marker: str, seconds: float) -> str:
    Path(marker).write_text("started")
    try:
        # Short sleeps: Ray interrupts a task between Python bytecodes, not inside one long C call.
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            time.sleep(0.05)
    except KeyboardInterrupt:
        Path(marker).write_text("interrupted")
        raise
    Path(marker).write_text("finished")
    return "slept"


@ray_step
def slow(marker: str) -> str:
    return _sleep_and_mark(marker, SLOW_TASK_S)


@step
async def note(text: str) -> str:
    from agentflow.dsl import get_state, update

    current = await get_state(Notes)
    await update(notes=[*current.notes, text])
    return text


@flow
async def summarize(xs: list[int]) -> str:
    total = 0
    for x in xs:
        total += x
        await note(f"saw {x}")
    return f"sum={total}"


@flow
async def failing_sub() -> int:
    await note("about to fail")
    raise KeyError("missing-key")


@flow
async def guarded(marker: str) -> str:
    """A sub-flow whose cleanup must run under anyio's rules when the Ray task is cancelled."""
    from agentflow.dsl import from_async

    async def body() -> str:
        try:
            Path(marker).write_text("started")
            await anyio.sleep(SLOW_TASK_S)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.sleep(0.2)  # a shielded cleanup step survives the cancellation
                Path(marker).write_text("cleaned up")
        return "done"

    return await from_async(body)


async def _wait_for(path: Path, text: str) -> None:
    with anyio.fail_after(60):  # a hang guard, not a timing assertion
        while not (path.exists() and path.read_text() == text):
            await anyio.sleep(0.05)


# -- DSL steps on Ray --------------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_ray_step_runs_remotely_and_returns_values_when_parallel() -> None:
    out = await run(par(square(3), square(4), async_add(2, 5), worker_pid()))
    assert isinstance(out, Ok), out
    nine, sixteen, seven, pid = out.value
    assert (nine, sixteen, seven) == (9, 16, 7)
    assert pid != os.getpid()
    ends = [e for e in out.trace if e.kind == "step.end"]
    assert sorted(e.path for e in ends) == ["[0]/square", "[1]/square", "[2]/async_add", "[3]/worker_pid"]


@pytest.mark.anyio
async def test_ray_step_error_keeps_original_type_and_message_when_remote_raises() -> None:
    out = await run(explode(7))
    assert isinstance(out, Err)
    assert isinstance(out.error, StepError)
    assert out.error.where == "explode"
    assert isinstance(out.error.cause, BadInput)
    assert str(out.error.cause) == "cannot handle 7"
    assert "BadInput: cannot handle 7" in out.error.message
    assert any("raised in a Ray worker" in n for n in getattr(out.error.cause, "__notes__", []))


@pytest.mark.anyio
async def test_timeout_cancels_ray_task_when_step_is_too_slow(tmp_path: Path) -> None:
    marker = tmp_path / "slow.txt"
    out = await run(slow(str(marker)).timeout(CANCEL_AFTER_S))
    assert isinstance(out, Err)
    assert isinstance(out.error, StepTimeout)
    await _wait_for(marker, "interrupted")


@pytest.mark.anyio
async def test_par_with_failing_and_cancelled_branches_settles_each_outcome(tmp_path: Path) -> None:
    marker = tmp_path / "cancelled.txt"
    plan = par(
        square(5),
        explode(1),
        slow(str(marker)).timeout(CANCEL_AFTER_S),
        on_ray(summarize, [1, 2, 3]),
        settle=True,
    )
    out = await run(plan, state=Notes())
    assert isinstance(out, Ok), out
    done, failed, cancelled, summary = out.value
    assert isinstance(done, Ok) and done.value == 25
    assert isinstance(failed, Err) and isinstance(failed.error, StepError)
    assert isinstance(failed.error.cause, BadInput)
    assert isinstance(cancelled, Err) and isinstance(cancelled.error, StepTimeout)
    assert isinstance(summary, Ok) and summary.value == "sum=6"
    assert isinstance(out.state, Notes) and out.state.notes == ["saw 1", "saw 2", "saw 3"]
    await _wait_for(marker, "interrupted")


@pytest.mark.anyio
async def test_first_failure_cancels_running_ray_siblings_when_not_settled(tmp_path: Path) -> None:
    marker = tmp_path / "sibling.txt"

    @flow
    async def fail_after_start() -> int:
        await _wait_for(marker, "started")
        return await explode(0)

    out = await run(par(slow(str(marker)), fail_after_start()))
    assert isinstance(out, Err)
    assert isinstance(out.error, StepError) and isinstance(out.error.cause, BadInput)
    await _wait_for(marker, "interrupted")


@pytest.mark.anyio
async def test_cancelled_subflow_runs_its_shielded_cleanup_in_the_worker(tmp_path: Path) -> None:
    marker = tmp_path / "guarded.txt"

    @flow
    async def cancel_when_started() -> str:
        await _wait_for(marker, "started")
        raise RuntimeError("stop the sibling")

    out = await run(par(on_ray(guarded, str(marker)), cancel_when_started()))
    assert isinstance(out, Err) and isinstance(out.error, StepError)
    await _wait_for(marker, "cleaned up")


@pytest.mark.anyio
async def test_on_ray_returns_trace_and_state_of_the_remote_subflow() -> None:
    out = await run(on_ray(summarize, [4, 5], name="summary"), state=Notes())
    assert isinstance(out, Ok), out
    assert out.value == "sum=9"
    assert isinstance(out.state, Notes) and out.state.notes == ["saw 4", "saw 5"]
    paths = [e.path for e in out.trace if e.kind == "step.start"]
    assert paths == ["summary", "summary/note", "summary/note[1]"]


@pytest.mark.anyio
async def test_on_ray_error_is_a_value_with_remote_state_and_trace_when_subflow_fails() -> None:
    out = await run(on_ray(failing_sub), state=Notes())
    assert isinstance(out, Err)
    assert isinstance(out.error, StepError)
    assert isinstance(out.error.cause, KeyError)
    assert out.error.where == "failing_sub"
    assert isinstance(out.state, Notes) and out.state.notes == ["about to fail"]
    assert [e.path for e in out.trace if e.kind == "step.end"] == ["failing_sub/note", "failing_sub"]


@pytest.mark.anyio
async def test_journal_records_ray_results_and_replays_them_when_run_resumes(tmp_path: Path) -> None:
    workflow = par(square(6), on_ray(summarize, [2, 2])).then(explode(3))
    journal = SqliteJournal(tmp_path / "journal.sqlite")
    try:
        first = await run(workflow, journal=journal, run_id="r1", state=Notes())
        assert isinstance(first, Err) and isinstance(first.error.cause, BadInput)  # type: ignore[attr-defined]
        steps = {s.path: s.status for s in await journal.get_steps("r1")}
        assert steps["[0]/square"] == "committed"
        assert steps["[1]/summarize"] == "committed"
        again = await run(workflow, journal=journal, run_id="r1", state=Notes())
        assert isinstance(again, Err)
        replayed = sorted(e.path for e in again.trace if e.kind == "step.replayed")
        assert replayed == ["[0]/square", "[1]/summarize"]
        assert isinstance(again.state, Notes) and again.state.notes == ["saw 2", "saw 2"]
    finally:
        await journal.aclose()


@pytest.mark.anyio
async def test_spans_of_a_ray_run_nest_the_remote_subflow_steps() -> None:
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from agentflow.telemetry import configure_tracing, trace_outcome

    memory = InMemorySpanExporter()
    config = configure_tracing(memory)
    assert config is not None
    try:
        out = await run(par(square(2), on_ray(summarize, [1, 2], name="summary")), state=Notes())
        assert isinstance(out, Ok), out
        exported = trace_outcome(out, workflow="ray-run", config=config)
        assert exported == 1 + sum(e.kind == "step.start" for e in out.trace)
    finally:
        config.shutdown()
    spans = memory.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    parents = {s.name: by_id[s.parent.span_id].name for s in spans if s.parent is not None}
    assert parents["step [0]/square"] == "workflow ray-run"
    assert parents["step [1]/summary/note"] == "step [1]/summary"
    assert parents["step [1]/summary/note[1]"] == "step [1]/summary"


# -- the executor on Ray -----------------------------------------------------------------------------------------


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@tool
def divide(a: int, b: int) -> float:
    """Divide a by b."""
    return a / b


@tool
def pid() -> int:
    """The worker's process id."""
    return os.getpid()


@tool
def sleeper(marker: str) -> str:
    """Sleep for a long time."""
    return _sleep_and_mark(marker, SLOW_TASK_S)


@pytest.mark.anyio
async def test_ray_executor_runs_plan_with_failing_and_cancelled_tasks(tmp_path: Path) -> None:
    marker = tmp_path / "tool.txt"
    executor = RayExecutor(ToolRegistry([add, divide, pid, sleeper]), max_concurrency=4)
    plan = [
        Task(1, "add", (1, 2)),
        Task(2, "add", ("$1", 10)),
        Task(3, "divide", (1, 0)),
        Task(4, "add", ("$3", 1)),
        Task(5, "sleeper", (str(marker),)),
        Task(6, "pid"),
    ]
    async with executor.open() as execution:
        for task in plan:
            execution.add(task)
        execution.close()
        await _wait_for(marker, "started")
        execution.cancel(5)
        report = await execution.wait()
    results = report.results
    assert results[1].value == 3 and results[2].value == 13
    assert results[3].status is TaskStatus.ERROR
    assert isinstance(results[3].error, ToolError)
    assert "ZeroDivisionError" in results[3].error.message
    assert results[4].status is TaskStatus.SKIPPED
    assert results[5].status is TaskStatus.CANCELLED
    assert results[6].ok and results[6].value != os.getpid()
    await _wait_for(marker, "interrupted")


@pytest.mark.anyio
async def test_ray_executor_timeout_cancels_remote_tool_when_task_is_too_slow(tmp_path: Path) -> None:
    marker = tmp_path / "timeout.txt"
    executor = RayExecutor(ToolRegistry([sleeper]), timeout=CANCEL_AFTER_S)
    report = await executor.run([Task(1, "sleeper", (str(marker),))])
    assert report.results[1].status is TaskStatus.TIMEOUT
    assert isinstance(report.results[1].error, StepTimeout)
    await _wait_for(marker, "interrupted")
