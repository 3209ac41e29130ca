"""agentflow: typed, composable multi-agent LLM workflows, scheduled to reuse the KV cache.

Write workflows as ``@flow`` async functions or with combinators (``par``, ``retry``, ``timeout``...),
call LLMs with ``generate`` and typed ``infer``, and run them with ``run``/``run_sync`` on any engine
(``"llamacpp:default"`` embedded, ``"openai:<url>#<model>"``, ``"vllm:<model>"``, ``"test:"``).

The top level holds what a first workflow needs; everything else is public in its subpackage:
``agentflow.dsl`` (every combinator, state reducers, events), ``agentflow.runtime`` (journals, run contexts),
``agentflow.engines``, ``agentflow.scheduler``, ``agentflow.plans``, ``agentflow.runs``, ``agentflow.agents``,
``agentflow.memory``, ``agentflow.executors``, ``agentflow.telemetry``, ``agentflow.errors``.
"""

from agentflow import errors
from agentflow.dsl import (
    Err,
    Flow,
    Ok,
    State,
    flow,
    map,
    par,
    race,
    recover,
    retry,
    step,
    timeout,
)
from agentflow.engines import Engine, engine_from_spec
from agentflow.errors import AgentflowError
from agentflow.plans import Plan, load_plan
from agentflow.runtime import generate, infer, interrupt, resume, run, run_sync, stream, usage_of
from agentflow.scheduler import Scheduler

__version__ = "0.1.0"

__all__ = [
    "AgentflowError",
    "Engine",
    "Err",
    "Flow",
    "Ok",
    "Plan",
    "Scheduler",
    "State",
    "__version__",
    "engine_from_spec",
    "errors",
    "flow",
    "generate",
    "infer",
    "interrupt",
    "load_plan",
    "map",
    "par",
    "race",
    "recover",
    "resume",
    "retry",
    "run",
    "run_sync",
    "step",
    "stream",
    "timeout",
    "usage_of",
]
