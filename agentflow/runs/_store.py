"""The run store's library: find, list, show, export and garbage-collect the runs a journal holds.

Every run is journaled (see ``agentflow.runtime._journal``): its steps, its inputs and, per attempt, its
trace. ``RUN`` references are a run id or ``latest`` (the run updated last). The ``agentflow runs`` commands
(``agentflow.runs._cli``) only parse arguments and call these functions.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, assert_never

from pydantic import JsonValue

from agentflow.dsl import (
    Event,
    InterruptWaiting,
    LLMCall,
    Log,
    PlanInvalid,
    RetryScheduled,
    RunJournaled,
    SchedulerSummary,
    StepEnded,
    StepReplayed,
    StepStarted,
    TimedOut,
    TokenDelta,
    ToolCall,
)
from agentflow.errors import ConfigError
from agentflow.runtime._durable import open_journal
from agentflow.runtime._journal import Journal, RunRecord, RunStatus, StepRecord, TraceRecord
from agentflow.runtime._run_trace import trace_events

if TYPE_CHECKING:
    from agentflow.report import RunRecord as SavedRun

__all__ = [
    "LATEST",
    "RunAttempt",
    "RunDetail",
    "find_run",
    "gc_runs",
    "list_runs",
    "load_journaled_run",
    "parse_duration",
    "show_run",
]

LATEST = "latest"
"""The run reference that names the run updated last."""

_OLD_RUNS_DIR = Path(".agentflow") / "runs"
"""Where ``agentflow run`` saved runs before they were journaled (pointed at when a run is not found)."""

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``30s``, ``15m``, ``12h``, ``7d``, ``2w`` or ``1d12h``.

    >>> parse_duration("1d12h")
    129600.0

    Raises:
        ConfigError: the text is not a duration.
    """
    cleaned = text.strip().lower()
    pos, total = 0, 0.0
    for m in _DURATION.finditer(cleaned):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not cleaned or pos != len(cleaned):
        raise ConfigError(
            f"duration {text!r} is not understood; write a number with a unit s, m, h, d or w (e.g. 7d, 12h, 1d12h)"
        )
    return total


@dataclass(frozen=True)
class RunAttempt:
    """One attempt of a run, as its stored trace tells it.

    Attributes:
        trace: The stored trace (attempt number, how it ended, when, what was left out).
        events: Its events.
    """

    trace: TraceRecord
    events: tuple[Event, ...]

    def calls(self) -> tuple[LLMCall | ToolCall, ...]:
        """The attempt's LLM calls and tool calls, in the order they started."""
        found: list[LLMCall | ToolCall] = []
        for event in self.events:
            match event:
                case LLMCall() | ToolCall():
                    found.append(event)
                case (
                    StepStarted()
                    | StepEnded()
                    | StepReplayed()
                    | RetryScheduled()
                    | TimedOut()
                    | TokenDelta()
                    | PlanInvalid()
                    | InterruptWaiting()
                    | RunJournaled()
                    | SchedulerSummary()
                    | Log()
                ):
                    pass
                case _:
                    assert_never(event)
        return tuple(sorted(found, key=lambda c: c.started))


@dataclass(frozen=True)
class RunDetail:
    """A run, its steps and its attempts' traces, as ``runs show`` prints them."""

    run: RunRecord
    steps: tuple[StepRecord, ...]
    attempts: tuple[RunAttempt, ...] = ()

    @property
    def trace(self) -> tuple[Event, ...]:
        """Every attempt's events, oldest attempt first."""
        return tuple(e for a in self.attempts for e in a.events)


async def find_run(store: Journal, ref: str) -> RunRecord:
    """The run ``ref`` names in ``store``: a run id, or ``latest`` (the run updated last).

    Raises:
        ConfigError: no such run (the message lists the latest runs and how to see them all).
    """
    if ref == LATEST:
        newest = await store.list_runs(limit=1)
        if not newest:
            raise ConfigError(
                f"journal {store.location or store!r} has no runs yet; run a plan first "
                "(agentflow run PLAN), or pass the journal that holds your runs with --journal"
            )
        return newest[0]
    record = await store.get_run(ref)
    if record is not None:
        return record
    recent = ", ".join(r.run_id for r in await store.list_runs(limit=5)) or "none"
    old = _OLD_RUNS_DIR / f"{ref}.jsonl"
    hint = (
        f"; {str(old)!r} is a run saved by an older agentflow: `agentflow report {old} -o report.html` opens it"
        if old.is_file()
        else ""
    )
    raise ConfigError(
        f"journal {store.location or store!r} has no run {ref!r} (latest: {recent}); see `agentflow runs "
        f"list`, or pass the journal that holds the run with --journal{hint}"
    )


