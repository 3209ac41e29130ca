"""agentflow.runs: the run store's library: find, list, show, export and garbage-collect journaled runs.

Every run is journaled (``agentflow.runtime``); these functions read and manage that journal. The
``agentflow runs ...`` commands are a thin argument parser over them.
"""

from agentflow._cli_options import DEFAULT_JOURNAL, JOURNAL_ENV, default_journal

from ._store import (
    LATEST,
    RunAttempt,
    RunDetail,
    find_run,
    gc_runs,
    list_runs,
    load_journaled_run,
    parse_duration,
    show_run,
)

__all__ = [
    "DEFAULT_JOURNAL",
    "JOURNAL_ENV",
    "LATEST",
    "RunAttempt",
    "RunDetail",
    "default_journal",
    "find_run",
    "gc_runs",
    "list_runs",
    "load_journaled_run",
    "parse_duration",
    "show_run",
]
