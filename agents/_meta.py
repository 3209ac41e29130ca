"""The meta-agent (generative orchestration): an LLM writes a plan, the loader checks it, and it runs.

Given a goal and the tools (and optional agents) it may use, the model writes a plan in the
``agentflow/v1`` format under grammar-constrained decoding. The grammar comes from a *generation schema*
derived from the format: the same keys and step kinds, narrowed to what this call can use (each tool
step carries that tool's own argument schema, ids and strings are bounded, and a template may only be
``{{steps.<id>}}``), so every document it admits is also valid under ``plan_json_schema()``. The loader
then checks what a schema cannot (unique ids, references to steps that exist and ran before); its error,
with file position and fix, goes back to the model for a bounded number of repairs. The accepted plan runs
as a sub-workflow of the calling flow: same engine (and scheduler), journal, limits and trace.

A plan that validates can still be useless: a small model may write steps that call none of the tools
the goal asks for and answer from thin air. ``tools_named(goal, tools)`` finds the tools a goal names
(every word of a tool's name appears in the goal: "count the words" names ``word_count``, "look up"
names ``lookup``), and a plan that leaves one of them uncalled is sent back for repair like an invalid
one; when the repairs run out, the result is an error saying which tools the plan never called, not
an "ok" run of a plan that could not achieve the goal.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import JsonValue

from agentflow.dsl import Flow, flow, named
from agentflow.errors import ConfigError, PlanError
from agentflow.executors import Tool
from agentflow.plans import API_VERSION, AgentSpec, LoadedPlan, ToolStep, check_plan
from agentflow.plans import builtin_tools as _builtin
from agentflow.plans._infer_json import infer_json
from agentflow.plans._loader import walk_steps
from agentflow.plans._tools import resolve_tool

__all__ = ["BUILTIN_TOOL_REFS", "GoalRun", "generation_schema", "run_goal", "tools_named", "write_plan"]

BUILTIN_TOOL_REFS: tuple[str, ...] = tuple(
    f"{_builtin.__name__}:{name}" for name in sorted(_builtin.__all__) if name.islower()
)
"""``module:attr`` references of the built-in tools (the meta-agent's default toolbox)."""

# Unbounded repetitions only: llama.cpp grammars expand {m,n} into nested optionals, which it rejects when
# deep. Runaway strings are bounded by the token budget instead (a cut-off answer is repaired).
_ID_PATTERN = "^[a-z][a-z0-9_]*$"
_PLAIN_PATTERN = r'^[^{}\n"\\]*$'
_TEXT_PATTERN = r'^[^{}\n"\\]*([{][{]steps[.][a-z][a-z0-9_]*[}][}][^{}\n"\\]*)*$'

_SYSTEM = (
    "You write workflow plans as JSON. A plan has steps; each step has an id. "
    "A step either calls a tool (tool + args) or asks the language model (prompt). "
    "A 'parallel' step runs its child steps at the same time. "
    "To use the result of an earlier step, write {{steps.<id>}} inside a string."
)


@dataclass(frozen=True)
class GoalRun:
    """What ``run_goal`` yields.

    Attributes:
        plan: The plan the model wrote (checked by the loader).
        outputs: The plan's outputs.
    """

    plan: LoadedPlan
    outputs: dict[str, object]


def _strings_as(schema: JsonValue, text: JsonValue) -> JsonValue:
    """A copy of a tool's argument schema whose free-text strings follow ``text`` and whose arrays are short."""
    if isinstance(schema, dict):
        out = {
            k: _strings_as(v, text) for k, v in schema.items() if k not in ("description", "title", "default")
        }
        if out.get("type") == "string" and "enum" not in out and "pattern" not in out:
            out = {**out, **text} if isinstance(text, dict) else out
        if out.get("type") == "array" and "maxItems" not in out:
            out["maxItems"] = 5
        return out
    if isinstance(schema, list):
        return [_strings_as(v, text) for v in schema]
    return schema


def _steps(
    tools: Sequence[Tool], agents: Mapping[str, AgentSpec], max_steps: int, tag: str
) -> list[JsonValue]:
    """Step schemas whose strings follow ``#/$defs/text<tag>`` (tag "0": no templates; "": templates)."""
    text: dict[str, JsonValue] = {"$ref": f"#/$defs/text{tag}"}
    step_id: dict[str, JsonValue] = {"$ref": "#/$defs/id"}
    llm_props: dict[str, JsonValue] = {"id": step_id, "prompt": text}
    if agents:
        names: list[JsonValue] = list(sorted(agents))
        llm_props["agent"] = {"type": "string", "enum": names}
    leaves: list[JsonValue] = [
        {
            "type": "object",
            "properties": llm_props,
            "required": ["id", "prompt"],
            "additionalProperties": False,
        }
    ]
    for tool in tools:
        params = _strings_as(
            copy.deepcopy(tool.parameters), {"pattern": _TEXT_PATTERN if not tag else _PLAIN_PATTERN}
        )
        if isinstance(params, dict):
            params["additionalProperties"] = False
            params.setdefault("type", "object")
        leaves.append(
            {
                "type": "object",
                "properties": {"id": step_id, "tool": {"type": "string", "const": tool.name}, "args": params},
                "required": ["id", "tool", "args"],
                "additionalProperties": False,
            }
        )
    parallel: dict[str, JsonValue] = {
        "type": "object",
        "properties": {
            "id": step_id,
            "parallel": {
                "type": "array",
                "items": {"anyOf": leaves},
                "minItems": 2,
                "maxItems": max(2, max_steps),
            },
        },
        "required": ["id", "parallel"],
        "additionalProperties": False,
    }
    return [*leaves, parallel]


def generation_schema(
    tools: Sequence[Tool], agents: Mapping[str, AgentSpec] | None = None, *, max_steps: int = 4
) -> dict[str, JsonValue]:
    """The JSON Schema the model writes plans under: the plan format narrowed to these tools and agents.

    Strings may hold ``{{steps.<id>}}`` templates, except in the first step (which has nothing to
    refer to); every document it admits also validates against ``plan_json_schema()``.

    Args:
        tools: The tools the plan may call.
        agents: The agents LLM steps may name.
        max_steps: Most top-level steps (and children of a parallel step).
    """
    if max_steps < 1:
        raise ConfigError(f"max_steps must be >= 1, got {max_steps}")
    agent_map = dict(agents or {})
    first: JsonValue = {"$ref": "#/$defs/first_step"}
    later: JsonValue = {"$ref": "#/$defs/step"}
    shapes: list[JsonValue] = [
        {"type": "array", "prefixItems": [first, *[later] * n], "items": False, "minItems": n + 1}
        for n in range(max_steps)
    ]
    return {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string", "const": API_VERSION},
            "kind": {"type": "string", "const": "Plan"},
            "name": {"type": "string", "pattern": "^[a-z][a-z0-9-]*$"},
            "steps": {"anyOf": shapes},
        },
        "required": ["apiVersion", "kind", "name", "steps"],
        "additionalProperties": False,
        "$defs": {
            "id": {"type": "string", "pattern": _ID_PATTERN},
            "text0": {"type": "string", "pattern": _PLAIN_PATTERN},
            "text": {"type": "string", "pattern": _TEXT_PATTERN},
            "first_step": {"anyOf": _steps(tools, agent_map, max_steps, "0")},
            "step": {"anyOf": _steps(tools, agent_map, max_steps, "")},
        },
    }


