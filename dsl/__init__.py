"""agentflow.dsl: the Flow monad transformer (Reader + State + Except + Writer over anyio).

A ``Flow[A]`` is a lazy, typed, re-runnable description of work that yields an ``A``. Compose flows
with ``>>``/``bind``, ``par``, ``retry``, ``timeout``... or write them as ``@flow`` async functions in
which ``x = await other_flow`` binds. Run with ``await flow.run(ctx, state)``, which gives
``Ok(value, state, trace)`` or ``Err(error, state, trace)``.

The DSL depends on nothing else in agentflow.
"""

from __future__ import annotations

from ._context import Context
from ._control import Backoff, RateLimiter, branch, loop, rate_limit, recover, retry, timeout, when
from ._do import flow, step
from ._errors import (
    AgentflowError,
    ConfigError,
    LoopLimitError,
    MergeConflict,
    RaceLostError,
    RuntimeFailure,
    StateTypeError,
    StepError,
    StepTimeout,
    UserError,
)
from ._flow import (
    Flow,
    ask,
    bind,
    current_path,
    deps,
    fail,
    from_async,
    get_state,
    modify,
    named,
    pure,
    put,
    tell,
    then,
    update,
)
from ._flow import fmap as map
from ._journal import StepJournal
from ._merge import Append, Max, MergeRule, Min, Reducer, Replace, Union, merge_states
from ._outcome import Err, Event, Ok, Outcome, State, Trace
from ._parallel import gather, par, race

__all__ = [
    "AgentflowError",
    "Append",
    "Backoff",
    "ConfigError",
    "Context",
    "Err",
    "Event",
    "Flow",
    "LoopLimitError",
    "Max",
    "MergeConflict",
    "MergeRule",
    "Min",
    "Ok",
    "Outcome",
    "RaceLostError",
    "RateLimiter",
    "Reducer",
    "Replace",
    "RuntimeFailure",
    "State",
    "StateTypeError",
    "StepError",
    "StepJournal",
    "StepTimeout",
    "Trace",
    "Union",
    "UserError",
    "ask",
    "bind",
    "branch",
    "current_path",
    "deps",
    "fail",
    "flow",
    "from_async",
    "gather",
    "get_state",
    "loop",
    "map",
    "merge_states",
    "modify",
    "named",
    "par",
    "pure",
    "put",
    "race",
    "rate_limit",
    "recover",
    "retry",
    "step",
    "tell",
    "then",
    "timeout",
    "update",
    "when",
]
