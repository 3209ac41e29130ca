"""Live progress of a CLI run: steps and LLM calls, as a rich display on a terminal or plain lines.

The run's typed events feed it as they happen (``RunContext.on_event``): ``StepStarted``/``StepEnded``
for steps, ``LLMCall`` for finished LLM requests, ``ToolCall`` for tool calls; the scheduler it watches
says how many requests are queued and in flight.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from agentflow.dsl import Event, LLMCall, StepEnded, StepStarted, ToolCall

if TYPE_CHECKING:
    from agentflow.scheduler import Scheduler

__all__ = ["CallCounts", "RunProgress", "count_calls"]


@dataclass(frozen=True)
class CallCounts:
    """LLM and tool calls of a finished run's trace."""

    llm_calls: int
    tool_calls: int
    failed_tool_calls: int


def count_calls(trace: Iterable[Event]) -> CallCounts:
    """How many LLM and tool calls (and failed tool calls) a trace records."""
    events = list(trace)
    tools = [e for e in events if isinstance(e, ToolCall)]
    return CallCounts(sum(isinstance(e, LLMCall) for e in events), len(tools), sum(not t.ok for t in tools))


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

    def feed(self, event: Event) -> None:
        """Take one run event into account (the run's ``on_event`` listener)."""
        if isinstance(event, StepStarted):
            self.running[event.path] = None
        elif isinstance(event, StepEnded):
            self.running.pop(event.path, None)
            if event.ok:
                self.steps_done += 1
            else:
                self.steps_failed += 1
            self._line("end" if event.ok else "fail", event.path)
        elif isinstance(event, LLMCall):
            self.llm_calls += 1
            self.prompt_tokens += event.prompt_tokens
            self.cached_tokens += event.cached_tokens or 0
            self.completion_tokens += event.completion_tokens

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
