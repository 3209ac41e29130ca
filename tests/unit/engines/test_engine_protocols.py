"""The optional engine protocols: who implements them, what wrappers answer, and streams as context managers."""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable

import pytest
from _engines import PinningEngine

from agentflow.engines import (
    CacheEvent,
    CacheEventSource,
    CacheListeners,
    CacheSalting,
    Chunk,
    ChunkStream,
    Engine,
    FunctionEngine,
    GenerationRequest,
    LiveContext,
    LlamaCppEngine,
    OpenAIEngine,
    Prefilling,
    PrefixPinning,
    RecordingEngine,
    ReplayEngine,
    TestEngine,
    VLLMEngine,
    WrapperEngine,
    closing_stream,
)
from agentflow.engines._ray import RayEngine
from agentflow.scheduler import PrefixRouter, Scheduler

pytestmark = pytest.mark.anyio

OPTIONAL = (CacheEventSource, PrefixPinning, Prefilling, CacheSalting)

CLAIMS: dict[type[object], set[type[object]]] = {
    LlamaCppEngine: {CacheEventSource, PrefixPinning, Prefilling},
    OpenAIEngine: {CacheSalting},
    VLLMEngine: {CacheSalting},
    TestEngine: {CacheEventSource},
    FunctionEngine: {CacheEventSource},
    ReplayEngine: set(),
    RayEngine: set(),
    WrapperEngine: set(OPTIONAL),
    RecordingEngine: set(OPTIONAL),
    Scheduler: set(OPTIONAL),
    PrefixRouter: set(OPTIONAL),
}


@pytest.mark.parametrize("cls", list(CLAIMS), ids=lambda c: c.__name__)
def test_engine_classes_satisfy_exactly_the_protocols_they_claim(cls: type[object]) -> None:
    assert {p for p in OPTIONAL if issubclass(cls, p)} == CLAIMS[cls]


def test_instances_satisfy_the_protocols_of_their_class() -> None:
    assert isinstance(PinningEngine(), PrefixPinning) and isinstance(PinningEngine(), Prefilling)
    assert not isinstance(TestEngine(), PrefixPinning) and not isinstance(TestEngine(), Prefilling)
    assert not isinstance(TestEngine(), CacheSalting)
    assert isinstance(TestEngine(), CacheEventSource)


async def test_wrapper_passes_the_optional_protocols_of_the_wrapped_engine_on() -> None:
    inner = PinningEngine()
    wrapper = WrapperEngine(inner)
    assert wrapper.pin_prefix((1, 2), 5.0) is True and inner.pins == {(1, 2): 5.0}
    assert wrapper.unpin_prefix((1, 2)) is True and inner.pins == {}
    assert (await wrapper.prefill(GenerationRequest(prompt="p q"))).computed_tokens == 3
    assert [r.prompt for r in inner.prefilled] == ["p q"]
    events: list[CacheEvent] = []
    stop = wrapper.subscribe_cache_events(events.append)
    assert stop is not None
    await inner.generate(GenerationRequest(prompt="a b"))
    stop()
    await inner.generate(GenerationRequest(prompt="c"))
    assert events == [LiveContext(tuple(await inner.tokenize("a b")))]


async def test_wrapper_answers_like_an_engine_without_the_protocol_when_the_wrapped_one_lacks_it() -> None:
    inner = TestEngine(response="x")
    wrapper = RecordingEngine(WrapperEngine(inner), "/dev/null")
    assert wrapper.pin_prefix((1, 2), 5.0) is False
    assert wrapper.unpin_prefix((1, 2)) is False
    assert wrapper.subscribe_cache_events(lambda event: None) is None  # TestEngine without a cache
    assert wrapper.cache_salt("tenant-a") is None
    usage = await wrapper.prefill(GenerationRequest(prompt="warm this", max_tokens=50))
    assert usage.completion_tokens == 1  # emulated by a one-token generation
    assert inner.requests[-1].max_tokens == 1


