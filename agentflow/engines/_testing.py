"""Test doubles that ship with the library: ``TestEngine`` (deterministic) and ``FunctionEngine``.

Neither touches a model or the network. Both render chat messages with a small fixed template, count tokens
with a simple word/punctuation/whitespace tokenizer, measure real timings, support ``stream`` and remember
every request they served (``engine.requests``) so tests can assert on what was asked.

``TestEngine`` can also simulate an exact prefix cache with one live context (``prefix_cache=True``): each
request reports as ``cached_tokens`` the prefix it shares with the previous prompt, and a ``cache_listener``
receives the same ``live`` events the llama.cpp engine emits. Scheduler tests use this.
"""

from __future__ import annotations

import inspect
import json
import re
import time
import zlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import anyio

from agentflow.errors import EngineRequestError, EngineUnavailableError

from ._schema_example import example_from_schema
from ._snapshots import CacheEvent, CacheListener, common_prefix_len
from ._types import Capabilities, Chunk, Completion, GenerationRequest, Usage

__all__ = [
    "FunctionEngine",
    "FunctionHandler",
    "TestEngine",
    "render_messages",
    "simple_tokenize",
]

_TOKEN_RE = re.compile(r"\s+|\w+|[^\w\s]", re.UNICODE)
_VOCAB = 50_000


def simple_tokenize(text: str) -> list[int]:
    """Token ids of ``text`` for the test engines: one token per word, punctuation mark or whitespace run.

    Ids are a stable hash of the piece, so equal text always gives equal tokens and a shared text prefix
    (ending at a piece boundary) gives a shared token prefix.

    >>> simple_tokenize("a b") == simple_tokenize("a b")
    True
    >>> len(simple_tokenize("Hello, world!"))
    5
    """
    return [zlib.crc32(piece.encode("utf-8")) % _VOCAB for piece in _TOKEN_RE.findall(text)]


def _pieces(text: str) -> list[str]:
    return _TOKEN_RE.findall(text)


def render_messages(request: GenerationRequest) -> str:
    """The prompt text the test engines feed their "model": the raw prompt, or messages in a fixed template.

    >>> from agentflow.engines import Message
    >>> render_messages(GenerationRequest(messages=(Message("user", "hi"),)))
    '<|user|>\\nhi\\n<|assistant|>\\n'
    """
    if request.prompt is not None:
        return request.prompt
    assert request.messages is not None
    parts = [f"<|{m.role}|>\n{m.content}\n" for m in request.messages]
    return "".join(parts) + "<|assistant|>\n"


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

    def __init__(self, *, name: str, prefix_cache: bool) -> None:
        self._name = name
        self._prefix_cache = prefix_cache
        # Every request served, in arrival order; lives as long as the engine.
        self.requests: list[GenerationRequest] = []
        # Tokens of the simulated live context (prefix_cache=True only).
        self._live: tuple[int, ...] = ()
        self._closed = False
        self.cache_listener: CacheListener | None = None

    @property
    def name(self) -> str:
        """The engine's name."""
        return self._name

    @property
    def capabilities(self) -> Capabilities:
        """Declared capabilities: structured output, streaming, optionally an exact prefix cache."""
        return Capabilities(
            prefix_cache="exact" if self._prefix_cache else "none",
            slots=1,
            structured_output=True,
            priority=False,
            streaming=True,
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

    async def aclose(self) -> None:
        """Mark the engine closed; later requests fail."""
        self._closed = True

    async def generate(self, request: GenerationRequest) -> Completion:
        """Produce the whole completion (a ``Completion`` from the answer function is returned as is)."""
        start, prompt_tokens, cached, answer = await self._begin(request)
        if isinstance(answer, Completion):
            return answer
        text, truncated = self._shape(answer, request)
        elapsed = time.perf_counter() - start
        usage = self._usage(prompt_tokens, cached, text, elapsed, elapsed)
        return Completion(text, usage, "length" if truncated else "stop", self._name)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Chunk]:
        """Yield the answer piece by piece; the last chunk carries usage and finish reason."""
        start, prompt_tokens, cached, answer = await self._begin(request)
        if isinstance(answer, Completion):
            yield Chunk(answer.text)
            yield Chunk("", usage=answer.usage, finish_reason=answer.finish_reason)
            return
        text, truncated = self._shape(answer, request)
        first = 0.0
        for i, piece in enumerate(_pieces(text)):
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
        pieces = _pieces(text)
        if len(pieces) > request.max_tokens:
            return "".join(pieces[: request.max_tokens]), True
        return text, False

    def _use_cache(self, prompt_tokens: list[int]) -> int:
        if not self._prefix_cache:
            return 0
        cached = self.cached_prefix_len(prompt_tokens)
        self._live = tuple(prompt_tokens)
        if self.cache_listener is not None:
            self.cache_listener(CacheEvent("live", self._live))
        return cached

    def _check_open(self) -> None:
        if self._closed:
            raise EngineUnavailableError(f"engine {self._name!r} is closed; create a new one")

    @abstractmethod
    async def _answer(self, request: GenerationRequest) -> str | Completion:
        """The answer for one request: text shaped like model output, or a finished ``Completion``."""


class TestEngine(_SimulatedEngine):
    """A deterministic engine for tests and examples.

    Plain requests are answered with ``response`` (a fixed text, or a function of the request); by default the
    engine echoes the last user message (or the raw prompt). Requests with a ``json_schema`` get a valid
    instance of the schema, serialized as JSON (see ``example_from_schema``), unless ``response`` is a function.

    Args:
        response: Fixed answer text or ``fn(request) -> str``; ``None`` echoes ``"echo: <last user text>"``.
        name: The engine name.
        prefix_cache: Simulate one live context with exact prefix reuse (usage and ``live`` cache events).

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
    ) -> None:
        super().__init__(name=name, prefix_cache=prefix_cache)
        self._response = response

    async def _answer(self, request: GenerationRequest) -> str:
        if callable(self._response):
            return self._response(request)
        if request.json_schema is not None:
            return json.dumps(example_from_schema(request.json_schema))
        if self._response is not None:
            return self._response
        return f"echo: {_last_text(request)}"


FunctionHandler = Callable[[GenerationRequest], str | Completion | Awaitable[str | Completion]]
"""What ``FunctionEngine`` calls: sync or async, returns the answer text or a whole ``Completion``."""


class FunctionEngine(_SimulatedEngine):
    """An engine whose answers come from your function.

    A returned string is treated like model output (stop strings and ``max_tokens`` apply, usage is counted);
    a returned ``Completion`` is passed through unchanged.

    Args:
        fn: ``fn(request) -> str | Completion``, sync or async.
        name: The engine name.
        prefix_cache: Simulate one live context with exact prefix reuse.

    Example:
        >>> import anyio
        >>> from agentflow.engines import GenerationRequest
        >>> engine = FunctionEngine(lambda r: (r.prompt or "").upper())
        >>> anyio.run(engine.generate, GenerationRequest(prompt="shout")).text
        'SHOUT'
    """

    def __init__(self, fn: FunctionHandler, *, name: str = "function", prefix_cache: bool = False) -> None:
        super().__init__(name=name, prefix_cache=prefix_cache)
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
