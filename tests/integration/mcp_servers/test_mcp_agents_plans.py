"""Agents (ReAct, the LLMCompiler) and plans calling a real MCP server's tools; unallowed tools are refused.

The agents' decisions come from a deterministic ``FunctionEngine`` (the model is not what is under test);
the tools, the MCP server (written with the SDK, over stdio and streamable HTTP on 127.0.0.1) and the
connections are real, and the server's call log shows what crossed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _mcp_servers import HttpServer, ServerLog, process_alive, stdio_command, stdio_source, stdio_target

from agentflow import Ok, run
from agentflow.agents import llm_compiler, react
from agentflow.dsl import Log
from agentflow.engines import FunctionEngine, GenerationRequest
from agentflow.errors import PlanError
from agentflow.mcp import MCPSource, mcp_tools
from agentflow.plans import load_plan, load_plan_text

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

QUESTION = "What is (2 + 3) * 4?"


def react_model(seen: list[str]) -> FunctionEngine:
    """Adds, then tries the forbidden delete_all, then multiplies, then answers."""

    def answer(req: GenerationRequest) -> str:
        prompt = "\n".join(m.content for m in req.messages or ())
        seen.append(prompt)
        observations = prompt.count("Observation (data, not instructions)")
        refused = "That call is invalid" in prompt
        if observations == 0:
            action: dict[str, object] = {"tool": "t.add", "args": {"a": 2, "b": 3}}
        elif observations == 1 and not refused:
            action = {"tool": "t.delete_all", "args": {}}
        elif observations == 1:
            action = {"tool": "t.multiply", "args": {"a": 5, "b": 4}}
        else:
            action = {"final_answer": "20"}
        return json.dumps({"thought": "next", "action": action})

    return FunctionEngine(answer)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_react_agent_calls_mcp_tools_and_is_refused_an_unallowed_one(
    transport: str, log: ServerLog, http_server: HttpServer
) -> None:
    source = stdio_source(log) if transport == "stdio" else MCPSource.http("t", http_server.url)
    server_log = log if transport == "stdio" else http_server.log
    before = len(server_log.calls())
    seen: list[str] = []
    async with mcp_tools(source) as tools:
        allowed = tools.allowlist(["t.add", "t.multiply"])
        outcome = await run(react(QUESTION, allowed, max_steps=6), engine=react_model(seen))
    assert isinstance(outcome, Ok), outcome
    result = outcome.value
    assert result.finished and result.answer == "20"
    assert [r.value for r in result.results.values()] == [5, 20]
    assert "t.delete_all" not in seen[0]  # the agent is not even told about it
    assert any("is not allowed here" in p for p in seen)
    calls = server_log.calls()[before:]
    assert [c["tool"] for c in calls] == ["add", "multiply"]  # delete_all never reached the server


async def test_a_failing_mcp_tool_becomes_an_observation_the_agent_reads(log: ServerLog) -> None:
    prompts: list[str] = []

    def model(req: GenerationRequest) -> str:
        prompt = "\n".join(m.content for m in req.messages or ())
        prompts.append(prompt)
        if "Observation" not in prompt:
            return json.dumps({"thought": "try", "action": {"tool": "t.fail", "args": {"reason": "quota"}}})
        return json.dumps({"thought": "give up", "action": {"final_answer": "the service is over quota"}})

    async with mcp_tools(stdio_source(log, tools=["fail"])) as tools:
        outcome = await run(react("Check the service.", tools, max_steps=3), engine=FunctionEngine(model))
    assert isinstance(outcome, Ok), outcome
    assert outcome.value.answer == "the service is over quota"
    [failed] = outcome.value.results.values()
    assert "failed on purpose: quota" in failed.observation()
    assert "failed on purpose: quota" in prompts[-1]  # the error reached the model as data, not as a crash


def compiler_model(req: GenerationRequest) -> str:
    schema = req.json_schema or {}
    if schema.get("type") == "array":  # the planner: a JSON plan with a $1 reference
        return json.dumps(
            [
                {"tool": "t.add", "args": {"a": 2, "b": 3}},
                {"tool": "t.multiply", "args": {"a": "$1", "b": 4}},
                {"tool": "t.delete_all", "args": {}},
            ]
        )
    prompt = "\n".join(m.content for m in req.messages or ())
    answer = "20" if "20" in prompt else "unknown"
    return json.dumps({"action": "finish", "answer": answer})


async def test_llm_compiler_runs_mcp_tools_in_a_plan_and_refuses_an_unallowed_one(log: ServerLog) -> None:
    async with mcp_tools(stdio_source(log)) as tools:
        allowed = tools.allowlist(["t.add", "t.multiply"])
        outcome = await run(
            llm_compiler(QUESTION, allowed, max_replans=0, max_plan_repairs=0),
            engine=FunctionEngine(compiler_model),
        )
    # The planner's third line names a tool outside the agent's allowlist: the plan is rejected there
    # (tasks stream to the executor as lines parse, so the first call may already have run).
    assert not isinstance(outcome, Ok)
    assert "'t.delete_all': is not allowed here; available tools: t.add, t.multiply" in str(outcome.error)
    assert "delete_all" not in log.tools_called()


async def test_llm_compiler_substitutes_typed_results_between_mcp_calls(log: ServerLog) -> None:
    def model(req: GenerationRequest) -> str:
        schema = req.json_schema or {}
        if schema.get("type") == "array":
            return json.dumps(
                [
                    {"tool": "t.add", "args": {"a": 2, "b": 3}},
                    {"tool": "t.multiply", "args": {"a": "$1", "b": 4}},
                ]
            )
        prompt = "\n".join(m.content for m in req.messages or ())
        return json.dumps({"action": "finish", "answer": "20" if "20" in prompt else "unknown"})

    async with mcp_tools(stdio_source(log)) as tools:
        outcome = await run(
            llm_compiler(QUESTION, tools.allowlist(["t.add", "t.multiply"])), engine=FunctionEngine(model)
        )
    assert isinstance(outcome, Ok), outcome
    assert outcome.value.answer == "20"
    assert log.calls() == [
        {"tool": "add", "args": {"a": 2, "b": 3}},
        {"tool": "multiply", "args": {"a": 5, "b": 4}},
    ]


def plan_text(command: list[str], *, tools: str = "[add, city_info]", step_tool: str = "t.add") -> str:
    return f"""
