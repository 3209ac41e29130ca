"""Test doubles that ship with the library: ``TestEngine`` (deterministic) and ``FunctionEngine``.

Neither touches a model or the network. Both render chat messages with a small fixed template, count tokens
with a simple word/punctuation/whitespace tokenizer, measure real timings, support ``stream`` and remember
every request they served (``engine.requests``) so tests can assert on what was asked.

``TestEngine`` can also simulate an exact prefix cache with one live context (``prefix_cache=True``): each
request reports as ``cached_tokens`` the prefix it shares with the previous prompt, and the listeners of
``subscribe_cache_events`` receive the same ``LiveContext`` events the llama.cpp engine emits. Scheduler tests
use this.

Tool calls: ``TestEngine`` answers a request whose ``tool_choice`` forces a call (``required``: the first
tool; ``NamedToolChoice``: that tool) with one call whose arguments are an example of the tool's schema;
``FunctionEngine`` passes on the ``tool_calls`` of the ``Completion`` its function returns. Both declare
``Capabilities.tool_calling`` only when built with ``tool_calling=True``.
"""

from __future__ import annotations

import inspect
import json
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence

import anyio

from agentflow.errors import EngineRequestError, EngineUnavailableError

from ._protocols import CacheListener, CacheListeners, LiveContext, Unsubscribe
from ._schema_example import example_from_schema
from ._snapshots import common_prefix_len
from ._text import render_messages, simple_tokenize, text_pieces
from ._types import (
    Capabilities,
    Chunk,
    ChunkStream,
    Completion,
    FinishReason,
    GenerationRequest,
    NamedToolChoice,
    ToolCallRequest,
    Usage,
    closing_stream,
)

__all__ = ["FunctionEngine", "FunctionHandler", "TestEngine"]


def _last_text(request: GenerationRequest) -> str:
    if request.prompt is not None:
        return request.prompt
    assert request.messages is not None
    users = [m.content for m in request.messages if m.role == "user"]
    return users[-1] if users else (request.messages[-1].content if request.messages else "")


def _apply_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cut = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text[:cut], True) if cut >= 0 else (text, False)


