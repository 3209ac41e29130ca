"""The plan format (``apiVersion: agentflow/v1``, ``kind: Plan``) as pydantic models.

These models are the edge of the plan world: YAML files are validated into them, Python code can build
them directly (they are the declarative pieces a workflow can be dumped from), and their JSON Schema is
the published schema of the format (``agentflow schema``), which also drives grammar-constrained decoding
in the meta-agent.

A step is exactly one of seven kinds, told apart by the key it carries::

    prompt:    LLMStep        one LLM call (optionally with a JSON Schema ``output`` for typed JSON)
    tool:      ToolStep       one tool call with templated ``args``
    parallel:  ParallelStep   children run concurrently (a DAG when children reference each other)
    steps:     SequenceStep   children run in order
    map:       MapStep        ``do`` runs once per item of a list, at most ``max_concurrency`` at once
    branch:    BranchStep     ``then`` or ``else`` depending on a condition
    loop:      LoopStep       ``do`` repeats until a condition holds, at most ``max_iter`` times
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, Discriminator, Field, JsonValue, Tag, model_validator

__all__ = [
    "API_VERSION",
    "STEP_KINDS",
    "AgentSpec",
    "BranchStep",
    "Condition",
    "EngineSpec",
    "LLMStep",
    "LoopSpec",
    "LoopStep",
    "MCPToolsRef",
    "MapStep",
    "OutputSpec",
    "ParallelStep",
    "Plan",
    "RetrySpec",
    "SchemaSpec",
    "SequenceStep",
    "Step",
    "ToolRef",
    "ToolStep",
    "plan_json_schema",
]

API_VERSION = "agentflow/v1"
"""The only ``apiVersion`` this loader reads."""

IDENT = r"^[A-Za-z_][A-Za-z0-9_]*$"
"""Step ids, agent names, input and output names: identifiers."""

JsonType = Literal["string", "integer", "number", "boolean", "array", "object", "null"]

STEP_KINDS: dict[str, str] = {
    "prompt": "llm",
    "tool": "tool",
    "parallel": "parallel",
    "steps": "sequence",
    "map": "map",
    "branch": "branch",
    "loop": "loop",
}
"""The key that marks each step kind, in the order they are tested."""


class _Model(BaseModel):
    # strict: a value of the wrong type is an error, never coerced ("90" is not 90, "yes" is not True)
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True, strict=True)


class SchemaSpec(_Model):
    """A JSON Schema (the subset plans use to declare inputs, outputs and typed LLM answers)."""

    type: JsonType | list[JsonType] | None = None
    description: str | None = None
    title: str | None = None
    default: JsonValue = None
    enum: list[JsonValue] | None = None
    const: JsonValue = None
    items: SchemaSpec | None = None
    properties: dict[str, SchemaSpec] | None = None
    required: list[str] | None = None
    additionalProperties: bool | None = None
    minimum: float | None = None
    maximum: float | None = None
    minLength: int | None = Field(default=None, ge=0)
    maxLength: int | None = Field(default=None, ge=0)
    minItems: int | None = Field(default=None, ge=0)
    maxItems: int | None = Field(default=None, ge=0)
    pattern: str | None = None

    def to_json_schema(self) -> dict[str, JsonValue]:
        """This schema as a plain JSON Schema dict (unset keywords left out)."""
        dumped: dict[str, JsonValue] = self.model_dump(mode="json", exclude_unset=True, exclude={"value"})
        return dumped


class OutputSpec(SchemaSpec):
    """A plan output: a template for its ``value`` plus the JSON Schema the value must match."""

    value: str = Field(description="template producing the output, e.g. '{{steps.summary}}'")


class RetrySpec(_Model):
    """Retry a step: ``attempts`` in all, ``backoff`` seconds between them."""

    attempts: int = Field(ge=1, le=20)
    backoff: float = Field(default=0.0, ge=0, le=60)


class EngineSpec(_Model):
    """Which engine runs the plan's LLM steps, and defaults for them."""

    spec: str | None = Field(
        default=None, description="engine spec, e.g. 'llamacpp:default' (the CLI's --engine overrides it)"
    )
    max_tokens: int = Field(default=128, ge=1, le=32768)
    temperature: float = Field(default=0.0, ge=0, le=2)
    seed: int | None = None


class TelemetrySpec(_Model):
    """Where the run's OpenTelemetry spans go (nothing is sent anywhere unless ``exporter`` is set)."""

    exporter: Literal["otlp", "console"] | None = Field(
        default=None, description="span exporter; the CLI's --trace overrides it"
    )
    endpoint: str | None = Field(
        default=None, description="OTLP/HTTP endpoint, e.g. http://127.0.0.1:4318/v1/traces"
    )
    service_name: str = "agentflow"
    capture_content: bool = Field(default=False, description="include prompt/output text (secrets scrubbed)")


