"""Run events: what the Writer layer records, one frozen class per kind.

Every producer builds one of these classes and every reader (the HTML report, OpenTelemetry spans,
``usage_of``, saved runs, the CLI, ``agentflow.stream``) reads them with ``match`` and ``assert_never``
over ``Event``, the closed union of all kinds. There is no string kind plus a dict that each reader
re-parses: adding a field or a kind is a type error in every reader that forgets it.

    StepStarted / StepEnded / StepReplayed    a named step's span (the DSL's ``named``)
    RetryScheduled / TimedOut                 ``retry`` and ``timeout`` decisions
    LLMCall                                   one engine request: request summary, usage, timings, status,
                                              and (when the run captures content) prompt and completion
    TokenDelta                                a streamed piece of an LLM call's completion
    ToolCall                                  one tool invocation: arguments, status, start, duration, result
    PlanInvalid                               a planner's plan that was rejected (and sent back for repair)
    InterruptWaiting                          a run suspended for a person's answer
    RunJournaled                              a journaled run's id and whether it resumed
    SchedulerSummary                          the scheduler's metrics at the end of a run
    Log                                       anything a workflow ``tell``s

Saved runs store events with ``event_to_json`` and read them back with ``event_from_json``, which validates
every field (a saved run is untrusted input) and reads the untyped events of format version 1.
"""

from __future__ import annotations

import time as _time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, Literal, TypeAlias

from pydantic import JsonValue, TypeAdapter, ValidationError

__all__ = [
    "EVENT_FORMAT",
    "Event",
    "EventBase",
    "EventFormatError",
    "InterruptWaiting",
    "LLMCall",
    "LLMStatus",
    "Log",
    "PlanInvalid",
    "RetryScheduled",
    "RunJournaled",
    "SchedulerSummary",
    "StepEnded",
    "StepReplayed",
    "StepStarted",
    "TimedOut",
    "TokenDelta",
    "ToolCall",
    "ToolStatus",
    "event_from_json",
    "event_to_json",
]

EVENT_FORMAT = 2
"""The version of the event encoding ``event_to_json`` writes (1 was ``{"kind", "path", "time", "data"}``)."""

LLMStatus = Literal["ok", "error", "aborted"]
"""How an LLM call ended: a completion (``ok``), an engine failure (``error``), or stopped by its reader
before the end (``aborted``: e.g. a planner whose plan went wrong mid-stream)."""

ToolStatus = Literal["ok", "error", "timeout", "skipped", "cancelled"]
"""How a tool call ended (``skipped``: a dependency failed, so it was never called)."""


class EventFormatError(ValueError):
    """A stored event could not be read (unknown kind, missing or mistyped field, unknown format version)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class EventBase:
    """What every event has.

    Attributes:
        path: The step path it happened in (``research/search[2]``); ``""`` at the root.
        time: Wall-clock seconds since the epoch when it was recorded.
    """

    kind: ClassVar[str] = "event"
    path: str = ""
    time: float = field(default_factory=_time.time)


@dataclass(frozen=True, slots=True, kw_only=True)
class StepStarted(EventBase):
    """A named step started."""

    kind: ClassVar[str] = "step.start"


@dataclass(frozen=True, slots=True, kw_only=True)
class StepEnded(EventBase):
    """A named step ended.

    Attributes:
        ok: Whether it succeeded.
        seconds: How long it ran.
        error_type: The error's class name when it failed.
        error: The error's message when it failed.
    """

    kind: ClassVar[str] = "step.end"
    ok: bool
    seconds: float
    error_type: str | None = None
    error: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StepReplayed(EventBase):
    """A named step's result was replayed from the journal instead of running it."""

    kind: ClassVar[str] = "step.replayed"


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryScheduled(EventBase):
    """An attempt failed and ``retry`` will run another one.

    Attributes:
        attempt: The failed attempt's number (1-based).
        wait_s: Seconds until the next attempt.
        error_type: The failed attempt's error class name.
        error: The failed attempt's error message.
    """

    kind: ClassVar[str] = "retry"
    attempt: int
    wait_s: float
    error_type: str
    error: str


