"""Optional engine protocols: what middleware (the scheduler) may use beyond ``Engine``, and typed cache events.

An engine implements ``Engine``; it may also implement any of these runtime-checkable protocols. Middleware
asks with ``isinstance(engine, Protocol)``, never by probing attributes. Who calls what, and when:

* ``CacheEventSource`` (``LlamaCppEngine``; ``TestEngine`` and ``FunctionEngine`` with a simulated cache):
  ``Scheduler`` subscribes once, when it chooses its cache model (at its first request), and calls the returned
  handle in ``aclose``.
* ``PrefixPinning`` (``LlamaCppEngine``): ``Scheduler.pin`` right after an agent's turn ended in a tool call,
  ``Scheduler.unpin`` when the tool returned.
* ``Prefilling`` (``LlamaCppEngine``): ``Scheduler.prewarm``, when the engine is idle and a prewarm is queued.
* ``CacheSalting`` (``OpenAIEngine``, ``VLLMEngine``): ``Scheduler``, for every request (the request's namespace
  in the cache model).
* ``CacheMirror`` (``RadixTree`` in mirror mode): ``Scheduler``, before every decision, with the engine's cache
  events received since the last one.

Every ``WrapperEngine`` implements the four engine protocols and answers with the wrapped engine's answer, or
with what an engine without the feature answers: no subscription (``None``), a pin not kept (``False``), a prefill run as a
one-token generation, no salt (``None``).

Cache events are one frozen class per kind (``SnapshotStored``, ``SnapshotEvicted``, ``LiveContext``); the union
``CacheEvent`` is read with ``match`` and ``assert_never``::

    engine      : live context L = | system | history A |      snapshots: {S1, S2}
    LiveContext(L')                  the live context now holds L' (L is gone unless a snapshot keeps it)
    SnapshotStored(S3)               the snapshot store now also holds S3
    SnapshotEvicted(S1)              ... and no longer S1
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias, runtime_checkable

from ._types import GenerationRequest, Usage

__all__ = [
    "CacheEvent",
    "CacheEventSource",
    "CacheListener",
    "CacheListeners",
    "CacheMirror",
    "CacheSalting",
    "LiveContext",
    "Prefilling",
    "PrefixPinning",
    "SnapshotEvicted",
    "SnapshotStored",
    "Unsubscribe",
]


@dataclass(frozen=True, slots=True)
class SnapshotStored:
    """The engine's snapshot store now holds the KV of ``tokens`` (a spilled live context).

    Attributes:
        tokens: The token prefix whose KV the snapshot holds.
    """

    tokens: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SnapshotEvicted:
    """The engine's snapshot store dropped the snapshot of ``tokens``.

    Attributes:
        tokens: The key of the dropped snapshot.
    """

    tokens: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class LiveContext:
    """The engine's single live context now holds exactly ``tokens`` (empty: nothing).

    What it held before is gone, unless a snapshot keeps it (a ``SnapshotStored`` event came first).

    Attributes:
        tokens: The tokens whose KV the live context holds now.
    """

    tokens: tuple[int, ...]


CacheEvent: TypeAlias = SnapshotStored | SnapshotEvicted | LiveContext
"""A change in what an engine holds in its KV cache; replayed in order, the events mirror the cache."""

CacheListener = Callable[[CacheEvent], None]
"""Receives an engine's cache events in the order they happen, on the event loop; keep it cheap."""

Unsubscribe = Callable[[], None]
"""Stops the delivery of cache events to one listener; calling it again does nothing."""


