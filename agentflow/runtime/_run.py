"""Running workflows: ``run`` (async, for embedding in any anyio/asyncio/trio app) and ``run_sync``.

No global state: each call builds its own context; an engine given as a spec string is created for
the run and closed after it, an engine object is shared and left open for its owner.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TypeVar

import anyio

from agentflow.dsl import Err, Event, Flow, Ok, State
from agentflow.engines import Engine, Usage, engine_from_spec
from agentflow.errors import ConfigError

from ._context import RunContext

A = TypeVar("A")

Workflow = Flow[A] | Callable[..., Flow[A]]
"""A flow, or a function of the inputs that returns one (``@flow``/``@step`` functions are such)."""


async def run(
    workflow: Workflow[A],
    inputs: Mapping[str, object] | None = None,
    *,
    engine: Engine | str | None = None,
    state: State = None,
    deps: object = None,
    run_id: str | None = None,
    context: RunContext | None = None,
) -> Ok[A] | Err:
    """Run a workflow and return its outcome (``Ok(value, state, trace)`` or ``Err(...)``).

    Args:
        workflow: A ``Flow``, or a function returning one that is called with ``**inputs``.
        inputs: Keyword arguments for a workflow function.
        engine: An ``Engine``, an engine spec (``"llamacpp:default"``, ``"openai:http://host/v1#model"``,
            ``"test:"`` ...; see ``engine_from_spec``), or ``None`` for no LLM engine.
        state: The initial state model.
        deps: User dependencies, read in steps with ``deps(T)``.
        run_id: The run's id (generated when omitted); also the scheduler's workflow id.
        context: A complete ``RunContext`` to use instead (``engine``/``deps``/``run_id`` must then be omitted).
    """
    if context is not None and (engine is not None or deps is not None or run_id is not None):
        raise ConfigError("pass either context=... or engine/deps/run_id to agentflow.run, not both")
    flow_value = _as_flow(workflow, inputs)
    owned: Engine | None = None
    if context is None:
        if isinstance(engine, str):
            owned = engine = engine_from_spec(engine)
        context = RunContext(deps=deps, run_id=run_id or uuid.uuid4().hex[:12], engine=engine)
    try:
        return await flow_value.run(context, state)
    finally:
        if owned is not None:
            with anyio.CancelScope(shield=True):
                await owned.aclose()


def run_sync(
    workflow: Workflow[A],
    inputs: Mapping[str, object] | None = None,
    *,
    engine: Engine | str | None = None,
    state: State = None,
    deps: object = None,
    run_id: str | None = None,
    context: RunContext | None = None,
) -> Ok[A] | Err:
    """``run`` for scripts: starts an event loop, runs the workflow, returns the outcome."""
    call = partial(
        run, workflow, inputs, engine=engine, state=state, deps=deps, run_id=run_id, context=context
    )
    return anyio.run(call)


def _as_flow(workflow: Workflow[A], inputs: Mapping[str, object] | None) -> Flow[A]:
    if isinstance(workflow, Flow):
        if inputs:
            raise ConfigError(
                f"inputs {sorted(inputs)} were given but the workflow is already a Flow value; "
                "pass the workflow function itself (e.g. my_flow, not my_flow(...))"
            )
        return workflow
    if callable(workflow):
        made = workflow(**(inputs or {}))
        if not isinstance(made, Flow):
            raise ConfigError(
                f"workflow function {getattr(workflow, '__name__', workflow)!r} returned "
                f"{type(made).__name__}, not a Flow; decorate it with @flow"
            )
        return made
    raise ConfigError(f"cannot run a {type(workflow).__name__}: pass a Flow or a function returning one")


def usage_of(trace: Sequence[Event]) -> Usage:
    """Total LLM usage of the ``llm.call`` events in a trace."""
    total = Usage()
    for e in trace:
        if e.kind == "llm.call":
            d = e.data
            total = total + Usage(
                prompt_tokens=_int(d.get("prompt_tokens")),
                cached_tokens=_int(d.get("cached_tokens")),
                computed_tokens=_int(d.get("computed_tokens")),
                completion_tokens=_int(d.get("completion_tokens")),
                queue_s=_float(d.get("queue_s")),
                ttft_s=_float(d.get("ttft_s")),
                total_s=_float(d.get("total_s")),
            )
    return total


def _int(v: object) -> int:
    return v if isinstance(v, int) else 0


def _float(v: object) -> float:
    return float(v) if isinstance(v, int | float) else 0.0
