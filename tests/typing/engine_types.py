"""Static type checks for engines (run by mypy --strict; see tests/unit/test_typing.py).

Nothing here runs: mypy verifies that every engine and wrapper is an ``Engine`` with the stream context
manager, and the types the optional protocols and cache events give.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import assert_never, assert_type

from agentflow.engines import (
    CacheEvent,
    Chunk,
    Engine,
    FunctionEngine,
    GenerationRequest,
    LiveContext,
    LlamaCppEngine,
    OpenAIEngine,
    PrefixPinning,
    RecordingEngine,
    ReplayEngine,
    SnapshotEvicted,
    SnapshotStored,
    TestEngine,
    Usage,
    VLLMEngine,
    WrapperEngine,
)
from agentflow.scheduler import PrefixRouter, Scheduler


def every_engine_is_an_engine(
    llama: LlamaCppEngine, openai: OpenAIEngine, vllm: VLLMEngine, replay: ReplayEngine
) -> list[Engine]:
    test = TestEngine()
    return [
        llama,
        openai,
        vllm,
        replay,
        test,
        FunctionEngine(lambda request: "ok"),
        WrapperEngine(test),
        RecordingEngine(test, "rec.jsonl"),
        PrefixRouter([test]),
        Scheduler(test),
    ]


async def streams(engine: Engine, request: GenerationRequest) -> None:
    async with engine.stream(request) as chunks:
        assert_type(chunks, AsyncIterator[Chunk])
        async for chunk in chunks:
            assert_type(chunk, Chunk)
    async with Scheduler(engine).stream(request) as scheduled:
        assert_type(scheduled, AsyncIterator[Chunk])


async def optional_protocols(engine: Engine, request: GenerationRequest) -> None:
    wrapper = WrapperEngine(engine)
    assert_type(wrapper.wrapped, Engine)
    assert_type(wrapper.subscribe_cache_events(print), Callable[[], None] | None)
    assert_type(await wrapper.prefill(request), Usage)
    if isinstance(engine, PrefixPinning):
        assert_type(engine.pin_prefix((1, 2), 5.0), bool)


def cache_event_tokens(event: CacheEvent) -> tuple[int, ...]:
    match event:
        case SnapshotStored(tokens) | SnapshotEvicted(tokens) | LiveContext(tokens):
            assert_type(tokens, tuple[int, ...])
            return tokens
        case _:
            assert_never(event)