async def list_runs(
    journal: Journal | str | os.PathLike[str], *, status: RunStatus | None = None, limit: int | None = None
) -> list[RunRecord]:
    """The runs in a journal, most recently updated first (none when there is no journal file yet)."""
    if isinstance(journal, str | os.PathLike) and _missing_file(journal):
        return []
    store, owned = open_journal(journal)
    try:
        return await store.list_runs(status=status, limit=limit)
    finally:
        if owned:
            await store.aclose()


async def show_run(run_id: str, journal: Journal | str | os.PathLike[str]) -> RunDetail:
    """One run (``run_id`` may be ``latest``) with its steps and its attempts' traces.

    Raises:
        ConfigError: no such run (or no journal at that path).
        JournalError: a stored trace is damaged.
    """
    store, owned = open_journal(journal, create=False)
    try:
        record = await find_run(store, run_id)
        steps = tuple(await store.get_steps(record.run_id))
        where = store.location or repr(store)
        attempts = tuple(RunAttempt(t, trace_events(t, where)) for t in await store.get_traces(record.run_id))
        return RunDetail(record, steps, attempts)
    finally:
        if owned:
            await store.aclose()


async def load_journaled_run(ref: str, journal: Journal | str | os.PathLike[str]) -> SavedRun:
    """A journaled run as the report reads it (``agentflow.report.RunRecord``): every attempt's trace in
    order, the run's inputs and its result or error.

    Raises:
        ConfigError: no such run.
        JournalError: a stored trace or column is damaged.
    """
    from agentflow.report import RunRecord as SavedRun

    detail = await show_run(ref, journal)
    run = detail.run
    last = detail.attempts[-1].trace if detail.attempts else None
    inputs = _json_column(run, "inputs", run.inputs)
    value = _json_column(run, "result", run.result) if run.status == "completed" else None
    return SavedRun(
        run_id=run.run_id,
        plan=last.name if last is not None else (run.workflow or ""),
        engine=last.engine if last is not None else "",
        started=detail.attempts[0].trace.started if detail.attempts else run.created_at,
        finished=last.finished if last is not None else run.updated_at,
        ok=run.status == "completed",
        inputs=inputs if isinstance(inputs, dict) else {},
        value=value,
        error=None if run.status == "completed" else (run.error or f"the run is {run.status}"),
        trace=detail.trace,
    )


def _missing_file(journal: str | os.PathLike[str]) -> bool:
    from agentflow._postgres import is_postgres_url

    return not is_postgres_url(journal) and not Path(journal).exists()


def _json_column(run: RunRecord, column: str, text: str | None) -> JsonValue:
    if text is None:
        return None
    try:
        value: JsonValue = json.loads(text)
    except json.JSONDecodeError:
        from agentflow.errors import JournalError

        raise JournalError(
            f"run {run.run_id!r} has {column}={text[:80]!r}, which is not JSON; the row was damaged or "
            "edited by hand: restore the journal from a backup"
        ) from None
    return value


async def gc_runs(
    journal: Journal | str | os.PathLike[str],
    *,
    older_than: float | timedelta | str,
    include_unfinished: bool = False,
    dry_run: bool = False,
    now: float | None = None,
) -> list[str]:
    """Delete runs last updated more than ``older_than`` ago, with their steps, traces and unreferenced
    states.

    Args:
        journal: The journal.
        older_than: Seconds, a ``timedelta``, or a duration such as ``"7d"``.
        include_unfinished: Also delete runs that are suspended or crashed while running (by default
            only completed and failed runs are deleted: the others can still be resumed).
        dry_run: Only report what would be deleted.
        now: The current Unix time (default: ``time.time()``).

    Returns:
        The ids of the deleted (or, with ``dry_run``, deletable) runs.
    """
    if isinstance(older_than, str):
        seconds = parse_duration(older_than)
    elif isinstance(older_than, timedelta):
        seconds = older_than.total_seconds()
    else:
        seconds = float(older_than)
    if seconds < 0:
        raise ConfigError(f"older_than must not be negative, got {older_than!r}")
    cutoff = (time.time() if now is None else now) - seconds
    statuses: tuple[RunStatus, ...] = ("completed", "failed")
    if include_unfinished:
        statuses += ("suspended", "running")
    if isinstance(journal, str | os.PathLike) and _missing_file(journal):
        return []
    store, owned = open_journal(journal)
    try:
        if dry_run:
            return [
                r.run_id for r in await store.list_runs() if r.updated_at < cutoff and r.status in statuses
            ]
        return await store.delete_runs(updated_before=cutoff, statuses=statuses)
    finally:
        if owned:
            await store.aclose()
