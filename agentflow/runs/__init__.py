"""agentflow.runs: the run store's library: find, list, show, export and garbage-collect journaled runs.

Every run is journaled (``agentflow.runtime``); these functions read and manage that journal. The
``agentflow runs ...`` commands are a thin argument parser over them.
"""

from __future__ import annotations

from ._store import (
    DEFAULT_JOURNAL,
    JOURNAL_ENV,
    LATEST,
    RunAttempt,
    RunDetail,
    default_journal,
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
