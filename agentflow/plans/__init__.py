"""Declarative plans: the ``agentflow/v1`` YAML format, its loader, compiler, dumper and DAG picture.

Load a plan with ``load_plan(path)`` (every problem is a ``PlanError`` naming file:line:column), run it
with ``agentflow.run(loaded.workflow, inputs, engine=...)``, build one in Python from the step models
(``Plan``, ``LLMStep``, ``ToolStep``, ``ParallelStep``...) and write it back with ``dump_plan``.
``plan_json_schema()`` is the format's published JSON Schema.
"""

from ._compile import call_tool, compile_plan
from ._dump import dump_plan
from ._graph import plan_graph, render_svg
from ._loader import LoadedPlan, PlanChoice, check_plan, load_plan, load_plan_text
from ._schema import (
    API_VERSION,
    AgentSpec,
    BranchStep,
    Condition,
    EngineSpec,
    LLMStep,
    LoopSpec,
    LoopStep,
    MapStep,
    MCPToolsRef,
    OutputSpec,
    ParallelStep,
    Plan,
    RetrySpec,
    SchemaSpec,
    SequenceStep,
    Step,
    TelemetrySpec,
    ToolRef,
    ToolStep,
    plan_json_schema,
)
from ._templates import TemplateSyntaxError
from ._tools import DEFAULT_ALLOWLIST, ToolAllowlist

__all__ = [
    "API_VERSION",
    "DEFAULT_ALLOWLIST",
    "AgentSpec",
    "BranchStep",
    "Condition",
    "EngineSpec",
    "LLMStep",
    "LoadedPlan",
    "LoopSpec",
    "LoopStep",
    "MCPToolsRef",
    "MapStep",
    "OutputSpec",
    "ParallelStep",
    "Plan",
    "PlanChoice",
    "RetrySpec",
    "SchemaSpec",
    "SequenceStep",
    "Step",
    "TelemetrySpec",
    "TemplateSyntaxError",
    "ToolAllowlist",
    "ToolRef",
    "ToolStep",
    "call_tool",
    "check_plan",
    "compile_plan",
    "dump_plan",
    "load_plan",
    "load_plan_text",
    "plan_graph",
    "plan_json_schema",
    "render_svg",
]
