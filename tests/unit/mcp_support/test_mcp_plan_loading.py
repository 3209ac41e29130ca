"""Plans that name MCP sources under ``tools:``: the schema, the user's allowlist, located errors, round trips.

Nothing here connects to a server: loading a plan only decides which sources the user allowed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agentflow.errors import PlanError
from agentflow.mcp import MCPSource
from agentflow.plans import MCPToolsRef, dump_plan, load_plan, load_plan_text, plan_json_schema

PLAN = """\
apiVersion: agentflow/v1
kind: Plan
name: weather-report
tools:
  - agentflow.plans.builtin_tools:word_count
  - mcp: weather
    command: [python, weather_server.py]
    tools: [forecast]
    timeout: 15
steps:
  - id: fc
    tool: weather.forecast
    args: {city: Oslo}
  - id: words
    tool: word_count
    args: {text: "{{steps.fc}}"}
"""


def test_allowed_command_becomes_a_source_that_runs_in_the_plans_folder(tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(PLAN, encoding="utf-8")
    loaded = load_plan(path, allow_mcp=["python weather_server.py"])
    [source] = loaded.mcp_sources
    assert source.command == ("python", "weather_server.py")
    assert source.cwd == str(tmp_path) and source.tools == ("forecast",) and source.timeout == 15
    assert loaded.tools.names() == ["word_count"]  # MCP tools join when a run connects
    assert isinstance(loaded.plan.tools[1], MCPToolsRef)


def test_unallowed_command_is_a_plan_error_at_the_entry_with_the_flag_to_allow_it() -> None:
    with pytest.raises(PlanError) as info:
        load_plan_text(PLAN, file="plan.yaml")
    err = info.value
    assert (err.file, err.line) == ("plan.yaml", 6)
    assert "MCP source 'weather' (stdio: 'python weather_server.py') is not allowed" in err.message
    assert "--allow-mcp 'python weather_server.py'" in err.message


def test_the_users_own_source_replaces_what_the_plan_may_not_choose() -> None:
    key = {"forecast": {"api_key": __import__("agentflow.secrets").secrets.secret("W_KEY")}}
    own = MCPSource.stdio("weather", ["python", "weather_server.py"], secrets=key, env={"MODE": "prod"})
    loaded = load_plan_text(PLAN, allow_mcp=[own])
    [source] = loaded.mcp_sources
    assert source.secrets == own.secrets and source.env == own.env and source.tools == ("forecast",)


@pytest.mark.parametrize(
    ("edit", "line", "message"),
    [
        (
            ("tool: weather.forecast", "tool: weather.alerts"),
            12,
            "'weather.alerts' is not among the tools this plan takes",
        ),
        (("tool: weather.forecast", "tool: wether.forecast"), 12, "unknown tool 'wether.forecast'"),
        (
            ("    timeout: 15", "    url: http://127.0.0.1:1/mcp"),
            6,
            "takes 'command' \\(stdio\\) or 'url' \\(HTTP\\), not both",
        ),
        (
            ("    timeout: 15", "    env: {KEY: x}"),
            9,
            "unknown key 'env' in tools\\[1\\]; allowed keys: command, mcp",
        ),
        (
            ("  - mcp: weather", "  - mcp: weather-2"),
            6,
            "'weather-2' is not allowed here; use letters, digits and '_'",
        ),
        (
            ("    command: [python, weather_server.py]", "    url: ftp://host/mcp"),
            7,
            "write the MCP server's http\\(s\\) URL",
        ),
        (("  - agentflow.plans.builtin_tools:word_count", "  - 42"), 5, "a tool is 'module:attr'"),
        (("args: {city: Oslo}", "args: {city: '{{steps.nope}}'}"), 13, "unknown step 'nope'"),
    ],
)
def test_bad_mcp_entries_and_steps_are_located_plan_errors(
    edit: tuple[str, str], line: int, message: str
) -> None:
    text = PLAN.replace(*edit)
    with pytest.raises(PlanError, match=message) as info:
        load_plan_text(text, allow_mcp=["python weather_server.py", "http://127.0.0.1:*/mcp"])
    assert info.value.line == line


def test_listing_a_source_twice_or_clashing_with_a_tool_prefix_is_refused() -> None:
    twice = PLAN.replace("    timeout: 15\n", "    timeout: 15\n  - {mcp: weather}\n")
    with pytest.raises(PlanError, match="MCP source 'weather' is listed twice"):
        load_plan_text(twice, allow_mcp=["python weather_server.py"])
    clash = PLAN.replace("mcp: weather", "mcp: word_count")
    assert load_plan_text(clash.replace("weather.forecast", "word_count.forecast"), allow_mcp=["python *"])
    dotted = PLAN.replace(
        "  - agentflow.plans.builtin_tools:word_count\n",
        "  - {ref: 'agentflow.plans.builtin_tools:word_count', name: weather.count}\n",
    ).replace("tool: word_count", "tool: weather.count")
    with pytest.raises(
        PlanError, match=r"would share the prefix 'weather\.' with tools \['weather\.count'\]"
    ):
        load_plan_text(dotted, allow_mcp=["python weather_server.py"])


def test_a_plan_with_an_mcp_source_dumps_and_loads_back_equal() -> None:
    loaded = load_plan_text(PLAN, allow_mcp=["python weather_server.py"])
    again = load_plan_text(dump_plan(loaded.plan), allow_mcp=["python weather_server.py"])
    assert again.plan == loaded.plan


def test_the_published_schema_describes_mcp_entries() -> None:
    schema: dict[str, Any] = json.loads(json.dumps(plan_json_schema()))
    ref = schema["$defs"]["MCPToolsRef"]
    assert set(ref["properties"]) == {"mcp", "command", "url", "tools", "timeout"}
    assert ref["additionalProperties"] is False
