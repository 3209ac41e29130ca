"""The run context: the DSL's Reader environment plus what agentflow wires into a run."""

from __future__ import annotations

from dataclasses import dataclass

from agentflow.dsl import Context
from agentflow.engines import Engine
from agentflow.memory import MemoryStore


@dataclass(frozen=True)
class RunContext(Context):
    """What every step of an agentflow run can read (``await ask(RunContext)``).

    The DSL's ``Context`` fields (``deps``, ``run_id``, ``services``, ``journal``) are inherited.

    Attributes:
        engine: The engine every LLM call goes through (normally a ``Scheduler`` wrapping the real
            engine, so requests of all agents share one KV-reuse-aware queue).
        tools: The tool registry available to agents, if any.
        memory: The memory store / trees available to agents, if any.
        tracer: The OpenTelemetry tracer, if tracing is configured.
        max_llm_tokens: Limit on generated + prompt tokens per run (``None``: unlimited).
    """

    engine: Engine | None = None
    tools: object | None = None
    memory: MemoryStore | None = None
    tracer: object | None = None
    max_llm_tokens: int | None = None
