"""agentflow.runtime: the run context, running workflows (durably, with a journal), resuming them,
and LLM calls as flows."""

from __future__ import annotations

from ._context import RunContext, TokenBudget
from ._durable import resolve_step
from ._interrupt import Interrupted, idempotency_key, interrupt
from ._journal import Journal, RunJournal, RunRecord, RunStatus, StepRecord, StepStatus
from ._llm import Prompt, generate, infer, llm_call_data, schema_instructions
from ._postgres_journal import PostgresJournal
from ._run import Workflow, resume, run, run_sync, usage_of
from ._runs_cli import RunDetail, gc_runs, list_runs, parse_duration, show_run
from ._sqlite_journal import SqliteJournal

__all__ = [
    "Interrupted",
    "Journal",
    "PostgresJournal",
    "Prompt",
    "RunContext",
    "RunDetail",
    "RunJournal",
    "RunRecord",
    "RunStatus",
    "SqliteJournal",
    "StepRecord",
    "StepStatus",
    "TokenBudget",
    "Workflow",
    "gc_runs",
    "generate",
    "idempotency_key",
    "infer",
    "interrupt",
    "list_runs",
    "llm_call_data",
    "parse_duration",
    "resolve_step",
    "resume",
    "run",
    "run_sync",
    "schema_instructions",
    "show_run",
    "usage_of",
]
