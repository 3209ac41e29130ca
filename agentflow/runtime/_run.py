"""Running workflows: ``run`` (async, for embedding in any anyio/asyncio/trio app) and ``run_sync``.

No global state: each call builds its own context; an engine given as a spec string is created for
the run and closed after it, an engine object is shared and left open for its owner.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, TypeVar

import anyio

from agentflow.dsl import Err, Event, Flow, LLMCall, Ok, SchedulerSummary, State
from agentflow.engines import Engine, Usage, engine_from_spec
from agentflow.errors import ConfigError, EngineUnavailableError
from agentflow.executors import StepBudget, step_budget
from agentflow.secrets import any_revealed, redact, redact_exception, secret_scope
from agentflow.telemetry import trace_outcome

from ._context import RunContext, TokenBudget
from ._durable import load_start, open_journal, run_journaled
from ._inputs import validate_inputs
from ._journal import Journal
from ._run_trace import redact_event
from ._serialize import to_json

if TYPE_CHECKING:
    from agentflow.memory import MemoryStore
    from agentflow.scheduler import Scheduler
    from agentflow.telemetry import TracingConfig

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
    capture_content: bool = True,
    telemetry: TracingConfig | None = None,
    on_event: Callable[[Event], None] | None = None,
    max_steps: int | None = None,
    journal_steps: bool = True,
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
        capture_content: Record prompts, completions, tool arguments and results in the trace (redacted of
            revealed secrets). They stay in the local record (saved runs, reports) and reach an OpenTelemetry
            exporter only when its own content capture is on. ``False`` keeps usage and timings only.
        telemetry: Export the run's OpenTelemetry spans through this setup when it ends (see
            ``agentflow.telemetry.configure_tracing``; ``None``: no spans anywhere).
        on_event: Called with every event the moment it happens (token deltas of LLM calls included),
            redacted of revealed secrets; runs in the event loop, so keep it cheap. ``agentflow.stream``
            builds on it.
        max_steps: Most tool and LLM calls the whole run may make, however its flows nest and fan out
            (``map`` in ``map``, agents, retries); the call past it fails with ``StepBudgetExceededError``.
        journal: A ``Journal``, the path of a SQLite journal file or a ``postgresql://`` URL (``None``:
            nothing is recorded). The run's id is in ``context.run_id`` / ``run_id``; with neither, a new
            id is generated and reported in the trace's first event (``run.journal``). The run's trace is
            stored with it as it ends (``agentflow runs show``, ``agentflow report``).
        journal_steps: With a journal, whether named steps are journaled (and replayed on resume).
            ``False`` records only the run: its inputs, status, result and trace, for workflows whose
            step values cannot be journaled (the meta-agent's plans); such a run cannot be resumed.

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
    given = (engine, deps, run_id, memory, max_llm_tokens, telemetry, on_event, max_steps)
    if context is not None and (any(v is not None for v in given) or not capture_content):
        # A mistake in the call itself, like every set-up failure, is a value: Err(ConfigError).
        return Err(
            ConfigError(
                "pass either context=... or engine/deps/run_id/memory/max_llm_tokens/max_steps/"
                "capture_content/telemetry/on_event to agentflow.run, not both (set them on the RunContext)"
            ),
            state,
            (),
        )
    # Values revealed during the run are tainted in the run's own scope (see agentflow.secrets).
    with secret_scope():
        return await _run(
            workflow,
            inputs,
            engine,
            state,
            deps,
            run_id,
            context,
            journal,
            memory,
            max_llm_tokens,
            capture_content=capture_content,
            telemetry=telemetry,
            on_event=on_event,
            max_steps=max_steps,
            journal_steps=journal_steps,
        )


async def _run(
    workflow: Workflow[A],
    inputs: Mapping[str, object] | None,
    engine: Engine | str | None,
    state: State,
    deps: object,
    run_id: str | None,
    context: RunContext | None,
    journal: Journal | str | os.PathLike[str] | None,
    memory: MemoryStore | None,
    max_llm_tokens: int | None,
    *,
    capture_content: bool,
    telemetry: TracingConfig | None,
    on_event: Callable[[Event], None] | None,
    max_steps: int | None,
    journal_steps: bool,
) -> Ok[A] | Err:
    owned: Scheduler | None = None
    try:  # set-up failures are values too: Err(ConfigError / EngineUnavailableError), never raised
        flow_value = _as_flow(workflow, inputs)
        if context is None:
            chosen = engine if engine is not None else os.environ.get(ENGINE_ENV, "").strip() or None
            if isinstance(chosen, str):
                # Every LLM request of the run goes through one KV-reuse-aware scheduler for the engine.
                from agentflow.scheduler import Scheduler

                owned = Scheduler(engine_from_spec(chosen))
                chosen = owned
            context = RunContext(
                deps=deps,
                run_id=run_id or uuid.uuid4().hex[:12],
                engine=chosen,
                memory=memory,
                budget=TokenBudget(max_llm_tokens) if max_llm_tokens is not None else None,
                capture_content=capture_content,
                telemetry=telemetry,
                on_event=on_event,
                steps=StepBudget(max_steps) if max_steps is not None else None,
            )
    except (ConfigError, EngineUnavailableError) as exc:
        return Err(exc, state, ())
    if context.on_event is not None:
        context = dataclasses.replace(context, on_event=_redacting(context.on_event))

    def closing() -> tuple[Event, ...]:
        """The run's last events: the summary of the scheduler it owns."""
        if owned is None:
            return ()
        metrics = json.loads(json.dumps(owned.metrics().as_dict(), default=str))
        return (SchedulerSummary(path="", time=time.time(), metrics=metrics),)

    try:
        with step_budget(context.steps):
            if journal is None:
                outcome = _redacted(_with_events(await flow_value.run(context, state), closing()))
            else:
                if not context.run_id:
                    context = dataclasses.replace(context, run_id=uuid.uuid4().hex[:12])
                outcome = _redacted(
                    await run_journaled(
                        flow_value,
                        context,
                        state,
                        journal,
                        workflow,
                        inputs,
                        name=_workflow_name(workflow),
                        closing=closing,
                        durable=journal_steps,
                    )
                )
        # Spans are built from the trace when the run has a tracing setup; otherwise a no-op.
        trace_outcome(
            outcome, workflow=_workflow_name(workflow), run_id=context.run_id, config=context.telemetry
        )
        return outcome
    finally:
        if owned is not None:
            with anyio.CancelScope(shield=True):
                await owned.aclose()


