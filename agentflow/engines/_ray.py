"""Engine replicas as Ray actors: ``RayEngine`` is an ``Engine`` proxy of an actor that holds a real engine.

The actor builds its engine from a picklable factory (``functools.partial(LlamaCppEngine, n_threads=1)``), so the
model loads in the actor's process and its KV cache lives there across requests. The actor is an async actor:
its methods run on the actor's event loop, where the engine's own limiter serializes generations. Put several
behind a ``PrefixRouter`` to route requests to the replica that holds their prefix.

Errors keep their type (``EngineRequestError`` raised in the actor is raised by the proxy); a dead actor is an
``EngineUnavailableError``. Cancelling a call cancels the actor task. ``stream`` yields the whole completion as
one chunk (the capability says ``streaming=False``).
"""

from __future__ import annotations

import typing
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import anyio

from agentflow.errors import EngineUnavailableError
from agentflow.executors._ray import (
    PackedError,
    RayOptions,
    _require_ray,
    await_object_ref,
    pack_error,
    unpack_error,
)

from ._types import (
    Capabilities,
    Chunk,
    ChunkStream,
    Completion,
    Engine,
    GenerationRequest,
    closing_stream,
)

__all__ = ["RayEngine"]

T = TypeVar("T")

EngineFactory = Callable[[], Engine]
"""Builds the engine inside the actor (must pickle: a class, a ``functools.partial``, a module-level function)."""


async def _in_task_group(fn: Callable[..., Awaitable[T]], *args: object) -> T:
    """Run ``fn(*args)`` as a child task of an anyio task group.

    Ray cancels an actor task with a native asyncio cancel, which anyio's shielded scopes do not hold against; the
    engine relies on them (a llama.cpp step running in a worker thread must finish before its sampler is freed).
    A task group turns the native cancel of this (host) task into an anyio cancellation of the child, which
    respects the engine's shields, and waits for the child to clean up.
    """
    box: list[T] = []
    failed: list[Exception] = []

    async def child() -> None:
        try:
            box.append(await fn(*args))
        except Exception as exc:  # re-raised below as itself, not wrapped in an ExceptionGroup
            failed.append(exc)

    async with anyio.create_task_group() as tg:
        tg.start_soon(child)
    if failed:
        raise failed[0]
    return box[0]


class _EngineActor:
    """The Ray actor holding one engine; request methods return ``(True, value)`` or ``(False, PackedError)``."""

    def __init__(self, factory: EngineFactory) -> None:
        self._engine = factory()

    async def describe(self) -> tuple[str, Capabilities]:
        return self._engine.name, self._engine.capabilities

    async def generate(self, request: GenerationRequest) -> tuple[bool, object]:
        try:
            return True, await _in_task_group(self._engine.generate, request)
        except Exception as exc:
            return False, pack_error(exc)

    async def tokenize(self, text: str) -> tuple[bool, object]:
        try:
            return True, list(await _in_task_group(self._engine.tokenize, text))
        except Exception as exc:
            return False, pack_error(exc)

    async def render(self, request: GenerationRequest) -> tuple[bool, object]:
        try:
            return True, await _in_task_group(self._engine.render, request)
        except Exception as exc:
            return False, pack_error(exc)

    async def stats(self) -> tuple[bool, object]:
        stats = getattr(self._engine, "stats", None)
        return True, (stats() if callable(stats) else None)

    async def aclose(self) -> tuple[bool, object]:
        try:
            await self._engine.aclose()
        except Exception as exc:
            return False, pack_error(exc)
        return True, None


class RayEngine:
    """An ``Engine`` whose work runs in a Ray actor holding the real engine. Build one with :meth:`start`.

    Example:
        ``replica = await RayEngine.start(functools.partial(LlamaCppEngine, n_threads=1), options={"num_cpus": 1})``
    """

    def __init__(self, actor: Any, name: str, capabilities: Capabilities) -> None:
        self._actor = actor  # the Ray actor handle; the actor lives until aclose() kills it
        self._name = name
        self._capabilities = capabilities
        self._closed = False

    @classmethod
    async def start(
        cls,
        factory: EngineFactory,
        *,
        options: RayOptions | None = None,
        name: str | None = None,
    ) -> RayEngine:
        """Start an actor that builds its engine with ``factory``; wait until it is up.

        Args:
            factory: Builds the engine in the actor (must pickle).
            options: Ray actor options (``num_cpus``, ``resources``, ``max_concurrency``...).
            name: The proxy's name (default: ``ray:<engine name>``).

        Raises:
            ConfigError: Ray is not installed or not initialized.
            EngineUnavailableError: The actor could not start or build the engine.
        """
        ray = _require_ray()
        actor_cls = ray.remote(_EngineActor)
        actor = actor_cls.options(**dict(options or {})).remote(factory)
        try:
            described = await await_object_ref(actor.describe.remote())
        except Exception as exc:
            ray.kill(actor)
            raise EngineUnavailableError(
                f"the Ray engine actor could not build its engine with {factory!r}: {type(exc).__name__}: {exc}; "
                "check that the factory pickles and the model exists on the worker"
            ) from exc
        engine_name, capabilities = typing.cast(tuple[str, Capabilities], described)
        return cls(actor, name or f"ray:{engine_name}", replace(capabilities, streaming=False))

    @property
    def name(self) -> str:
        """``ray:<the actor engine's name>`` unless named otherwise."""
        return self._name

    @property
    def capabilities(self) -> Capabilities:
        """The actor engine's capabilities (``streaming=False``: chunks arrive whole)."""
        return self._capabilities

    async def _call(self, method: str, *args: object) -> object:
        if self._closed:
            raise EngineUnavailableError(f"engine {self._name!r} is closed; start a new RayEngine")
        try:
            ok, value = await await_object_ref(getattr(self._actor, method).remote(*args))
        except Exception as exc:
            raise EngineUnavailableError(
                f"Ray engine actor {self._name!r} failed in {method}: {type(exc).__name__}: {exc}; "
                "start a new replica"
            ) from exc
        if ok:
            return value
        assert isinstance(value, PackedError)
        raise unpack_error(value)

    async def generate(self, request: GenerationRequest) -> Completion:
        """Run the request in the actor."""
        return typing.cast(Completion, await self._call("generate", request))

    def stream(self, request: GenerationRequest) -> ChunkStream:
        """The whole completion as one text chunk (with its tool calls), then the final chunk with usage."""
        return closing_stream(self._chunks(request))

    async def _chunks(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        completion = await self.generate(request)
        yield Chunk(completion.text, tool_calls=completion.tool_calls)
        yield Chunk("", usage=completion.usage, finish_reason=completion.finish_reason)

    async def tokenize(self, text: str) -> Sequence[int]:
        """Token ids from the actor's engine."""
        return typing.cast(list[int], await self._call("tokenize", text))

    async def render(self, request: GenerationRequest) -> str:
        """The prompt text from the actor's engine."""
        return typing.cast(str, await self._call("render", request))

    async def engine_stats(self) -> object:
        """The actor engine's ``stats()`` (e.g. ``LlamaCppStats``), or ``None`` when it has none."""
        return await self._call("stats")

    async def aclose(self) -> None:
        """Close the actor's engine and end the actor."""
        if self._closed:
            return
        try:
            await self._call("aclose")
        finally:
            self._closed = True
            _require_ray().kill(self._actor)
