"""Spans of a run on the real embedded engine: GenAI usage and the cache reuse the engine reports."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentflow import Ok, generate, run
from agentflow.dsl import named
from agentflow.engines import LlamaCppEngine, Message
from agentflow.telemetry import configure_tracing

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SYSTEM = (
    "You are a librarian at a small town library. You answer questions about opening hours, loans and the "
    "reading club in a few words, politely and without making anything up."
)


async def test_llm_spans_report_engine_usage_and_cached_tokens_of_a_real_run() -> None:
    memory = InMemorySpanExporter()
    config = configure_tracing(memory)
    assert config is not None
    engine = LlamaCppEngine(n_ctx=512, n_threads=1)
    try:
        workflow = named(
            "librarian",
            generate([Message("system", SYSTEM), Message("user", "When do you open?")], max_tokens=3).then(
                generate([Message("system", SYSTEM), Message("user", "Can I renew a loan?")], max_tokens=3)
            ),
        )
        out = await run(workflow, engine=engine, run_id="lib-1", telemetry=config)
        assert isinstance(out, Ok), out
        assert len(memory.get_finished_spans()) == 4  # run() exported the run's spans by itself
    finally:
        config.shutdown()
        await engine.aclose()
    spans = memory.get_finished_spans()
    chats = sorted((s for s in spans if s.name.startswith("chat ")), key=lambda s: s.start_time or 0)
    assert len(chats) == 2
    first, second = (s.attributes for s in chats)
    assert first is not None and second is not None
    assert str(first["gen_ai.request.model"]).startswith("llamacpp:")
    assert first["gen_ai.provider.name"] == "llamacpp"
    assert first["gen_ai.usage.input_tokens"] == first["agentflow.usage.computed_tokens"]
    assert 0 < int(second["gen_ai.usage.output_tokens"]) <= 3  # type: ignore[arg-type]
    assert int(second["agentflow.usage.cached_tokens"]) > 0  # type: ignore[arg-type]  # the system prefix
    dumped = "\n".join(s.to_json() for s in spans)
    assert "librarian at a small town" not in dumped and "renew a loan" not in dumped
