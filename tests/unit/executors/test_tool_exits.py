"""A tool whose code raises SystemExit, KeyboardInterrupt or another BaseException fails as a tool; the run goes
on (issue 18, item 7). Cancellation still passes through."""

from __future__ import annotations

import argparse

import anyio
import pytest

from agentflow.errors import StepTimeout, ToolError
from agentflow.executors import Executor, Task, TaskStatus, Tool, ToolRegistry, tool


class Abort(BaseException):
    """A BaseException a library might raise."""


@tool
def parse_flags(flag: str) -> str:
    """Parse one command-line flag with argparse.

    Args:
        flag: The flag, e.g. '--verbose'.
    """
    parser = argparse.ArgumentParser(prog="parse_flags")
    parser.add_argument("--verbose", action="store_true")
    return repr(parser.parse_args([flag]))


@tool
async def exits(code: int) -> str:
    """Call sys.exit from async code."""
    raise SystemExit(code)


@tool
def interrupts() -> str:
    """Raise KeyboardInterrupt from a worker thread."""
    raise KeyboardInterrupt


@tool
async def aborts() -> str:
    """Raise a custom BaseException."""
    raise Abort("library gave up")


@tool
async def echo(value: object) -> object:
    """Return the value."""
    return value


@pytest.mark.anyio
async def test_tool_calling_argparse_with_bogus_flag_is_a_tool_error() -> None:
    with pytest.raises(ToolError, match="raised SystemExit: 2") as caught:
        await parse_flags.invoke({"flag": "--bogus"})
    assert isinstance(caught.value.__cause__, SystemExit)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("called", "arguments", "message"),
    [
        (exits, {"code": 3}, "raised SystemExit: 3"),
        (interrupts, {}, "raised KeyboardInterrupt"),
        (aborts, {}, "raised Abort: library gave up"),
    ],
)
async def test_tool_raising_base_exception_is_a_tool_error(
    called: Tool, arguments: dict[str, object], message: str
) -> None:
    with pytest.raises(ToolError, match=message):
        await called.invoke(arguments)


@pytest.mark.anyio
async def test_executor_run_survives_system_exit_in_one_task() -> None:
    report = await Executor(ToolRegistry([exits, echo])).run(
        [Task(1, "exits", (2,)), Task(2, "echo", ("still here",)), Task(3, "echo", ("$1",))]
    )
    assert report.results[1].status is TaskStatus.ERROR
    assert report.results[2].value == "still here"
    assert report.results[3].status is TaskStatus.SKIPPED


@pytest.mark.anyio
async def test_tool_timeout_still_cancels_and_times_out() -> None:
    @tool(timeout=0.05)
    async def slow() -> None:
        """Sleep for a long time."""
        await anyio.sleep(60)

    with pytest.raises(StepTimeout):
        await slow.invoke({})
