"""Tracing configuration: off by default; an exporter is used only when the user asks for one.

``configure_tracing`` builds an OpenTelemetry SDK ``TracerProvider`` with the chosen exporter and returns it as a
``TracingConfig``; a run exports spans only through the configuration it is given
(``agentflow.run(..., telemetry=config)``; the CLI passes the one ``--trace`` / a plan's ``telemetry:`` block
describes). Nothing is kept in process-wide state: two runs in one process with different configurations export
to their own exporters. Nothing is installed as the global OpenTelemetry provider unless ``set_global=True``, and
a run without a configuration exports nothing, so no span is ever sent anywhere by default.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from agentflow.dsl import Err, Ok
from agentflow.errors import ConfigError

from ._spans import DEFAULT_AGENT_STEPS, record_outcome

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = [
    "ExporterName",
    "TracingConfig",
    "configure_tracing",
    "trace_outcome",
]

ExporterName = Literal["otlp", "console"]
"""Built-in exporters: ``otlp`` (OTLP over HTTP/protobuf, extra ``agentflow[otlp]``) and ``console`` (stdout)."""

_INSTRUMENTATION = "agentflow"


@dataclass(frozen=True)
class TracingConfig:
    """A tracing setup, given to the runs that should export spans (``agentflow.run(..., telemetry=...)``).

    Attributes:
        provider: The SDK tracer provider spans go through.
        capture_content: Whether prompts, outputs, tool arguments/results and error messages are exported
            (the OpenTelemetry GenAI conventions' content attributes).
        secrets: Values scrubbed from every recorded string.
        agent_steps: Step names recorded as agent spans.
    """

    provider: TracerProvider
    capture_content: bool
    secrets: tuple[str, ...]
    agent_steps: frozenset[str]

    def shutdown(self) -> None:
        """Flush pending spans and shut the provider down (call once no run uses this configuration)."""
        self.provider.force_flush()
        self.provider.shutdown()


def _otlp_exporter(endpoint: str | None, headers: Mapping[str, str] | None, timeout: float) -> SpanExporter:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
            OTLPSpanExporter,
        )
    except ImportError as exc:
        raise ConfigError(
            "the OTLP exporter needs the package 'opentelemetry-exporter-otlp-proto-http'; install the extra: "
            "pip install 'agentflow[otlp]'"
        ) from exc
    env = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if endpoint is None and not env:
        raise ConfigError(
            "exporter='otlp' needs an endpoint: pass endpoint='http://collector:4318/v1/traces' or set "
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (agentflow never picks a destination on its own)"
        )
    exporter: SpanExporter = OTLPSpanExporter(
        endpoint=endpoint, headers=dict(headers) if headers else None, timeout=int(timeout)
    )
    return exporter


def configure_tracing(
    exporter: ExporterName | SpanExporter | None = None,
    *,
    endpoint: str | None = None,
    headers: Mapping[str, str] | None = None,
    service_name: str = "agentflow",
    capture_content: bool = False,
    secrets: Iterable[str] = (),
    agent_steps: Collection[str] = DEFAULT_AGENT_STEPS,
    batch: bool | None = None,
    timeout: float = 10.0,
    set_global: bool = False,
) -> TracingConfig | None:
    """A tracing setup with an exporter (``None`` for ``exporter=None``: no tracing, the default).

    Pass the result to the runs that should export spans: ``agentflow.run(flow, telemetry=config)``; call
    ``config.shutdown()`` when done with it.

    Args:
        exporter: ``"otlp"``, ``"console"``, any SDK ``SpanExporter`` (e.g. ``InMemorySpanExporter`` in tests), or
            ``None`` for no tracing.
        endpoint: The OTLP/HTTP traces endpoint (``http://host:4318/v1/traces``); required for ``"otlp"`` unless
            ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_ENDPOINT`` is set.
        headers: Extra OTLP headers (e.g. an auth header; kept out of every span).
        service_name: The ``service.name`` resource attribute.
        capture_content: Record message contents, tool arguments/results and error messages (scrubbed of
            secrets). Off by default.
        secrets: Values that must never appear in spans (header values are added automatically).
        agent_steps: Step names recorded as agent spans.
        batch: Export in the background in batches (default for ``otlp``) or synchronously (default otherwise).
        timeout: OTLP export timeout in seconds.
        set_global: Also install the provider as OpenTelemetry's global tracer provider.

    Returns:
        The configuration, or ``None`` for no exporter.

    Raises:
        ConfigError: Unknown exporter name, an OTLP exporter without an endpoint, or the OTLP extra missing.
    """
    if exporter is None:
        return None
    # deferred: heavy imports (tests/unit/test_import_cost.py)
    from opentelemetry import trace as otel_trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from opentelemetry.sdk.trace.export import (
        BatchSpanProcessor,
        ConsoleSpanExporter,
        SimpleSpanProcessor,
        SpanExporter,
    )

    chosen: SpanExporter
    if exporter == "otlp":
        chosen = _otlp_exporter(endpoint, headers, timeout)
    elif exporter == "console":
        chosen = ConsoleSpanExporter(service_name=service_name, out=sys.stdout)  # stdout as of now
    elif isinstance(exporter, SpanExporter):
        chosen = exporter
    else:
        raise ConfigError(
            f"tracing exporter {exporter!r} is unknown; use 'otlp', 'console', a SpanExporter, or None (off)"
        )
    use_batch = batch if batch is not None else exporter == "otlp"
    processor: SpanProcessor = BatchSpanProcessor(chosen) if use_batch else SimpleSpanProcessor(chosen)
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(processor)
    if set_global:
        otel_trace.set_tracer_provider(provider)
    hidden = tuple(secrets) + tuple(v for v in (headers or {}).values() if v)
    return TracingConfig(provider, capture_content, hidden, frozenset(agent_steps))


def trace_outcome(
    outcome: Ok[object] | Err,
    *,
    workflow: str = "workflow",
    run_id: str = "",
    config: TracingConfig | None = None,
) -> int:
    """Export a finished run's spans through ``config``.

    Does nothing and returns 0 without a configuration: ``agentflow.run`` calls it after every run with the
    run's own ``telemetry``, which costs nothing by default.

    Args:
        outcome: The run's outcome.
        workflow: The workflow's name.
        run_id: The run's id.
        config: The tracing setup (``None``: export nothing).

    Returns:
        How many spans were exported.
    """
    active = config
    if active is None:
        return 0
    tracer = active.provider.get_tracer(_INSTRUMENTATION)
    return record_outcome(
        outcome,
        tracer,
        workflow=workflow,
        run_id=run_id,
        capture_content=active.capture_content,
        agent_steps=active.agent_steps,
        secrets=active.secrets,
    )
