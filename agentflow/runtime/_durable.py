"""Journaled runs: claiming a run in a journal, running it against a ``RunJournal`` while keeping its
lease, recording how it ended with its trace, settling a non-idempotent step by hand, and importing a
run's workflow again for a resume.

What a resume may import. The journal records how to import the workflow again: ``module:qualname``,
``/abs/file.py:qualname`` for a script, or ``plan:/abs/plan.yaml`` for a plan file. A journal file is
data, and whoever can write it must not be able to make ``agentflow resume`` run code of their choosing:
a recorded Python workflow is imported only when it matches a pattern the *user* allowed
(``resume(..., allow_workflows=[...])``, ``agentflow resume --allow-workflow PATTERN``, or
``$AGENTFLOW_RESUME_ALLOW``, patterns separated by commas), or when the user names the workflow
(``workflow=...`` / ``--workflow``). A plan recorded by path is always allowed: loading a plan runs no
code, and its tools pass the plan loader's own allowlist.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
from pydantic import BaseModel

from agentflow._postgres import is_postgres_url
from agentflow.dsl import Err, Event, Flow, Ok, RunJournaled, State
from agentflow.errors import ConfigError, JournalError, ResumeError, SerializationError
from agentflow.secrets import redact

from ._context import RunContext
from ._interrupt import Interrupted
from ._journal import Journal, Lease, RunJournal, RunRecord, RunStatus
from ._run_trace import TraceCollector, stored_trace
from ._serialize import encode_state, to_json
from ._sqlite_journal import SqliteJournal

__all__ = [
    "RESUME_ALLOW_ENV",
    "allowed_workflows",
    "import_ref",
    "object_ref",
    "open_journal",
    "resolve_step",
    "run_journaled",
]

RESUME_ALLOW_ENV = "AGENTFLOW_RESUME_ALLOW"
"""Environment variable with the workflow patterns a resume may import (comma-separated)."""

PLAN_PREFIX = "plan:"
"""How the journal records a workflow that is a plan file (``plan:/abs/path.yaml``)."""

A = TypeVar("A")

_UNSET: Any = object()
_RESUMED_PREFIX = "_agentflow_resumed_"
"""Module-name prefix of scripts imported by file path to resume their runs."""


def open_journal(journal: Journal | str | os.PathLike[str], *, create: bool = True) -> tuple[Journal, bool]:
    """The journal to use and whether the caller owns it (opened from a path or URL, to be closed):
    a ``postgresql://`` URL opens a ``PostgresJournal``, anything else a ``SqliteJournal`` file.

    Raises:
        ConfigError: ``create`` is false and there is no journal file at the path (reading runs never
            makes an empty journal).
    """
    if isinstance(journal, Journal):
        return journal, False
    if is_postgres_url(journal):
        from ._postgres_journal import PostgresJournal

        assert isinstance(journal, str)
        return PostgresJournal(journal), True
    if isinstance(journal, str | os.PathLike):
        if not create and not Path(journal).exists():
            raise ConfigError(
                f"there is no journal at {os.fspath(journal)!r}, so no run was journaled there; runs are "
                "journaled in --journal, $AGENTFLOW_JOURNAL or .agentflow/journal.db of the directory "
                "`agentflow run` ran in: pass the journal that holds your runs with --journal"
            )
        return SqliteJournal(journal), True
    raise ConfigError(
        f"journal must be a Journal, the path of a journal file or a postgresql:// URL, got "
        f"{type(journal).__name__}"
    )


def object_ref(obj: object) -> str | None:
    """How to import ``obj`` again (``module:qualname``, ``/abs/file.py:qualname`` for a script run
    as ``__main__``, ``plan:/abs/file.yaml`` for a plan file's workflow); ``None`` when it cannot be
    imported by name (a local function, a lambda, a plan given as text)."""
    from agentflow.plans import LoadedPlan

    owner = getattr(obj, "__self__", None)
    if isinstance(owner, LoadedPlan):
        return f"{PLAN_PREFIX}{Path(owner.file).resolve()}" if owner.file else None
    module = getattr(obj, "__module__", None)
    qualname = getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or "<" in qualname:
        return None
    if module == "__main__" or module.startswith(_RESUMED_PREFIX):
        main_file = getattr(sys.modules.get(module), "__file__", None)
        if not main_file:
            return None
        return f"{Path(main_file).resolve()}:{qualname}"
    return f"{module}:{qualname}"


def allowed_workflows(given: Iterable[str] | None = None) -> tuple[str, ...]:
    """The workflow patterns a resume may import: ``given`` plus ``$AGENTFLOW_RESUME_ALLOW``."""
    from_env = [p.strip() for p in os.environ.get(RESUME_ALLOW_ENV, "").split(",") if p.strip()]
    return (*(given or ()), *from_env)


def _check_allowed(ref: str, allow: tuple[str, ...], run_id: str, what: str = "workflow") -> None:
    """Refuse to import a journal-recorded workflow the user did not allow (see the module docstring)."""
    if ref.startswith(PLAN_PREFIX) or any(fnmatch.fnmatchcase(ref, p) for p in allow):
        return
    module = ref.rpartition(":")[0]
    suggestion = f"{module}:*" if not module.endswith(".py") else f"{Path(module).parent}/*.py:*"
    raise ConfigError(
        f"run {run_id!r} records {what} {ref!r}, which is not in the allowed workflows "
        f"({', '.join(allow) or 'none given'}); a resume imports only what you allow, since a journal file "
        f"could name any code. If you trust it, allow it: --allow-workflow '{suggestion}' (or "
        f"${RESUME_ALLOW_ENV}, or resume(..., allow_workflows=[...]) in Python), or name the workflow "
        "yourself with --workflow module:attr (workflow=...)"
    )


def import_ref(ref: str, *, allow_tools: Iterable[str] = ()) -> object:
    """Import what ``object_ref`` named (a plan file is loaded with the plan loader, its extra tools
    limited to ``allow_tools``).

    Raises:
        ConfigError: the module, file or attribute is gone.
        PlanError: a recorded plan file no longer loads.
    """
    if ref.startswith(PLAN_PREFIX):
        from agentflow.plans import load_plan

        return load_plan(ref.removeprefix(PLAN_PREFIX), allow_tools=allow_tools).workflow
    where, _, qualname = ref.rpartition(":")
    try:
        if where.endswith(".py"):
            name = f"{_RESUMED_PREFIX}{abs(hash(where))}"
            main = sys.modules.get("__main__")
            main_file = getattr(main, "__file__", None)
            module = sys.modules.get(name)
            if main is not None and main_file and str(Path(main_file).resolve()) == where:
                module = main
            elif module is None:
                spec = importlib.util.spec_from_file_location(name, where)
                if spec is None or spec.loader is None:
                    raise ImportError(f"no loader for {where}")
                module = importlib.util.module_from_spec(spec)
                sys.modules[name] = module
                spec.loader.exec_module(module)
        else:
            module = importlib.import_module(where)
        obj: object = module
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError, OSError) as exc:
        raise ConfigError(
            f"cannot import {ref!r} recorded in the journal ({exc}); pass workflow=... (CLI: --workflow "
            "module:attr) to resume with the code at hand"
        ) from exc
    return obj


async def run_journaled(
    flow_value: Flow[A],
    context: RunContext,
    state: State,
    journal: Journal | str | os.PathLike[str],
    workflow: object,
    inputs: Mapping[str, object] | None,
    *,
    name: str = "workflow",
    closing: Callable[[], Sequence[Event]] = tuple,
    durable: bool = True,
) -> Ok[A] | Err:
    """Run ``flow_value`` as run ``context.run_id`` of ``journal`` (created, or resumed if it exists).

    The attempt's trace is stored with the run as it ends, however it ends: the outcome's trace (with
    the ``closing`` events, e.g. the scheduler's summary, at its end) or, when the attempt was cancelled
    or crashed, every event recorded until then. ``name`` is the workflow's name in the stored trace.
    ``durable=False`` records the run without journaling its steps (and without a workflow to resume).
    """
    store, owned = open_journal(journal)
    try:
        return await _run_in(store, flow_value, context, state, workflow, inputs, name, closing, durable)
    finally:
        if owned:
            await store.aclose()


async def _run_in(
    store: Journal,
    flow_value: Flow[A],
    context: RunContext,
    state: State,
    workflow: object,
    inputs: Mapping[str, object] | None,
    name: str,
    closing: Callable[[], Sequence[Event]],
    durable: bool,
) -> Ok[A] | Err:
    run_id = context.run_id
    ref = object_ref(workflow) if durable and not isinstance(workflow, Flow) else None
    # Secret values never reach the journal: inputs and state are compared and stored redacted.
    inputs_json = redact(to_json(dict(inputs or {}), "inputs"))
    state_json = redact(encode_state(state, "initial_state"))
    existing = await store.get_run(run_id)
    if existing is not None:
        _check_same_start(existing, ref, inputs_json, state_json)
    claim = await store.claim_run(
        run_id,
        workflow=ref,
        inputs=inputs_json,
        state_type=object_ref(type(state)) if state is not None else None,
        state=state_json,
    )
    run_journal = RunJournal(store, run_id, claim.steps, claim.lease)
    # Every event, as it is recorded: what an attempt cancelled half-way stores as its trace.
    collector = TraceCollector(context.on_event)
    ctx = dataclasses.replace(context, journal=run_journal if durable else None, on_event=collector)
    started = time.time()
    status: RunStatus = "failed"
    result: str | None = None
    error: str | None = (
        f"the run was cancelled (Ctrl-C, or its caller cancelled it) or crashed before it finished; resume "
        f"it with `agentflow resume {run_id}`"
    )
    keeper = _LeaseKeeper(store, claim.lease)
    res: Ok[A] | Err = Err(ResumeError("the run did not start"), state)
    ended = False  # the flow returned an outcome (its trace is then the attempt's trace)
    trace: tuple[Event, ...] = ()
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(keeper.keep)
            with keeper.scope:
                res = await flow_value.run(ctx, state)
                ended = True
            tg.cancel_scope.cancel()
        if keeper.lost is not None:
            res = Err(keeper.lost, res.state, res.trace)
        elif isinstance(res, Ok):
            try:
                run_journal.check_scope_complete("")
            except ResumeError as exc:
                res = Err(exc, res.state, res.trace)
        status, result, error = _ending(res, run_journal)
    finally:
        head = RunJournaled(path="", time=started, run_id=run_id, resumed=not claim.created, status=status)
        trace = (head, *(res.trace if ended else collector.events), *closing())
        if keeper.lost is None:
            with anyio.CancelScope(shield=True):
                record = stored_trace(
                    trace,
                    run_id=run_id,
                    attempt=claim.attempt,
                    status=status,
                    name=name,
                    engine=context.engine.name if context.engine is not None else "",
                    started=started,
                    finished=time.time(),
                    max_bytes=store.max_trace_bytes,
                )
                try:
                    await store.finish_run(
                        run_id, status, lease=keeper.lease, result=result, error=error, trace=record
                    )
                except ResumeError as exc:  # taken over between the last renewal and now
                    res = Err(exc, res.state, res.trace)
    if isinstance(res, Err):
        return Err(res.error, res.state, trace)
    return Ok(res.value, res.state, trace)


class _LeaseKeeper:
    """Renews a run's lease every third of its length while the run is live; if the journal says the
    lease was taken over, cancels the run (``scope``) and keeps the error in ``lost``."""

    def __init__(self, store: Journal, lease: Lease) -> None:
        self.store = store
        self.lease = lease  # the newest renewal; replaced by keep()
        self.scope = anyio.CancelScope()  # the run's flow runs in it; cancelled when the lease is lost
        self.lost: ResumeError | None = None  # set once, when the lease was lost

    async def keep(self) -> None:
        while True:
            await anyio.sleep(self.lease.lease_s / 3)
            try:
                renewed = await self.store.renew_lease(self.lease)
            except JournalError:
                continue  # a transient failure: the next tick tries again; writes stay fenced meanwhile
            if renewed is None:
                self.lost = ResumeError(
                    f"this attempt of run {self.lease.run_id!r} lost its lease: it could not renew it within "
                    f"{self.lease.lease_s:g} s (stopped, suspended or overloaded) and another holder took "
                    "the run over; this attempt was cancelled, the new holder continues the run"
                )
                self.scope.cancel()
                return
            self.lease = renewed


def _check_same_start(existing: RunRecord, ref: str | None, inputs_json: str, state_json: str) -> None:
    rid = existing.run_id
    if existing.inputs is not None and existing.inputs != inputs_json:
        raise ResumeError(
            f"run {rid!r} was started with inputs {existing.inputs}, now given {inputs_json}; resume it with "
            "the same inputs, or start a new run (a new run_id)"
        )
    if existing.workflow is not None and ref is not None and existing.workflow != ref:
        raise ResumeError(
            f"run {rid!r} was started with workflow {existing.workflow!r}, now given {ref!r}; resume it with "
            "the same workflow, or start a new run (a new run_id)"
        )
    if existing.state is not None and existing.state != state_json:
        raise ResumeError(
            f"run {rid!r} was started with state {existing.state}, now given {state_json}; resume it with "
            "the same initial state, or start a new run"
        )


def _ending(res: Ok[Any] | Err, run_journal: RunJournal) -> tuple[RunStatus, str | None, str | None]:
    """The run's final status, result and error text for the journal (secret values redacted)."""
    if isinstance(res, Ok):
        try:
            return "completed", redact(to_json(res.value, "result")), None
        except SerializationError:
            return "completed", None, None
    if isinstance(res.error, Interrupted) or run_journal.waiting():
        return "suspended", None, redact(str(res.error))
    return "failed", None, redact(str(res.error))


async def resolve_step(
    run_id: str,
    path: str,
    *,
    journal: Journal | str | os.PathLike[str],
    value: object = _UNSET,
    rerun: bool = False,
) -> None:
    """Settle a non-idempotent step that began but did not commit (the resume refused to guess).

    Args:
        run_id: The run.
        path: The step's path (as named in the ``ResumeError``).
        journal: The journal holding the run.
        value: The result the step had (it took effect): recorded as if the step had committed, with
            the state it started from; checked against the step's result type when the run resumes.
        rerun: ``True`` when it did not take effect: the step may run once more.

    Raises:
        ConfigError: neither or both of ``value``/``rerun``, or no such begun step.
    """
    if (value is _UNSET) == (not rerun):
        raise ConfigError("pass exactly one of value=... (the step took effect) or rerun=True (it did not)")
    store, owned = open_journal(journal, create=False)
    try:
        steps = {s.path: s for s in await store.get_steps(run_id)}
        row = steps.get(path)
        if row is None or row.status != "begun":
            begun = sorted(p for p, s in steps.items() if s.status == "begun")
            raise ConfigError(
                f"run {run_id!r} has no unfinished step {path!r} to resolve; unfinished steps: {begun or 'none'}"
            )
        now = time.time()
        if rerun:
            await store.put_step(row.model_copy(update={"status": "rerun", "updated_at": now}))
        else:
            await store.put_step(
                row.model_copy(
                    update={
                        "status": "committed",
                        "value": redact(to_json(value, "value")),
                        "kind": "typed",
                        "state": row.state if row.state is not None else "null",
                        "updated_at": now,
                    }
                )
            )
    finally:
        if owned:
            await store.aclose()


def load_start(
    record: RunRecord,
    workflow: Callable[..., Flow[Any]] | Flow[Any] | None,
    *,
    allow_workflows: Iterable[str] | None = None,
    allow_tools: Iterable[str] = (),
) -> tuple[Callable[..., Flow[Any]] | Flow[Any], dict[str, object], State]:
    """The workflow, inputs and initial state to resume ``record`` with.

    Raises:
        ConfigError: the recorded workflow (or state type) is not allowed, or cannot be imported.
    """
    chosen: object = workflow
    allow = allowed_workflows(allow_workflows)
    if chosen is None:
        if record.workflow is None:
            raise ConfigError(
                f"run {record.run_id!r} did not record an importable workflow; pass workflow=... "
                "(CLI: --workflow module:attr)"
            )
        _check_allowed(record.workflow, allow, record.run_id)
        chosen = import_ref(record.workflow, allow_tools=allow_tools)
    if not callable(chosen) and not isinstance(chosen, Flow):
        raise ConfigError(f"workflow {record.workflow!r} is a {type(chosen).__name__}, not a workflow")
    inputs = _stored_json(record, "inputs", record.inputs) if record.inputs else {}
    if not isinstance(inputs, dict):
        raise JournalError(
            f"run {record.run_id!r} has inputs={record.inputs!r}, not a JSON object (the row was damaged or "
            "edited by hand); restore the journal from a backup or start a new run"
        )
    state: State = None
    if record.state_type is not None and record.state not in (None, "null"):
        if workflow is None or not record.state_type.startswith(f"{_module_of(workflow)}:"):
            _check_allowed(record.state_type, allow, record.run_id, "state type")
        model = import_ref(record.state_type)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise ConfigError(f"state type {record.state_type!r} is not a pydantic model")
        try:
            state = model.model_validate_json(record.state or "null")
        except ValueError as exc:
            raise JournalError(
                f"run {record.run_id!r} has state={record.state!r}, which does not fit "
                f"{record.state_type} ({exc}); restore the journal from a backup or start a new run"
            ) from exc
    return chosen, inputs, state


def _stored_json(record: RunRecord, column: str, text: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise JournalError(
            f"run {record.run_id!r} has {column}={text[:80]!r}, which is not JSON ({exc}); the row was damaged "
            "or edited by hand: restore the journal from a backup or start a new run"
        ) from exc


def _module_of(workflow: object) -> str | None:
    ref = object_ref(workflow)
    return ref.rpartition(":")[0] if ref is not None and not ref.startswith(PLAN_PREFIX) else None
