"""Native tool calling in the engine protocol: request checks, the test doubles, record/replay, and the
Scheduler and PrefixRouter wrappers passing calls through."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from agentflow.engines import (
    Chunk,
    Completion,
    Engine,
    FunctionEngine,
    GenerationRequest,
    Message,
    NamedToolChoice,
    RecordingEngine,
    ReplayEngine,
    TestEngine,
    ToolCallRequest,
    ToolSpec,
    Usage,
    render_messages,
    request_key,
)
from agentflow.errors import ConfigError, ToolError
from agentflow.scheduler import PrefixRouter, Scheduler

pytestmark = pytest.mark.anyio

ADD = ToolSpec(
    "add",
    "Add two integers.",
    {
        "type": "object",
        "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
        "required": ["a", "b"],
    },
)
NEG = ToolSpec(
    "neg", "Negate.", {"type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}
)
QUESTION = (Message("user", "What is 2 + 3?"),)


def ask(**fields: object) -> GenerationRequest:
    return GenerationRequest(messages=QUESTION, max_tokens=16, **fields)  # type: ignore[arg-type]


def scripted(calls: tuple[ToolCallRequest, ...]) -> FunctionEngine:
    """A model that calls ``calls`` when offered tools, and otherwise answers with the last tool result."""

    def answer(request: GenerationRequest) -> str | Completion:
        if request.tools and request.messages is not None and request.messages[-1].role == "user":
            return Completion("", Usage(completion_tokens=3), "tool_calls", "scripted", calls)
        return f"result was {request.messages[-1].content if request.messages else ''}"

    return FunctionEngine(answer, tool_calling=True)


# -- requests ------------------------------------------------------------------------------------------------------


def test_request_refuses_tools_when_it_is_a_raw_prompt() -> None:
    with pytest.raises(ConfigError, match="tools need a chat request"):
        GenerationRequest(prompt="2 + 3 =", tools=(ADD,))


def test_request_refuses_a_tool_offered_twice() -> None:
    with pytest.raises(ConfigError, match=r"offered twice: \['add'\]"):
        ask(tools=(ADD, ADD))


def test_request_refuses_named_choice_when_the_tool_is_not_offered() -> None:
    with pytest.raises(ConfigError, match="names tool 'mul', which is not among the request's tools"):
        ask(tools=(ADD,), tool_choice=NamedToolChoice("mul"))


def test_request_refuses_required_choice_when_no_tool_is_offered() -> None:
    with pytest.raises(ConfigError, match="needs at least one tool"):
        ask(tool_choice="required")


def test_request_refuses_an_unknown_tool_choice() -> None:
    with pytest.raises(ConfigError, match="tool_choice must be"):
        ask(tools=(ADD,), tool_choice="always")  # type: ignore[arg-type]


def test_tool_spec_refuses_parameters_that_are_not_an_object_schema() -> None:
    with pytest.raises(ConfigError, match="tool 'x': parameters must be an object schema"):
        ToolSpec("x", parameters={"type": "array"})


def test_parsed_arguments_reads_a_json_object() -> None:
    assert ToolCallRequest("c1", "add", '{"a": 2, "b": 3}').parsed_arguments() == {"a": 2, "b": 3}


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [("{a: 2}", "are not JSON"), ("[2, 3]", "must be a JSON object, got list")],
)
def test_parsed_arguments_names_the_tool_when_arguments_are_bad(arguments: str, problem: str) -> None:
    with pytest.raises(ToolError, match=f"tool 'add': call c1: the arguments {problem}"):
        ToolCallRequest("c1", "add", arguments).parsed_arguments()


# -- test doubles --------------------------------------------------------------------------------------------------


async def test_test_engine_calls_the_named_tool_with_schema_example_arguments() -> None:
    engine = TestEngine()
    completion = await engine.generate(ask(tools=(ADD, NEG), tool_choice=NamedToolChoice("neg")))
    assert completion.text == "" and completion.finish_reason == "tool_calls"
    [call] = completion.tool_calls
    assert call.name == "neg" and set(call.parsed_arguments()) == {"x"}


async def test_test_engine_calls_the_first_tool_when_a_call_is_required() -> None:
    completion = await TestEngine().generate(ask(tools=(ADD, NEG), tool_choice="required"))
    assert [c.name for c in completion.tool_calls] == ["add"]


async def test_test_engine_answers_text_when_the_model_may_choose() -> None:
    completion = await TestEngine().generate(ask(tools=(ADD,)))
    assert completion.text == "echo: What is 2 + 3?" and completion.tool_calls == ()


async def test_test_engine_streams_the_call_then_usage_when_a_call_is_forced() -> None:
    engine = TestEngine()
    request = ask(tools=(ADD,), tool_choice="required")
    async with engine.stream(request) as stream:
        chunks = [c async for c in stream]
    assert [c.name for chunk in chunks for c in chunk.tool_calls] == ["add"]
    assert chunks[-1].finish_reason == "tool_calls" and chunks[-1].usage is not None


async def test_function_engine_passes_calls_through_when_its_function_returns_them() -> None:
    call = ToolCallRequest("c1", "add", '{"a": 2, "b": 3}')
    engine = scripted((call,))
    assert engine.capabilities.tool_calling
    whole = await engine.generate(ask(tools=(ADD,)))
    async with engine.stream(ask(tools=(ADD,))) as stream:
        streamed = [c async for c in stream]
    assert whole.tool_calls == (call,)
    assert tuple(c for chunk in streamed for c in chunk.tool_calls) == (call,)


def test_doubles_declare_tool_calling_only_when_asked() -> None:
    assert not TestEngine().capabilities.tool_calling
    assert TestEngine(tool_calling=True).capabilities.tool_calling
    assert not FunctionEngine(lambda r: "x").capabilities.tool_calling


def test_render_messages_shows_tools_calls_and_results_when_present() -> None:
    call = ToolCallRequest("c1", "add", '{"a": 2}')
    request = GenerationRequest(
        messages=(
            *QUESTION,
            Message("assistant", "", tool_calls=(call,)),
            Message("tool", "5", tool_call_id="c1"),
        ),
        tools=(ADD,),
    )
    text = render_messages(request)
    assert text.startswith("<|tools|>\nadd\n")
    assert '<|call c1|>\nadd {"a": 2}\n' in text and "<|result of c1|>" in text


def test_render_messages_is_unchanged_when_there_are_no_tools() -> None:
    assert render_messages(ask()) == "<|user|>\nWhat is 2 + 3?\n<|assistant|>\n"


# -- record / replay -----------------------------------------------------------------------------------------------


async def test_replay_gives_back_recorded_calls_when_a_tool_conversation_is_replayed(tmp_path: Path) -> None:
    path = tmp_path / "calls.jsonl"
    call = ToolCallRequest("c1", "add", '{"a": 2, "b": 3}')
    recorder = RecordingEngine(scripted((call,)), path)
    first = await recorder.generate(ask(tools=(ADD,)))
    follow_up = GenerationRequest(
        messages=(
            *QUESTION,
            Message("assistant", "", tool_calls=first.tool_calls),
            Message("tool", "5", tool_call_id="c1"),
        ),
        tools=(ADD,),
    )
    async with recorder.stream(follow_up) as stream:
        streamed = [c async for c in stream]
    replay = ReplayEngine(path, tool_calling=True)
    assert replay.capabilities.tool_calling
    again = await replay.generate(ask(tools=(ADD,)))
    assert again.tool_calls == (call,) and again.finish_reason == "tool_calls"
    async with replay.stream(follow_up) as stream:
        replayed = [c async for c in stream]
    assert "".join(c.text for c in replayed) == "".join(c.text for c in streamed) == "result was 5"
    line = json.loads(path.read_text().splitlines()[0])
    assert line["completion"]["tool_calls"][0]["function"] == {"name": "add", "arguments": '{"a": 2, "b": 3}'}


def test_request_key_tells_apart_requests_that_differ_only_in_tools() -> None:
    keys = {
        request_key(ask()),
        request_key(ask(tools=(ADD,))),
        request_key(ask(tools=(ADD,), tool_choice="required")),
        request_key(ask(tools=(ADD, NEG))),
    }
    assert len(keys) == 4


def test_request_key_of_a_plain_request_is_what_it_was_before_tools() -> None:
    # The key of a request without tool fields hashes exactly the fields recordings always held.
    assert request_key(ask()) == request_key(GenerationRequest(messages=QUESTION, max_tokens=16))
    fields = {
        "prompt": None,
        "messages": [{"role": "user", "content": "What is 2 + 3?"}],
        "max_tokens": 16,
        "temperature": 0.0,
        "top_p": 1.0,
        "stop": [],
        "seed": None,
        "json_schema": None,
    }
    canonical = json.dumps(fields, sort_keys=True, separators=(",", ":"), default=str)
    assert request_key(ask()) == hashlib.sha256(canonical.encode()).hexdigest()[:32]


# -- wrappers ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wrap", ["scheduler", "router"])
async def test_wrappers_pass_tool_fields_and_calls_through(wrap: str) -> None:
    call = ToolCallRequest("c1", "add", '{"a": 2, "b": 3}')
    inner = scripted((call,))
    engine: Engine = Scheduler(inner) if wrap == "scheduler" else PrefixRouter([inner])
    request = ask(tools=(ADD,), tool_choice="required", parallel_tool_calls=False)
    assert engine.capabilities.tool_calling
    whole = await engine.generate(request)
    async with engine.stream(request) as stream:
        chunks: list[Chunk] = [c async for c in stream]
    assert whole.tool_calls == (call,) and whole.finish_reason == "tool_calls"
    assert tuple(c for chunk in chunks for c in chunk.tool_calls) == (call,)
    seen = inner.requests[-1]
    assert seen.tools == (ADD,) and seen.tool_choice == "required" and not seen.parallel_tool_calls
    await engine.aclose()