def test_wrapper_delegates_name_capabilities_and_the_wrapped_engine() -> None:
    inner = TestEngine(name="inner", prefix_cache=True)
    wrapper = WrapperEngine(inner)
    assert wrapper.wrapped is inner
    assert wrapper.name == "inner"
    assert wrapper.capabilities == inner.capabilities
    assert RecordingEngine(inner, "/dev/null").name == "record:inner"


def test_cache_listeners_deliver_in_order_until_unsubscribed() -> None:
    listeners = CacheListeners()
    first: list[CacheEvent] = []
    second: list[CacheEvent] = []
    stop_first = listeners.subscribe(first.append)
    listeners.subscribe(second.append)
    listeners.emit(LiveContext((1,)))
    stop_first()
    stop_first()  # idempotent
    listeners.emit(LiveContext((2,)))
    assert first == [LiveContext((1,))]
    assert second == [LiveContext((1,)), LiveContext((2,))]
    assert len(listeners) == 1


class Noting(TestEngine):
    """A TestEngine whose streams count how often they were closed."""

    __test__ = False

    def __init__(self) -> None:
        super().__init__(response="one two three four")
        self.closed = 0

    def stream(self, request: GenerationRequest) -> ChunkStream:
        return closing_stream(self._noting(super().stream(request)))

    async def _noting(self, stream: ChunkStream) -> AsyncGenerator[Chunk, None]:
        try:
            async with stream as chunks:
                async for chunk in chunks:
                    yield chunk
        finally:
            self.closed += 1


WRAPS: dict[str, Callable[[Engine], Engine]] = {
    "engine": lambda e: e,
    "wrapper": WrapperEngine,
    "recording": lambda e: RecordingEngine(e, "/dev/null"),
    "router": lambda e: PrefixRouter([e]),
    "scheduler": Scheduler,
    "scheduler over recording over router": lambda e: Scheduler(
        RecordingEngine(PrefixRouter([e]), "/dev/null")
    ),
}


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.parametrize("wrap", list(WRAPS))
async def test_leaving_a_stream_early_closes_the_engine_stream_as_the_block_exits(
    wrap: str, anyio_backend: str
) -> None:
    inner = Noting()
    engine = WRAPS[wrap](inner)
    async with engine.stream(GenerationRequest(prompt="q", max_tokens=50)) as chunks:
        async for chunk in chunks:
            assert chunk.text == "one"
            break
        assert inner.closed == 0
    assert inner.closed == 1  # no checkpoint in between: closed by the `async with`, not by the collector


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_stream_read_to_the_end_closes_once(anyio_backend: str) -> None:
    inner = Noting()
    async with Scheduler(inner).stream(GenerationRequest(prompt="q", max_tokens=50)) as chunks:
        texts = [c.text async for c in chunks]
    assert "".join(texts) == "one two three four"
    assert inner.closed == 1


class _GeneratorStreamEngine(TestEngine):
    """A user engine written against the old protocol: ``stream`` is an async generator."""

    async def stream(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:  # type: ignore[override]
        yield Chunk(text="old")


@pytest.mark.parametrize("wrapper", ["bare", "scheduler", "router"])
async def test_old_style_generator_stream_is_a_config_error_naming_the_fix(wrapper: str) -> None:
    from agentflow.engines import open_stream
    from agentflow.errors import ConfigError

    old = _GeneratorStreamEngine()
    engine: Engine = {"bare": old, "scheduler": Scheduler(old), "router": PrefixRouter([old])}[wrapper]
    request = GenerationRequest(prompt="hi", max_tokens=4)
    with pytest.raises(
        ConfigError, match=r"_GeneratorStreamEngine\.stream\(\) returned async_generator"
    ) as caught:
        async with open_stream(engine, request) as chunks:
            async for _ in chunks:
                pass
    assert "closing_stream(self._chunks(request))" in str(caught.value)
