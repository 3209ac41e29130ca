"""agentflow: typed, composable multi-agent LLM workflows, scheduled to reuse the KV cache.

Write workflows as ``@flow`` async functions or with combinators (``par``, ``retry``, ``timeout``...),
call LLMs with ``generate`` and typed ``infer``, and run them with ``run``/``run_sync`` on any engine
(``"llamacpp:default"`` embedded, ``"openai:<url>#<model>"``, ``"vllm:<model>"``, ``"test:"``).

The top level holds what a first workflow needs; everything else is public in its subpackage:
``agentflow.dsl`` (every combinator, state reducers, events), ``agentflow.runtime`` (journals, run contexts),
``agentflow.engines``, ``agentflow.scheduler``, ``agentflow.plans``, ``agentflow.runs``, ``agentflow.agents``,
``agentflow.memory``, ``agentflow.executors``, ``agentflow.telemetry``, ``agentflow.errors``.
"""

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
from agentflow.engines import Engine, engine_from_spec  # noqa: E402
from agentflow.errors import AgentflowError  # noqa: E402
from agentflow.plans import Plan, load_plan  # noqa: E402
from agentflow.runtime import generate, infer, interrupt, resume, run, run_sync, stream, usage_of  # noqa: E402
from agentflow.scheduler import Scheduler  # noqa: E402

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