@dataclass(frozen=True, slots=True, kw_only=True)
class TimedOut(EventBase):
    """``timeout`` cancelled its flow.

    Attributes:
        seconds: The limit that ran out.
    """

    kind: ClassVar[str] = "timeout"
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class LLMCall(EventBase):
    """One engine request, recorded when it ends (``time``), with when it began (``started``).

    Content fields (``prompt``, ``messages``, ``completion``) hold the request and the answer when the run
    captures content (the default; ``agentflow.run(capture_content=False)`` turns it off) and are ``None``
    otherwise. Revealed secrets are redacted from them before they are recorded.

    Attributes:
        call_id: Unique within the run; links ``TokenDelta`` events to their call.
        engine: The engine's name.
        model: The model that answered (``""`` if the engine did not say).
        role: Who asked: ``generate``, ``infer``, ``planner``, ``joiner``, ``summarizer``, ``mutation``...
        schema: The name of the JSON Schema the output was constrained to, if any.
        attempt: The attempt number for calls that repair invalid answers (1 = first).
        started: Wall-clock start of the request.
        status: ``ok``, ``error`` (the engine failed) or ``aborted`` (its reader stopped it early).
        error: What went wrong (engine error, or why an answer was invalid), if anything.
        valid: For calls whose answer is checked (``infer``, plans): whether it was valid.
        finish_reason: ``stop``, ``length`` or ``error`` as the engine reported it.
        prompt_tokens: Prompt tokens (``cached_tokens + computed_tokens``).
        cached_tokens: Prompt tokens reused from a cache (``None``: the engine did not say).
        computed_tokens: Prompt tokens prefilled.
        completion_tokens: Generated tokens.
        queue_s: Seconds queued before the engine ran it.
        ttft_s: Seconds to the first generated token.
        total_s: Seconds from submission to the end.
        max_tokens: The request's token limit.
        temperature: The request's sampling temperature.
        prompt: The raw prompt, for prompt (not chat) requests, when content is captured.
        messages: The chat messages as ``(role, content)`` pairs, when content is captured (a message's
            tool calls and the call a tool result answers are lines of its content).
        completion: The generated text, when content is captured.
        tool_calls: The native tool calls the model asked for, as ``(id, name, arguments JSON)``, when
            content is captured and there were any.
    """

    kind: ClassVar[str] = "llm.call"
    call_id: str = ""
    engine: str = ""
    model: str = ""
    role: str = "generate"
    schema: str | None = None
    attempt: int = 1
    started: float = 0.0
    status: LLMStatus = "ok"
    error: str | None = None
    valid: bool | None = None
    finish_reason: str | None = None
    prompt_tokens: int = 0
    cached_tokens: int | None = 0
    computed_tokens: int = 0
    completion_tokens: int = 0
    queue_s: float = 0.0
    ttft_s: float = 0.0
    total_s: float = 0.0
    max_tokens: int = 0
    temperature: float = 0.0
    prompt: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None
    completion: str | None = None
    tool_calls: tuple[tuple[str, str, str], ...] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class TokenDelta(EventBase):
    """A piece of an LLM call's completion as it streams (only emitted while a run is streamed).

    Attributes:
        call_id: The ``LLMCall`` it belongs to (recorded when the call ends).
        text: The new text.
    """

    kind: ClassVar[str] = "llm.delta"
    call_id: str
    text: str


@dataclass(frozen=True, slots=True, kw_only=True)
class ToolCall(EventBase):
    """One tool invocation, recorded when it ends.

    Attributes:
        tool: The tool's name.
        task: The task id within an agent's plan, if it came from one.
        started: Wall-clock start of the call (``time`` - ``seconds`` for calls that ran).
        seconds: How long the tool ran (0 if it never started).
        status: ``ok``, ``error``, ``timeout``, ``skipped`` or ``cancelled``.
        error: Why it did not end ok.
        args: The arguments it was called with, when content is captured.
        result: The result as text (truncated), when content is captured.
        dispatch_latency_s: Seconds from being ready to starting, for executor tasks.
    """

    kind: ClassVar[str] = "tool.call"
    tool: str
    task: int | None = None
    started: float = 0.0
    seconds: float = 0.0
    status: ToolStatus = "ok"
    error: str | None = None
    args: JsonValue = None
    result: str | None = None
    dispatch_latency_s: float | None = None

    @property
    def ok(self) -> bool:
        """Whether the tool returned a value."""
        return self.status == "ok"


