"""Declarative plans: the ``agentflow/v1`` YAML format, its loader, compiler, dumper and DAG picture.

Load a plan with ``load_plan(path)`` (every problem is a ``PlanError`` naming file:line:column), run it
with ``agentflow.run(loaded.workflow, inputs, engine=...)``, build one in Python from the step models
(``Plan``, ``LLMStep``, ``ToolStep``, ``ParallelStep``...) and write it back with ``dump_plan``.
``plan_json_schema()`` is the format's published JSON Schema.
"""

from __future__ import annotations

from ._compile import (
    Scope,
    call_tool,
    compile_plan,
    condition_holds,
    sibling_needs,
)
from ._dump import dump_plan, plan_to_data
from ._graph import plan_graph, render_svg
from ._infer_json import JsonCheck, infer_json
from ._loader import (
    LoadedPlan,
    PlanChoice,
    check_plan,
    children_of,
    load_plan,
    load_plan_text,
    referenced_steps,
    walk_steps,
)
from ._schema import (
    API_VERSION,
    STEP_KINDS,
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
from ._templates import Ref, Template, TemplateSyntaxError, parse_template
from ._tools import DEFAULT_ALLOWLIST, ToolAllowlist, resolve_tool
from ._yaml import MAX_BYTES, MAX_DEPTH, MAX_NODES, Document, read_yaml

__all__ = [
    "API_VERSION",
    "DEFAULT_ALLOWLIST",
    "MAX_BYTES",
    "MAX_DEPTH",
    "MAX_NODES",
    "STEP_KINDS",
    "AgentSpec",
    "BranchStep",
    "Condition",
    "Document",
    "EngineSpec",
    "JsonCheck",
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
    "Ref",
    "RetrySpec",
    "SchemaSpec",
    "Scope",
    "SequenceStep",
    "Step",
    "TelemetrySpec",
    "Template",
    "TemplateSyntaxError",
    "ToolAllowlist",
    "ToolRef",
    "ToolStep",
    "call_tool",
    "check_plan",
    "children_of",
    "compile_plan",
    "condition_holds",
    "dump_plan",
    "infer_json",
    "load_plan",
    "load_plan_text",
    "parse_template",
    "plan_graph",
    "plan_json_schema",
    "plan_to_data",
    "read_yaml",
    "referenced_steps",
    "render_svg",
    "resolve_tool",
    "sibling_needs",
    "walk_steps",
]