class _SimulatedEngine(ABC):
    """Shared behaviour of the test doubles: rendering, tokenizing, usage, chunking and request log."""

    def __init__(self, *, name: str, prefix_cache: bool, tool_calling: bool = False) -> None:
        self._name = name
        self._prefix_cache = prefix_cache
        self._tool_calling = tool_calling
        # Every request served, in arrival order; lives as long as the engine.
        self.requests: list[GenerationRequest] = []
        # Tokens of the simulated live context (prefix_cache=True only).
        self._live: tuple[int, ...] = ()
        self._closed = False
        # Subscribers to the simulated cache's events; each lives until its handle is called.
        self._listeners = CacheListeners()

    @property
    def name(self) -> str:
        """The engine's name."""
        return self._name

    @property
    def capabilities(self) -> Capabilities:
        """Declared capabilities: structured output, streaming, optionally an exact prefix cache and tool
        calling."""
        return Capabilities(
            prefix_cache="exact" if self._prefix_cache else "none",
            slots=1,
            structured_output=True,
            priority=False,
            streaming=True,
            tool_calling=self._tool_calling,
        )

    async def tokenize(self, text: str) -> Sequence[int]:
        """Token ids from ``simple_tokenize``."""
        return simple_tokenize(text)

    async def render(self, request: GenerationRequest) -> str:
        """The prompt text (see ``render_messages``)."""
        return render_messages(request)

    def cached_prefix_len(self, tokens: Sequence[int]) -> int:
        """Tokens of ``tokens`` the simulated cache would reuse now (0 without ``prefix_cache``)."""
        if not self._prefix_cache or not tokens:
            return 0
        return min(common_prefix_len(self._live, tokens), len(tokens) - 1)

    def subscribe_cache_events(self, listener: CacheListener) -> Unsubscribe | None:
        """Deliver the simulated cache's ``LiveContext`` events to ``listener``; ``None`` without
        ``prefix_cache`` (there is no cache to report on)."""
        if not self._prefix_cache:
            return None
        return self._listeners.subscribe(listener)

    @property
    def cache_subscribers(self) -> int:
        """How many listeners receive the simulated cache's events now."""
        return len(self._listeners)

    async def aclose(self) -> None:
        """Mark the engine closed; later requests fail."""
        self._closed = True

    async def generate(self, request: GenerationRequest) -> Completion:
        """Produce the whole completion (a ``Completion`` from the answer function is returned as is)."""
        start, prompt_tokens, cached, answer = await self._begin(request)
        if isinstance(answer, Completion):
            return answer
        calls = self._calls_for(request)
        text, truncated = ("", False) if calls else self._shape(answer, request)
        elapsed = time.perf_counter() - start
        usage = self._usage(prompt_tokens, cached, text + _calls_text(calls), elapsed, elapsed)
        finish: FinishReason = "tool_calls" if calls else "length" if truncated else "stop"
        return Completion(text, usage, finish, self._name, calls)

    def stream(self, request: GenerationRequest) -> ChunkStream:
        """Hand out the answer piece by piece; the last chunk carries usage and finish reason."""
        return closing_stream(self._chunks(request))

    async def _chunks(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        start, prompt_tokens, cached, answer = await self._begin(request)
        if isinstance(answer, Completion):
            yield Chunk(answer.text, tool_calls=answer.tool_calls)
            yield Chunk("", usage=answer.usage, finish_reason=answer.finish_reason)
            return
        calls = self._calls_for(request)
        if calls:
            total = time.perf_counter() - start
            yield Chunk("", tool_calls=calls)
            usage = self._usage(prompt_tokens, cached, _calls_text(calls), total, total)
            yield Chunk("", usage=usage, finish_reason="tool_calls")
            return
        text, truncated = self._shape(answer, request)
        first = 0.0
        for i, piece in enumerate(text_pieces(text)):
            if i == 0:
                first = time.perf_counter() - start
            yield Chunk(piece)
            await anyio.lowlevel.checkpoint()
        total = time.perf_counter() - start
        usage = self._usage(prompt_tokens, cached, text, first or total, total)
        yield Chunk("", usage=usage, finish_reason="length" if truncated else "stop")

    async def _begin(self, request: GenerationRequest) -> tuple[float, list[int], int, str | Completion]:
        self._check_open()
        start = time.perf_counter()
        self.requests.append(request)
        prompt_tokens = simple_tokenize(render_messages(request))
        cached = self._use_cache(prompt_tokens)
        return start, prompt_tokens, cached, await self._answer(request)

    @staticmethod
    def _usage(prompt_tokens: list[int], cached: int, text: str, ttft_s: float, total_s: float) -> Usage:
        return Usage(
            prompt_tokens=len(prompt_tokens),
            cached_tokens=cached,
            computed_tokens=len(prompt_tokens) - cached,
            completion_tokens=len(simple_tokenize(text)),
            queue_s=0.0,
            ttft_s=ttft_s,
            total_s=total_s,
        )

    def _shape(self, answer: str, request: GenerationRequest) -> tuple[str, bool]:
        """Apply stop strings, then ``max_tokens`` (plain text only; JSON answers stay valid)."""
        text, stopped = _apply_stop(answer, request.stop)
        if stopped or request.json_schema is not None:
            return text, False
        pieces = text_pieces(text)
        if len(pieces) > request.max_tokens:
            return "".join(pieces[: request.max_tokens]), True
        return text, False

    def _use_cache(self, prompt_tokens: list[int]) -> int:
        if not self._prefix_cache:
            return 0
        cached = self.cached_prefix_len(prompt_tokens)
        self._live = tuple(prompt_tokens)
        self._listeners.emit(LiveContext(self._live))
        return cached

    def _check_open(self) -> None:
        if self._closed:
            raise EngineUnavailableError(f"engine {self._name!r} is closed; create a new one")

    @abstractmethod
    async def _answer(self, request: GenerationRequest) -> str | Completion:
        """The answer for one request: text shaped like model output, or a finished ``Completion``."""

    def _calls_for(self, request: GenerationRequest) -> tuple[ToolCallRequest, ...]:
        """Tool calls to answer ``request`` with instead of a text answer (none by default)."""
        return ()


def _calls_text(calls: Sequence[ToolCallRequest]) -> str:
    return " ".join(f"{c.name} {c.arguments}" for c in calls)


class TestEngine(_SimulatedEngine):
    """A deterministic engine for tests and examples.

    Plain requests are answered with ``response`` (a fixed text, or a function of the request); by default the
    engine echoes the last user message (or the raw prompt). Requests with a ``json_schema`` get a valid
    instance of the schema, serialized as JSON (see ``example_from_schema``), unless ``response`` is a function.
    Requests whose ``tool_choice`` forces a call get one call of the forced tool (the first, for
    ``required``) with example arguments of its schema.

    Args:
        response: Fixed answer text or ``fn(request) -> str``; ``None`` echoes ``"echo: <last user text>"``.
        name: The engine name.
        prefix_cache: Simulate one live context with exact prefix reuse (usage and ``LiveContext`` cache events).
        tool_calling: Declare ``Capabilities.tool_calling`` (agents then use native tool calls).

    Example:
        >>> import anyio
        >>> from agentflow.engines import GenerationRequest
        >>> engine = TestEngine(response="hello there")
        >>> anyio.run(engine.generate, GenerationRequest(prompt="hi")).text
        'hello there'
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self,
        response: str | Callable[[GenerationRequest], str] | None = None,
        *,
        name: str = "test",
        prefix_cache: bool = False,
        tool_calling: bool = False,
    ) -> None:
        super().__init__(name=name, prefix_cache=prefix_cache, tool_calling=tool_calling)
        self._response = response

    async def _answer(self, request: GenerationRequest) -> str:
        if callable(self._response):
            return self._response(request)
        if request.json_schema is not None:
            return json.dumps(example_from_schema(request.json_schema))
        if self._response is not None:
            return self._response
        return f"echo: {_last_text(request)}"

    def _calls_for(self, request: GenerationRequest) -> tuple[ToolCallRequest, ...]:
        choice = request.tool_choice
        if not request.tools or choice in ("auto", "none"):
            return ()
        name = choice.name if isinstance(choice, NamedToolChoice) else request.tools[0].name
        spec = next(t for t in request.tools if t.name == name)
        arguments = json.dumps(example_from_schema(spec.parameters))
        return (ToolCallRequest(f"call_{len(self.requests)}_0", name, arguments),)


FunctionHandler = Callable[[GenerationRequest], str | Completion | Awaitable[str | Completion]]
"""What ``FunctionEngine`` calls: sync or async, returns the answer text or a whole ``Completion``."""


class FunctionEngine(_SimulatedEngine):
    """An engine whose answers come from your function.

    A returned string is treated like model output (stop strings and ``max_tokens`` apply, usage is counted);
    a returned ``Completion`` is passed through unchanged (its ``tool_calls`` too: return one with calls to
    script a model that calls tools).

    Args:
        fn: ``fn(request) -> str | Completion``, sync or async.
        name: The engine name.
        prefix_cache: Simulate one live context with exact prefix reuse.
        tool_calling: Declare ``Capabilities.tool_calling`` (agents then use native tool calls).

    Example:
        >>> import anyio
        >>> from agentflow.engines import GenerationRequest
        >>> engine = FunctionEngine(lambda r: (r.prompt or "").upper())
        >>> anyio.run(engine.generate, GenerationRequest(prompt="shout")).text
        'SHOUT'
    """

    def __init__(
        self,
        fn: FunctionHandler,
        *,
        name: str = "function",
        prefix_cache: bool = False,
        tool_calling: bool = False,
    ) -> None:
        super().__init__(name=name, prefix_cache=prefix_cache, tool_calling=tool_calling)
        self._fn = fn

    async def _answer(self, request: GenerationRequest) -> str | Completion:
        result = self._fn(request)
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, str | Completion):
            raise EngineRequestError(
                f"FunctionEngine function returned {type(result).__name__}; return a str or a Completion"
            )
        return result
