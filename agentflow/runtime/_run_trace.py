"""A run's trace as the journal keeps it: collected while the run goes, stored (redacted, capped) when an
attempt ends, and read back as typed events.

``TraceCollector`` is the run's event sink: it keeps every event the moment it is recorded, in any
branch, so an attempt cancelled half-way (Ctrl-C) still stores what it did. ``stored_trace`` turns an
attempt's events into a ``TraceRecord``: one ``event_to_json`` line per event, redacted of revealed
secrets, and at most ``max_bytes`` long. A longer trace keeps its first and last events (half the cap
each) and leaves out those between them, in their place a ``Log`` event named ``trace.cut`` saying how
many events and bytes were left out; the record counts them in ``dropped``. ``trace_events`` reads a
stored trace back (a journal is untrusted input: every event is validated, a bad line is a
``JournalError`` naming the run, the attempt and the line).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from agentflow.dsl import (
    EVENT_FORMAT,
    Event,
    EventFormatError,
    Log,
    TokenDelta,
    event_from_json,
    event_to_json,
)
from agentflow.errors import JournalError
from agentflow.secrets import any_revealed, redact, redact_data

from ._journal import RunStatus, TraceRecord

__all__ = ["CUT_EVENT", "TraceCollector", "redact_event", "stored_trace", "trace_events"]

CUT_EVENT = "trace.cut"
"""The name of the ``Log`` event that stands where a capped trace left events out."""


class TraceCollector:
    """An event sink that keeps the run's events (token deltas excepted: the ``LLMCall`` that ends a
    stream holds its whole completion) and passes every event on to ``listener``.

    Args:
        listener: The sink it stands in front of (the run's ``on_event``), if any.
    """

    def __init__(self, listener: Callable[[Event], None] | None) -> None:
        self._listener = listener
        self.events: list[Event] = []  # every event recorded so far, in the order recorded; grows for the run

    def __call__(self, event: Event) -> None:
        if not isinstance(event, TokenDelta):
            self.events.append(event)
        if self._listener is not None:
            self._listener(event)


def redact_event(event: Event) -> Event:
    """``event`` with every revealed secret value blanked out of its text fields."""
    changes: dict[str, Any] = {
        f.name: redact_data(getattr(event, f.name))
        for f in dataclasses.fields(event)
        if isinstance(getattr(event, f.name), str | Mapping | tuple | list)
    }
    return dataclasses.replace(event, **changes) if changes else event


def _line(event: Event) -> str:
    if any_revealed():
        event = redact_event(event)
    # The whole line is redacted too: a secret's JSON-escaped form is caught there.
    return redact(json.dumps(event_to_json(event), ensure_ascii=False, default=str))


def stored_trace(
    events: Iterable[Event],
    *,
    run_id: str,
    attempt: int,
    status: RunStatus,
    name: str,
    engine: str,
    started: float,
    finished: float,
    max_bytes: int,
) -> TraceRecord:
    """The record of one attempt's ``events`` (token deltas left out), at most ``max_bytes`` of events.

    Invariant: the stored lines are a prefix and a suffix of the attempt's event lines, in order, each
    within half of the cap (less room for the ``trace.cut`` line); what lies between them is counted,
    never silently lost.
    """
    lines = [_line(e) for e in events if not isinstance(e, TokenDelta)]
    kept, dropped = _capped(lines, max_bytes, started)
    return TraceRecord(
        run_id=run_id,
        attempt=attempt,
        status=status,
        name=name,
        engine=engine,
        format=EVENT_FORMAT,
        events="".join(line + "\n" for line in kept),
        count=len(kept),
        dropped=dropped,
        started=started,
        finished=finished,
    )


def _capped(lines: list[str], max_bytes: int, started: float) -> tuple[list[str], int]:
    """``lines`` within ``max_bytes`` (see ``stored_trace``), and how many were left out."""
    sizes = [len(line.encode()) + 1 for line in lines]
    if sum(sizes) <= max_bytes:
        return lines, 0
    budget = (max_bytes - _CUT_LINE_BYTES) // 2
    head, used = 0, 0
    while head < len(lines) and used + sizes[head] <= budget:
        used += sizes[head]
        head += 1
    tail, used = len(lines), 0
    while tail > head and used + sizes[tail - 1] <= budget:
        tail -= 1
        used += sizes[tail]
    left_out = lines[head:tail]
    cut = Log(
        path="",
        time=_time_of(left_out[0]) if left_out else started,
        name=CUT_EVENT,
        data={
            "dropped_events": len(left_out),
            "dropped_bytes": sum(sizes[head:tail]),
            "max_trace_bytes": max_bytes,
        },
    )
    return [*lines[:head], json.dumps(event_to_json(cut)), *lines[tail:]], len(left_out)


_CUT_LINE_BYTES = 256
"""Room kept for the ``trace.cut`` event's line, so a cut trace stays within the cap."""


def _time_of(line: str) -> float:
    value = json.loads(line).get("time")
    return float(value) if isinstance(value, int | float) else 0.0


def trace_events(record: TraceRecord, journal: str) -> tuple[Event, ...]:
    """The events of a stored trace.

    Raises:
        JournalError: a line is not a valid event of the record's format (the message names the run, the
            attempt and the line).
    """
    out: list[Event] = []
    for number, line in enumerate(record.events.splitlines(), start=1):
        if not line.strip():
            continue
        where = (
            f"journal {journal!r}: run {record.run_id!r}, trace of attempt {record.attempt}, line {number}"
        )
        try:
            raw = json.loads(line)
            if not isinstance(raw, dict):
                raise EventFormatError(f"a JSON {type(raw).__name__}, not an event object")
            out.append(event_from_json(raw, version=record.format))
        except (ValueError, EventFormatError) as exc:
            raise JournalError(
                f"{where} is not a valid event ({exc}); the trace was damaged or edited by hand: restore the "
                "journal from a backup (the run's steps do not depend on its trace)"
            ) from None
    return tuple(out)
