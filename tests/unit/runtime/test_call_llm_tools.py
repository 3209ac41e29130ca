"""``call_llm`` with native tool calls: calls checked against the offered tools' JSON Schemas (a
``ToolCallError`` naming each bad call), streamed to a reader as they arrive, recorded in ``LLMCall``."""

from __future__ import annotations

import pytest

from agentflow import Err, Ok, run
from agentflow.dsl import LLMCall
from agentflow.engines import (
    Completion,
    FunctionEngine,
    GenerationRequest,
    Message,
    NamedToolChoice,
    ToolCallRequest,
    ToolChoice,
    ToolSpec,
    Usage,
)
from agentflow.errors import ConfigError, ToolCallError
from agentflow.runtime import generate, llm_call, tool_call_problems
from agentflow.secrets import REDACTED, Secret

pytestmark = pytest.mark.anyio

ORDER = ToolSpec(
    "find_order",
    "Look up an order.",
    {"type": "object", "properties": {"order": {"type": "integer", "minimum": 1}}, "required": ["order"]},
)
EMAIL = ToolSpec(
    "customer_email",
    "",
    {"type": "object", "properties": {"customer": {"type": "string"}}, "required": ["customer"]},
)
QUESTION = (Message("user", "Email of the customer of order 42?"),)


def calling(*calls: ToolCallRequest) -> FunctionEngine:
    return FunctionEngine(
        lambda r: Completion("", Usage(completion_tokens=4), "tool_calls", "m", calls), tool_calling=True
    )


def ask(choice: ToolChoice = "auto", *, parallel: bool = True) -> GenerationRequest:
    return GenerationRequest(
        messages=QUESTION, tools=(ORDER, EMAIL), tool_choice=choice, parallel_tool_calls=parallel
    )


def llm_events(outcome: Ok[Completion] | Err) -> list[LLMCall]:
    return [e for e in outcome.trace if isinstance(e, LLMCall)]


async def test_good_calls_come_back_and_are_recorded_in_the_llm_call_event() -> None:
    call = ToolCallRequest("c1", "find_order", '{"order": 42}')
    outcome = await run(llm_call(ask()), engine=calling(call))
    assert isinstance(outcome, Ok) and outcome.value.tool_calls == (call,)
    [event] = llm_events(outcome)
    assert event.tool_calls == (("c1", "find_order", '{"order": 42}'),)
    assert event.finish_reason == "tool_calls" and event.valid is None and event.error is None


async def test_calls_are_not_recorded_when_the_run_does_not_capture_content() -> None:
    outcome = await run(
        llm_call(ask()),
        engine=calling(ToolCallRequest("c1", "find_order", '{"order": 42}')),
        capture_content=False,
    )
    assert llm_events(outcome)[0].tool_calls is None


@pytest.mark.parametrize(
    ("call", "choice", "problem"),
    [
        (
            ToolCallRequest("c1", "delete_all", "{}"),
            "auto",
            "tool 'delete_all' was not offered; the offered tools are",
        ),
        (
            ToolCallRequest("c1", "find_order", '{"order": 4'),
            "auto",
            "tool 'find_order': call c1: the arguments are not JSON",
        ),
        (
            ToolCallRequest("c1", "find_order", '{"order": 0}'),
            "auto",
            "tool 'find_order': arguments do not match its schema: argument 'order': 0 is less than the minimum of 1",
        ),
        (
            ToolCallRequest("c1", "find_order", '{"order": 42}'),
            NamedToolChoice("customer_email"),
            "but tool_choice asked for tool 'customer_email'",
        ),
        (
            ToolCallRequest("c1", "find_order", '{"order": 42}'),
            "none",
            "but the request's tool_choice was 'none'",
        ),
    ],
)
async def test_a_bad_call_fails_with_a_tool_call_error_naming_the_call_and_the_problem(
    call: ToolCallRequest, choice: ToolChoice, problem: str
) -> None:
    good = ToolCallRequest("c0", "customer_email", '{"customer": "C-17"}')
    outcome = await run(
        llm_call(ask(choice)), engine=calling(good, call) if choice == "auto" else calling(call)
    )
    assert isinstance(outcome, Err) and isinstance(outcome.error, ToolCallError)
    error = outcome.error
    assert list(error.problems) == ["c1"] and problem in error.problems["c1"]
    assert "call c1: " in error.message and error.tool == call.name
    assert call in error.completion.tool_calls
    [event] = llm_events(outcome)
    assert event.valid is False and event.error is not None and problem in event.error
    assert event.tool_calls is not None and len(event.tool_calls) == len(error.completion.tool_calls)


