"""agentflow's one exception hierarchy.

Errors are values: a failing step yields ``Err(error, state, trace)`` rather than raising, and the
first ``Err`` short-circuits a sequence. The same classes are raised from the synchronous edges
(loading a plan, building an engine). Third-party exceptions are translated at the adapter boundary
with ``raise X(...) from exc``.

    AgentflowError
    ├── UserError                  a mistake in what the user gave us
    │   ├── ConfigError            bad option, engine spec, limit
    │   ├── PlanError              bad plan file / LLMCompiler plan (names file:line:column)
    │   ├── StateTypeError         a flow asked for state of another type
    │   └── SerializationError     a value cannot be journaled (names the path to the bad value)
    └── RuntimeFailure             something failed while running
        ├── StepError              a step's code raised (cause kept)
        ├── StepTimeout            a step ran past its time limit
        ├── MergeConflict          parallel branches wrote an unruled state field
        ├── LoopLimitError         a loop, replan or retry budget ran out
        ├── BudgetExceededError    a run used up its token budget
        ├── StepBudgetExceededError  a run used up its step budget (max_steps)
        ├── RaceLostError          every branch of a race failed
        ├── EngineError            an LLM engine failed
        │   ├── EngineUnavailableError   cannot load / reach the engine
        │   ├── EngineRequestError       the engine rejected or failed one request
        │   └── UnsupportedFeatureError  the engine lacks a requested capability
        ├── InferenceError         typed inference could not produce a valid value (raw text kept)
        ├── ToolError              a tool failed or was called wrongly
        │   └── ToolCallError      a model's native tool calls do not fit the offered tools
        ├── SchedulerError         the request scheduler refused or failed
        ├── MemoryStoreError       the memory store failed
        ├── JournalError           the run journal is unreachable, damaged or not a journal
        └── ResumeError            a run cannot run or resume as asked (diverged, held elsewhere)
"""

from __future__ import annotations

import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING

from agentflow.dsl._errors import (
    AgentflowError,
    ConfigError,
    LoopLimitError,
    MergeConflict,
    RaceLostError,
    RuntimeFailure,
    StateTypeError,
    StepError,
    StepTimeout,
    UserError,
)

if TYPE_CHECKING:
    from agentflow.engines import Completion

__all__ = [
    "AgentflowError",
    "BudgetExceededError",
    "ConfigError",
    "EngineError",
    "EngineRequestError",
    "EngineUnavailableError",
    "InferenceError",
    "JournalError",
    "LoopLimitError",
    "MemoryStoreError",
    "MergeConflict",
    "PlanError",
    "RaceLostError",
    "ResumeError",
    "RuntimeFailure",
    "SchedulerError",
    "SerializationError",
    "StateTypeError",
    "StepBudgetExceededError",
    "StepError",
    "StepTimeout",
    "ToolCallError",
    "ToolError",
    "UnsupportedFeatureError",
    "UserError",
]


class PlanError(UserError):
    """A plan (YAML file or LLMCompiler text) is invalid.

    Attributes:
        file: The plan file, if the plan came from one.
        line: 1-based line number, if known.
        column: 1-based column number, if known.
    """

    file: str | None
    line: int | None
    column: int | None

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
    ) -> None:
        self.file = file
        self.line = line
        self.column = column
        parts = [
            p for p in (file, None if line is None else str(line), None if column is None else str(column))
        ]
        where = ":".join(p for p in parts if p) or None
        if where is None and line is not None:
            where = f"line {line}"
        super().__init__(message, where=where)


class SerializationError(UserError):
    """A value could not be serialized; ``path`` names the bad value (``state.notes[3].when``)."""

    path: str

    def __init__(self, path: str, message: str) -> None:
        self.path = path
        super().__init__(f"cannot serialize value at {path}: {message}")


class EngineError(RuntimeFailure):
    """An LLM engine failed."""


class EngineUnavailableError(EngineError):
    """The engine cannot be loaded or reached (missing model file, extra not installed, server down)."""


class EngineRequestError(EngineError):
    """The engine rejected or failed one request (after any retries)."""


class UnsupportedFeatureError(EngineError):
    """The engine does not support a requested feature (streaming, structured output, priority...)."""


class InferenceError(RuntimeFailure):
    """Typed inference did not produce a valid value.

    Attributes:
        raw: The last raw text the engine produced.
        attempts: How many generations were tried.
    """

    raw: str
    attempts: int

    def __init__(self, message: str, *, raw: str, attempts: int, where: str | None = None) -> None:
        self.raw = raw
        self.attempts = attempts
        super().__init__(message, where=where)


class ToolError(RuntimeFailure):
    """A tool failed, timed out, or was called with invalid arguments."""

    tool: str

    def __init__(self, tool: str, message: str, *, where: str | None = None) -> None:
        self.tool = tool
        super().__init__(f"tool {tool!r}: {message}", where=where)


class ToolCallError(ToolError):
    """A model asked for native tool calls that do not fit the offered tools: a tool that was not offered,
    arguments that are not a JSON object or do not match the tool's JSON Schema, or a call the request's
    ``tool_choice`` did not allow.

    Attributes:
        problems: Call id -> what is wrong with that call (the bad calls only).
        completion: The whole completion, valid calls included, so a caller can answer every call (an
            agent sends each problem back as that call's result).
    """

    problems: dict[str, str]
    completion: Completion

    @classmethod
    def _attribute_types(cls) -> dict[str, object]:
        from agentflow.engines import Completion  # late: agentflow.engines imports this module

        return typing.get_type_hints(cls, localns={"Completion": Completion})

    def __init__(
        self,
        tool: str,
        message: str,
        *,
        problems: Mapping[str, str],
        completion: Completion,
        where: str | None = None,
    ) -> None:
        self.problems = dict(problems)
        self.completion = completion
        super().__init__(tool, message, where=where)


class SchedulerError(RuntimeFailure):
    """The request scheduler refused or failed a request."""


class MemoryStoreError(RuntimeFailure):
    """The memory store failed (I/O, corruption, migration)."""


class JournalError(RuntimeFailure):
    """The run journal cannot be used: unreachable, not a journal, damaged, or a row that does not decode.

    The message names the journal (file or URL) and, for a bad row, the run and column.
    """


class ResumeError(RuntimeFailure):
    """A run cannot run or resume as asked: it diverged from its journal (the code or inputs changed),
    another holder is running it, or this attempt lost its lease."""


class BudgetExceededError(RuntimeFailure):
    """A run used up its LLM token budget (``agentflow.run(..., max_llm_tokens=N)``)."""

    used: int
    limit: int

    def __init__(self, used: int, limit: int, *, where: str | None = None) -> None:
        self.used = used
        self.limit = limit
        super().__init__(
            f"the run used {used} LLM tokens of its budget of {limit}; raise max_llm_tokens or shorten the work",
            where=where,
        )


class StepBudgetExceededError(RuntimeFailure):
    """A run took as many steps (tool calls, LLM calls, plan map items) as its budget allows (``max_steps``)."""

    limit: int
    call: str

    def __init__(self, limit: int, call: str, *, where: str | None = None) -> None:
        self.limit = limit
        self.call = call
        super().__init__(
            f"the run took {limit} steps (tool calls, LLM calls, plan map items), all its step budget "
            f"(max_steps={limit}) allows; {call} was refused. Raise it (--max-steps N, "
            "agentflow.run(max_steps=N), the plan's max_steps) or do less",
            where=where,
        )
