"""Agents on native tool calling: tool specs from a registry, the choice between native calls and the
agents' own JSON/text plans, and running one answer's calls.

An agent uses native tool calls when the run's engine declares ``Capabilities.tool_calling`` (or when
told to with ``native_tools=True``) and its own JSON/text plans otherwise. Either way the same
``Executor`` runs the calls, so allowlists, argument validation, timeouts and ``ToolCall`` events are
the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import JsonValue

from agentflow.dsl import Flow, StepScope, leaf
from agentflow.engines import Completion, Engine, Message, NamedToolChoice, ToolChoice, ToolSpec
from agentflow.errors import ConfigError, PlanError, ToolError
from agentflow.executors import (
    Executor,
    Task,
    TaskResult,
    ToolRegistry,
    ToolView,
    check_refusals,
    task_event,
    task_journal,
)
from agentflow.runtime import RunContext
from agentflow.secrets import redact

from ._plan_parser import _args_schema

__all__ = [
    "CallOutcome",
    "TurnChoices",
    "check_choices",
    "choice_for_turn",
    "plan_tool_specs",
    "run_calls",
    "tool_messages",
    "tool_specs",
    "uses_native_tools",
]

TurnChoices = ToolChoice | Sequence[ToolChoice]
"""One ``tool_choice`` for every turn, or one per turn (turns past the end use ``auto``)."""


def tool_specs(tools: ToolRegistry | ToolView) -> tuple[ToolSpec, ...]:
    """The tools as ``ToolSpec``s for a request's ``tools`` (name, description, argument schema)."""
    return tuple(ToolSpec(t.name, t.description, t.parameters) for t in tools)


def plan_tool_specs(tools: ToolRegistry | ToolView) -> tuple[ToolSpec, ...]:
    """Tool specs for a planner: every non-string argument may also be a ``"$N"`` reference to the result
    of call N (the same widening as ``compiler_plan_schema``)."""
    specs = []
    for t in tools:
        defs: dict[str, JsonValue] = {}
        params = _args_schema(t, defs)
        assert isinstance(params, dict)
        if defs:
            params["$defs"] = defs
        specs.append(ToolSpec(t.name, t.description, params))
    return tuple(specs)


def uses_native_tools(engine: Engine | None, native_tools: bool | None) -> bool:
    """Whether an agent calls tools natively: as told, or when the engine declares it can."""
    if native_tools is not None:
        return native_tools
    return engine is not None and engine.capabilities.tool_calling


def check_choices(choices: TurnChoices, tools: ToolRegistry | ToolView) -> None:
    """Refuse a ``tool_choice`` naming a tool the agent may not call.

    Raises:
        ConfigError: A named tool is not among ``tools``, or a choice is not a valid ``tool_choice``.
    """
    listed = [choices] if isinstance(choices, str | NamedToolChoice) else list(choices)
    for choice in listed:
        if isinstance(choice, NamedToolChoice):
            if choice.name not in tools:
                raise ConfigError(
                    f"tool_choice names tool {choice.name!r}, which this agent may not call; "
                    f"allowed tools: {[t.name for t in tools]}"
                )
        elif choice not in ("auto", "none", "required"):
            raise ConfigError(
                f"tool_choice must be 'auto', 'none', 'required' or NamedToolChoice(name), got {choice!r}"
            )


def choice_for_turn(choices: TurnChoices, turn: int) -> ToolChoice:
    """The ``tool_choice`` of turn ``turn`` (1-based)."""
    if isinstance(choices, str | NamedToolChoice):
        return choices
    return choices[turn - 1] if turn <= len(choices) else "auto"


@dataclass(frozen=True)
class CallOutcome:
    """What one answer's tool calls came to.

    Attributes:
        results: Each executed call's result, by task id.
        observations: Each call's observation for the model, by call id (results, refusals, problems).
    """

    results: dict[int, TaskResult] = field(default_factory=dict)
    observations: dict[str, str] = field(default_factory=dict)


def run_calls(
    executor: Executor, completion: Completion, problems: dict[str, str], first_id: int
) -> Flow[CallOutcome]:
    """Run the calls of ``completion`` together (in parallel), numbering them from ``first_id``.

    A call with a problem (``problems``, from ``ToolCallError``), arguments that are not a JSON object, a
    ``$N`` reference (native calls pass values, not references) or a tool the executor refuses (unknown,
    not allowed, arguments that do not bind) is not run: its observation says why, so the model can
    correct it. Each call that runs is recorded as a ``ToolCall`` event when it ends, and, in a journaled
    run, as a step of its own: a resumed run does not make a call again that ended before it stopped.
    """

    async def body(scope: StepScope) -> CallOutcome:
        ctx = scope.ctx
        capture = ctx.capture_content if isinstance(ctx, RunContext) else True
        observations: dict[str, str] = {}
        ids: dict[int, str] = {}  # task id -> call id
        async with executor.open(
            on_result=lambda r: scope.emit(task_event(r, scope.path, capture=capture)),
            journal=task_journal(scope),
        ) as execution:
            for offset, call in enumerate(completion.tool_calls):
                if call.id in problems:
                    observations[call.id] = f"Error: {problems[call.id]}"
                    continue
                try:
                    task = Task(first_id + offset, call.name, kwargs=call.parsed_arguments())
                    if task.deps:
                        raise PlanError(
                            f"the arguments refer to results {sorted(task.deps)} with '$N'; pass the values"
                        )
                    execution.add(task)
                except (PlanError, ToolError) as exc:
                    observations[call.id] = f"Error: {redact(exc.message)}"
                    continue
                ids[task.id] = call.id
            execution.close()
            report = await execution.wait()
        results = {tid: r for tid, r in report.results.items() if tid in ids}
        check_refusals(results.values())
        for tid, result in results.items():
            observations[ids[tid]] = redact(result.observation())
        return CallOutcome(results, observations)

    return leaf(body)


def tool_messages(completion: Completion, observations: dict[str, str]) -> list[Message]:
    """The assistant message holding ``completion``'s calls, then one ``tool`` message per call."""
    out = [Message("assistant", completion.text, tool_calls=completion.tool_calls)]
    out += [
        Message("tool", observations.get(c.id, "Error: no result"), tool_call_id=c.id)
        for c in completion.tool_calls
    ]
    return out
