"""OpenTelemetry spans of real runs (TestEngine), checked with the SDK's in-memory span exporter."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

import agentflow.telemetry as telemetry
from agentflow import Err, Ok, generate, par, retry, run, step
from agentflow.dsl import LLMCall, emit, named
from agentflow.engines import TestEngine
from agentflow.errors import ConfigError, ToolError
from agentflow.executors import tool
from agentflow.plans import load_plan
from agentflow.plans._compile import call_tool
from agentflow.secrets import REDACTED
from agentflow.telemetry import TracingConfig, configure_tracing, trace_outcome

EXAMPLE = Path(__file__).parents[3] / "examples" / "topic_digest.yaml"
SECRET = "sk-live-0123456789abcdefABCDEF"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    memory = InMemorySpanExporter()
    yield memory


def _by_name(spans: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in spans}


def _parent_name(span: ReadableSpan, spans: tuple[ReadableSpan, ...]) -> str | None:
    if span.parent is None:
        return None
    return next(s.name for s in spans if s.context.span_id == span.parent.span_id)


def _everything(spans: tuple[ReadableSpan, ...]) -> str:
    return "\n".join(s.to_json() for s in spans)


async def _digest(engine: TestEngine, config: TracingConfig | None = None) -> Ok[object] | Err:
    loaded = load_plan(EXAMPLE)
    table = str(
        EXAMPLE.parent / "data" / "planets.csv"
    )  # lookup reads under the working directory (the root)
    return await run(
        loaded.workflow,
        {"topics": "Mars, Venus", "table": table},
        engine=engine,
        run_id="run-1",
        telemetry=config,
    )


def test_public_names_are_sorted_and_resolve() -> None:
    assert list(telemetry.__all__) == sorted(telemetry.__all__, key=lambda n: (not n.isupper(), n))
    for name in telemetry.__all__:
        assert hasattr(telemetry, name)


def test_tracing_is_off_and_exports_nothing_by_default() -> None:
    out = anyio.run(_digest, TestEngine())
    assert isinstance(out, Ok)
    assert trace_outcome(out, workflow="topic-digest") == 0


@pytest.mark.anyio
async def test_span_tree_of_a_plan_run_mirrors_its_steps(exporter: InMemorySpanExporter) -> None:
    config = configure_tracing(exporter)
    out = await _digest(TestEngine(), config)
    assert isinstance(out, Ok)
    exporter.clear()  # run() already exported the spans once; export again explicitly
    count = trace_outcome(out, workflow="topic-digest", run_id="run-1", config=config)
    spans = exporter.get_finished_spans()
    kinds = [e.kind for e in out.trace]
    assert (
        count
        == len(spans)
        == 1 + kinds.count("step.start") + kinds.count("llm.call") + kinds.count("tool.call")
    )
    assert len({s.context.trace_id for s in spans}) == 1
    named_spans = _by_name(spans)
    root = named_spans["workflow topic-digest"]
    assert root.parent is None
    assert root.attributes is not None and root.attributes["agentflow.run_id"] == "run-1"
    expect_parent = {
        "step topic-digest": "workflow topic-digest",
        "step topic-digest/per_topic": "step topic-digest",
        "step topic-digest/per_topic/[1]/line": "step topic-digest/per_topic",
        "step topic-digest/join/[1]/keywords": "step topic-digest/join",
        "execute_tool keywords": "step topic-digest/join/[1]/keywords",
        "execute_tool word_count": "step topic-digest/count",
    }
    for child, parent in expect_parent.items():
        assert _parent_name(named_spans[child], spans) == parent, child
    chats = [s for s in spans if s.name == "chat test"]
    assert len(chats) == kinds.count("llm.call") == 3
    assert sorted(_parent_name(s, spans) or "" for s in chats) == [
        "step topic-digest/join/[0]/digest",
        "step topic-digest/per_topic/[0]/line",
        "step topic-digest/per_topic/[1]/line",
    ]
    for span in spans:
        parent = next((p for p in spans if span.parent and p.context.span_id == span.parent.span_id), None)
        if parent is not None:
            assert parent.start_time is not None and span.start_time is not None
            assert parent.start_time <= span.start_time
            assert span.end_time is not None and parent.end_time is not None
            assert span.end_time <= parent.end_time


@pytest.mark.anyio
async def test_llm_and_tool_spans_carry_genai_and_agentflow_attributes(
    exporter: InMemorySpanExporter,
) -> None:
    config = configure_tracing(exporter)
    out = await _digest(TestEngine(), config)
    assert isinstance(out, Ok)
    exporter.clear()  # run() already exported the spans once; export again explicitly
    trace_outcome(out, workflow="topic-digest", config=config)
    spans = exporter.get_finished_spans()
    llm_events = {e.path: e for e in out.trace if isinstance(e, LLMCall)}
    for span in (s for s in spans if s.name.startswith("chat ")):
        a = span.attributes
        assert a is not None
        call = llm_events[str(a["agentflow.step.path"])]
        assert a["gen_ai.operation.name"] == "chat"
        assert a["gen_ai.request.model"] == "test"
        assert a["gen_ai.provider.name"] == "test"
        assert a["gen_ai.usage.input_tokens"] == call.prompt_tokens
        assert a["gen_ai.usage.output_tokens"] == call.completion_tokens
        assert a["agentflow.usage.cached_tokens"] == call.cached_tokens
        assert a["agentflow.usage.computed_tokens"] == call.computed_tokens
        assert a["agentflow.queue_wait_s"] == call.queue_s
        assert a["gen_ai.response.finish_reasons"] == (call.finish_reason,)
        assert a["agentflow.llm.status"] == "ok"
    lookup = [s for s in spans if s.name == "execute_tool lookup"]
    assert len(lookup) == 2
    for span in lookup:
        assert span.attributes is not None
        assert span.attributes["gen_ai.operation.name"] == "execute_tool"
        assert span.attributes["gen_ai.tool.name"] == "lookup"
        assert span.attributes["agentflow.tool.status"] == "ok"


@pytest.mark.anyio
async def test_message_contents_never_appear_in_spans_by_default(exporter: InMemorySpanExporter) -> None:
    config = configure_tracing(exporter)
    out = await _digest(TestEngine(), config)
    assert isinstance(out, Ok)
    exporter.clear()  # run() already exported the spans once; export again explicitly
    trace_outcome(out, workflow="topic-digest", config=config)
    dumped = _everything(exporter.get_finished_spans())
    for content in (
        "Data about",
        "terrestrial",
        "echo:",
        "Write one short sentence",
        "concise writer",
        "Mars",
    ):
        assert content not in dumped


@tool
def leaky(path: str) -> str:
    """A tool whose failure message holds a secret and some content."""
    raise OSError(f"disk full writing {path} with key {SECRET}")


@step
async def chatty() -> str:
    completion = await generate(f"Summarize the memo. Authorization: Bearer {SECRET}")
    await emit(
        LLMCall(
            path="chatty",
            model="test",
            engine="test",
            prompt_tokens=3,
            completion_tokens=2,
            prompt=f"Summarize the memo. api key {SECRET}",
            completion="The memo is about pears.",
        )
    )
    return completion.text


@pytest.mark.anyio
async def test_secrets_never_appear_even_when_content_is_captured(
    exporter: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VENDOR_API_TOKEN", "tok-env-secret-98765")
    config = configure_tracing(exporter, capture_content=True, secrets=[SECRET])
    out = await run(
        par(
            chatty(),
            named("save", call_tool(leaky, {"path": "/srv/tok-env-secret-98765"})),
            settle=True,
        ),
        engine=TestEngine(),
        telemetry=config,
    )
    assert isinstance(out, Ok)
    exporter.clear()  # run() already exported the spans once; export again explicitly
    trace_outcome(out, workflow="secrets", config=config)
    dumped = _everything(exporter.get_finished_spans())
    assert SECRET not in dumped
    assert "tok-env-secret-98765" not in dumped
    assert "Summarize the memo" in dumped  # content was opted in
    assert "The memo is about pears." in dumped
    assert "disk full writing" in dumped
    assert REDACTED in dumped


@pytest.mark.anyio
async def test_tool_error_text_stays_out_of_spans_when_content_is_not_captured(
    exporter: InMemorySpanExporter,
) -> None:
    config = configure_tracing(exporter)
    out = await run(
        named("save", call_tool(leaky, {"path": "/srv/report.txt"})), engine=TestEngine(), telemetry=config
    )
    assert isinstance(out, Err) and isinstance(out.error, ToolError)
    exporter.clear()  # run() already exported the spans once; export again explicitly
    trace_outcome(out, workflow="failing", config=config)
    spans = exporter.get_finished_spans()
    named_spans = _by_name(spans)
    root = named_spans["workflow failing"]
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes is not None and root.attributes["error.type"] == "ToolError"
    assert named_spans["step save"].status.status_code is StatusCode.ERROR
    assert named_spans["execute_tool leaky"].status.status_code is StatusCode.ERROR
    dumped = _everything(spans)
    assert "disk full" not in dumped and "/srv/report.txt" not in dumped and SECRET not in dumped


@pytest.mark.anyio
async def test_agent_steps_become_invoke_agent_spans_with_their_llm_calls(
    exporter: InMemorySpanExporter,
) -> None:
    config = configure_tracing(exporter, agent_steps={"researcher"})
    workflow = par(named("researcher", generate("one")), named("researcher", generate("two")))
    out = await run(workflow, engine=TestEngine(), telemetry=config)
    assert isinstance(out, Ok)
    exporter.clear()  # run() already exported the spans once; export again explicitly
    trace_outcome(out, workflow="team", config=config)
    spans = exporter.get_finished_spans()
    agents = [s for s in spans if s.name == "invoke_agent researcher"]
    assert len(agents) == 2
    for agent in agents:
        assert agent.attributes is not None
        assert agent.attributes["gen_ai.operation.name"] == "invoke_agent"
        assert agent.attributes["gen_ai.agent.name"] == "researcher"
        children = [s.name for s in spans if s.parent and s.parent.span_id == agent.context.span_id]
        assert children == ["chat test"]


@pytest.mark.anyio
async def test_retry_attempts_are_sibling_spans_with_a_retry_event(exporter: InMemorySpanExporter) -> None:
    config = configure_tracing(exporter)
    attempts: list[int] = []

    @step
    async def flaky() -> int:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        return len(attempts)

    out = await run(named("outer", retry(flaky(), attempts=2)), telemetry=config)
    assert isinstance(out, Ok) and out.value == 2
    exporter.clear()  # run() already exported the spans once; export again explicitly
    trace_outcome(out, workflow="retrying", config=config)
    spans = exporter.get_finished_spans()
    flakies = [s for s in spans if s.name == "step outer/flaky"]
    assert len(flakies) == 2
    assert {_parent_name(s, spans) for s in flakies} == {"step outer"}
    assert sorted(s.status.status_code.name for s in flakies) == ["ERROR", "UNSET"]
    outer = _by_name(spans)["step outer"]
    assert [e.name for e in outer.events] == ["retry"]
    assert "first attempt fails" not in _everything(spans)


def test_configure_tracing_rejects_unknown_exporter_and_otlp_without_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(ConfigError, match="exporter 'jaeger' is unknown"):
        configure_tracing("jaeger")  # type: ignore[arg-type]
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    with pytest.raises(ConfigError, match="otlp"):
        configure_tracing("otlp")


def test_console_exporter_prints_spans_when_configured(capsys: pytest.CaptureFixture[str]) -> None:
    config = configure_tracing("console", service_name="svc")
    assert config is not None
    try:
        out = anyio.run(_digest, TestEngine())
        assert isinstance(out, Ok)
        assert trace_outcome(out, workflow="topic-digest", config=config) > 1
    finally:
        config.shutdown()
    printed = capsys.readouterr().out
    assert '"name": "workflow topic-digest"' in printed
    assert json.dumps("svc") in printed


def test_a_run_without_a_tracing_setup_exports_nothing(exporter: InMemorySpanExporter) -> None:
    config = configure_tracing(exporter)
    assert config is not None and configure_tracing(None) is None
    out = anyio.run(_digest, TestEngine())  # the setup exists but this run was not given it
    assert isinstance(out, Ok)
    assert trace_outcome(out) == 0
    assert exporter.get_finished_spans() == ()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_concurrent_runs_export_only_through_their_own_tracing_setup(anyio_backend: str) -> None:
    first, second = InMemorySpanExporter(), InMemorySpanExporter()
    config_a = configure_tracing(first, capture_content=True)
    config_b = configure_tracing(second, capture_content=False)
    outs: dict[str, Ok[object] | Err] = {}

    async def one(name: str, config: TracingConfig | None) -> None:
        outs[name] = await run(
            named(name, generate(f"hello from {name}")), engine=TestEngine(), telemetry=config
        )

    async with anyio.create_task_group() as tg:
        tg.start_soon(one, "alpha", config_a)
        tg.start_soon(one, "beta", config_b)
        tg.start_soon(one, "gamma", None)
    assert all(isinstance(o, Ok) for o in outs.values())
    a, b = _everything(first.get_finished_spans()), _everything(second.get_finished_spans())
    assert "step alpha" in a and "beta" not in a and "gamma" not in a
    assert "step beta" in b and "alpha" not in b and "gamma" not in b
    assert "hello from alpha" in a  # content captured only where that run's setup asked for it
    assert "hello from beta" not in b


@pytest.mark.anyio
async def test_run_exports_spans_by_itself_when_tracing_is_configured(exporter: InMemorySpanExporter) -> None:
    config = configure_tracing(exporter)
    out = await _digest(TestEngine(), config)
    assert isinstance(out, Ok)
    spans = exporter.get_finished_spans()
    kinds = [e.kind for e in out.trace]
    assert len(spans) == 1 + kinds.count("step.start") + kinds.count("llm.call") + kinds.count("tool.call")
