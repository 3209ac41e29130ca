"""Journaled runs: claiming a run in a journal, running it against a ``RunJournal``, recording how it
ended, settling a non-idempotent step by hand, and importing a run's workflow again for a resume.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import anyio
from pydantic import BaseModel

from agentflow.dsl import Err, Flow, Ok, RunJournaled, State
from agentflow.errors import ConfigError, ResumeError, SerializationError

from ._context import RunContext
from ._interrupt import Interrupted
from ._journal import Journal, RunJournal, RunRecord, RunStatus
from ._serialize import encode_state, to_json
from ._sqlite_journal import SqliteJournal

__all__ = [
    "import_ref",
    "object_ref",
    "open_journal",
    "resolve_step",
    "run_journaled",
]

A = TypeVar("A")

_UNSET: Any = object()
_RESUMED_PREFIX = "_agentflow_resumed_"
"""Module-name prefix of scripts imported by file path to resume their runs."""


def open_journal(journal: Journal | str | os.PathLike[str]) -> tuple[Journal, bool]:
    """The journal to use and whether the caller owns it (opened from a path, to be closed)."""
    if isinstance(journal, Journal):
        return journal, False
    if isinstance(journal, str | os.PathLike):
        return SqliteJournal(journal), True
    raise ConfigError(
        f"journal must be a Journal or the path of a journal file, got {type(journal).__name__}"
    )


def object_ref(obj: object) -> str | None:
    """How to import ``obj`` again (``module:qualname``, or ``/abs/file.py:qualname`` for a script run
    as ``__main__``); ``None`` when it cannot be imported by name (a local function, a lambda)."""
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


def import_ref(ref: str) -> object:
    """Import what ``object_ref`` named.

    Raises:
        ConfigError: the module, file or attribute is gone.
    """
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
) -> Ok[A] | Err:
    """Run ``flow_value`` as run ``context.run_id`` of ``journal`` (created, or resumed if it exists)."""
    store, owned = open_journal(journal)
    try:
        return await _run_in(store, flow_value, context, state, workflow, inputs)
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
) -> Ok[A] | Err:
    run_id = context.run_id
    ref = object_ref(workflow) if not isinstance(workflow, Flow) else None
    inputs_json = to_json(dict(inputs or {}), "inputs")
    state_json = encode_state(state, "initial_state")
    existing = await store.get_run(run_id)
    if existing is not None:
        _check_same_start(existing, ref, inputs_json, state_json)
    _record, steps, created = await store.claim_run(
        run_id,
        workflow=ref,
        inputs=inputs_json,
        state_type=object_ref(type(state)) if state is not None else None,
        state=state_json,
    )
    run_journal = RunJournal(store, run_id, steps)
    ctx = dataclasses.replace(context, journal=run_journal)
    started = time.time()
    status: RunStatus = "failed"
    result: str | None = None
    error: str | None = "the run was cancelled or crashed before it finished"
    try:
        res = await flow_value.run(ctx, state)
        if isinstance(res, Ok):
            try:
                run_journal.check_scope_complete("")
            except ResumeError as exc:
                res = Err(exc, res.state, res.trace)
        status, result, error = _ending(res, run_journal)
    finally:
        with anyio.CancelScope(shield=True):
            await store.finish_run(run_id, status, result=result, error=error)
    head = RunJournaled(path="", time=started, run_id=run_id, resumed=not created, status=status)
    if isinstance(res, Err):
        return Err(res.error, res.state, (head, *res.trace))
    return Ok(res.value, res.state, (head, *res.trace))


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
    if isinstance(res, Ok):
        try:
            return "completed", to_json(res.value, "result"), None
        except SerializationError:
            return "completed", None, None
    if isinstance(res.error, Interrupted) or run_journal.waiting():
        return "suspended", None, str(res.error)
    return "failed", None, str(res.error)


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
    store, owned = open_journal(journal)
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
                        "value": to_json(value, "value"),
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
    record: RunRecord, workflow: Callable[..., Flow[Any]] | Flow[Any] | None
) -> tuple[Callable[..., Flow[Any]] | Flow[Any], dict[str, object], State]:
    """The workflow, inputs and initial state to resume ``record`` with."""
    chosen: object = workflow
    if chosen is None:
        if record.workflow is None:
            raise ConfigError(
                f"run {record.run_id!r} did not record an importable workflow; pass workflow=... "
                "(CLI: --workflow module:attr)"
            )
        chosen = import_ref(record.workflow)
    if not callable(chosen) and not isinstance(chosen, Flow):
        raise ConfigError(f"workflow {record.workflow!r} is a {type(chosen).__name__}, not a workflow")
    inputs = json.loads(record.inputs) if record.inputs else {}
    state: State = None
    if record.state_type is not None and record.state not in (None, "null"):
        model = import_ref(record.state_type)
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise ConfigError(f"state type {record.state_type!r} is not a pydantic model")
        assert record.state is not None
        state = model.model_validate_json(record.state)
    return chosen, inputs, state
