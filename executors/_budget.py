"""The step budget: how many tool and LLM calls a run may make in all, however its flows nest and fan out.

``agentflow.run(max_steps=N)``, a plan's ``max_steps`` and ``agentflow run --max-steps N`` each make a
``StepBudget``; it is active (a context variable, inherited by every task the run starts) while the run or plan
executes. ``Tool.invoke`` and the runtime's LLM call charge the active budget once per call, a plan's ``map`` once
per item (``charge_step``); a budget made while another is active charges both, so a plan cannot widen the limit
its caller set.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

from agentflow.dsl import Flow, flow
from agentflow.errors import ConfigError, StepBudgetExceededError

__all__ = ["StepBudget", "charge_step", "current_step_budget", "limit_steps", "step_budget"]

A = TypeVar("A")

_ACTIVE: contextvars.ContextVar[StepBudget | None] = contextvars.ContextVar(
    "agentflow_step_budget", default=None
)


class StepBudget:
    """Tool and LLM calls a run may still make; shared by all its steps.

    Args:
        limit: Calls allowed in all.
        parent: A budget that every charge is also made against (the enclosing run's).

    Example:
        >>> budget = StepBudget(2)
        >>> budget.charge("tool a"); budget.charge("tool b"); budget.used
        2
        >>> budget.charge("tool c")
        Traceback (most recent call last):
        ...
        agentflow.errors.StepBudgetExceededError: the run made 2 tool and LLM calls, ...
    """

    def __init__(self, limit: int, *, parent: StepBudget | None = None) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ConfigError(f"max_steps must be an integer >= 1, got {limit!r}")
        self.limit = limit
        self.parent = parent
        self.used = 0  # lifetime: the run's (or plan execution's); +1 per admitted call

    def charge(self, call: str, where: str | None = None) -> None:
        """Admit one call (``"tool word_count"``, ``"LLM call"``) or raise ``StepBudgetExceededError``."""
        if self.used >= self.limit:
            raise StepBudgetExceededError(self.limit, call, where=where or None)
        if self.parent is not None:
            self.parent.charge(call, where)
        self.used += 1


def current_step_budget() -> StepBudget | None:
    """The budget of the run (or plan) executing in this task, if any."""
    return _ACTIVE.get()


@contextmanager
def step_budget(budget: StepBudget | None) -> Iterator[StepBudget | None]:
    """Make ``budget`` the active one inside the block (``None``: leave the active one as it is)."""
    if budget is None:
        yield _ACTIVE.get()
        return
    token = _ACTIVE.set(budget)
    try:
        yield budget
    finally:
        _ACTIVE.reset(token)


def charge_step(call: str) -> Flow[None]:
    """A flow that charges one step to the active budget (an ``Err`` when it is used up), for work that fans out.

    Plans charge each ``map`` item before it starts, so nested maps stop spawning branches once the budget is
    gone rather than after every leaf was started.
    """

    @flow
    async def charge() -> None:
        budget = current_step_budget()
        if budget is not None:
            budget.charge(call)

    return charge()


def limit_steps(inner: Flow[A], limit: int) -> Flow[A]:
    """``inner`` with at most ``limit`` tool and LLM calls per execution (on top of any enclosing budget)."""
    StepBudget(limit)  # check the limit now, where the caller can see it

    @flow
    async def limited() -> A:
        with step_budget(StepBudget(limit, parent=current_step_budget())):
            return await inner

    return limited()
