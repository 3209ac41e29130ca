"""Outcomes of running a flow (``Ok`` / ``Err``) and the trace of events the Writer layer collects."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, NoReturn, TypeAlias, TypeVar

from pydantic import BaseModel

from ._errors import AgentflowError
from ._events import Event

A_co = TypeVar("A_co", covariant=True)

State: TypeAlias = BaseModel | None
"""The State layer's value: a pydantic model, or ``None`` for flows that keep no state."""


Trace: TypeAlias = tuple[Event, ...]


@dataclass(frozen=True, slots=True)
class Ok(Generic[A_co]):
    """A successful outcome: the value, the final state and the trace.

    >>> Ok(3, None).value
    3
    """

    value: A_co
    state: State
    trace: Trace = ()

    def is_ok(self) -> bool:
        """Always ``True``."""
        return True

    def unwrap(self) -> A_co:
        """Return the value."""
        return self.value


@dataclass(frozen=True, slots=True)
class Err:
    """A failed outcome: the error (an ``AgentflowError``), the state at failure and the trace.

    >>> from agentflow.dsl import AgentflowError
    >>> Err(AgentflowError("boom"), None).is_ok()
    False
    """

    error: AgentflowError
    state: State
    trace: Trace = ()

    def is_ok(self) -> bool:
        """Always ``False``."""
        return False

    def unwrap(self) -> NoReturn:
        """Raise the error (for scripts that prefer exceptions)."""
        raise self.error


Outcome: TypeAlias = Ok[A_co] | Err
"""``Ok[A] | Err``: what running a ``Flow[A]`` gives."""
