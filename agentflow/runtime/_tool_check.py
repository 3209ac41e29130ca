"""Checking a model's native tool calls against the tools a request offered.

Engines that decode under a grammar (llama.cpp, vLLM) cannot produce a call outside the tools' JSON
Schemas; servers may (a hosted API, a vLLM or llama.cpp server whose parser read free text). ``call_llm``
checks every completion's calls here, the same way for every engine, and refuses bad ones with a
``ToolCallError`` naming each call, its tool and what is wrong.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from pydantic import JsonValue

from agentflow.engines import Completion, GenerationRequest, NamedToolChoice, ToolCallRequest, ToolSpec
from agentflow.errors import ToolCallError, ToolError

if TYPE_CHECKING:
    from agentflow.executors import JsonSchemaValidator

__all__ = ["tool_call_error", "tool_call_problems"]

_MAX_SHOWN = 5  # schema violations named per call


@lru_cache(maxsize=128)
def _validator(name: str, schema_json: str) -> JsonSchemaValidator:
    """A validator of one tool's argument schema (cached: agents offer the same tools turn after turn)."""
    from agentflow.executors import JsonSchemaValidator

    schema: dict[str, JsonValue] = json.loads(schema_json)
    return JsonSchemaValidator(schema, where=f"tool {name!r} parameters")


def _problem(spec: ToolSpec | None, call: ToolCallRequest, offered: Sequence[str]) -> str | None:
    if spec is None:
        return f"tool {call.name!r} was not offered; the offered tools are {list(offered)}"
    try:
        arguments = call.parsed_arguments()
    except ToolError as exc:
        return exc.message
    schema_json = json.dumps(dict(spec.parameters), sort_keys=True, default=str)
    errors = _validator(spec.name, schema_json).errors(arguments)
    if not errors:
        return None
    more = f" (and {len(errors) - _MAX_SHOWN} more)" if len(errors) > _MAX_SHOWN else ""
    return f"tool {call.name!r}: arguments do not match its schema: {'; '.join(errors[:_MAX_SHOWN])}{more}"


def tool_call_problems(request: GenerationRequest, calls: Sequence[ToolCallRequest]) -> dict[str, str]:
    """What is wrong with each of ``calls`` for ``request`` (call id -> problem; empty when all are fine).

    A call is wrong when its tool was not offered, its arguments are not a JSON object or do not match the
    tool's JSON Schema, or ``tool_choice`` did not allow it (``none``; another tool than the named one;
    several calls when ``parallel_tool_calls`` is false).

    Raises:
        ConfigError: An offered tool's schema is not a valid JSON Schema.
    """
    by_name = {t.name: t for t in request.tools}
    offered = sorted(by_name)
    choice = request.tool_choice
    problems: dict[str, str] = {}
    for index, call in enumerate(calls):
        if choice == "none":
            problem: str | None = f"tool {call.name!r} was called, but the request's tool_choice was 'none'"
        elif isinstance(choice, NamedToolChoice) and call.name != choice.name:
            problem = f"tool {call.name!r} was called, but tool_choice asked for tool {choice.name!r}"
        elif index > 0 and not request.parallel_tool_calls:
            problem = (
                f"tool {call.name!r} was call {index + 1} of one answer, but parallel_tool_calls was false"
            )
        else:
            problem = _problem(by_name.get(call.name), call, offered)
        if problem is not None:
            problems[call.id] = problem
    return problems


def tool_call_error(
    request: GenerationRequest, completion: Completion, *, where: str
) -> ToolCallError | None:
    """The ``ToolCallError`` for ``completion``'s calls that do not fit ``request``, or ``None`` when every
    call is fine (or there are none). The error names every bad call with its problem."""
    if not completion.tool_calls:
        return None
    problems = tool_call_problems(request, completion.tool_calls)
    if not problems:
        return None
    first = next(c for c in completion.tool_calls if c.id in problems)
    listed = "; ".join(f"call {cid}: {text}" for cid, text in problems.items())
    return ToolCallError(
        first.name,
        f"the model's tool calls do not fit the offered tools ({listed}); send each problem back as that "
        "call's result so the model can correct it, or constrain the calls (tool_choice, an engine that "
        "enforces schemas)",
        problems=problems,
        completion=completion,
        where=where,
    )
