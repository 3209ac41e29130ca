"""Live progress of a CLI run: steps and LLM calls, as a rich display on a terminal or plain lines.

Two live sources feed it: the plan compiler's step callback (``PROGRESS_SERVICE``: start, end, fail
of each step) and the scheduler's ``on_request_done`` (each finished LLM request). Both arrive as trace
events, and ``signal_of`` is the one place that reads an event's kind and data; the display and the
run summary only see the typed signals it returns.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from agentflow.dsl import Event

if TYPE_CHECKING:
    from agentflow.scheduler import RequestMetrics, Scheduler

__all__ = [
    "CallCounts",
    "LlmSignal",
    "RunProgress",
    "Signal",
    "StepSignal",
    "ToolSignal",
    "count_calls",
    "signal_of",
]


@dataclass(frozen=True)
class StepSignal:
    """A plan step started, ended or failed."""

    kind: Literal["start", "end", "fail"]
    path: str


@dataclass(frozen=True)
class LlmSignal:
    """An LLM call finished."""

    path: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class ToolSignal:
    """A tool call finished."""

    path: str
    ok: bool


Signal = StepSignal | LlmSignal | ToolSignal


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def signal_of(event: Event) -> Signal | None:
    """The progress signal of a trace event (``None`` for kinds progress does not show).

    The only reader of untyped event kinds and data in the CLI's progress and summary.
    """
    match event.kind:
        case "step.start":
            return StepSignal("start", event.path)
        case "step.end":
            return StepSignal("end", event.path)
        case "step.fail":
            return StepSignal("fail", event.path)
        case "llm.call":
            d = event.data
            return LlmSignal(
                event.path,
                _int(d.get("prompt_tokens")),
                _int(d.get("cached_tokens")),
                _int(d.get("completion_tokens")),
            )
        case "tool.call":
            return ToolSignal(event.path, event.data.get("ok") is not False)
        case _:
            return None


@dataclass(frozen=True)
class CallCounts:
    """LLM and tool calls of a finished run's trace."""

    llm_calls: int
    tool_calls: int


def count_calls(trace: Iterable[Event]) -> CallCounts:
    """How many LLM and tool calls a trace records."""
    signals = [signal_of(e) for e in trace]
    return CallCounts(
        sum(isinstance(s, LlmSignal) for s in signals), sum(isinstance(s, ToolSignal) for s in signals)
    )


def _event_of(metrics: RequestMetrics) -> Event:
    """A scheduler's finished-request record as the ``llm.call`` event progress reads."""
    return Event(
        "llm.call",
        metrics.agent,
        time.time(),
        {
            "prompt_tokens": metrics.prompt_tokens,
            "cached_tokens": metrics.cached_tokens,
            "completion_tokens": metrics.completion_tokens,
        },
    )


class RunProgress:
    """What a run has done so far, shown live while ``show()`` is open.

    On a terminal (``console.is_terminal``) a rich display refreshes a few times a second: elapsed time,
    steps done/running/failed, LLM calls done/running/queued with token counts, and the running steps.
    Elsewhere each finished or failed step is one plain line on ``stream``. ``quiet`` shows nothing.

    Args:
        title: What runs (the plan's name).
        quiet: Show nothing.
        console: Where the live display goes (default: stderr).
        stream: Where plain lines go when the console is not a terminal (default: stderr).
    """

    def __init__(
        self, title: str, *, quiet: bool = False, console: Console | None = None, stream: TextIO | None = None
    ) -> None:
        self.title = title
        self.quiet = quiet
        self.console = console or Console(stderr=True, highlight=False)
        self.stream = stream
        self.t0 = time.monotonic()
        self.steps_done = 0  # lifetime of all counters: the run's
        self.steps_failed = 0
        self.running: dict[str, None] = {}  # step paths started and not yet ended, in start order
        self.llm_calls = 0
        self.prompt_tokens = 0
        self.cached_tokens = 0
        self.completion_tokens = 0
        self.scheduler: Scheduler | None = None  # set by ``watch``; read for queued / in-flight requests
        self._live = False  # whether the rich display is open

    @property
    def live(self) -> bool:
        """Whether progress is shown as a live display (a terminal and not quiet)."""
        return not self.quiet and self.console.is_terminal

    def watch(self, scheduler: Scheduler) -> None:
        """Show the requests queued and in flight on ``scheduler``."""
        self.scheduler = scheduler

    def on_step(self, event: str, path: str) -> None:
        """The plan compiler's progress callback (``PROGRESS_SERVICE``)."""
        self.feed(Event(f"step.{event}", path))

    def on_request_done(self, metrics: RequestMetrics) -> None:
        """The scheduler's ``on_request_done`` hook."""
        if metrics.kind == "request":
            self.feed(_event_of(metrics))

    def feed(self, event: Event) -> None:
        """Take one trace event into account."""
        signal = signal_of(event)
        match signal:
            case StepSignal(kind="start", path=path):
                self.running[path] = None
            case StepSignal(kind=kind, path=path):
                self.running.pop(path, None)
                if kind == "end":
                    self.steps_done += 1
                else:
                    self.steps_failed += 1
                self._line(kind, path)
            case LlmSignal():
                self.llm_calls += 1
                self.prompt_tokens += signal.prompt_tokens
                self.cached_tokens += signal.cached_tokens
                self.completion_tokens += signal.completion_tokens
            case ToolSignal() | None:
                pass

    def _line(self, kind: str, path: str) -> None:
        if self.quiet or self._live:
            return
        elapsed = time.monotonic() - self.t0
        word = "done" if kind == "end" else "FAILED"
        print(
            f"[{elapsed:7.2f}s] {word:<6} {path}  ({self.llm_calls} LLM calls so far)",
            file=self.stream or sys.stderr,
            flush=True,
        )

    def render(self) -> Group:
        """The live display's current picture."""
        elapsed = time.monotonic() - self.t0
        head = Table.grid(padding=(0, 1))
        head.add_row(Spinner("dots"), Text(self.title, style="bold"), Text(f"{elapsed:6.1f}s", style="dim"))
        body = Table.grid(padding=(0, 2))
        body.add_row(
            "steps",
            f"{self.steps_done} done · {len(self.running)} running"
            + (f" · [red]{self.steps_failed} failed[/]" if self.steps_failed else ""),
        )
        queued = self.scheduler.queued if self.scheduler is not None else 0
        flying = self.scheduler.in_flight if self.scheduler is not None else 0
        hit = f" ({100 * self.cached_tokens / self.prompt_tokens:.0f}% cached)" if self.prompt_tokens else ""
        body.add_row(
            "LLM",
            f"{self.llm_calls} done · {flying} running · {queued} queued · "
            f"{self.prompt_tokens} prompt tokens{hit} · {self.completion_tokens} completion tokens",
        )
        if self.running:
            paths = list(self.running)
            shown = ", ".join(paths[-4:]) + (f" (+{len(paths) - 4} more)" if len(paths) > 4 else "")
            body.add_row("running", Text(shown, style="cyan", overflow="ellipsis", no_wrap=True))
        return Group(head, body)

    @contextmanager
    def show(self) -> Iterator[RunProgress]:
        """Show progress until the block exits (the live display is removed at the end)."""
        if not self.live:
            yield self
            return
        with Live(get_renderable=self.render, console=self.console, refresh_per_second=8, transient=True):
            self._live = True
            try:
                yield self
            finally:
                self._live = False
