"""The Reader layer's environment.

``Context`` is what every step of a run can read: user dependencies and the run id. The agentflow
runtime subclasses it (``agentflow.runtime.RunContext``) to add the engine, scheduler, tools, memory and
journal; the DSL itself knows nothing about those.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._journal import StepJournal

if TYPE_CHECKING:
    from ._events import Event


@dataclass(frozen=True)
class Context:
    """Read-only environment of a run.

    Attributes:
        deps: User dependencies (any object: a database handle, settings...), read with ``deps(T)``.
        run_id: Identifier of the run; also the workflow id given to the scheduler.
        services: Extra named capabilities for extensions, read with ``ask()``.
        journal: Where named steps record results for resume (``None``: no journal).
        on_event: Called with every event of the run the moment it is recorded, in any branch (a live
            view: ``agentflow.stream``, progress displays). It runs in the event loop; keep it cheap.
    """

    deps: object = None
    run_id: str = ""
    services: dict[str, object] = field(default_factory=dict)
    journal: StepJournal | None = None
    on_event: Callable[[Event], None] | None = None
