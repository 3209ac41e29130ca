"""Human-in-the-loop interrupts and idempotency keys: the two things a step asks the journal for.

``interrupt(prompt, Schema)`` is a named step. The first time the run reaches it, it records the
prompt and the answer's JSON Schema in the journal (status ``waiting``) and the run ends with
``Err(Interrupted(...))``; the run is then *suspended*, durably. ``agentflow.resume(run_id, answer=...)``
stores the answer; the resumed run replays everything before the interrupt from the journal, and the
interrupt step yields the answer validated by pydantic as a ``Schema``.

``idempotency_key()`` gives the current step a key that stays the same across every resume of the
run (``run_id:step_path``), for effects whose target can deduplicate.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from pydantic import BaseModel, TypeAdapter

from agentflow.dsl import (
    AgentflowError,
    ConfigError,
    Flow,
    InterruptWaiting,
    ask,
    current_path,
    emit,
    flow,
    get_state,
    named,
)

from ._journal import RunJournal

__all__ = ["Interrupted", "idempotency_key", "interrupt"]

T = TypeVar("T")


class Interrupted(AgentflowError):
    """The run stopped at an ``interrupt`` and waits for an answer (not a failure).

    Attributes:
        prompt: The question for the human.
        schema: JSON Schema the answer must match.
        run_id: The run to resume.
        path: The interrupt step's path.
    """

    def __init__(
        self, prompt: str, schema: dict[str, Any], run_id: str, path: str, journal_file: str | None = None
    ) -> None:
        self.prompt = prompt
        self.schema = schema
        self.run_id = run_id
        self.path = path
        option = f" --journal {journal_file}" if journal_file else ""
        how = (
            f"continue it with `agentflow resume {run_id}{option} --answer JSON` or "
            f"agentflow.runtime.resume({run_id!r}, answer=..., journal=...)"
            if run_id
            else "run the workflow with a journal (agentflow.run(..., journal='runs.db')) to be able to resume it"
        )
        super().__init__(f"run {run_id!r} waits for an answer: {prompt!r}; {how}", where=path or None)


def interrupt(prompt: str, schema: type[T], *, name: str = "interrupt") -> Flow[T]:
    """Suspend the run until a human answers ``prompt`` with a value of type ``schema``.

    Args:
        prompt: The question (shown by ``agentflow runs show`` and carried by ``Interrupted``).
        schema: The answer's type (a pydantic model or any type pydantic validates).
        name: The step name (repeats in one scope are numbered: ``interrupt[1]``).

    Returns:
        A flow that yields the validated answer once the run is resumed with one; until then the run
        ends with ``Err(Interrupted)`` and its journal records the prompt and the schema.
    """
    schema_dict = TypeAdapter(schema).json_schema()
    answer_schema = json.dumps(schema_dict, separators=(",", ":"))

    @flow
    async def wait() -> T:
        ctx = await ask()
        path = await current_path()
        current = await get_state(object)
        state = current if isinstance(current, BaseModel) else None
        journal = ctx.journal
        if not isinstance(journal, RunJournal):
            raise Interrupted(prompt, schema_dict, "", path)
        await journal.suspend(path, prompt, answer_schema, state)
        await emit(InterruptWaiting(path=path, prompt=prompt, schema=_type_name(schema)))
        raise Interrupted(prompt, schema_dict, ctx.run_id, path, journal.journal.location)

    return named(name, wait(), result_type=schema)


def _type_name(kind: object) -> str:
    return str(getattr(kind, "__name__", None) or kind)


@flow
async def _key() -> str:
    ctx = await ask()
    path = await current_path()
    if not ctx.run_id or not path:
        raise ConfigError(
            "idempotency_key() needs a run id and a named step around it (got run_id="
            f"{ctx.run_id!r}, path={path!r}); call it inside a @step run with agentflow.run(...)"
        )
    return f"{ctx.run_id}:{path}"


def idempotency_key() -> Flow[str]:
    """A key for the current step's side effect, the same in every attempt and resume of the run.

    Pass it to the effect's target so a repeated call is recognised (an ``Idempotency-Key`` header, a
    unique database column, a marker written with the effect). A step whose effect deduplicates this
    way may stay idempotent (the default): after a crash it runs again with the same key and the
    target drops the duplicate.

    >>> import anyio
    >>> from agentflow.dsl import Context, step
    >>> @step
    ... async def pay() -> str:
    ...     return await idempotency_key()
    >>> anyio.run(pay().run, Context(run_id="r1")).value
    'r1:pay'
    """
    return _key()
