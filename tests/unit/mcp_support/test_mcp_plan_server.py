"""Plans as MCP tools (``PlanServer``), answered by the ``mcp`` SDK's own client connected in process.

The engine is the deterministic ``test:`` engine; what is under test is the mapping between plans and MCP
(schemas from declared inputs/outputs, results, errors as ``isError``) on asyncio and trio.
"""

from __future__ import annotations

import json

import pytest
from mcp import Client
from mcp_types import CallToolResult, TextContent

from agentflow.errors import ConfigError
from agentflow.mcp import PlanServer
from agentflow.mcp._server import input_schema, output_schema
from agentflow.plans import LoadedPlan, load_plan_text

pytestmark = pytest.mark.anyio

BOTH_BACKENDS = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])

COUNT = """
apiVersion: agentflow/v1
kind: Plan
name: count-words
description: Count the words of a text and remark on the count.
tools: [agentflow.plans.builtin_tools:word_count]
inputs:
  text: {type: string, description: the text}
  style: {type: string, enum: [short, long], default: short}
outputs:
  words: {value: "{{steps.count}}", type: integer}
  remark: {value: "{{steps.remark}}", type: string}
steps:
  - id: count
    tool: word_count
    args: {text: "{{inputs.text}}"}
  - id: remark
    prompt: "Remark ({{inputs.style}}) on {{steps.count}} words."
"""

SPLIT = """
apiVersion: agentflow/v1
kind: Plan
name: split-list
tools: [agentflow.plans.builtin_tools:split, agentflow.plans.builtin_tools:calculator]
inputs:
  items: {type: string}
steps:
  - id: parts
    tool: split
    args: {text: "{{inputs.items}}"}
  - id: broken
    tool: calculator
    args: {expression: "1 / ({{inputs.items}})"}
"""


def text_of(result: CallToolResult) -> str:
    return "".join(block.text for block in result.content if isinstance(block, TextContent))


def plans() -> list[LoadedPlan]:
    return [load_plan_text(COUNT), load_plan_text(SPLIT)]


@BOTH_BACKENDS
async def test_plans_are_listed_with_schemas_from_their_declared_inputs_and_outputs() -> None:
    async with PlanServer(plans(), engine="test:") as server, Client(server.lowlevel()) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
    assert sorted(listed) == ["count-words", "split-list"]
    count = listed["count-words"]
    assert count.description == "Count the words of a text and remark on the count."
    assert count.input_schema == {
        "type": "object",
        "properties": {
            "text": {"type": "string", "description": "the text"},
            "style": {"type": "string", "enum": ["short", "long"], "default": "short"},
        },
        "required": ["text"],
        "additionalProperties": False,
    }
    assert count.output_schema == {
        "type": "object",
        "properties": {"words": {"type": "integer"}, "remark": {"type": "string"}},
        "required": ["words", "remark"],
    }
    assert listed["split-list"].output_schema == {
        "type": "object",
        "properties": {"result": {}},
        "required": ["result"],
    }


@BOTH_BACKENDS
async def test_a_call_runs_the_plan_and_answers_its_outputs() -> None:
    async with PlanServer(plans(), engine="test:") as server, Client(server.lowlevel()) as client:
        result = await client.call_tool("count-words", {"text": "one two three", "style": "long"})
    assert not result.is_error
    assert result.structured_content == {"words": 3, "remark": "echo: Remark (long) on 3 words."}
    assert text_of(result) == '{"words": 3, "remark": "echo: Remark (long) on 3 words."}'


async def test_bad_arguments_a_failing_plan_and_unknown_tools_are_error_results() -> None:
    async with PlanServer(plans(), engine="test:") as server, Client(server.lowlevel()) as client:
        bad = await client.call_tool("count-words", {"txt": "x"})
        wrong_type = await client.call_tool("count-words", {"text": "x", "style": "medium"})
        failing = await client.call_tool("split-list", {"items": "0"})
        unknown = await client.call_tool("nope", {})
    assert bad.is_error and "has no input(s) ['txt']; its inputs are ['style', 'text']" in text_of(bad)
    assert wrong_type.is_error and "input 'style' = 'medium' does not match its schema" in text_of(wrong_type)
    assert failing.is_error and "plan 'split-list' failed" in text_of(failing)
    assert "broken" in text_of(failing)  # the failing step is named
    assert unknown.is_error
    assert "no plan named 'nope'; this server offers count-words, split-list" in text_of(unknown)


async def test_a_plan_without_outputs_answers_its_last_result() -> None:
    only_split = load_plan_text(SPLIT.split("  - id: broken")[0])
    async with PlanServer([only_split], engine="test:") as server, Client(server.lowlevel()) as client:
        result = await client.call_tool("split-list", {"items": "a, b"})
    assert result.structured_content == {"result": ["a", "b"]}


def test_plans_with_one_name_and_empty_servers_are_refused() -> None:
    with pytest.raises(ConfigError, match="two plans are named 'count-words'"):
        PlanServer([load_plan_text(COUNT), load_plan_text(COUNT)])
    with pytest.raises(ConfigError, match="give at least one plan"):
        PlanServer([])
    with pytest.raises(ConfigError, match="max_runs=0"):
        PlanServer(plans(), max_runs=0)


async def test_calls_outside_the_servers_lifetime_are_error_results() -> None:
    server = PlanServer(plans(), engine="test:")
    result = await server.call("count-words", {"text": "a"})
    assert result.is_error and "not running" in text_of(result)


def test_schemas_are_valid_json_schema_objects() -> None:
    from agentflow.executors import JsonSchemaValidator

    for loaded in plans():
        JsonSchemaValidator(json.loads(json.dumps(input_schema(loaded))))
        JsonSchemaValidator(json.loads(json.dumps(output_schema(loaded))))
