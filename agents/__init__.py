"""agentflow.agents: agents built on the Flow DSL.

- LLMCompiler (``llm_compiler``): a streamed plan of parallel tool calls, a joiner that finishes or replans.
- ReAct (``react``): the one-call-per-turn baseline.
- Memory tools (``memory_tools``: ``remember``/``recall``) and an LLM summarizer for memory trees.
- Plan parsing for LLMCompiler text and JSON plans (``PlanParser``, ``JsonPlanParser``, ``plan_json_schema``).
- The meta-agent (``write_plan``/``run_goal``): an LLM writes a plan in the YAML format, validated and run.
- EvoGit coders live in ``agentflow.agents.evogit``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentflow._lazy import lazy_attributes as _lazy_attributes

if TYPE_CHECKING:
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
        format_plan,
        parse_json_plan,
        parse_plan,
        plan_json_schema,
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
    "describe_tools",
    "format_plan",
    "generation_schema",
    "llm_compiler",
    "memory_tools",
    "observations",
    "parse_json_plan",
    "parse_plan",
    "plan_json_schema",
    "react",
    "react_turn_schema",
    "run_goal",
    "tool_specs",
    "write_plan",
]

# Names load on first access: importing the package (e.g. for the CLI) stays light.
_LAZY: dict[str, str] = {
    "BUILTIN_TOOL_REFS": "._meta",
    "CompilerResult": "._compiler",
    "EngineSummarizer": "._memory_tools",
    "GoalRun": "._meta",
    "JoinDecision": "._compiler",
    "JsonPlanParser": "._plan_parser",
    "ParsedPlan": "._plan_parser",
    "PlanFormat": "._compiler",
    "PlanParser": "._plan_parser",
    "ReactResult": "._react",
    "TurnChoices": "._native_tools",
    "describe_tools": "._compiler",
    "format_plan": "._plan_parser",
    "generation_schema": "._meta",
    "llm_compiler": "._compiler",
    "memory_tools": "._memory_tools",
    "observations": "._compiler",
    "parse_json_plan": "._plan_parser",
    "parse_plan": "._plan_parser",
    "plan_json_schema": "._plan_parser",
    "react": "._react",
    "react_turn_schema": "._react",
    "run_goal": "._meta",
    "tool_specs": "._native_tools",
    "write_plan": "._meta",
}

__getattr__, __dir__ = _lazy_attributes(__name__, globals(), _LAZY)
