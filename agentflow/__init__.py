"""agentflow: typed, composable multi-agent LLM workflows, scheduled to reuse the KV cache.

Write workflows as ``@flow`` async functions or with combinators (``par``, ``retry``, ``timeout``...),
call LLMs with ``generate`` and typed ``infer``, and run them with ``run``/``run_sync`` on any engine
(``"llamacpp:default"`` embedded, ``"openai:<url>#<model>"``, ``"vllm:<model>"``, ``"test:"``).
"""

from __future__ import annotations

import os as _os
from typing import TYPE_CHECKING

# In a source checkout the subpackages agentflow.dsl/.agents/.memory/.executors live in top-level
# folders (pyproject maps them with package-dir). When this file is imported straight from the
# checkout (the repo root on sys.path), point the package path at the root too so they resolve.
_here = _os.path.dirname(__file__)
_root = _os.path.dirname(_here)
if not _os.path.isdir(_os.path.join(_here, "dsl")) and _os.path.isfile(
    _os.path.join(_root, "dsl", "__init__.py")
):
    __path__.append(_root)

from agentflow import errors  # noqa: E402
from agentflow._lazy import lazy_attributes as _lazy_attributes  # noqa: E402
from agentflow.dsl import (  # noqa: E402
    AgentflowError,
    Append,
    Backoff,
    ConfigError,
    Context,
    Err,
    Event,
    Flow,
    LoopLimitError,
    Max,
    MergeConflict,
    MergeRule,
    Min,
    Ok,
    Outcome,
    RaceLostError,
    RateLimiter,
    Reducer,
    Replace,
    RuntimeFailure,
    State,
    StateTypeError,
    StepError,
    StepTimeout,
    Trace,
    Union,
    UserError,
    ask,
    bind,
    branch,
    current_path,
    deps,
    fail,
    flow,
    from_async,
    gather,
    get_state,
    loop,
    map,
    merge_states,
    modify,
    named,
    par,
    pure,
    put,
    race,
    rate_limit,
    recover,
    retry,
    step,
    tell,
    then,
    timeout,
    update,
    when,
)

if TYPE_CHECKING:
    from agentflow.engines import (
        Completion,
        Engine,
        GenerationRequest,
        Message,
        RequestHints,
        Usage,
        engine_from_spec,
    )
    from agentflow.plans import Plan, dump_plan, load_plan
    from agentflow.runtime import (
        Interrupted,
        Journal,
        RunContext,
        SqliteJournal,
        generate,
        idempotency_key,
        infer,
        interrupt,
        resume,
        run,
        run_sync,
        stream,
        usage_of,
    )
    from agentflow.scheduler import PromptLayout, Scheduler

__version__ = "0.1.0"

__all__ = [
    "AgentflowError",
    "Append",
    "Backoff",
    "Completion",
    "ConfigError",
    "Context",
    "Engine",
    "Err",
    "Event",
    "Flow",
    "GenerationRequest",
    "Interrupted",
    "Journal",
    "LoopLimitError",
    "Max",
    "MergeConflict",
    "MergeRule",
    "Message",
    "Min",
    "Ok",
    "Outcome",
    "Plan",
    "PromptLayout",
    "RaceLostError",
    "RateLimiter",
    "Reducer",
    "Replace",
    "RequestHints",
    "RunContext",
    "RuntimeFailure",
    "Scheduler",
    "SqliteJournal",
    "State",
    "StateTypeError",
    "StepError",
    "StepTimeout",
    "Trace",
    "Union",
    "Usage",
    "UserError",
    "__version__",
    "ask",
    "bind",
    "branch",
    "current_path",
    "deps",
    "dump_plan",
    "engine_from_spec",
    "fail",
    "flow",
    "from_async",
    "gather",
    "generate",
    "get_state",
    "idempotency_key",
    "infer",
    "interrupt",
    "load_plan",
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
    "resume",
    "retry",
    "run",
    "run_sync",
    "step",
    "stream",
    "tell",
    "then",
    "timeout",
    "update",
    "usage_of",
    "when",
]

__all__ += ["errors"]

# Public names outside the DSL, loaded on first attribute access so that ``import agentflow`` stays light
# (the CLI and apps that only build flows do not pay for the runtime, plans, engines and scheduler).
_LAZY: dict[str, str] = {
    **dict.fromkeys(
        ["Completion", "Engine", "GenerationRequest", "Message", "RequestHints", "Usage", "engine_from_spec"],
        "agentflow.engines",
    ),
    **dict.fromkeys(["Plan", "dump_plan", "load_plan"], "agentflow.plans"),
    **dict.fromkeys(
        [
            "Interrupted",
            "Journal",
            "RunContext",
            "SqliteJournal",
            "generate",
            "idempotency_key",
            "infer",
            "interrupt",
            "resume",
            "run",
            "run_sync",
            "stream",
            "usage_of",
        ],
        "agentflow.runtime",
    ),
    **dict.fromkeys(["PromptLayout", "Scheduler"], "agentflow.scheduler"),
}

# Subpackages reachable as ``agentflow.<name>`` after a bare ``import agentflow``; imported on first access.
_SUBPACKAGES = frozenset(
    {
        "engines",
        "executors",
        "mcp",
        "memory",
        "network",
        "plans",
        "runtime",
        "scheduler",
        "secrets",
        "telemetry",
    }
)


__getattr__, __dir__ = _lazy_attributes(__name__, globals(), _LAZY, submodules=_SUBPACKAGES)
