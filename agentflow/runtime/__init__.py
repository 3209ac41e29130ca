"""agentflow.runtime: the run context, running workflows (durably, with a journal), resuming them,
and LLM calls as flows."""

from ._context import RunContext, TokenBudget
from ._durable import resolve_step
from ._interrupt import Interrupted, idempotency_key, interrupt
from ._journal import Journal, RunJournal, RunRecord, RunStatus, StepRecord, StepStatus, TraceRecord
from ._llm import (
    JsonCheck,
    Judge,
    Prompt,
    TextReader,
    ToolCallReader,
    call_llm,
    generate,
    infer,
    infer_json,
    llm_call,
    schema_instructions,
)
from ._postgres_journal import PostgresJournal
from ._run import Workflow, resume, run, run_sync, usage_of
from ._sqlite_journal import SqliteJournal
from ._stream import RunStream, StreamItem, stream
from ._tool_check import tool_call_problems

__all__ = [
    "Interrupted",
    "Journal",
    "JsonCheck",
    "Judge",
    "PostgresJournal",
    "Prompt",
    "RunContext",
    "RunJournal",
    "RunRecord",
    "RunStatus",
    "RunStream",
    "SqliteJournal",
    "StepRecord",
    "StepStatus",
    "StreamItem",
    "TextReader",
    "TokenBudget",
    "ToolCallReader",
    "TraceRecord",
    "Workflow",
    "call_llm",
    "generate",
    "idempotency_key",
    "infer",
    "infer_json",
    "interrupt",
    "llm_call",
    "resolve_step",
    "resume",
    "run",
    "run_sync",
    "schema_instructions",
    "stream",
    "tool_call_problems",
    "usage_of",
]
