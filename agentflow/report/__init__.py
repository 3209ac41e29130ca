"""Run reports: a self-contained HTML report of a run, and run files (a run as JSON lines).

``render_report`` draws a run: a timeline of steps, LLM calls and tool calls, per-call token usage with
cache hit rates, inputs and the result. Runs live in the journal (``agentflow report RUN`` reads them
there); ``write_run``/``load_run`` write and read a run file, the portable form ``agentflow runs export``
writes and older agentflow versions saved.
"""

from ._html import Span, render_report, spans_of
from ._runs import DEFAULT_RUNS_DIR, RunRecord, list_runs, load_run, save_run, write_run

__all__ = [
    "DEFAULT_RUNS_DIR",
    "RunRecord",
    "Span",
    "list_runs",
    "load_run",
    "render_report",
    "save_run",
    "spans_of",
    "write_run",
]
