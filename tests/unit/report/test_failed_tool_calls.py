"""A failed tool call is shown failed, with its start time, wherever a run is read.

Every producer (the LLMCompiler's executor, ReAct, plan tool steps, memory tools) records the same typed
``ToolCall`` event, and every reader (the HTML report, OpenTelemetry spans, ``agentflow runs show`` over the
trace the journal stored) reads it. Before typed events, a failed compiler tool call was shown as OK in the
HTML report: the compiler wrote ``status`` and the report read ``ok``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import anyio.to_thread
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from agentflow import Err, Ok, run
from agentflow.agents import llm_compiler, memory_tools, react
from agentflow.cli import main
from agentflow.dsl import Event, ToolCall, named
from agentflow.engines import FunctionEngine, GenerationRequest
from agentflow.executors import ToolRegistry
from agentflow.memory import MemoryStore
from agentflow.plans import load_plan_text
from agentflow.plans._compile import call_tool
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


async def _check_runs_show(
    journal: Path, run_id: str, call: ToolCall, capsys: pytest.CaptureFixture[str]
) -> None:
    """``agentflow runs show`` (text and ``--json``) reads the journal's trace and shows the call failed."""

    async def cli(*argv: str) -> int:  # the CLI starts its own event loop: run it in a worker thread
        return await anyio.to_thread.run_sync(main, list(argv))

    capsys.readouterr()
    assert await cli("runs", "show", run_id, "--journal", str(journal)) == 0
    text = capsys.readouterr().out
    clock = time.strftime("%H:%M:%S", time.gmtime(call.started)) + f".{int(call.started * 1000) % 1000:03d}"
    row = next(line for line in text.splitlines() if f"tool {call.tool}" in line)
    assert row.split()[:3] == [clock, f"{call.seconds:.3f}", "error"]
    assert f"      error: {call.error}" in text
    assert await cli("runs", "show", run_id, "--journal", str(journal), "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    (failed,) = [c for c in shown["calls"] if c["kind"] == "tool.call" and c["tool"] == call.tool]
    assert failed["status"] == "error" and failed["started"] == call.started and failed["error"] == call.error


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


async def test_a_failed_compiler_tool_call_is_shown_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def answer(request: GenerationRequest) -> str:
        if request.json_schema is not None and request.json_schema.get("type") == "array":
            return json.dumps([{"tool": "search", "args": {"query": "weather"}}])
        return json.dumps({"action": "finish", "answer": "unknown"})

    journal = tmp_path / "j.db"
    out = await run(
        llm_compiler("What is the weather?", _tools(), max_replans=0),
        engine=FunctionEngine(answer),
        run_id="compiler",
        journal=journal,
        # Recorded, steps not journaled: the agents' steps are not journalable yet (a compiler round's
        # results hold ToolError objects, SerializationError at compiler/plan; ReAct's think step returns an
        # untyped Completion, SerializationError at react/think).
        journal_steps=False,
    )
    assert isinstance(out, Ok)
    call = _failed_call(out.trace, "search")
    _check_readers(out.trace, call)
    await _check_runs_show(journal, "compiler", call, capsys)


async def test_a_failed_react_tool_call_is_shown_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    turns = [
        {"thought": "look it up", "action": {"tool": "search", "args": {"query": "weather"}}},
        {"thought": "give up", "action": {"final_answer": "unknown"}},
    ]

    def answer(request: GenerationRequest) -> str:
        return json.dumps(turns.pop(0))

    journal = tmp_path / "j.db"
    out = await run(
        react("What is the weather?", _tools()),
        engine=FunctionEngine(answer),
        run_id="react",
        journal=journal,
        journal_steps=False,  # recorded only: ReAct's think step returns an untyped Completion (see above)
    )
    assert isinstance(out, Ok)
    call = _failed_call(out.trace, "search")
    _check_readers(out.trace, call)
    await _check_runs_show(journal, "react", call, capsys)


async def test_a_failed_plan_tool_step_is_shown_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
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
    journal = tmp_path / "j.db"
    out = await run(loaded.workflow, run_id="plan", journal=journal)
    assert isinstance(out, Err)
    calls = [e for e in out.trace if isinstance(e, ToolCall)]
    assert [(c.tool, c.status) for c in calls] == [("calculator", "error")]
    _check_readers(out.trace, calls[0])
    await _check_runs_show(journal, "plan", calls[0], capsys)


async def test_a_failed_memory_tool_call_is_shown_failed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = MemoryStore(tmp_path)  # a directory, not a database file: every write fails
    remember = next(t for t in memory_tools(store.temporal("notes")) if t.name == "remember")
    journal = tmp_path / "j.db"
    out = await run(
        named("save", call_tool(remember, {"text": "the cat sat on the mat"})),
        run_id="memory",
        journal=journal,
    )
    await store.aclose()
    assert isinstance(out, Err)
    calls = [e for e in out.trace if isinstance(e, ToolCall)]
    assert [(c.tool, c.status) for c in calls] == [("remember", "error")]
    assert calls[0].args == {"text": "the cat sat on the mat"}
    _check_readers(out.trace, calls[0])
    await _check_runs_show(journal, "memory", calls[0], capsys)
