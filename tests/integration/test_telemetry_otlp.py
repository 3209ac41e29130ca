"""OTLP export of a real run to a collector stand-in on 127.0.0.1 (an HTTP server that keeps what it receives)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from agentflow import Ok, run
from agentflow.engines import TestEngine
from agentflow.plans import load_plan
from agentflow.telemetry import configure_tracing

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

pytest.importorskip(
    "opentelemetry.exporter.otlp.proto.http",
    reason="the OTLP exporter is not installed (pip install 'agentflow[otlp]')",
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (  # noqa: E402
    ExportTraceServiceRequest,
)

HEADER_SECRET = "Bearer collector-token-5551234"


class _Collector(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.append((self.path, dict(self.headers), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def collector() -> Iterator[str]:
    _Collector.received = []
    server = HTTPServer(("127.0.0.1", 0), _Collector)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    finally:
        server.shutdown()
        server.server_close()


async def test_otlp_exporter_sends_run_spans_to_the_configured_endpoint_only(collector: str) -> None:
    config = configure_tracing(
        "otlp", endpoint=collector, headers={"authorization": HEADER_SECRET}, batch=False
    )
    assert config is not None
    try:
        root = Path(__file__).parents[2]
        loaded = load_plan(root / "examples" / "topic_digest.yaml")
        table = str(root / "examples" / "data" / "planets.csv")
        out = await run(
            loaded.workflow, {"topics": "Mars, Venus", "table": table}, engine=TestEngine(), telemetry=config
        )
        assert isinstance(out, Ok)
        # run() exported the spans by itself: one per run, step, LLM call and tool call.
        sent = 1 + sum(e.kind in ("step.start", "llm.call", "tool.call") for e in out.trace)
    finally:
        config.shutdown()
    assert _Collector.received, "the collector received nothing"
    spans = []
    for path, headers, body in _Collector.received:
        assert path == "/v1/traces"
        assert headers.get("authorization") == HEADER_SECRET  # the header goes to the collector...
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        for resource_spans in request.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                spans.extend(scope_spans.spans)
        assert HEADER_SECRET.encode() not in body  # ...but never into a span
        assert b"Camellia" not in body and b"Fact about" not in body
    assert len(spans) == sent
    names = {s.name for s in spans}
    assert "workflow topic-digest" in names and "chat test" in names and "execute_tool lookup" in names
