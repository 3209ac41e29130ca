"""A failed tool call is shown failed, with its start time, wherever a run is read.

Every producer (the LLMCompiler's executor, ReAct, plan tool steps, memory tools) records the same typed
``ToolCall`` event, and every reader (the HTML report, OpenTelemetry spans) reads it. Before typed events,
a failed compiler tool call was shown as OK in the HTML report: the compiler wrote ``status`` and the report
read ``ok``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from agentflow import Err, GenerationRequest, Ok, run
from agentflow.agents import llm_compiler, memory_tools, react
from agentflow.dsl import Event, ToolCall, named
from agentflow.engines import FunctionEngine
from agentflow.executors import ToolRegistry
from agentflow.memory import MemoryStore
from agentflow.plans import call_tool, load_plan_text
from agentflow.report import RunRecord, render_report, spans_of
from agentflow.telemetry import record_trace

pytestmark = pytest.mark.anyio


def search(query: str) -> str:
    """Search the web.

    Args:
        query: What to look for.
    """
    raise ConnectionError(f"search backend down while looking up {query!r}")


def _tools() -> ToolRegistry:
    registry = ToolRegistry()
    registry.register(search)
    return registry


def _failed_call(trace: tuple[Event, ...], tool: str) -> ToolCall:
    calls = [e for e in trace if isinstance(e, ToolCall) and e.tool == tool]
    assert len(calls) == 1, calls
    call = calls[0]
    assert call.status == "error" and not call.ok
    assert (call.error is not None and "down" in call.error) or "unable to open" in str(call.error)
    assert 0 < call.started <= call.time
    return call


def _check_readers(trace: tuple[Event, ...], call: ToolCall) -> None:
    # The HTML report: the row is marked failed, says so, and the span starts when the call started.
    record = RunRecord(
        "r", "p", "test", min(e.time for e in trace) - 1, max(e.time for e in trace), True, trace=trace
    )
    html = render_report(record)
    row = next(r for r in html.split("<tr") if f"<td>{call.tool}</td>" in r)
    assert row.startswith(" class=bad>") and "error: " in row
    (span,) = [s for s in spans_of(trace) if s.tool is call]
    assert span.ok is False and span.start == call.started
    # OpenTelemetry: the execute_tool span has an error status, the start time and the status attribute.
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    record_trace(trace, provider.get_tracer("test"), workflow="w")
    (otel,) = [s for s in exporter.get_finished_spans() if s.name == f"execute_tool {call.tool}"]
    assert otel.status.status_code is StatusCode.ERROR
    assert otel.start_time == int(call.started * 1e9)
    assert otel.attributes is not None and otel.attributes["agentflow.tool.status"] == "error"


async def test_a_failed_compiler_tool_call_is_shown_failed() -> None:
    def answer(request: GenerationRequest) -> str:
        if request.json_schema is not None and request.json_schema.get("type") == "array":
            return json.dumps([{"tool": "search", "args": {"query": "weather"}}])
        return json.dumps({"action": "finish", "answer": "unknown"})

    out = await run(
        llm_compiler("What is the weather?", _tools(), max_replans=0), engine=FunctionEngine(answer)
    )
    assert isinstance(out, Ok)
    _check_readers(out.trace, _failed_call(out.trace, "search"))


async def test_a_failed_react_tool_call_is_shown_failed() -> None:
    turns = [
        {"thought": "look it up", "action": {"tool": "search", "args": {"query": "weather"}}},
        {"thought": "give up", "action": {"final_answer": "unknown"}},
    ]

    def answer(request: GenerationRequest) -> str:
        return json.dumps(turns.pop(0))

    out = await run(react("What is the weather?", _tools()), engine=FunctionEngine(answer))
    assert isinstance(out, Ok)
    _check_readers(out.trace, _failed_call(out.trace, "search"))


async def test_a_failed_plan_tool_step_is_shown_failed() -> None:
    loaded = load_plan_text(
        """
apiVersion: agentflow/v1
kind: Plan
name: failing
tools: ["agentflow.plans.builtin_tools:calculator"]
steps:
  - id: look
    tool: calculator
    args: {expression: "1 / 0"}
""",
        file="failing.yaml",
    )
    out = await run(loaded.workflow)
    assert isinstance(out, Err)
    calls = [e for e in out.trace if isinstance(e, ToolCall)]
    assert [(c.tool, c.status) for c in calls] == [("calculator", "error")]
    _check_readers(out.trace, calls[0])


async def test_a_failed_memory_tool_call_is_shown_failed(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path)  # a directory, not a database file: every write fails
    remember = next(t for t in memory_tools(store.temporal("notes")) if t.name == "remember")
    out = await run(named("save", call_tool(remember, {"text": "the cat sat on the mat"})))
    await store.aclose()
    assert isinstance(out, Err)
    calls = [e for e in out.trace if isinstance(e, ToolCall)]
    assert [(c.tool, c.status) for c in calls] == [("remember", "error")]
    assert calls[0].args == {"text": "the cat sat on the mat"}
    _check_readers(out.trace, calls[0])
