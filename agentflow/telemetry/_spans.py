"""OpenTelemetry spans built from a run's trace events (GenAI semantic conventions plus ``agentflow.*``).

A finished run's trace already holds everything a span needs: ``step.start``/``step.end`` pairs with their
times, ``llm.call`` events with the request's start time and usage, ``tool.call`` events with start time and
duration. ``record_trace`` turns them into spans with explicit start and end times, so neither the DSL nor the
runtime needs a tracing hook::

    workflow <name>                          agentflow.run_id, agentflow.workflow.name
    └── step <path> / invoke_agent <name>    agentflow.step.*; gen_ai.agent.name for agent steps
        ├── chat <model>                     gen_ai.operation.name=chat, gen_ai.request.model,
        │                                    gen_ai.usage.input_tokens / output_tokens,
        │                                    agentflow.usage.cached_tokens / computed_tokens, agentflow.queue_wait_s
        └── execute_tool <tool>              gen_ai.operation.name=execute_tool, gen_ai.tool.name

A span's parent is the innermost step whose path is a prefix of its path (at a ``/`` or ``[`` boundary) and
whose time range contains its start (retries reuse a path, so the time decides between attempts).

Privacy: attributes come from an allowlist of numeric and identifying fields; prompt and output text, tool
arguments and error messages are left out unless ``capture_content=True``, and even then every string is
scrubbed of secrets (values given in ``secrets``, values of environment variables named like keys, tokens or
passwords, and common API-key shapes).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, assert_never

from agentflow.dsl import (
    Err,
    Event,
    InterruptWaiting,
    LLMCall,
    Log,
    Ok,
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
from agentflow.secrets import REDACTED

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer
    from opentelemetry.util.types import AttributeValue

__all__ = ["DEFAULT_AGENT_STEPS", "SecretScrubber", "record_outcome", "record_trace"]

DEFAULT_AGENT_STEPS: frozenset[str] = frozenset({"compiler", "react", "planner", "joiner", "meta"})
"""Step names recorded as agent spans (``invoke_agent``): the names ``agentflow.agents`` gives its agents."""

_SECRET_ENV = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH)", re.IGNORECASE)
_SECRET_SHAPES = re.compile(
    r"(sk-[A-Za-z0-9_\-]{12,}|gh[pousr]_[A-Za-z0-9]{20,}|AKIA[0-9A-Z]{16}|xox[abpr]-[A-Za-z0-9\-]{10,}"
    r"|(?i:bearer)\s+[A-Za-z0-9._\-+/=]{8,})"
)


class SecretScrubber:
    """Removes secrets from strings before they become span attributes.

    Args:
        secrets: Exact values to remove (API keys, passwords...); values shorter than 6 characters are ignored.
        from_environment: Also remove the values of environment variables whose names look like secrets
            (``*KEY*``, ``*TOKEN*``, ``*SECRET*``, ``*PASSWORD*``, ``*AUTH*``...).

    Example:
        >>> SecretScrubber(["hunter22"], from_environment=False)("password is hunter22")
        'password is [secret]'
    """

    def __init__(self, secrets: Iterable[str] = (), *, from_environment: bool = True) -> None:
        values = {s for s in secrets if isinstance(s, str) and len(s) >= 6}
        if from_environment:
            values |= {v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= 6}
        self._values = sorted(values, key=len, reverse=True)  # longest first: no partial leftovers

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        return _SECRET_SHAPES.sub(REDACTED, text)


@dataclass
class _SpanRecord:
    """One span to create: what, when, and under which parent (an index into the record list, -1 = root)."""

    name: str
    start: float
    end: float
    attributes: dict[str, AttributeValue]
    path: str = ""
    is_step: bool = False
    parent: int = -1
    error: str | None = None
    events: list[tuple[str, float, dict[str, AttributeValue]]] = field(default_factory=list)


def _ns(seconds: float) -> int:
    return int(seconds * 1e9)


def _num(value: object) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


def _last_name(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return name.split("[", 1)[0] if not name.startswith("[") else name


def _ancestors(path: str) -> list[str]:
    """Proper prefixes of ``path`` at ``/`` or ``[`` boundaries, longest first (``a/b[1]/c`` -> ``a/b[1]``, ...)."""
    cuts = [i for i, ch in enumerate(path) if ch in "/[" and i > 0]
    out: list[str] = []
    for i in reversed(cuts):
        prefix = path[:i].rstrip("/")
        if prefix and prefix not in out:
            out.append(prefix)
    return out


class _Builder:
    """Turns trace events into span records (no OpenTelemetry calls; ``record_trace`` emits them)."""

    def __init__(self, agent_steps: Collection[str], capture_content: bool, scrub: SecretScrubber) -> None:
        self.agent_steps = agent_steps
        self.capture = capture_content
        self.scrub = scrub
        self.records: list[_SpanRecord] = []
        self.open: dict[str, list[int]] = {}  # path -> indices of step records started and not yet ended
        self.by_path: dict[str, list[int]] = {}  # path -> indices of all step records at that path

    def text(self, value: object) -> str:
        raw = value if isinstance(value, str) else json.dumps(value, default=str, ensure_ascii=False)
        return self.scrub(raw)

    def feed(self, events: Sequence[Event]) -> None:
        for e in events:
            match e:
                case StepStarted():
                    self._start_step(e)
                case StepEnded():
                    self._end_step(e)
                case StepReplayed():
                    i = self._start_step(e)
                    self.records[i].attributes["agentflow.step.status"] = "replayed"
                    self._close(i, e.path, e.time)
                case LLMCall():
                    self._llm(e)
                case ToolCall():
                    self._tool(e)
                case RetryScheduled():
                    self._annotation(e, "retry", {"attempt": e.attempt, "wait_s": e.wait_s}, e.error)
                case TimedOut():
                    self._annotation(e, "timeout", {"seconds": e.seconds}, None)
                case PlanInvalid():
                    self._annotation(e, "plan.invalid", {"attempt": e.attempt}, e.error)
                case InterruptWaiting():
                    self._annotation(e, "interrupt", {}, e.prompt)
                case TokenDelta() | RunJournaled() | SchedulerSummary() | Log():
                    pass
                case _:
                    assert_never(e)
        last = max((e.time for e in events), default=0.0)
        for stack in self.open.values():
            for i in stack:
                self.records[i].end = max(last, self.records[i].start)
                self.records[i].attributes["agentflow.step.status"] = "cancelled"
                self.records[i].error = "cancelled"
            stack.clear()

    def _start_step(self, e: StepStarted | StepReplayed) -> int:
        name = _last_name(e.path) or e.path
        agent = name in self.agent_steps
        attrs: dict[str, AttributeValue] = {
            "agentflow.step.path": e.path,
            "agentflow.step.name": name,
        }
        if agent:
            attrs["gen_ai.operation.name"] = "invoke_agent"
            attrs["gen_ai.agent.name"] = name
        record = _SpanRecord(
            name=f"invoke_agent {name}" if agent else f"step {e.path}",
            start=e.time,
            end=e.time,
            attributes=attrs,
            path=e.path,
            is_step=True,
        )
        self.records.append(record)
        i = len(self.records) - 1
        self.open.setdefault(e.path, []).append(i)
        self.by_path.setdefault(e.path, []).append(i)
        return i

    def _close(self, i: int, path: str, t: float) -> None:
        stack = self.open.get(path, [])
        if i in stack:
            stack.remove(i)
        self.records[i].end = t

    def _end_step(self, e: StepEnded) -> None:
        stack = self.open.get(e.path)
        if not stack:
            return
        i = stack[-1]
        self._close(i, e.path, e.time)
        record = self.records[i]
        record.attributes["agentflow.step.status"] = "ok" if e.ok else "error"
        record.attributes["agentflow.step.seconds"] = e.seconds
        if not e.ok:
            record.error = e.error_type or "error"
            record.attributes["error.type"] = record.error
            if self.capture and e.error:
                record.attributes["agentflow.step.error"] = self.text(e.error)

    def _annotation(self, e: Event, name: str, numbers: Mapping[str, float], message: str | None) -> None:
        attrs: dict[str, AttributeValue] = {f"agentflow.{name}.{k}": v for k, v in numbers.items()}
        if self.capture and message:
            attrs[f"agentflow.{name}.error"] = self.text(message)
        owner = self._owner(e.path, e.time)
        if owner is not None:
            self.records[owner].events.append((name, e.time, attrs))

    def _owner(self, path: str, t: float, *, include_self: bool = True) -> int | None:
        """The innermost step record that contains ``(path, t)``: the step at ``path`` itself, then ancestors."""
        paths = ([path] if include_self else []) + _ancestors(path)
        for p in paths:
            candidates = self.by_path.get(p, [])
            best: int | None = None
            for i in candidates:
                r = self.records[i]
                still_open = i in self.open.get(p, [])
                if (
                    r.start <= t
                    and (still_open or t <= r.end)
                    and (best is None or r.start >= self.records[best].start)
                ):
                    best = i
            if best is not None:
                return best
        return None

    def _leaf(
        self, e: Event, name: str, start: float, attrs: dict[str, AttributeValue], error: str | None
    ) -> None:
        record = _SpanRecord(name=name, start=min(start, e.time), end=e.time, attributes=attrs, path=e.path)
        record.error = error
        owner = self._owner(e.path, record.start)
        record.parent = -1 if owner is None else owner
        self.records.append(record)

    def _llm(self, e: LLMCall) -> None:
        model = e.model or e.engine or "unknown"
        attrs: dict[str, AttributeValue] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": e.engine.split(":", 1)[0] or "agentflow",
            "gen_ai.request.model": model,
            "gen_ai.response.model": model,
            "gen_ai.usage.input_tokens": e.prompt_tokens,
            "gen_ai.usage.output_tokens": e.completion_tokens,
            "gen_ai.request.max_tokens": e.max_tokens,
            "gen_ai.request.temperature": e.temperature,
            "agentflow.usage.computed_tokens": e.computed_tokens,
            "agentflow.queue_wait_s": e.queue_s,
            "agentflow.ttft_s": e.ttft_s,
            "agentflow.total_s": e.total_s,
            "agentflow.llm.attempt": e.attempt,
            "agentflow.llm.role": e.role,
            "agentflow.llm.status": e.status,
            "agentflow.engine": e.engine,
            "agentflow.step.path": e.path,
        }
        if e.cached_tokens is not None:  # None: the engine did not say
            attrs["agentflow.usage.cached_tokens"] = e.cached_tokens
        if e.finish_reason:
            attrs["gen_ai.response.finish_reasons"] = (e.finish_reason,)
        if e.schema:
            attrs["agentflow.llm.schema"] = e.schema
        if self.capture:
            if e.messages is not None:
                attrs["gen_ai.input.messages"] = self.text(
                    [
                        {"role": role, "parts": [{"type": "text", "content": text}]}
                        for role, text in e.messages
                    ]
                )
            elif e.prompt is not None:
                attrs["gen_ai.input.messages"] = self.text(
                    [{"role": "user", "parts": [{"type": "text", "content": e.prompt}]}]
                )
            if e.completion is not None:
                calls = [
                    {"type": "tool_call", "id": cid, "name": name, "arguments": args}
                    for cid, name, args in e.tool_calls or ()
                ]
                attrs["gen_ai.output.messages"] = self.text(
                    [
                        {
                            "role": "assistant",
                            "parts": [{"type": "text", "content": e.completion}, *calls],
                            "finish_reason": e.finish_reason or "",
                        }
                    ]
                )
            if e.error:
                attrs["agentflow.llm.error"] = self.text(e.error)
        start = e.started or e.time - e.total_s
        error = None if e.status == "ok" else e.status
        if error is not None:
            attrs["error.type"] = error
        self._leaf(e, f"chat {model}", start, attrs, error)

    def _tool(self, e: ToolCall) -> None:
        attrs: dict[str, AttributeValue] = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": e.tool,
            "agentflow.step.path": e.path,
            "agentflow.tool.seconds": e.seconds,
            "agentflow.tool.status": e.status,
            "agentflow.tool.started": e.started,
        }
        if e.task is not None:
            attrs["gen_ai.tool.call.id"] = str(e.task)
        if e.dispatch_latency_s is not None:
            attrs["agentflow.tool.dispatch_latency_s"] = e.dispatch_latency_s
        if not e.ok:
            attrs["error.type"] = e.status
        if self.capture:
            if e.args is not None:
                attrs["gen_ai.tool.call.arguments"] = self.text(e.args)
            if e.result is not None:
                attrs["gen_ai.tool.call.result"] = self.text(e.result)
            if e.error:
                attrs["agentflow.tool.error"] = self.text(e.error)
        self._leaf(e, f"execute_tool {e.tool}", e.started, attrs, None if e.ok else f"tool_{e.status}")

    def link_steps(self) -> None:
        """Give every step record its parent step (leaves got theirs when recorded)."""
        for i, r in enumerate(self.records):
            if r.is_step:
                owner = self._owner(r.path, r.start, include_self=False)
                r.parent = -1 if owner is None else owner
                if owner == i:
                    r.parent = -1


def record_trace(
    trace: Sequence[Event],
    tracer: Tracer,
    *,
    workflow: str = "workflow",
    run_id: str = "",
    error: BaseException | None = None,
    capture_content: bool = False,
    agent_steps: Collection[str] = DEFAULT_AGENT_STEPS,
    secrets: Iterable[str] = (),
    attributes: Mapping[str, AttributeValue] | None = None,
) -> int:
    """Emit the spans of one run's trace through ``tracer``; returns how many spans were made.

    Args:
        trace: The run's events (``outcome.trace``).
        tracer: Where spans go (from a ``TracerProvider``; see ``configure_tracing``).
        workflow: The workflow's name, for the root span.
        run_id: The run's id.
        error: The run's error, if it failed (sets the root span's status; its message only with content).
        capture_content: Record prompt/output text, tool arguments/results and error messages (scrubbed).
        agent_steps: Step names recorded as agent spans.
        secrets: Values that must never appear in a span (in addition to secret-like environment variables).
        attributes: Extra attributes for the root span (the caller's own identifiers; not scrubbed).
    """
    # deferred: heavy imports (tests/unit/test_import_cost.py)
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace import SpanKind, Status, StatusCode

    scrub = SecretScrubber(secrets)
    builder = _Builder(agent_steps, capture_content, scrub)
    builder.feed(trace)
    builder.link_steps()
    times = [t for r in builder.records for t in (r.start, r.end)] + [e.time for e in trace]
    start = min(times) if times else 0.0
    end = max(times) if times else start
    root_attrs: dict[str, AttributeValue] = {
        "agentflow.workflow.name": workflow,
        "agentflow.run_id": run_id,
        "agentflow.run.status": "error" if error is not None else "ok",
        "gen_ai.operation.name": "invoke_workflow",
    }
    if attributes:
        root_attrs.update(attributes)
    root = tracer.start_span(
        f"workflow {workflow}", kind=SpanKind.INTERNAL, start_time=_ns(start), attributes=root_attrs
    )
    if error is not None:
        root.set_attribute("error.type", type(error).__name__)
        root.set_status(
            Status(StatusCode.ERROR, scrub(str(error)) if capture_content else type(error).__name__)
        )
    spans: dict[int, Span] = {}
    children: dict[int, list[int]] = {}
    for i, r in enumerate(builder.records):
        children.setdefault(r.parent, []).append(i)
    stack: list[tuple[int, Span]] = [(i, root) for i in reversed(children.get(-1, []))]
    while stack:
        i, parent = stack.pop()
        r = builder.records[i]
        span = tracer.start_span(
            r.name,
            context=otel_trace.set_span_in_context(parent),
            kind=SpanKind.CLIENT if r.name.startswith("chat ") else SpanKind.INTERNAL,
            start_time=_ns(r.start),
            attributes=r.attributes,
        )
        for name, t, attrs in r.events:
            span.add_event(name, attributes=attrs, timestamp=_ns(t))
        if r.error is not None:
            span.set_status(Status(StatusCode.ERROR, r.error))
        spans[i] = span
        stack.extend((c, span) for c in reversed(children.get(i, [])))
    for i, r in enumerate(builder.records):
        spans[i].end(end_time=_ns(max(r.end, r.start)))
    root.end(end_time=_ns(end))
    return len(spans) + 1


def record_outcome(
    outcome: Ok[object] | Err,
    tracer: Tracer,
    *,
    workflow: str = "workflow",
    run_id: str = "",
    capture_content: bool = False,
    agent_steps: Collection[str] = DEFAULT_AGENT_STEPS,
    secrets: Iterable[str] = (),
) -> int:
    """``record_trace`` for a run's outcome (its trace, and its error when it failed)."""
    return record_trace(
        outcome.trace,
        tracer,
        workflow=workflow,
        run_id=run_id,
        error=outcome.error if isinstance(outcome, Err) else None,
        capture_content=capture_content,
        agent_steps=agent_steps,
        secrets=secrets,
    )