def _with_events(outcome: Ok[A] | Err, events: Sequence[Event]) -> Ok[A] | Err:
    if not events:
        return outcome
    trace = (*outcome.trace, *events)
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


def _redacting(listener: Callable[[Event], None]) -> Callable[[Event], None]:
    """``listener`` fed events with revealed secrets blanked out."""

    def feed(event: Event) -> None:
        listener(redact_event(event) if any_revealed() else event)

    return feed


def _redacted(outcome: Ok[A] | Err) -> Ok[A] | Err:
    """The outcome with every revealed secret value blanked out of its trace and out of its error's
    whole chain (causes, contexts, notes, arguments: ``traceback.format_exception`` shows no secret)."""
    if not any_revealed():
        return outcome
    trace = tuple(redact_event(e) for e in outcome.trace)
    if isinstance(outcome, Err):
        return Err(redact_exception(outcome.error), outcome.state, trace)
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
    capture_content: bool = True,
    telemetry: TracingConfig | None = None,
    on_event: Callable[[Event], None] | None = None,
    max_steps: int | None = None,
    journal_steps: bool = True,
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
        capture_content=capture_content,
        telemetry=telemetry,
        on_event=on_event,
        max_steps=max_steps,
        journal_steps=journal_steps,
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
    allow_workflows: Sequence[str] | None = None,
    allow_tools: Sequence[str] = (),
) -> Ok[A] | Err:
    """Continue a journaled run: a suspended one with an ``answer`` to its ``interrupt``, or one that
    crashed or failed.

    The workflow, inputs and initial state are those the run was started with (the workflow imported
    again from the name the journal recorded, unless given). Journaled steps are replayed; the
    interrupt yields ``answer`` validated against its schema (an invalid answer leaves the run waiting
    and the outcome is ``Err(ResumeError)`` saying why).

    Args:
        run_id: The run (``latest``: the run updated last).
        journal: The ``Journal`` or journal file holding it.
        answer: The answer for the waiting interrupt (any JSON-serializable value or pydantic model).
        path: Which interrupt to answer when several wait (their paths are in ``agentflow runs show``).
        workflow: The workflow to run (default: the one the run recorded).
        engine: As for ``run``.
        deps: As for ``run``.
        allow_workflows: ``fnmatch`` patterns of recorded workflows (``module:qualname``,
            ``/abs/file.py:qualname``) this resume may import, in addition to ``$AGENTFLOW_RESUME_ALLOW``;
            a recorded workflow outside them is refused (a journal file could name any code). Plans
            recorded by path are always allowed.
        allow_tools: Extra tool patterns a recorded plan may use (as ``load_plan``'s ``allow_tools``).

    Raises:
        ConfigError: no such run, nothing waits for an answer, or the recorded workflow is not allowed
            or cannot be imported.
    """
    from agentflow.runs._store import find_run  # the run store's library imports this package

    store, owned = open_journal(journal, create=False)
    try:
        record = await find_run(store, run_id)
        run_id = record.run_id
        if answer is not _NO_ANSWER:
            await store_answer(store, record.run_id, answer, path)
        chosen, inputs, state = load_start(
            record, workflow, allow_workflows=allow_workflows, allow_tools=allow_tools
        )
        return await run(chosen, inputs, engine=engine, state=state, deps=deps, run_id=run_id, journal=store)
    finally:
        if owned:
            await store.aclose()


async def store_answer(store: Journal, run_id: str, answer: object, path: str | None) -> None:
    """Record ``answer`` for the interrupt of ``run_id`` that waits (the one at ``path`` when several do).

    Raises:
        ConfigError: none waits, or several do and ``path`` does not pick one.
    """
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
                "value": redact(to_json(answer, "answer")),
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
    """Total LLM usage of the ``LLMCall`` events in a trace."""
    total = Usage()
    for e in trace:
        if isinstance(e, LLMCall):
            total = total + Usage(
                prompt_tokens=e.prompt_tokens,
                cached_tokens=e.cached_tokens,
                computed_tokens=e.computed_tokens,
                completion_tokens=e.completion_tokens,
                queue_s=e.queue_s,
                ttft_s=e.ttft_s,
                total_s=e.total_s,
            )
    return total
