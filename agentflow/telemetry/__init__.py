"""agentflow.telemetry: OpenTelemetry traces of runs (GenAI semantic conventions), off unless configured.

``configure_tracing(exporter="otlp", endpoint=...)`` (or ``"console"``, or any SDK ``SpanExporter``) makes a
``TracingConfig``; ``agentflow.run(flow, telemetry=config)`` exports that run's spans through it (no process-wide
state: each run uses the configuration it is given): the workflow, its steps and
agents, every LLM call (``gen_ai.operation.name``, ``gen_ai.request.model``, ``gen_ai.usage.input_tokens``...,
plus ``agentflow.usage.cached_tokens`` and ``agentflow.queue_wait_s``) and every tool call. Message contents are
recorded only with ``capture_content=True``, and secrets never. ``record_trace`` builds spans from a trace with any
``Tracer``. Nothing is sent anywhere by default.
"""

from ._config import (
    ExporterName,
    TracingConfig,
    configure_tracing,
    trace_outcome,
)
from ._spans import (
    DEFAULT_AGENT_STEPS,
    SecretScrubber,
    record_outcome,
    record_trace,
)

__all__ = [
    "DEFAULT_AGENT_STEPS",
    "ExporterName",
    "SecretScrubber",
    "TracingConfig",
    "configure_tracing",
    "record_outcome",
    "record_trace",
    "trace_outcome",
]