@dataclass(frozen=True, slots=True, kw_only=True)
class PlanInvalid(EventBase):
    """A planner's plan was rejected and sent back for repair.

    Attributes:
        error: Why it was invalid.
        attempt: Which planning attempt it was (1-based).
    """

    kind: ClassVar[str] = "plan.invalid"
    error: str
    attempt: int


@dataclass(frozen=True, slots=True, kw_only=True)
class InterruptWaiting(EventBase):
    """The run is suspended at an ``interrupt`` until a person answers.

    Attributes:
        prompt: What the person is asked.
        schema: The answer's type name.
    """

    kind: ClassVar[str] = "interrupt"
    prompt: str
    schema: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RunJournaled(EventBase):
    """A journaled run: its id, whether this execution resumed it, and how it ended.

    Attributes:
        run_id: The run's id in the journal.
        resumed: Whether the run existed in the journal before this execution.
        status: ``completed``, ``failed`` or ``suspended``.
    """

    kind: ClassVar[str] = "run.journal"
    run_id: str
    resumed: bool
    status: str


@dataclass(frozen=True, slots=True, kw_only=True)
class SchedulerSummary(EventBase):
    """The run's scheduler counters (prefill computed vs reused, hit rate, queue waits...).

    Attributes:
        metrics: Counter name -> value.
    """

    kind: ClassVar[str] = "scheduler.metrics"
    metrics: Mapping[str, JsonValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Log(EventBase):
    """Something a workflow recorded with ``tell(name, **data)``.

    Attributes:
        name: What it is.
        data: Details (JSON-compatible values).
    """

    kind: ClassVar[str] = "log"
    name: str
    data: Mapping[str, JsonValue] = field(default_factory=dict)


Event: TypeAlias = (
    StepStarted
    | StepEnded
    | StepReplayed
    | RetryScheduled
    | TimedOut
    | LLMCall
    | TokenDelta
    | ToolCall
    | PlanInvalid
    | InterruptWaiting
    | RunJournaled
    | SchedulerSummary
    | Log
)
"""Every kind of run event (read them with ``match`` + ``assert_never``)."""

_CLASSES: tuple[type[EventBase], ...] = (
    StepStarted,
    StepEnded,
    StepReplayed,
    RetryScheduled,
    TimedOut,
    LLMCall,
    TokenDelta,
    ToolCall,
    PlanInvalid,
    InterruptWaiting,
    RunJournaled,
    SchedulerSummary,
    Log,
)
_BY_KIND: dict[str, type[EventBase]] = {c.kind: c for c in _CLASSES}


def event_to_json(event: Event) -> dict[str, JsonValue]:
    """The event as a JSON-compatible dict: ``{"kind": ..., <fields>}`` (format ``EVENT_FORMAT``)."""
    out: dict[str, JsonValue] = {"kind": event.kind}
    for f in fields(event):
        out[f.name] = _plain(getattr(event, f.name))
    return out


def _plain(value: object) -> JsonValue:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


_ADAPTERS: dict[str, TypeAdapter[Any]] = {}


def _adapter(cls: type[EventBase]) -> TypeAdapter[Any]:
    adapter = _ADAPTERS.get(cls.kind)
    if adapter is None:
        adapter = _ADAPTERS[cls.kind] = TypeAdapter(cls)
    return adapter


def event_from_json(raw: Mapping[str, object], *, version: int = EVENT_FORMAT) -> Event:
    """Read an event written by ``event_to_json`` (or, with ``version=1``, an untyped event of format 1).

    Raises:
        EventFormatError: Unknown kind or version, or a field that is missing or has the wrong type.
    """
    if version == 1:
        return _from_v1(raw)
    if version != EVENT_FORMAT:
        raise EventFormatError(
            f"event format version {version} is not supported (this agentflow reads 1 and {EVENT_FORMAT}); "
            "upgrade agentflow to read it"
        )
    kind = raw.get("kind")
    cls = _BY_KIND.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise EventFormatError(f"unknown event kind {kind!r}; known kinds: {sorted(_BY_KIND)}")
    payload = {k: v for k, v in raw.items() if k != "kind"}
    try:
        event: Event = _adapter(cls).validate_python(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<event>"
        raise EventFormatError(f"{kind} event: {where}: {first['msg']}") from None
    return event


def _from_v1(raw: Mapping[str, object]) -> Event:
    """Format 1 (``{"kind", "path", "time", "data"}``) to a typed event; unknown kinds become ``Log``."""
    kind = str(raw.get("kind", ""))
    path = str(raw.get("path", ""))
    t = _float(raw.get("time"))
    data_raw = raw.get("data")
    d: Mapping[str, object] = data_raw if isinstance(data_raw, Mapping) else {}
    match kind:
        case "step.start":
            return StepStarted(path=path, time=t)
        case "step.replayed":
            return StepReplayed(path=path, time=t)
        case "step.end":
            ok = d.get("ok") is True
            return StepEnded(
                path=path,
                time=t,
                ok=ok,
                seconds=_float(d.get("seconds")),
                error_type=None if ok else _str(d.get("error")),
            )
        case "retry":
            return RetryScheduled(
                path=path,
                time=t,
                attempt=int(_float(d.get("attempt"))),
                wait_s=_float(d.get("wait_s")),
                error_type="",
                error=_str(d.get("error")) or "",
            )
        case "timeout":
            return TimedOut(path=path, time=t, seconds=_float(d.get("seconds")))
        case "llm.call":
            return LLMCall(
                path=path,
                time=t,
                engine=_str(d.get("engine")) or "",
                model=_str(d.get("model")) or "",
                role=_str(d.get("role")) or "generate",
                schema=_str(d.get("schema")),
                attempt=int(_float(d.get("attempt")) or 1),
                started=_float(d.get("started")) or t - _float(d.get("total_s")),
                status="aborted" if d.get("aborted") is True else "ok",
                finish_reason=_str(d.get("finish_reason")),
                prompt_tokens=int(_float(d.get("prompt_tokens"))),
                cached_tokens=int(_float(d.get("cached_tokens"))),
                computed_tokens=int(_float(d.get("computed_tokens"))),
                completion_tokens=int(_float(d.get("completion_tokens"))),
                queue_s=_float(d.get("queue_s")),
                ttft_s=_float(d.get("ttft_s")),
                total_s=_float(d.get("total_s")),
            )
        case "tool.call":
            # Version 1 had two shapes: plans wrote ``ok`` and ``started``; agents wrote ``status``.
            status_raw = d.get("status")
            status: ToolStatus
            if isinstance(status_raw, str) and status_raw in (
                "ok",
                "error",
                "timeout",
                "skipped",
                "cancelled",
            ):
                status = status_raw  # type: ignore[assignment]  # checked against the literal's values
            else:
                status = "ok" if d.get("ok", True) is True else "error"
            seconds = _float(d.get("seconds"))
            task = d.get("task")
            return ToolCall(
                path=path,
                time=t,
                tool=_str(d.get("tool")) or "",
                task=task if isinstance(task, int) and not isinstance(task, bool) else None,
                started=_float(d.get("started")) or t - seconds,
                seconds=seconds,
                status=status,
                error=_str(d.get("error")),
            )
        case "plan.invalid":
            return PlanInvalid(
                path=path, time=t, error=_str(d.get("error")) or "", attempt=int(_float(d.get("attempt")))
            )
        case "run.journal":
            return RunJournaled(
                path=path,
                time=t,
                run_id=_str(d.get("run_id")) or "",
                resumed=d.get("resumed") is True,
                status=_str(d.get("status")) or "",
            )
        case "scheduler.metrics":
            return SchedulerSummary(
                path=path,
                time=t,
                metrics={str(k): _plain(v) for k, v in d.items()},
            )
        case _:
            return Log(path=path, time=t, name=kind, data={str(k): _plain(v) for k, v in d.items()})


_TOOL_STATUSES: dict[str, ToolStatus] = {
    "ok": "ok",
    "error": "error",
    "timeout": "timeout",
    "skipped": "skipped",
    "cancelled": "cancelled",
}


def _float(value: object) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None
