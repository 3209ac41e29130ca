"""``WrapperEngine``: the base of engine middleware (scheduler, router, recorder), delegating to a wrapped engine.

A wrapper is itself an ``Engine``. The base forwards everything to the engine it wraps: ``name``,
``capabilities``, ``generate``, ``stream``, ``tokenize``, ``render``, ``aclose``, and the optional protocols
(``CacheEventSource``, ``PrefixPinning``, ``Prefilling``, ``CacheSalting``). A subclass overrides what it
changes and calls ``self.wrapped`` for the rest::

    class Shouting(WrapperEngine):
        async def generate(self, request: GenerationRequest) -> Completion:
            completion = await self.wrapped.generate(request)
            return replace(completion, text=completion.text.upper())

The optional protocols are always present on a wrapper (so a wrapper of a wrapper passes them on); over an engine
without one, a wrapper answers what such an engine would: no cache events (``None``), pins not kept (``False``),
a prefill run as a one-token generation, no cache salt (``None``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from ._protocols import CacheEventSource, CacheListener, CacheSalting, Prefilling, PrefixPinning, Unsubscribe
from ._types import Capabilities, ChunkStream, Completion, Engine, GenerationRequest, Usage, open_stream

__all__ = ["WrapperEngine"]


class WrapperEngine:
    """An ``Engine`` that delegates to the engine it wraps; subclass it to build middleware.

    Args:
        wrapped: The engine every call goes to unless a subclass overrides it.

    Example:
        >>> import anyio
        >>> from agentflow.engines import GenerationRequest, TestEngine
        >>> engine = WrapperEngine(TestEngine(response="hi"))
        >>> anyio.run(engine.generate, GenerationRequest(prompt="hello")).text
        'hi'
    """

    def __init__(self, wrapped: Engine) -> None:
        self._wrapped = wrapped  # lives as long as the wrapper; closed by aclose()

    @property
    def wrapped(self) -> Engine:
        """The engine this one delegates to."""
        return self._wrapped

    # ------------------------------------------------------------------ Engine

    @property
    def name(self) -> str:
        """The wrapped engine's name."""
        return self._wrapped.name

    @property
    def capabilities(self) -> Capabilities:
        """The wrapped engine's capabilities."""
        return self._wrapped.capabilities

    async def generate(self, request: GenerationRequest) -> Completion:
        """The wrapped engine's completion."""
        return await self._wrapped.generate(request)

    def stream(self, request: GenerationRequest) -> ChunkStream:
        """The wrapped engine's stream."""
        return open_stream(self._wrapped, request)

    async def tokenize(self, text: str) -> Sequence[int]:
        """The wrapped engine's tokens."""
        return await self._wrapped.tokenize(text)

    async def render(self, request: GenerationRequest) -> str:
        """The wrapped engine's prompt text."""
        return await self._wrapped.render(request)

    async def aclose(self) -> None:
        """Close the wrapped engine."""
        await self._wrapped.aclose()

    # ------------------------------------------------------------------ optional protocols

    def subscribe_cache_events(self, listener: CacheListener) -> Unsubscribe | None:
        """Subscribe to the wrapped engine's cache events (``None`` when it reports none)."""
        if isinstance(self._wrapped, CacheEventSource):
            return self._wrapped.subscribe_cache_events(listener)
        return None

    def pin_prefix(self, tokens: Sequence[int], ttl_s: float) -> bool:
        """Pin ``tokens`` in the wrapped engine (``False`` when it cannot pin)."""
        if isinstance(self._wrapped, PrefixPinning):
            return self._wrapped.pin_prefix(tokens, ttl_s)
        return False

    def unpin_prefix(self, tokens: Sequence[int]) -> bool:
        """Release a pin in the wrapped engine (``False`` when it was not pinned or the engine cannot pin)."""
        if isinstance(self._wrapped, PrefixPinning):
            return self._wrapped.unpin_prefix(tokens)
        return False

    async def prefill(self, request: GenerationRequest) -> Usage:
        """Prefill with the wrapped engine; without a native prefill, generate one token instead."""
        if isinstance(self._wrapped, Prefilling):
            return await self._wrapped.prefill(request)
        return (await self._wrapped.generate(replace(request, max_tokens=1))).usage

    def cache_salt(self, tenant: str | None) -> str | None:
        """The wrapped engine's cache salt for ``tenant`` (``None`` when it does not salt)."""
        if isinstance(self._wrapped, CacheSalting):
            return self._wrapped.cache_salt(tenant)
        return None
