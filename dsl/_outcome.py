"""Outcomes of running a flow (``Ok`` / ``Err``) and the trace events the Writer layer collects."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Generic, TypeAlias, TypeVar

from pydantic import BaseModel

from ._errors import AgentflowError

A_co = TypeVar("A_co", covariant=True)

State: TypeAlias = BaseModel | None
"""The State layer's value: a pydantic model, or ``None`` for flows that keep no state."""


@dataclass(frozen=True, slots=True)
class Event:
    """One trace event (the Writer layer).

    Attributes:
        kind: What happened: ``step.start``, ``step.end``, ``retry``, ``llm.call``, ``tool.call``, ``log``...
        path: The step path it happened in (``research/search[2]``); ``""`` at the root.
        time: Wall-clock seconds since the epoch.
        data: Event details (JSON-compatible values).
    """

    kind: str
    path: str
    time: float = field(default_factory=time.time)
    data: Mapping[str, object] = field(default_factory=dict)


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

    def unwrap(self) -> object:
        """Raise the error (for scripts that prefer exceptions)."""
        raise self.error


Outcome: TypeAlias = Ok[A_co] | Err
"""``Ok[A] | Err``: what running a ``Flow[A]`` gives."""
