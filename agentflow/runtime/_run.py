"""Running workflows: ``run`` (async, for embedding in any anyio/asyncio/trio app) and ``run_sync``.

No global state: each call builds its own context; an engine given as a spec string is created for
the run and closed after it, an engine object is shared and left open for its owner.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import anyio

from agentflow.dsl import Err, Event, Flow, Ok, State
from agentflow.engines import Engine, Usage, engine_from_spec
from agentflow.errors import ConfigError, EngineUnavailableError
from agentflow.secrets import any_revealed, redact, redact_data
from agentflow.telemetry import trace_outcome

from ._context import RunContext, TokenBudget
from ._durable import load_start, open_journal, run_journaled
from ._inputs import validate_inputs
from ._journal import Journal
from ._serialize import to_json

if TYPE_CHECKING:
    from agentflow.memory import MemoryStore

ENGINE_ENV = "AGENTFLOW_ENGINE"
"""Environment variable holding the engine spec ``run`` uses when given neither ``engine`` nor ``context``."""

_NO_ANSWER: object = object()
"""``resume``'s default: no answer given."""

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
    journal: Journal | str | os.PathLike[str] | None = None,
    memory: MemoryStore | None = None,
    max_llm_tokens: int | None = None,
) -> Ok[A] | Err:
    """Run a workflow and return its outcome (``Ok(value, state, trace)`` or ``Err(...)``).

    With a ``journal``, every named step's result is recorded durably before it is used, and running
    again with the ``run_id`` of an unfinished (crashed, failed or suspended) run resumes it: journaled
    steps are replayed, only what did not finish runs again (see ``agentflow.runtime.RunJournal`` for
    the exactly-once and divergence rules).

    Args:
        workflow: A ``Flow``, or a function returning one that is called with ``**inputs``.
        inputs: Keyword arguments for a workflow function.
        engine: An ``Engine``, an engine spec (``"llamacpp:default"``, ``"openai:http://host/v1#model"``,
            ``"test:"`` ...; see ``engine_from_spec``), or ``None``: the spec in ``$AGENTFLOW_ENGINE`` if
            set, else no LLM engine. An engine made from a spec is wrapped in a ``Scheduler`` and closed
            after the run; an engine object is used as given (wrap it in
            ``agentflow.scheduler.Scheduler`` to share one scheduler between runs).
        state: The initial state model.
        deps: User dependencies, read in steps with ``deps(T)``.
        run_id: The run's id (generated when omitted); also the scheduler's workflow id.
        context: A complete ``RunContext`` to use instead (``engine``/``deps``/``run_id`` must then be omitted).
        memory: A memory store steps can read with ``(await ask(RunContext)).memory``.
        max_llm_tokens: Most LLM tokens (prompt + completion) the whole run may use; past it, LLM steps
            fail with ``BudgetExceededError``.
        journal: A ``Journal`` or the path of a SQLite journal file (``None``: nothing is recorded).
            The run's id is in ``context.run_id`` / ``run_id``; with neither, a new id is generated and
            reported in the trace's first event (``run.journal``).

    Returns:
        ``Ok`` or ``Err``. Failures are values, set-up included: a bad engine spec or options
        (``ConfigError``), an engine that cannot start (``EngineUnavailableError``: a missing GGUF file,
        an extra not installed), inputs that do not match the workflow function's parameters
        (``ConfigError`` naming each; checked with pydantic before anything runs) and everything that
        fails inside the workflow.

    Raises:
        ResumeError: the run id exists in the journal with other inputs or another workflow, or
            another live process is running it.
        SerializationError: the inputs cannot be journaled.
    """
    given = (engine, deps, run_id, memory, max_llm_tokens)
    owned: Engine | None = None
    try:  # set-up failures are values too: Err(ConfigError / EngineUnavailableError), never raised
        if context is not None and any(v is not None for v in given):
            raise ConfigError(
                "pass either context=... or engine/deps/run_id/memory/max_llm_tokens to agentflow.run, not both"
            )
        flow_value = _as_flow(workflow, inputs)
        if context is None:
            budget = TokenBudget(max_llm_tokens) if max_llm_tokens is not None else None
            chosen = engine if engine is not None else os.environ.get(ENGINE_ENV, "").strip() or None
            if isinstance(chosen, str):
                # Every LLM request of the run goes through one KV-reuse-aware scheduler for the engine.
                from agentflow.scheduler import Scheduler

                owned = chosen = Scheduler(engine_from_spec(chosen))
            context = RunContext(
                deps=deps,
                run_id=run_id or uuid.uuid4().hex[:12],
                engine=chosen,
                memory=memory,
                budget=budget,
            )
    except (ConfigError, EngineUnavailableError) as exc:
        return Err(exc, state, ())
    try:
        if journal is None:
            outcome = _redacted(await flow_value.run(context, state))
        else:
            if not context.run_id:
                context = dataclasses.replace(context, run_id=uuid.uuid4().hex[:12])
            outcome = _redacted(await run_journaled(flow_value, context, state, journal, workflow, inputs))
        if owned is not None and hasattr(owned, "metrics"):
            outcome = _with_event(
                outcome, Event("scheduler.metrics", "", time.time(), owned.metrics().as_dict())
            )
        # Spans are built from the trace when tracing is configured (configure_tracing); otherwise a no-op.
        trace_outcome(outcome, workflow=_workflow_name(workflow), run_id=context.run_id)
        return outcome
    finally:
        if owned is not None:
            with anyio.CancelScope(shield=True):
                await owned.aclose()


