"""Tasks (one tool call of a plan) and their results (the observations the executor records)."""

from __future__ import annotations

import enum
import json
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Annotated

from pydantic import JsonValue, PlainSerializer
from pydantic_core import to_jsonable_python

from agentflow.dsl import ToolCall, ToolStatus
from agentflow.errors import PlanError, StepBudgetExceededError, StepTimeout, ToolError
from agentflow.secrets import redact

from ._refs import ref_ids

__all__ = [
    "MAX_RESULT_CHARS",
    "Task",
    "TaskResult",
    "TaskStatus",
    "clipped",
    "task_event",
    "tool_call_event",
]


@dataclass(frozen=True)
class Task:
    """One tool call of a plan.

    References to earlier results (``$N``, ``${N}``, ``$N.field``; see :mod:`agentflow.executors._refs`) may
    appear anywhere in the arguments, also inside strings, lists and dict values; they define ``deps``.

    Attributes:
        id: A positive task id, unique within a run (replans continue the numbering).
        tool: The tool's registered name (dots allowed).
        args: Positional arguments; they bind to the tool's parameters in declaration order.
        kwargs: Keyword arguments.
        thought: The planner's reasoning that preceded this task, if any.
        deps: Ids of the tasks this one references (derived, not passed).
    """

    id: int
    tool: str
    args: Sequence[JsonValue] = ()
    kwargs: Mapping[str, JsonValue] = field(default_factory=dict)
    thought: str | None = None
    deps: frozenset[int] = field(init=False, default=frozenset())

    def __post_init__(self) -> None:
        if isinstance(self.id, bool) or not isinstance(self.id, int) or self.id < 1:
            raise PlanError(f"task id {self.id!r} is invalid; task ids are integers >= 1")
        if isinstance(self.args, (str, bytes)) or not isinstance(self.args, Sequence):
            raise PlanError(
                f"task {self.id}: args must be a list of positional arguments, got {self.args!r}; "
                "pass keyword arguments as kwargs={...}"
            )
        object.__setattr__(self, "args", tuple(self.args))
        object.__setattr__(self, "kwargs", dict(self.kwargs))
        deps = ref_ids(list(self.args)) | ref_ids(dict(self.kwargs))
        if self.id in deps:
            raise PlanError(f"task {self.id} ({self.tool}) references its own result ${self.id}")
        object.__setattr__(self, "deps", deps)

    def call_text(self) -> str:
        """The call as LLMCompiler plan text: ``search("Barack Obama", k=3)``."""
        parts = [json.dumps(a, ensure_ascii=False) for a in self.args]
        parts += [f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in self.kwargs.items()]
        return f"{self.tool}({', '.join(parts)})"


class TaskStatus(enum.StrEnum):
    """How a task ended."""

    OK = "ok"
    """The tool returned a value."""
    ERROR = "error"
    """The tool raised, or its arguments were invalid (``error`` is a :class:`ToolError`)."""
    TIMEOUT = "timeout"
    """The tool or the executor's per-task limit ran out (``error`` is a :class:`StepTimeout`)."""
    SKIPPED = "skipped"
    """A dependency did not finish OK, so the tool was never called (``error`` names the dependency)."""
    CANCELLED = "cancelled"
    """The task or the whole execution was cancelled before the task finished."""


@dataclass(frozen=True)
class TaskResult:
    """The observation of one task, with its timeline.

    Times are ``time.perf_counter()`` seconds.

    Attributes:
        task: The task.
        status: How it ended.
        value: The tool's return value (``None`` unless ``status`` is OK).
        error: Why it did not end OK.
        ready_at: When its last dependency finished (or when it was added, for a task without dependencies).
        started_at: When the tool call started (None if it never started).
        finished_at: When the task ended.
    """

    task: Task
    status: TaskStatus
    value: Annotated[object, PlainSerializer(lambda v: _json_form(v), when_used="json")] = None
    error: ToolError | StepTimeout | None = None
    ready_at: float = 0.0
    started_at: float | None = None
    finished_at: float = 0.0

    @property
    def ok(self) -> bool:
        """Whether the tool returned a value."""
        return self.status is TaskStatus.OK

    @property
    def budget_refusal(self) -> StepBudgetExceededError | None:
        """The error of the run's step budget (``max_steps``) when it refused this call: the tool was not
        called. Such a result is never journaled, so a run resumed with a larger budget makes the call."""
        cause = self.error.__cause__ if self.error is not None else None
        return cause if isinstance(cause, StepBudgetExceededError) else None

    @property
    def dispatch_latency(self) -> float | None:
        """Seconds from the task becoming ready to its tool call starting (None if it never started)."""
        return None if self.started_at is None else self.started_at - self.ready_at

    @property
    def duration(self) -> float | None:
        """Seconds the tool call ran (None if it never started)."""
        return None if self.started_at is None else self.finished_at - self.started_at

    def observation(self) -> str:
        """The result as text for a prompt: the value as JSON (a string as it is; models, dataclasses, dates...
        in their JSON form) or ``Error: ...``.

        The text of a value and of its JSON round trip are the same, so a result replayed from a journal
        shows the model what the live result showed it.
        """
        if self.status is TaskStatus.OK:
            data = _json_form(self.value, fallback=str)
            return data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
        if self.status is TaskStatus.CANCELLED:
            return "Error: cancelled"
        return f"Error: {self.error}"