def _describe(tools: Sequence[Tool], agents: Mapping[str, AgentSpec]) -> str:
    lines = ["Tools:"]
    for tool in tools:
        lines.append(f"- {tool.signature_hint()}: {tool.description}")
    if agents:
        lines.append("Agents (for 'agent' in a prompt step):")
        lines.extend(f"- {name}: {spec.description or spec.system or ''}" for name, spec in agents.items())
    return "\n".join(lines)


_EXAMPLE = {
    "apiVersion": API_VERSION,
    "kind": "Plan",
    "name": "example",
    "steps": [
        {"id": "row", "tool": "lookup", "args": {"table": "data/planets.csv", "key": "Mars"}},
        {"id": "answer", "prompt": "Using this data: {{steps.row}} Answer the question in one sentence."},
    ],
}


_WORD = re.compile(r"[a-z0-9]+")


def _matches(part: str, words: Sequence[str]) -> bool:
    """Whether a tool-name word appears among the goal's words (a shared start of 5+ letters counts:
    'calculator' / 'calculate', 'word' / 'words')."""
    need = min(len(part), 5)
    return any(len(w) >= max(3, need) and w[:need] == part[:need] for w in words)


def tools_named(goal: str, tools: Sequence[Tool]) -> list[str]:
    """The names of the tools ``goal`` asks for, in ``tools`` order.

    A tool is asked for when every word of its name (split at ``_``, ``.`` and ``-``) appears in the
    goal, as a word or a word's start of five or more letters; two adjacent goal words also count as
    one ("look up" names ``lookup``).

    >>> from agentflow.executors import Tool
    >>> from agentflow.plans.builtin_tools import calculator, lookup, word_count
    >>> tools = [Tool.from_function(f) for f in (calculator, lookup, word_count)]
    >>> tools_named("Look up Mars and count the words of its row", tools)
    ['lookup', 'word_count']
    """
    words = _WORD.findall(goal.lower())
    words += [a + b for a, b in itertools.pairwise(words)]
    named = []
    for tool in tools:
        parts = [p for p in re.split(r"[_.\-]+", tool.name.lower()) if p]
        if parts and all(_matches(p, words) for p in parts):
            named.append(tool.name)
    return named