def _with_event(outcome: Ok[A] | Err, event: Event) -> Ok[A] | Err:
    trace = (*outcome.trace, event)
    if isinstance(outcome, Err):
        return Err(outcome.error, outcome.state, trace)
    return Ok(outcome.value, outcome.state, trace)


def _workflow_name(workflow: object) -> str:
    """A plan's name for a loaded plan's bound ``workflow`` method, else the function's name."""
    owner = getattr(workflow, "__self__", None)
    name = getattr(owner, "name", None)
    if isinstance(name, str) and name:
        return name
    return str(getattr(workflow, "__name__", None) or "workflow")


def _redacted(outcome: Ok[A] | Err) -> Ok[A] | Err:
    """The outcome with every revealed secret value blanked out of its trace and error message."""
    if not any_revealed():
        return outcome
    trace = tuple(
        dataclasses.replace(e, data=redact_data(e.data))  # type: ignore[arg-type]
        for e in outcome.trace
    )
    if isinstance(outcome, Err):
        error = outcome.error
        error.message = redact(error.message)
        error.args = tuple(redact(a) if isinstance(a, str) else a for a in error.args)
        return Err(error, outcome.state, trace)
    return Ok(outcome.value, outcome.state, trace)


def run_sync(
    workflow: Workflow[A],
    inputs: Mapping[str, object] | None = None,
    *,
    engine: Engine | str | None = None,
    state: State = None,
    deps: object = None,
    run_id: str | None = None,
    context: RunContext | None = None,
    journal: Journal | str | os.PathLike[str] | None = None,
    memory: MemoryStore | None = None,
    max_llm_tokens: int | None = None,
) -> Ok[A] | Err:
    """``run`` for scripts: starts an event loop, runs the workflow, returns the outcome."""
    call = partial(
        run,
        workflow,
        inputs,
        engine=engine,
        state=state,
        deps=deps,
        run_id=run_id,
        context=context,
        journal=journal,
        memory=memory,
        max_llm_tokens=max_llm_tokens,
    )
    return anyio.run(call)


async def resume(
    run_id: str,
    *,
    journal: Journal | str | os.PathLike[str],
    answer: object = _NO_ANSWER,
    path: str | None = None,
    workflow: Workflow[A] | None = None,
    engine: Engine | str | None = None,
    deps: object = None,
) -> Ok[A] | Err:
    """Continue a journaled run: a suspended one with an ``answer`` to its ``interrupt``, or one that
    crashed or failed.

    The workflow, inputs and initial state are those the run was started with (the workflow imported
    again from the name the journal recorded, unless given). Journaled steps are replayed; the
    interrupt yields ``answer`` validated against its schema (an invalid answer leaves the run waiting
    and the outcome is ``Err(ResumeError)`` saying why).

    Args:
        run_id: The run.
        journal: The ``Journal`` or journal file holding it.
        answer: The answer for the waiting interrupt (any JSON-serializable value or pydantic model).
        path: Which interrupt to answer when several wait (their paths are in ``agentflow runs show``).
        workflow: The workflow to run (default: the one the run recorded).
        engine: As for ``run``.
        deps: As for ``run``.

    Raises:
        ConfigError: no such run, nothing waits for an answer, or the workflow cannot be imported.
    """
    store, owned = open_journal(journal)
    try:
        record = await store.get_run(run_id)
        if record is None:
            raise ConfigError(
                f"journal {store!r} has no run {run_id!r}; list its runs with `agentflow runs list`"
            )
        if answer is not _NO_ANSWER:
            await _store_answer(store, record.run_id, answer, path)
        chosen, inputs, state = load_start(record, workflow)
        return await run(chosen, inputs, engine=engine, state=state, deps=deps, run_id=run_id, journal=store)
    finally:
        if owned:
            await store.aclose()


async def _store_answer(store: Journal, run_id: str, answer: object, path: str | None) -> None:
    waiting = [s for s in await store.get_steps(run_id) if s.status == "waiting"]
    if path is not None:
        waiting = [s for s in waiting if s.path == path]
    if len(waiting) != 1:
        listed = [s.path for s in waiting]
        raise ConfigError(
            f"run {run_id!r} has {len(waiting)} interrupt(s) waiting"
            + (f" at {path!r}" if path is not None else "")
            + f" ({listed}); "
            + ("pass path=... (CLI: --path) to pick one" if waiting else "there is nothing to answer")
        )
    await store.put_step(
        waiting[0].model_copy(
            update={
                "status": "answered",
                "value": to_json(answer, "answer"),
                "kind": "typed",
                "updated_at": time.time(),
            }
        )
    )


def _as_flow(workflow: Workflow[A], inputs: Mapping[str, object] | None) -> Flow[A]:
    if isinstance(workflow, Flow):
        if inputs:
            raise ConfigError(
                f"inputs {sorted(inputs)} were given but the workflow is already a Flow value; "
                "pass the workflow function itself (e.g. my_flow, not my_flow(...))"
            )
        return workflow
    if callable(workflow):
        made = workflow(**validate_inputs(workflow, inputs or {}))
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
