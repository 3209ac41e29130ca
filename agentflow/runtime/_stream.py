"""``agentflow.stream``: a run's typed events as they happen, for apps that show progress or tokens live.

    async with agentflow.stream(workflow, inputs, engine="llamacpp:default") as events:
        async for item in events:
            match item:
                case TokenDelta(text=text):
                    print(text, end="", flush=True)
                case Ok() | Err():
                    outcome = item          # always the last item
                case _:
                    pass                    # StepStarted, LLMCall, ToolCall...

The run starts when the block is entered and runs in a task of its own; events queue until read. Leaving
the block, by breaking out of the loop, an exception or cancellation, cancels the run at once (an LLM call
stops between tokens) and waits for it to unwind: nothing of it keeps running afterwards, and with a
journal every step that committed stays committed, so the run can be resumed.
"""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, TypeAlias, TypeVar

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from agentflow.dsl import Err, Event, Ok, State
from agentflow.engines import Engine

from ._journal import Journal
from ._run import Workflow, run

if TYPE_CHECKING:
    from agentflow.memory import MemoryStore
    from agentflow.plans import LoadedPlan
    from agentflow.telemetry import TracingConfig

A = TypeVar("A")

StreamItem: TypeAlias = "Event | Ok[A] | Err"
"""What ``stream`` yields: the run's events, then its outcome (``Ok`` or ``Err``) as the last item."""


class _Raised:
    """What ``run`` raised instead of returning an outcome (a configuration mistake); re-raised to the reader."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


class RunStream(AsyncIterator["Event | Ok[A] | Err"]):
    """The events of a running workflow, then its outcome; iterate with ``async for``.

    A mistake that ``agentflow.run`` raises rather than returns (an unknown engine spec, a bad option) is
    raised from the iteration.

    Attributes:
        outcome: The run's outcome once it has been read (``None`` before).
    """

    def __init__(self, receive: MemoryObjectReceiveStream[Event | Ok[A] | Err | _Raised]) -> None:
        self._receive = receive
        self.outcome: Ok[A] | Err | None = None

    def __aiter__(self) -> RunStream[A]:
        return self

    async def __anext__(self) -> Event | Ok[A] | Err:
        try:
            item = await self._receive.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        if isinstance(item, _Raised):
            raise item.error
        if isinstance(item, Ok | Err):
            self.outcome = item
        return item


@asynccontextmanager
async def stream(
    workflow: Workflow[A] | LoadedPlan,
    inputs: Mapping[str, object] | None = None,
    *,
    engine: Engine | str | None = None,
    state: State = None,
    deps: object = None,
    run_id: str | None = None,
    journal: Journal | str | os.PathLike[str] | None = None,
    memory: MemoryStore | None = None,
    max_llm_tokens: int | None = None,
    capture_content: bool = True,
    telemetry: TracingConfig | None = None,
) -> AsyncIterator[RunStream[A]]:
    """Run ``workflow`` and yield its events as they happen, ending with its outcome.

    Args:
        workflow: A ``Flow``, a function returning one, or a loaded plan (``agentflow.plans.LoadedPlan``).
        inputs: The workflow's inputs.
        engine: As for ``agentflow.run`` (and so are the other keyword arguments).
        state: The initial state model.
        deps: User dependencies.
        run_id: The run's id.
        journal: Journal every step (a disconnect or crash leaves the run resumable).
        memory: A memory store.
        max_llm_tokens: The run's LLM token budget.
        capture_content: Record prompts and completions in the trace.
        telemetry: Export the run's spans through this tracing setup.

    Yields:
        A ``RunStream``: events (``StepStarted``, ``TokenDelta``, ``LLMCall``, ``ToolCall``...) in the order
        they happened, redacted of revealed secrets, then the ``Ok``/``Err`` outcome.
    """
    from agentflow.plans import LoadedPlan

    target: Workflow[A] = workflow.workflow if isinstance(workflow, LoadedPlan) else workflow  # type: ignore[assignment]
    # Unbounded: the run must never block on a slow reader (listeners are called synchronously in the
    # event loop), and what queues is what the trace holds anyway plus token deltas (bounded by the
    # run's generated tokens).
    send, receive = anyio.create_memory_object_stream[Event | Ok[A] | Err | _Raised](max_buffer_size=math.inf)
    listener: Callable[[Event], None] = send.send_nowait

    async def produce() -> None:
        async with send:
            try:
                outcome: Ok[A] | Err = await run(
                    target,
                    inputs,
                    engine=engine,
                    state=state,
                    deps=deps,
                    run_id=run_id,
                    journal=journal,
                    memory=memory,
                    max_llm_tokens=max_llm_tokens,
                    capture_content=capture_content,
                    telemetry=telemetry,
                    on_event=listener,
                )
            except Exception as exc:
                await send.send(_Raised(exc))
                return
            await send.send(outcome)

    raised: list[BaseException] = []  # what the reader's block raised: re-raised as itself, not in a group
    async with receive:
        async with anyio.create_task_group() as tg:
            tg.start_soon(produce)
            try:
                yield RunStream(receive)
            except BaseException as exc:
                raised.append(exc)
            finally:
                tg.cancel_scope.cancel()
        if raised:
            raise raised[0]