async def test_a_second_call_is_refused_when_parallel_calls_are_off() -> None:
    calls = (
        ToolCallRequest("a", "find_order", '{"order": 1}'),
        ToolCallRequest("b", "find_order", '{"order": 2}'),
    )
    problems = tool_call_problems(ask(parallel=False), calls)
    assert list(problems) == ["b"] and "parallel_tool_calls was false" in problems["b"]


def test_an_invalid_tool_schema_is_a_config_error_naming_the_tool() -> None:
    broken = ToolSpec("broken", parameters={"type": "object", "properties": {"x": {"type": "no-such-type"}}})
    request = GenerationRequest(messages=QUESTION, tools=(broken,))
    with pytest.raises(ConfigError, match="tool 'broken' parameters"):
        tool_call_problems(request, (ToolCallRequest("c", "broken", '{"x": 1}'),))


async def test_tool_call_reader_gets_each_call_as_it_streams() -> None:
    calls = (
        ToolCallRequest("a", "find_order", '{"order": 1}'),
        ToolCallRequest("b", "customer_email", '{"customer": "x"}'),
    )
    seen: list[str] = []
    outcome = await run(llm_call(ask(), on_tool_call=lambda c: seen.append(c.id)), engine=calling(*calls))
    assert isinstance(outcome, Ok) and seen == ["a", "b"] and outcome.value.tool_calls == calls


async def test_a_reader_that_raises_stops_the_call_and_it_is_recorded_as_aborted() -> None:
    def refuse(call: ToolCallRequest) -> None:
        raise ConfigError(f"no calls to {call.name} here")

    outcome = await run(
        llm_call(ask(), on_tool_call=refuse), engine=calling(ToolCallRequest("a", "find_order", "{}"))
    )
    assert isinstance(outcome, Err) and "no calls to find_order here" in outcome.error.message
    assert llm_events(outcome)[0].status == "aborted"


async def test_generate_offers_tools_and_returns_the_calls() -> None:
    engine = calling(ToolCallRequest("c1", "customer_email", '{"customer": "C-17"}'))
    outcome = await run(
        generate(QUESTION, tools=(ORDER, EMAIL), tool_choice="required", parallel_tool_calls=False),
        engine=engine,
    )
    assert isinstance(outcome, Ok) and outcome.value.tool_calls[0].name == "customer_email"
    seen = engine.requests[-1]
    assert seen.tools == (ORDER, EMAIL) and seen.tool_choice == "required" and not seen.parallel_tool_calls


async def test_secrets_in_earlier_calls_and_results_never_reach_the_engine() -> None:
    key = Secret("toolcalls-test-key", provider=lambda _: "sk-live-toolcalls-1234").reveal()
    call = ToolCallRequest("c1", "customer_email", f'{{"customer": "{key}"}}')
    history = (
        *QUESTION,
        Message("assistant", "", tool_calls=(call,)),
        Message("tool", f"token {key}", tool_call_id="c1"),
    )
    engine = FunctionEngine(lambda r: "done")
    outcome = await run(llm_call(GenerationRequest(messages=history, tools=(EMAIL,))), engine=engine)
    assert isinstance(outcome, Ok)
    sent = engine.requests[-1].messages
    assert sent is not None and key not in repr(sent)
    assert (
        sent[1].tool_calls[0].arguments == f'{{"customer": "{REDACTED}"}}'
        and sent[1].tool_calls[0].id == "c1"
    )
    [event] = llm_events(outcome)
    assert event.messages is not None and key not in repr(event.messages)
    assert event.messages[1] == ("assistant", f'[tool call c1] customer_email({{"customer": "{REDACTED}"}})')
    assert event.messages[2] == ("tool", f"[result of tool call c1]\ntoken {REDACTED}")