class AgentSpec(_Model):
    """A named LLM persona that LLM steps can use with ``agent:``."""

    description: str | None = None
    system: str | None = Field(default=None, description="system prompt (a template)")
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    temperature: float | None = Field(default=None, ge=0, le=2)


REF_PATTERN = r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$"
"""A ``module:attr`` tool reference."""


class ToolRef(_Model):
    """A tool a plan uses: a ``module:attr`` reference (a function or a ``Tool``), optionally renamed."""

    ref: str = Field(pattern=REF_PATTERN)
    name: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)*$")
    timeout: float | None = Field(default=None, gt=0)


class MCPToolsRef(_Model):
    """Tools from an MCP server, called ``<mcp>.<tool>`` in steps.

    With only ``mcp:``, the server is the one the user defined under that name (``--mcp NAME=...``). A
    ``command:`` (stdio) or ``url:`` (streamable HTTP) written here runs only if the user allowed exactly that
    target (``--allow-mcp``); environment, headers and secrets never come from a plan.
    """

    mcp: str = Field(pattern=IDENT, description="the source's name; its tools are called '<mcp>.<tool>'")
    command: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None,
        min_length=1,
        description="start the server with this command (stdio), if the user allows it",
    )
    url: str | None = Field(
        default=None,
        pattern=r"^https?://",
        description="the server's streamable HTTP endpoint, if the user allows it",
    )
    tools: list[str] | None = Field(
        default=None, min_length=1, description="the server's tools this plan uses (default: all)"
    )
    timeout: float | None = Field(default=None, gt=0, description="seconds per call")

    @model_validator(mode="after")
    def _one_target(self) -> MCPToolsRef:
        if self.command is not None and self.url is not None:
            raise ValueError("an MCP source takes 'command' (stdio) or 'url' (HTTP), not both")
        return self


class Condition(_Model):
    """A test on a templated value: one comparison operator, or none for truthiness."""

    value: str = Field(description="template whose value is tested, e.g. '{{steps.check.ok}}'")
    equals: JsonValue = None
    not_equals: JsonValue = None
    contains: JsonValue = None
    gt: float | None = None
    ge: float | None = None
    lt: float | None = None
    le: float | None = None

    @model_validator(mode="after")
    def _one_operator(self) -> Condition:
        used = [
            k
            for k in ("equals", "not_equals", "contains", "gt", "ge", "lt", "le")
            if k in self.model_fields_set
        ]
        if len(used) > 1:
            raise ValueError(
                f"a condition takes at most one operator, got {used}; split it into nested branches"
            )
        return self


class _StepBase(_Model):
    id: str = Field(pattern=IDENT, description="unique step id; its result is '{{steps.<id>}}'")
    description: str | None = None
    retry: RetrySpec | None = None
    timeout: float | None = Field(default=None, gt=0, description="seconds per attempt")
    needs: list[str] = Field(
        default_factory=list, description="extra ordering inside a parallel block: sibling ids to wait for"
    )


class LLMStep(_StepBase):
    """One LLM call. Its result is the answer text, or the parsed JSON value when ``output`` is set."""

    prompt: str = Field(description="user prompt (a template)")
    agent: str | None = None
    system: str | None = None
    max_tokens: int | None = Field(default=None, ge=1, le=32768)
    temperature: float | None = Field(default=None, ge=0, le=2)
    output: SchemaSpec | None = Field(default=None, description="JSON Schema of a typed answer")


class ToolStep(_StepBase):
    """One tool call; string arguments may be templates (a lone '{{x}}' keeps the value's type)."""

    tool: str
    args: dict[str, JsonValue] = Field(default_factory=dict)


class ParallelStep(_StepBase):
    """Children run concurrently; a child that references a sibling waits for it. Result: a dict by id."""

    parallel: list[Step] = Field(min_length=1)


class SequenceStep(_StepBase):
    """Children run in order. Result: the last child's result."""

    steps: list[Step] = Field(min_length=1)


class MapStep(_StepBase):
    """``do`` runs once per item of the list ``map`` yields. Result: the list of ``do``'s last results."""

    map: str = Field(description="template yielding a list, e.g. '{{inputs.questions}}'")
    as_: str = Field(default="item", alias="as", pattern=IDENT)
    max_concurrency: int | None = Field(default=None, ge=1)
    do: list[Step] = Field(min_length=1)