def _uncalled(loaded: LoadedPlan, wanted: Sequence[str]) -> list[str]:
    called = {s.tool for s in walk_steps(loaded.plan.steps) if isinstance(s, ToolStep)}
    return [name for name in wanted if name not in called]


def _resolve(refs: Sequence[str]) -> list[Tool]:
    tools: list[Tool] = []
    for ref in refs:
        try:
            tools.append(resolve_tool(ref))
        except ValueError as exc:
            raise ConfigError(f"meta-agent tool {ref!r}: {exc}") from None
    return tools


def _unique_ids(steps: JsonValue) -> JsonValue:
    """A copy of generated steps in which a repeated id gets a numeric suffix (``fact``, ``fact_2``).

    Templates naming a repeated id keep naming its first step, which ran before the repeats. Small models
    repeat ids and rarely manage to repair that themselves, while nothing else about the plan is wrong.
    """
    seen: dict[str, int] = {}

    def fix(step: JsonValue) -> JsonValue:
        if not isinstance(step, dict):
            return step
        out = dict(step)
        sid = out.get("id")
        if isinstance(sid, str):
            count = seen.get(sid, 0) + 1
            seen[sid] = count
            if count > 1:
                candidate = f"{sid}_{count}"
                while candidate in seen:
                    count += 1
                    candidate = f"{sid}_{count}"
                seen[candidate] = 1
                out["id"] = candidate
        children = out.get("parallel")
        if isinstance(children, list):
            out["parallel"] = [fix(c) for c in children]
        return out

    return [fix(s) for s in steps] if isinstance(steps, list) else steps


