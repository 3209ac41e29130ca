"""The hook through which named steps are journaled (for resume after a crash).

The DSL defines only the protocol; ``agentflow.runtime`` provides the SQLite journal. A named step
whose context carries a journal runs like this::

    replay(path)  --hit-->  the recorded result, the step does not run  (event ``step.replayed``)
        | miss
    begin(path)   --error-->  Err(error)   (e.g. a non-idempotent step that may already have run)
        | ok
    run the step
        | Ok
    commit(path, value, state)   (before the result is used by anything downstream)

Paths are deterministic: a step's path is its parent's path plus its name, with ``[n]`` for the
n-th repeat of the same name in one parent (``research/search[2]``) and a ``[i]`` segment for parallel
branch i (``research/[1]/search``).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from ._errors import AgentflowError
from ._outcome import Ok, State


@runtime_checkable
class StepJournal(Protocol):
    """Where named steps record their results and find them again on resume."""

    async def replay(self, path: str, identity: str, result_type: object, state: State) -> Ok[Any] | None:
        """The recorded ``Ok(value, state)`` of the step at ``path``, decoded with ``result_type`` and the type
        of ``state``, or ``None`` when the step has no committed result. Raises (or returns nothing for) a
        step whose recorded ``identity`` differs: implementations raise ``ResumeError`` there."""
        ...

    async def begin(self, path: str, identity: str, idempotent: bool) -> AgentflowError | None:
        """Called before the step runs; returns an error to refuse running it."""
        ...

    async def commit(
        self, path: str, identity: str, value: object, state: State, result_type: object
    ) -> None:
        """Record the step's successful result durably. Raises ``AgentflowError`` (e.g. ``SerializationError``
        naming the bad value's path) when it cannot."""
        ...
