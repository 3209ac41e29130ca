"""Typed run events: every kind round-trips through its JSON form, and bad stored events are named."""

from __future__ import annotations

import json
import typing

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentflow.dsl import (
    Event,
    EventFormatError,
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
    event_from_json,
    event_to_json,
)

EXAMPLES: list[Event] = [
    StepStarted(path="a", time=1.0),
    StepEnded(path="a", time=2.0, ok=False, seconds=1.0, error_type="StepError", error="boom"),
    StepReplayed(path="a/b[1]", time=3.0),
    RetryScheduled(path="a", time=4.0, attempt=1, wait_s=0.5, error_type="EngineError", error="503"),
    TimedOut(path="a", time=5.0, seconds=2.5),
    LLMCall(
        path="a",
        time=6.0,
        call_id="r#1",
        engine="llamacpp:x",
        model="m",
        role="planner",
        schema="Plan",
        attempt=2,
        started=5.5,
        status="aborted",
        error="PlanError: bad",
        valid=False,
        finish_reason="error",
        prompt_tokens=10,
        cached_tokens=4,
        computed_tokens=6,
        completion_tokens=3,
        max_tokens=64,
        temperature=0.2,
        messages=(("system", "s"), ("user", "u")),
        completion='{"x": 1}',
    ),
    TokenDelta(path="a", time=6.5, call_id="r#1", text="{"),
    ToolCall(
        path="a",
        time=7.0,
        tool="search",
        task=3,
        started=6.0,
        seconds=1.0,
        status="timeout",
        error="timed out",
        args={"q": "x", "k": [1, 2]},
        result=None,
        dispatch_latency_s=0.001,
    ),
    PlanInvalid(path="a", time=8.0, error="unknown tool", attempt=1),
    InterruptWaiting(path="a", time=9.0, prompt="ok?", schema="Approval"),
    RunJournaled(path="", time=10.0, run_id="r", resumed=True, status="completed"),
    SchedulerSummary(path="", time=11.0, metrics={"policy": "ours", "total": {"hits": 3}}),
    Log(path="a", time=12.0, name="note", data={"n": 1, "tags": ["x"]}),
]


def test_every_event_kind_has_an_example() -> None:
    assert {type(e) for e in EXAMPLES} == set(typing.get_args(Event))


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: e.kind)
def test_events_round_trip_through_json_text(event: Event) -> None:
    text = json.dumps(event_to_json(event))
    assert event_from_json(json.loads(text)) == event


@given(
    path=st.text(max_size=20),
    t=st.floats(allow_nan=False, allow_infinity=False),
    tool=st.text(min_size=1, max_size=10),
    seconds=st.floats(min_value=0, max_value=1e6),
    status=st.sampled_from(["ok", "error", "timeout", "skipped", "cancelled"]),
    error=st.none() | st.text(max_size=30),
    args=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=8,
    ),
)
def test_tool_calls_round_trip_for_any_values(
    path: str, t: float, tool: str, seconds: float, status: str, error: str | None, args: object
) -> None:
    event = ToolCall(
        path=path,
        time=t,
        tool=tool,
        seconds=seconds,
        status=status,
        error=error,
        args=args,  # type: ignore[arg-type]
    )
    assert event_from_json(json.loads(json.dumps(event_to_json(event)))) == event


def test_unknown_kinds_and_bad_fields_are_named() -> None:
    with pytest.raises(EventFormatError, match="unknown event kind 'nope'"):
        event_from_json({"kind": "nope", "path": "", "time": 0})
    with pytest.raises(EventFormatError, match=r"tool.call event: status"):
        event_from_json({"kind": "tool.call", "path": "", "time": 0, "tool": "t", "status": "fine"})
    with pytest.raises(EventFormatError, match="format version 7"):
        event_from_json({"kind": "log"}, version=7)
