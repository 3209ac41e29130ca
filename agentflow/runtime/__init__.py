"""agentflow.runtime: the run context, running workflows, and LLM calls as flows."""

from __future__ import annotations

from ._context import RunContext
from ._llm import Prompt, generate, infer, schema_instructions
from ._run import Workflow, run, run_sync, usage_of

__all__ = [
    "Prompt",
    "RunContext",
    "Workflow",
    "generate",
    "infer",
    "run",
    "run_sync",
    "schema_instructions",
    "usage_of",
]
