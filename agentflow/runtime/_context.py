"""The run context: the DSL's Reader environment plus what agentflow wires into a run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from agentflow.dsl import Context
from agentflow.engines import Engine, Usage
from agentflow.errors import BudgetExceededError, ConfigError

if TYPE_CHECKING:
    from agentflow.executors import StepBudget, ToolRegistry, ToolView
    from agentflow.memory import MemoryStore
    from agentflow.telemetry import TracingConfig


class TokenBudget:
    """LLM tokens (prompt + completion) a run may still use; shared by all its steps.

    Args:
        limit: Total tokens allowed for the run.
    """

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ConfigError(f"max_llm_tokens must be >= 1, got {limit}")
        self.limit = limit
        self.used = 0  # lifetime: the run's; grows with every completed LLM call

    def check(self, where: str) -> None:
        """Raise ``BudgetExceededError`` if nothing is left (called before each LLM call)."""
        if self.used >= self.limit:
            raise BudgetExceededError(self.used, self.limit, where=where or "<root>")

    def charge(self, usage: Usage) -> None:
        """Record a completed call's tokens."""
        self.used += usage.prompt_tokens + usage.completion_tokens


@dataclass(frozen=True)
class RunContext(Context):
    """What every step of an agentflow run can read (``await ask(RunContext)``).

    The DSL's ``Context`` fields (``deps``, ``run_id``, ``services``, ``journal``) are inherited.

    Attributes:
        engine: The engine every LLM call goes through (normally a ``Scheduler`` wrapping the real
            engine, so requests of all agents share one KV-reuse-aware queue).
        tools: The tool registry available to agents, if any.
        memory: The memory store / trees available to agents, if any.
        telemetry: Where the run's spans are exported when it ends (``None``: nowhere; see
            ``agentflow.telemetry.configure_tracing``).
        budget: The run's LLM token budget (``None``: unlimited); see ``agentflow.run(max_llm_tokens=...)``.
        capture_content: Record prompts, completions, tool arguments and results in the run's trace
            (redacted of revealed secrets; they leave the machine only through an exporter the user
            configures with content capture on). ``False`` records usage and timings only.
        steps: The run's step budget: tool and LLM calls in all (``None``: unlimited); see
            ``agentflow.run(max_steps=...)``.
    """

    engine: Engine | None = None
    tools: ToolRegistry | ToolView | None = None
    memory: MemoryStore | None = None
    telemetry: TracingConfig | None = None
    budget: TokenBudget | None = None
    capture_content: bool = True
    steps: StepBudget | None = None
