"""A model's native tool calls are shown wherever a run is read: the HTML report and OpenTelemetry spans."""

from __future__ import annotations

import json

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentflow import Ok, run
from agentflow.dsl import LLMCall
from agentflow.engines import (
    Completion,
    FunctionEngine,
    GenerationRequest,
    Message,
    ToolCallRequest,
    ToolSpec,
    Usage,
)
from agentflow.report import RunRecord, render_report
from agentflow.runtime import llm_call
from agentflow.telemetry import record_trace

pytestmark = pytest.mark.anyio

ORDER = ToolSpec("find_order", "", {"type": "object", "properties": {"order": {"type": "integer"}}})
CALL = ToolCallRequest("call_7", "find_order", '{"order": 42}')


async def test_report_and_spans_show_the_calls_of_an_llm_call() -> None:
    engine = FunctionEngine(lambda r: Completion("", Usage(completion_tokens=3), "tool_calls", "m", (CALL,)))
    request = GenerationRequest(messages=(Message("user", "order 42?"),), tools=(ORDER,))
    outcome = await run(llm_call(request), engine=engine)
    assert isinstance(outcome, Ok)
    trace = outcome.trace
    record = RunRecord(
        "r", "p", "test", min(e.time for e in trace) - 1, max(e.time for e in trace), True, trace=trace
    )
    html = render_report(record)
    assert "<b>tool calls</b><pre>call_7: find_order({&quot;order&quot;: 42})</pre>" in html
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    record_trace(trace, provider.get_tracer("test"), workflow="w", capture_content=True)
    [span] = [
        s for s in exporter.get_finished_spans() if s.attributes and "gen_ai.output.messages" in s.attributes
    ]
    output = json.loads(str(span.attributes["gen_ai.output.messages"]))  # type: ignore[index]
    assert output[0]["parts"][1] == {
        "type": "tool_call",
        "id": "call_7",
        "name": "find_order",
        "arguments": '{"order": 42}',
    }
    assert next(e for e in trace if isinstance(e, LLMCall)).finish_reason == "tool_calls"