class BranchStep(_StepBase):
    """``then`` when the condition holds, else ``else``. Result: the chosen list's last result (or null)."""

    branch: Condition
    then: list[Step] = Field(min_length=1)
    else_: list[Step] = Field(default_factory=list, alias="else")


class LoopSpec(_Model):
    """Repeat until ``until`` holds (checked after each iteration), at most ``max_iter`` iterations."""

    until: Condition
    max_iter: int = Field(ge=1, le=1000)


class LoopStep(_StepBase):
    """``do`` repeats (``{{loop.index}}`` counts from 0). Result: the last iteration's last result."""

    loop: LoopSpec
    do: list[Step] = Field(min_length=1)


def _step_kind(value: Any) -> str | None:
    if isinstance(value, dict):
        for key, kind in STEP_KINDS.items():
            if key in value:
                return kind
        return None
    for kind, cls in _KIND_CLASSES.items():
        if isinstance(value, cls):
            return kind
    return None


Step: TypeAlias = Annotated[
    Annotated[LLMStep, Tag("llm")]
    | Annotated[ToolStep, Tag("tool")]
    | Annotated[ParallelStep, Tag("parallel")]
    | Annotated[SequenceStep, Tag("sequence")]
    | Annotated[MapStep, Tag("map")]
    | Annotated[BranchStep, Tag("branch")]
    | Annotated[LoopStep, Tag("loop")],
    Discriminator(
        _step_kind,
        custom_error_type="step_kind",
        custom_error_message=(
            "a step needs exactly one of the keys prompt, tool, parallel, steps, map, branch, loop"
        ),
    ),
]
"""Any step (a union told apart by its marker key)."""

_KIND_CLASSES: dict[str, type[_StepBase]] = {
    "llm": LLMStep,
    "tool": ToolStep,
    "parallel": ParallelStep,
    "sequence": SequenceStep,
    "map": MapStep,
    "branch": BranchStep,
    "loop": LoopStep,
}


def _tool_kind(value: Any) -> str:
    if isinstance(value, str):
        return "str"
    if isinstance(value, dict):
        return "MCPToolsRef" if "mcp" in value else "ToolRef"
    return type(value).__name__


ToolEntry: TypeAlias = Annotated[
    Annotated[Annotated[str, Field(pattern=REF_PATTERN)], Tag("str")]
    | Annotated[ToolRef, Tag("ToolRef")]
    | Annotated[MCPToolsRef, Tag("MCPToolsRef")],
    Discriminator(
        _tool_kind,
        custom_error_type="tool_entry",
        custom_error_message="a tool is 'module:attr', {ref: 'module:attr', ...} or {mcp: NAME, ...}",
    ),
]
"""One entry of a plan's ``tools:`` (told apart by its form: a string, a ``ref:`` or an ``mcp:`` mapping)."""


class Plan(_Model):
    """A declarative workflow: engine defaults, tools, agents, typed inputs/outputs and steps."""

    apiVersion: Literal["agentflow/v1"] = "agentflow/v1"
    kind: Literal["Plan"] = "Plan"
    name: str = Field(default="plan", pattern=r"^[A-Za-z0-9_.-]+$")
    description: str | None = None
    engine: EngineSpec = Field(default_factory=EngineSpec)
    tools: list[ToolEntry] = Field(
        default_factory=list,
        description="tools as 'module:attr' references or MCP servers (checked against the user's allowlists)",
    )
    agents: dict[str, AgentSpec] = Field(default_factory=dict)
    inputs: dict[str, SchemaSpec] = Field(default_factory=dict)
    outputs: dict[str, OutputSpec] = Field(default_factory=dict)
    steps: list[Step] = Field(min_length=1)
    max_steps: int | None = Field(
        default=None,
        ge=1,
        description="most steps one run of the plan may take in all: tool calls, LLM calls and map items "
        "(the caller's limit also applies)",
    )
    telemetry: TelemetrySpec = Field(default_factory=TelemetrySpec)


for _cls in (
    SchemaSpec,
    OutputSpec,
    ParallelStep,
    SequenceStep,
    MapStep,
    BranchStep,
    LoopStep,
    LoopSpec,
    Plan,
):
    _cls.model_rebuild()


def plan_json_schema() -> dict[str, JsonValue]:
    """The JSON Schema (draft 2020-12) of the plan format, as published by ``agentflow schema``."""
    schema: dict[str, JsonValue] = Plan.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://agentflow.dev/schemas/plan-v1.json"
    schema["title"] = "agentflow plan (agentflow/v1)"
    return schema