def _json_form(value: object, *, fallback: Callable[[object], object] | None = None) -> JsonValue:
    """``value`` as plain JSON data, the form a result has in the journal and in prompts: models, dataclasses,
    dates... as pydantic writes them, and the floats JSON lacks as the strings ``"Infinity"``, ``"-Infinity"``
    and ``"NaN"`` (pydantic would write ``null``, and a replayed result would differ from the live one).

    Raises:
        PydanticSerializationError: a part of ``value`` has no JSON form (and there is no ``fallback``).
    """
    return _finite(to_jsonable_python(value, fallback=fallback))


def _finite(data: object) -> JsonValue:
    if isinstance(data, float) and not math.isfinite(data):
        return "NaN" if math.isnan(data) else "Infinity" if data > 0 else "-Infinity"
    if isinstance(data, list):
        return [_finite(v) for v in data]
    if isinstance(data, dict):
        return {str(k): _finite(v) for k, v in data.items()}
    return data  # type: ignore[return-value]  # to_jsonable_python gives JSON data


MAX_RESULT_CHARS = 16_000
"""Longest tool result text recorded in a ``ToolCall`` event (the rest is cut, and says so)."""


def clipped(text: str, limit: int = MAX_RESULT_CHARS) -> str:
    """``text`` redacted of revealed secrets and cut to ``limit`` characters (saying how much was cut)."""
    text = redact(text)
    return text if len(text) <= limit else f"{text[:limit]} [truncated {len(text) - limit} chars]"


def tool_call_event(
    path: str,
    tool: str,
    *,
    status: ToolStatus,
    started: float,
    seconds: float,
    error: str | None,
    args: JsonValue,
    result: str | None,
    capture: bool,
    task: int | None = None,
    dispatch_latency_s: float | None = None,
) -> ToolCall:
    """The ``ToolCall`` event of one tool invocation (arguments and result only when ``capture``), redacted."""
    return ToolCall(
        path=path,
        time=started + seconds,
        tool=tool,
        task=task,
        started=started,
        seconds=seconds,
        status=status,
        error=None if error is None else redact(error),
        args=_redacted_json(args) if capture else None,
        result=clipped(result) if capture and result is not None else None,
        dispatch_latency_s=dispatch_latency_s,
    )


_STATUS: dict[TaskStatus, ToolStatus] = {
    TaskStatus.OK: "ok",
    TaskStatus.ERROR: "error",
    TaskStatus.TIMEOUT: "timeout",
    TaskStatus.SKIPPED: "skipped",
    TaskStatus.CANCELLED: "cancelled",
}


def _redacted_json(value: JsonValue) -> JsonValue:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: _redacted_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted_json(v) for v in value]
    return value


def task_event(result: TaskResult, path: str, *, capture: bool = True) -> ToolCall:
    """The ``ToolCall`` event of an executor task (times converted from ``perf_counter`` to wall clock)."""
    offset = time.time() - time.perf_counter()
    if result.started_at is not None:
        started = result.started_at + offset
        seconds = result.finished_at - result.started_at
    else:
        started = result.finished_at + offset
        seconds = 0.0
    args: dict[str, JsonValue] = dict(result.task.kwargs)
    if result.task.args:
        args["*args"] = list(result.task.args)
    return tool_call_event(
        path,
        result.task.tool,
        task=result.task.id,
        status=_STATUS[result.status],
        started=started,
        seconds=seconds,
        error=None if result.ok else (str(result.error) if result.error is not None else str(result.status)),
        args=args,
        result=result.observation() if result.ok else None,
        capture=capture,
        dispatch_latency_s=result.dispatch_latency,
    )