class CacheListeners:
    """The listeners subscribed to one engine's cache events; what engines build ``subscribe_cache_events`` on.

    Example:
        >>> listeners = CacheListeners()
        >>> seen: list[CacheEvent] = []
        >>> stop = listeners.subscribe(seen.append)
        >>> listeners.emit(LiveContext((1, 2)))
        >>> stop()
        >>> listeners.emit(LiveContext(()))
        >>> seen
        [LiveContext(tokens=(1, 2))]
    """

    def __init__(self) -> None:
        # Subscription handle -> listener, in subscription order; an entry lives until its handle is called.
        self._listeners: dict[object, CacheListener] = {}

    def subscribe(self, listener: CacheListener) -> Unsubscribe:
        """Deliver every later event to ``listener``; returns the handle that stops it."""
        key = object()
        self._listeners[key] = listener

        def unsubscribe() -> None:
            self._listeners.pop(key, None)

        return unsubscribe

    def emit(self, event: CacheEvent) -> None:
        """Deliver ``event`` to every listener, in subscription order."""
        for listener in list(self._listeners.values()):
            listener(event)

    def __len__(self) -> int:
        return len(self._listeners)


@runtime_checkable
class CacheEventSource(Protocol):
    """An engine that reports what its exact prefix cache holds, so a scheduler can mirror it.

    Called by ``Scheduler`` once, when it chooses its cache model (an engine with ``prefix_cache="exact"``);
    the scheduler calls the returned handle in ``aclose``. Any number of listeners may subscribe at once.
    """

    def subscribe_cache_events(self, listener: CacheListener) -> Unsubscribe | None:
        """Deliver every later cache event to ``listener`` (on the event loop, in order).

        Returns:
            The handle that stops the delivery; ``None`` when this engine reports no events (a wrapper over an
            engine that does not, a test engine without a simulated cache): nothing will ever be delivered.
        """
        ...


@runtime_checkable
class PrefixPinning(Protocol):
    """An engine that can keep a prefix's KV for a while (an agent paused on a tool call will resume it).

    Called by ``Scheduler.pin`` right after a turn that ended in a tool call and by ``Scheduler.unpin`` when the
    tool returned; both are cheap and synchronous.
    """

    def pin_prefix(self, tokens: Sequence[int], ttl_s: float) -> bool:
        """Keep the KV of ``tokens`` for ``ttl_s`` seconds (re-pinning extends the TTL).

        Returns:
            Whether the engine keeps it (``False``: it cannot, e.g. a wrapper over an engine without pins).
        """
        ...

    def unpin_prefix(self, tokens: Sequence[int]) -> bool:
        """Release a pin before its TTL; ``False`` if ``tokens`` were not pinned."""
        ...


@runtime_checkable
class Prefilling(Protocol):
    """An engine that can evaluate a prompt into its cache without generating (pre-warm a prefix).

    Called by ``Scheduler.prewarm`` when the engine is idle and an agent paused on a tool call registered the
    known part of its next prompt.
    """

    async def prefill(self, request: GenerationRequest) -> Usage:
        """Evaluate ``request``'s prompt into the cache.

        Returns:
            The usage of the prefill (``completion_tokens`` is 0 for a native prefill, 1 for one emulated with a
            one-token generation).
        """
        ...


@runtime_checkable
class CacheSalting(Protocol):
    """An engine that salts its prefix cache per tenant (vLLM's ``cache_salt``), so tenants never share it.

    Called by ``Scheduler`` for every request: the scheduler's block model keys blocks by the same salt, so it
    never predicts a hit across tenants.
    """

    def cache_salt(self, tenant: str | None) -> str | None:
        """The salt this engine sends for ``tenant``'s requests (``None``: unsalted, shared with all)."""
        ...


@runtime_checkable
class CacheMirror(Protocol):
    """A model of an engine's exact prefix cache that follows the engine's ``CacheEvent``s.

    Called by ``Scheduler`` on the event loop with the events received since its last decision, in order,
    before every decision (a ``RadixTree`` in mirror mode).
    """

    def apply(self, event: CacheEvent) -> int:
        """Apply one engine cache event.

        Returns:
            How many tokens of the prefix the event dropped (an evicted snapshot, a replaced live context) are
            no longer cached anywhere (0 for a stored prefix, or when a longer one still holds them).
        """
        ...
