"""Run reports: saved runs (JSON lines under ``.agentflow/runs``) and a self-contained HTML report of one.

``save_run``/``load_run`` keep what ``agentflow run`` did; ``render_report`` draws it: a timeline of
steps, LLM calls and tool calls, per-call token usage with cache hit rates, inputs and the result.
"""

from __future__ import annotations

from ._html import Span, render_report, spans_of
from ._runs import DEFAULT_RUNS_DIR, RunRecord, list_runs, load_run, save_run

__all__ = [
    "DEFAULT_RUNS_DIR",
    "RunRecord",
    "Span",
    "list_runs",
    "load_run",
    "render_report",
    "save_run",
    "spans_of",
]
