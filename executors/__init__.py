"""Tools and the parallel function-call executor.

- :class:`Tool`, :func:`tool`, :class:`ToolRegistry`, :class:`ToolView`: tools from typed Python functions or
  JSON-Schema function specs (OpenAI, BFCL), validated arguments, per-tool timeout / concurrency / retries, and
  per-agent allowlists.
- :class:`Task`, :class:`Executor`, :class:`Execution`: the LLMCompiler task fetching unit: tasks with ``$N``
  references run the moment their dependencies finish, with typed single-pass substitution.
- :class:`PlanGraph`: DAG analysis (cycles, critical path, steps-to-execution, DOT/JSON export).
- :class:`StepBudget`: the tool and LLM calls a run may make in all (``max_steps``), charged by every tool call.
- :class:`TaskJournal`, :func:`task_journal`: each tool call journaled as a step of its own, so a resumed run
  calls no tool twice; :func:`with_tool_types` reads replayed results back as their tools' return types.
"""

from ._budget import StepBudget, charge_step, current_step_budget, limit_steps, step_budget
from ._dag import PlanGraph
from ._executor import Execution, ExecutionReport, Executor
from ._journal import StepTaskJournal, TaskJournal, check_refusals, task_journal, with_tool_types
from ._ray import RayExecutor, await_object_ref, on_ray, ray_step, ray_tools
from ._refs import REF_PATTERN, Ref, find_refs, ref_ids, substitute
from ._registry import ToolRegistry, ToolView
from ._schema import JsonSchemaValidator, normalize_schema, safe_regex_search
from ._task import MAX_RESULT_CHARS, Task, TaskResult, TaskStatus, clipped, task_event, tool_call_event
from ._tool import TOOL_NAME, Tool, ToolFunction, tool

__all__ = [
    "MAX_RESULT_CHARS",
    "REF_PATTERN",
    "TOOL_NAME",
    "Execution",
    "ExecutionReport",
    "Executor",
    "JsonSchemaValidator",
    "PlanGraph",
    "RayExecutor",
    "Ref",
    "StepBudget",
    "StepTaskJournal",
    "Task",
    "TaskJournal",
    "TaskResult",
    "TaskStatus",
    "Tool",
    "ToolFunction",
    "ToolRegistry",
    "ToolView",
    "await_object_ref",
    "charge_step",
    "check_refusals",
    "clipped",
    "current_step_budget",
    "find_refs",
    "limit_steps",
    "normalize_schema",
    "on_ray",
    "ray_step",
    "ray_tools",
    "ref_ids",
    "safe_regex_search",
    "step_budget",
    "substitute",
    "task_event",
    "task_journal",
    "tool",
    "tool_call_event",
    "with_tool_types",
]