def _complete(
    data: JsonValue, refs: Sequence[str], tools: Sequence[Tool], agents: Mapping[str, AgentSpec]
) -> dict[str, JsonValue]:
    """The generated document made standalone (the tool references and agents it uses) with unique ids."""
    assert isinstance(data, dict)
    used = set()
    text = json.dumps(data)
    for ref, tool in zip(refs, tools, strict=True):
        if f'"tool": "{tool.name}"' in text:
            used.add(ref)
    out: dict[str, JsonValue] = {k: v for k, v in data.items() if k != "steps"}
    out["tools"] = [r for r in refs if r in used]
    if agents:
        out["agents"] = {n: a.model_dump(mode="json", exclude_unset=True) for n, a in agents.items()}
    out["steps"] = _unique_ids(data.get("steps", []))
    return out


def write_plan(
    goal: str,
    *,
    tools: Sequence[str] = BUILTIN_TOOL_REFS,
    agents: Mapping[str, AgentSpec] | None = None,
    max_steps: int = 4,
    max_repairs: int = 3,
    max_tokens: int = 320,
) -> Flow[LoadedPlan]:
    """Have the run's engine write a plan for ``goal``; the loader's errors drive bounded repairs.

    Args:
        goal: What the plan should achieve.
        tools: ``module:attr`` references of the tools the plan may use (the built-in tools by default).
        agents: Agents LLM steps may name.
        max_steps: Most top-level steps.
        max_repairs: Extra attempts after an invalid plan.
        max_tokens: Token budget per attempt.

    Returns:
        A flow yielding the checked plan, or failing with ``InferenceError`` (the last raw text and the
        last complaint in the message: the loader's, or the tools the goal names that no step calls;
        see ``tools_named``).
    """
    refs = list(tools)
    resolved = _resolve(refs)
    agent_map = dict(agents or {})
    schema = generation_schema(resolved, agent_map, max_steps=max_steps)
    wanted = tools_named(goal, resolved)
    accepted: list[LoadedPlan] = []

    def check(value: JsonValue) -> str | None:
        try:
            loaded = check_plan(_complete(value, refs, resolved, agent_map), allow_tools=refs)
        except PlanError as exc:
            return f"the plan is invalid: {exc}"
        missing = _uncalled(loaded, wanted)
        if missing:
            return (
                f"the plan is too weak for the goal: no step calls {', '.join(missing)}, which the goal "
                f"asks for; add a step that calls {missing[0]}"
            )
        accepted.append(loaded)
        return None

    must = f"\nThe plan must call these tools: {', '.join(wanted)}." if wanted else ""
    prompt = (
        f"{_describe(resolved, agent_map)}\n\nExample plan:\n{json.dumps(_EXAMPLE)}\n\n"
        f"Goal: {goal}\nWrite a plan with at most {max_steps} steps that achieves the goal.{must}"
    )

    @flow
    async def body() -> LoadedPlan:
        accepted.clear()
        await infer_json(
            schema,
            prompt,
            system=_SYSTEM,
            check=check,
            max_repairs=max_repairs,
            max_tokens=max_tokens,
            label="plan",
            show_schema=False,
            repair_temperature=0.8,
            seed=0,
        )
        return accepted[-1]

    return named("write_plan", body())


def run_goal(
    goal: str,
    *,
    inputs: Mapping[str, object] | None = None,
    tools: Sequence[str] = BUILTIN_TOOL_REFS,
    agents: Mapping[str, AgentSpec] | None = None,
    max_steps: int = 4,
    max_repairs: int = 3,
    max_tokens: int = 320,
) -> Flow[GoalRun]:
    """Write a plan for ``goal`` (see ``write_plan``) and run it as a sub-workflow of the calling flow.

    The plan runs in the caller's context, so it shares the engine, scheduler, journal and limits, and
    its events land in the caller's trace under ``run_goal/<plan name>/...``.
    """

    @flow
    async def body() -> GoalRun:
        loaded = await write_plan(
            goal,
            tools=tools,
            agents=agents,
            max_steps=max_steps,
            max_repairs=max_repairs,
            max_tokens=max_tokens,
        )
        outputs = await loaded.workflow(**dict(inputs or {}))
        return GoalRun(loaded, outputs)

    return named("run_goal", body())
