"""Unit tests of the shipped test doubles: TestEngine and FunctionEngine."""

from __future__ import annotations

import json

import jsonschema
import pytest

from agentflow.engines import (
    CacheEvent,
    Completion,
    Engine,
    FunctionEngine,
    GenerationRequest,
    LiveContext,
    Message,
    TestEngine,
    Usage,
    simple_tokenize,
)
from agentflow.errors import EngineRequestError, EngineUnavailableError

pytestmark = pytest.mark.anyio


def _chat(text: str, **kwargs: object) -> GenerationRequest:
    return GenerationRequest(messages=(Message("system", "be brief"), Message("user", text)), **kwargs)  # type: ignore[arg-type]


async def test_test_engine_echoes_last_user_message_by_default() -> None:
    engine = TestEngine()
    completion = await engine.generate(_chat("what is 2+2?"))
    assert completion.text == "echo: what is 2+2?"
    assert completion.finish_reason == "stop"
    assert completion.model == "test"
    assert engine.requests == [_chat("what is 2+2?")]


async def test_test_engine_satisfies_engine_protocol() -> None:
    assert isinstance(TestEngine(), Engine)
    assert isinstance(FunctionEngine(lambda r: "x"), Engine)


async def test_test_engine_usage_counts_rendered_prompt_tokens() -> None:
    engine = TestEngine(response="one two three")
    request = _chat("hello")
    completion = await engine.generate(request)
    prompt_tokens = simple_tokenize(await engine.render(request))
    usage = completion.usage
    assert usage.prompt_tokens == len(prompt_tokens) > 0
    assert usage.cached_tokens == 0
    assert usage.computed_tokens == usage.prompt_tokens
    assert usage.completion_tokens == len(simple_tokenize("one two three"))
    assert usage.total_s >= usage.ttft_s >= 0.0


async def test_test_engine_truncates_to_max_tokens_with_length_finish() -> None:
    engine = TestEngine(response="a b c d e f")
    completion = await engine.generate(GenerationRequest(prompt="x", max_tokens=3))
    assert completion.text == "a b"
    assert completion.finish_reason == "length"
    assert completion.usage.completion_tokens == 3


async def test_test_engine_cuts_at_stop_string() -> None:
    engine = TestEngine(response="alpha. beta. gamma")
    completion = await engine.generate(GenerationRequest(prompt="x", stop=(". g", "zzz")))
    assert completion.text == "alpha. beta"
    assert completion.finish_reason == "stop"


async def test_test_engine_answers_json_schema_with_valid_instance() -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 2},
            "age": {"type": "integer", "minimum": 18},
            "tags": {"type": "array", "items": {"type": "string"}, "minItems": 2, "uniqueItems": True},
        },
        "required": ["name", "age", "tags"],
    }
    engine = TestEngine()
    completion = await engine.generate(GenerationRequest(prompt="who?", json_schema=schema, max_tokens=1))
    value = json.loads(completion.text)
    jsonschema.validate(value, schema)
    assert (
        completion.text == (await engine.generate(GenerationRequest(prompt="again", json_schema=schema))).text
    )


async def test_test_engine_stream_yields_pieces_then_usage() -> None:
    engine = TestEngine(response="hello big world")
    async with engine.stream(GenerationRequest(prompt="p")) as stream:
        chunks = [c async for c in stream]
    assert "".join(c.text for c in chunks) == "hello big world"
    assert len(chunks) > 2
    assert all(c.usage is None for c in chunks[:-1])
    assert chunks[-1].usage is not None
    assert chunks[-1].finish_reason == "stop"


async def test_test_engine_prefix_cache_reports_shared_prefix_and_live_events() -> None:
    events: list[CacheEvent] = []
    engine = TestEngine(response="ok", prefix_cache=True)
    assert engine.subscribe_cache_events(events.append) is not None
    first = await engine.generate(_chat("first question"))
    second = await engine.generate(_chat("second question"))
    assert first.usage.cached_tokens == 0
    shared = simple_tokenize("<|system|>\nbe brief\n<|user|>\n")
    assert second.usage.cached_tokens == len(shared)
    assert second.usage.prompt_tokens == second.usage.cached_tokens + second.usage.computed_tokens
    assert [type(e) for e in events] == [LiveContext, LiveContext]
    assert events[-1] == LiveContext(tuple(simple_tokenize(await engine.render(_chat("second question")))))
    assert engine.capabilities.prefix_cache == "exact"
    assert engine.cached_prefix_len(simple_tokenize(await engine.render(_chat("second question")))) == (
        second.usage.prompt_tokens - 1
    )


async def test_closed_test_engine_raises_unavailable() -> None:
    engine = TestEngine()
    await engine.aclose()
    with pytest.raises(EngineUnavailableError, match="closed"):
        await engine.generate(GenerationRequest(prompt="x"))


async def test_function_engine_calls_sync_function_with_request() -> None:
    engine = FunctionEngine(lambda r: f"len={len(r.prompt or '')}")
    completion = await engine.generate(GenerationRequest(prompt="abcd"))
    assert completion.text == "len=4"
    assert completion.usage.prompt_tokens == 1


async def test_function_engine_awaits_async_function() -> None:
    async def answer(request: GenerationRequest) -> str:
        return "async " + (request.prompt or "")

    engine = FunctionEngine(answer)
    assert (await engine.generate(GenerationRequest(prompt="hi"))).text == "async hi"


async def test_function_engine_passes_completion_through_unchanged() -> None:
    fixed = Completion("done", Usage(prompt_tokens=7, cached_tokens=3, computed_tokens=4), "length", "m")
    engine = FunctionEngine(lambda r: fixed)
    assert await engine.generate(GenerationRequest(prompt="x")) == fixed
    async with engine.stream(GenerationRequest(prompt="x")) as stream:
        chunks = [c async for c in stream]
    assert chunks[-1].usage == fixed.usage


async def test_function_engine_rejects_wrong_return_type() -> None:
    engine = FunctionEngine(lambda r: 42)  # type: ignore[arg-type,return-value]
    with pytest.raises(EngineRequestError, match="returned int"):
        await engine.generate(GenerationRequest(prompt="x"))


async def test_render_applies_fixed_template_for_messages() -> None:
    engine = TestEngine()
    assert (
        await engine.render(GenerationRequest(messages=(Message("user", "hi"),)))
        == "<|user|>\nhi\n<|assistant|>\n"
    )
    assert await engine.render(GenerationRequest(prompt="raw")) == "raw"
