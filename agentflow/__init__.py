"""agentflow: typed, composable multi-agent LLM workflows, scheduled to reuse the KV cache.

Write workflows as ``@flow`` async functions or with combinators (``par``, ``retry``, ``timeout``...),
call LLMs with ``generate`` and typed ``infer``, and run them with ``run``/``run_sync`` on any engine
(``"llamacpp:default"`` embedded, ``"openai:<url>#<model>"``, ``"vllm:<model>"``, ``"test:"``).
"""

from __future__ import annotations

import os as _os

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
from agentflow.engines import (  # noqa: E402
    Completion,
    Engine,
    GenerationRequest,
    Message,
    RequestHints,
    Usage,
    engine_from_spec,
)
from agentflow.runtime import RunContext, generate, infer, run, run_sync, usage_of  # noqa: E402

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
    "LoopLimitError",
    "Max",
    "MergeConflict",
    "MergeRule",
    "Message",
    "Min",
    "Ok",
    "Outcome",
    "RaceLostError",
    "RateLimiter",
    "Reducer",
    "Replace",
    "RequestHints",
    "RunContext",
    "RuntimeFailure",
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
    "engine_from_spec",
    "fail",
    "flow",
    "from_async",
    "gather",
    "generate",
    "get_state",
    "infer",
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
    "run",
    "run_sync",
    "step",
    "tell",
    "then",
    "timeout",
    "update",
    "usage_of",
    "when",
]

__all__ += ["errors"]