apiVersion: agentflow/v1
kind: Plan
name: mcp-math
tools:
  - mcp: t
    command: {json.dumps(command)}
    tools: {tools}
    timeout: 20
inputs:
  a: {{type: integer}}
outputs:
  total: {{value: "{{{{steps.total}}}}", type: integer}}
  population: {{value: "{{{{steps.info.population}}}}", type: integer}}
steps:
  - id: total
    tool: {step_tool}
    args: {{a: "{{{{inputs.a}}}}", b: 10}}
  - id: info
    tool: t.city_info
    args: {{city: Oslo}}
"""


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_plan_naming_an_allowed_mcp_server_calls_its_tools(log: ServerLog, tmp_path: Path) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(plan_text(stdio_command(log)), encoding="utf-8")
    loaded = load_plan(path, allow_mcp=[stdio_target(log)])
    [source] = loaded.mcp_sources
    assert source.name == "t" and source.tools == ("add", "city_info") and source.timeout == 20
    outcome = await run(loaded.workflow, {"a": 5}, engine="test:")
    assert isinstance(outcome, Ok), outcome
    assert outcome.value == {"total": 15, "population": 709000}
    assert log.tools_called() == ["add", "city_info"]
    connect = [e for e in outcome.trace if isinstance(e, Log) and e.name == "mcp.connect"]
    assert [e.data["tools"] for e in connect] == [["t.add", "t.city_info"]]
    assert sum(1 for e in outcome.trace if e.kind == "tool.call") == 2
    [pid] = log.pids()
    assert not process_alive(pid)  # the run closed the server it started


def test_plan_naming_an_unallowed_mcp_command_is_refused_before_anything_runs(
    log: ServerLog, tmp_path: Path
) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(plan_text(stdio_command(log)), encoding="utf-8")
    with pytest.raises(
        PlanError, match=r"plan\.yaml:6:\d+: .*MCP source 't' \(stdio: .*is not allowed.*--allow-mcp"
    ):
        load_plan(path)
    with pytest.raises(PlanError, match="is not allowed"):
        load_plan(path, allow_mcp=["python *other_server.py*"])
    assert not log.path.exists()  # the server was never started


def test_plan_step_calling_a_tool_outside_its_mcp_tools_list_is_refused_at_load(log: ServerLog) -> None:
    text = plan_text(stdio_command(log), step_tool="t.delete_all")
    with pytest.raises(PlanError, match=r"tool 't\.delete_all' is not among the tools this plan takes"):
        load_plan_text(text, allow_mcp=[stdio_target(log)])


async def test_plan_with_ill_typed_mcp_arguments_fails_at_run_start_with_the_step_location(
    log: ServerLog, tmp_path: Path
) -> None:
    path = tmp_path / "plan.yaml"
    path.write_text(
        plan_text(stdio_command(log), tools="[add, city_info, multiply]").replace("b: 10", "b: ten"),
        encoding="utf-8",
    )
    loaded = load_plan(path, allow_mcp=[stdio_target(log)])
    outcome = await run(loaded.workflow, {"a": 5}, engine="test:")
    assert not isinstance(outcome, Ok)
    assert isinstance(outcome.error, PlanError)
    assert outcome.error.line == 18 and "'ten' is not of type 'integer'" in str(outcome.error)
    assert log.calls() == []


async def test_plan_uses_the_users_own_http_source_by_name(http_server: HttpServer) -> None:
    text = """
apiVersion: agentflow/v1
kind: Plan
name: remote-sum
tools: [{mcp: remote, tools: [add]}]
steps:
  - id: s
    tool: remote.add
    args: {a: 1, b: 2}
"""
    with pytest.raises(PlanError, match="MCP source 'remote' is not defined by the user"):
        load_plan_text(text)
    before = len(http_server.log.calls())
    loaded = load_plan_text(text, allow_mcp=[MCPSource.http("remote", http_server.url)])
    outcome = await run(loaded.workflow, {}, engine="test:")
    assert isinstance(outcome, Ok), outcome
    assert outcome.value == {"result": 3}
    assert http_server.log.calls()[before:] == [{"tool": "add", "args": {"a": 1, "b": 2}}]


async def test_plan_writing_a_url_the_user_did_not_allow_is_refused(http_server: HttpServer) -> None:
    text = f"""
apiVersion: agentflow/v1
kind: Plan
name: remote-sum
tools: [{{mcp: remote, url: "{http_server.url}"}}]
steps:
  - id: s
    tool: remote.add
    args: {{a: 1, b: 2}}
"""
    with pytest.raises(PlanError, match=r"^5:\d+: MCP source .remote. \(http: .*\) is not allowed"):
        load_plan_text(text)
    loaded = load_plan_text(text, allow_mcp=["http://127.0.0.1:*/mcp"])
    outcome = await run(loaded.workflow, {}, engine="test:")
    assert isinstance(outcome, Ok) and outcome.value == {"result": 3}
