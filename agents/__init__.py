"""agentflow.agents: agents built on the Flow DSL.

- LLMCompiler (``llm_compiler``): a streamed plan of parallel tool calls, a joiner that finishes or replans.
- ReAct (``react``): the one-call-per-turn baseline.
- Memory tools (``memory_tools``: ``remember``/``recall``) and an LLM summarizer for memory trees.
- Plan parsing for LLMCompiler text and JSON plans (``PlanParser``, ``JsonPlanParser``, ``compiler_plan_schema``).
- The meta-agent (``write_plan``/``run_goal``): an LLM writes a plan in the YAML format, validated and run.
- EvoGit coders live in ``agentflow.agents.evogit``.
"""

from ._compiler import (
    CompilerResult,
    JoinDecision,
    PlanFormat,
    describe_tools,
    llm_compiler,
    observations,
)
from ._memory_tools import EngineSummarizer, memory_tools
from ._meta import BUILTIN_TOOL_REFS, GoalRun, generation_schema, run_goal, write_plan
from ._native_tools import TurnChoices, tool_specs
from ._plan_parser import (
    JsonPlanParser,
    ParsedPlan,
    PlanParser,
    compiler_plan_schema,
    format_plan,
    parse_json_plan,
    parse_plan,
)
from ._react import ReactResult, react, react_turn_schema

__all__ = [
    "BUILTIN_TOOL_REFS",
    "CompilerResult",
    "EngineSummarizer",
    "GoalRun",
    "JoinDecision",
    "JsonPlanParser",
    "ParsedPlan",
    "PlanFormat",
    "PlanParser",
    "ReactResult",
    "TurnChoices",
    "compiler_plan_schema",
    "describe_tools",
    "format_plan",
    "generation_schema",
    "llm_compiler",
    "memory_tools",
    "observations",
    "parse_json_plan",
    "parse_plan",
    "react",
    "react_turn_schema",
    "run_goal",
    "tool_specs",
    "write_plan",
]
