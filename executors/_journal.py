"""Journaling tool calls: each task of an execution as a step of its own in the run's journal.

An agent's step may make several tool calls (a native turn's parallel calls, a plan round's streamed tasks),
and each of them may have side effects. So that a resumed run makes no call twice that ended before the
crash, the executor journals every call on its own, at a path under the step that runs the execution::

    compiler/[3]/search      task 3 (tool ``search``) of the execution the ``compiler`` step opened

Each task is its own scope (``[id]``): tasks end in any order, and the journal orders steps only within a
scope. A task's row holds its ``TaskResult`` (the value as JSON, an error as its class and message); on resume
a recorded task is not called again, and its value is read back as the tool's declared return type. A task
found with another call than the one recorded (the planner that made it was not journaled and answered
differently) fails the run with a ``ResumeError`` rather than mixing two runs' results.

``with_tool_types`` gives a step whose value holds task results (an agent's round, its final result) a
result type under which those values, too, come back as their tools' declared return types.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from functools import partial
from typing import Annotated, Protocol, runtime_checkable

from pydantic import AfterValidator

from agentflow.dsl import StepJournal, StepReplayed, StepScope
from agentflow.errors import AgentflowError, ResumeError

from ._registry import ToolRegistry, ToolView
from ._task import Task, TaskResult, TaskStatus

__all__ = ["StepTaskJournal", "TaskJournal", "check_refusals", "task_journal", "with_tool_types"]


@runtime_checkable
class TaskJournal(Protocol):
    """Where an execution records each tool call's result, and finds it again on resume.

    ``Execution`` calls ``replay`` before it calls a task's tool (a recorded result is used instead of the
    call) and ``commit`` when the call ended (ok, failed or timed out), before any dependent sees the result.
    """

    async def replay(self, task: Task) -> TaskResult | None:
        """The result an earlier attempt of the run recorded for ``task``, or ``None`` when it must run.

        Raises:
            ResumeError: the journal recorded another call for this task.
        """
        ...

    async def commit(self, result: TaskResult) -> None:
        """Record ``result`` durably.

        Raises:
            AgentflowError: it cannot be recorded (a ``SerializationError`` naming the value that cannot
                be journaled, a ``ResumeError`` when the run's lease was lost, a ``JournalError``).
        """
        ...


class StepTaskJournal:
    """A ``TaskJournal`` on the run's step journal: task ``N`` of tool ``t`` is the step ``<scope>/[N]/t``.

    Args:
        journal: The run's step journal (``RunContext.journal``).
        scope: The step that runs the execution: task paths are under its path, and a replayed task is
            recorded in its trace as a ``step.replayed`` event.
    """

    def __init__(self, journal: StepJournal, scope: StepScope) -> None:
        self._journal = journal
        self._scope = scope

    def path(self, task: Task) -> str:
        """The step path of ``task``."""
        segment = f"[{task.id}]/{task.tool}"
        return f"{self._scope.path}/{segment}" if self._scope.path else segment

    async def replay(self, task: Task) -> TaskResult | None:
        path = self.path(task)
        hit = await self._journal.replay(path, task.tool, TaskResult, None)
        if hit is None:
            refusal = await self._journal.begin(path, task.tool, True)
            if refusal is not None:
                raise refusal.at(path)
            return None
        recorded = hit.value
        assert isinstance(recorded, TaskResult)
        call = (recorded.task.tool, tuple(recorded.task.args), dict(recorded.task.kwargs))
        if call != (task.tool, tuple(task.args), dict(task.kwargs)):
            raise ResumeError(
                f"resumed run {self._scope.ctx.run_id!r} diverged from its journal at {path!r}: an earlier "
                f"attempt called {recorded.task.call_text()} as task {task.id}, this attempt calls "
                f"{task.call_text()}; the answer that planned the call was not journaled (the attempt stopped "
                "before it was complete) and the model answered differently this time. Start a new run "
                "(a new run_id)",
                where=path,
            )
        self._scope.emit(StepReplayed(path=path, time=time.time()))
        return recorded

    async def commit(self, result: TaskResult) -> None:
        task = result.task
        path = self.path(task)
        try:
            await self._journal.commit(path, task.tool, result, None, TaskResult)
        except AgentflowError as exc:
            exc.at(path)  # name the call whose result could not be recorded
            raise


def check_refusals(results: Iterable[TaskResult]) -> None:
    """Fail the step whose calls these are if the run's step budget refused one of them.

    An agent's step that holds a refused call must not be journaled with it: the call was never made, and a
    run resumed with a larger budget (``max_steps``) must make it. The run fails with the budget's error
    either way (its next LLM call would meet the same spent budget).

    Raises:
        StepBudgetExceededError: the first refusal.
    """
    for result in results:
        refusal = result.budget_refusal
        if refusal is not None:
            raise refusal


def task_journal(scope: StepScope) -> StepTaskJournal | None:
    """The ``TaskJournal`` of an execution run by the step ``scope``, or ``None`` when the run has no journal."""
    journal = scope.ctx.journal
    return StepTaskJournal(journal, scope) if journal is not None else None


def with_tool_types(tp: object, tools: ToolRegistry | ToolView) -> object:
    """``tp`` as a step's result type under which every ``TaskResult`` inside a replayed value (in dataclass
    fields, mappings, lists and tuples) gets its value back as its tool's declared return type.

    >>> from agentflow.executors import ToolRegistry
    >>> with_tool_types(dict[int, TaskResult], ToolRegistry())  # doctest: +ELLIPSIS
    typing.Annotated[dict[int, ...TaskResult], AfterValidator(...)]
    """
    return Annotated[tp, AfterValidator(partial(_typed, tools=tools))]


def _typed(value: object, *, tools: ToolRegistry | ToolView) -> object:
    """``value`` with each task result's value read as its tool's declared return type (unchanged parts are
    kept as they are)."""
    if isinstance(value, TaskResult):
        if value.status is not TaskStatus.OK or value.task.tool not in tools:
            return value
        typed = tools.get(value.task.tool).typed_result(value.value)
        return value if typed is value.value else dataclasses.replace(value, value=typed)
    if isinstance(value, dict):
        items = {k: _typed(v, tools=tools) for k, v in value.items()}
        return value if all(items[k] is v for k, v in value.items()) else items
    if isinstance(value, list | tuple):
        seq = [_typed(v, tools=tools) for v in value]
        if all(a is b for a, b in zip(seq, value, strict=True)):
            return value
        return seq if isinstance(value, list) else tuple(seq)
    if dataclasses.is_dataclass(value) and not isinstance(value, type | Task):
        changes = {
            f.name: new
            for f in dataclasses.fields(value)
            if f.init and (new := _typed(getattr(value, f.name), tools=tools)) is not getattr(value, f.name)
        }
        return dataclasses.replace(value, **changes) if changes else value
    return value
