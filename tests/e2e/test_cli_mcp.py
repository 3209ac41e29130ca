"""MCP from the command line, as a user runs it (subprocesses).

``agentflow mcp serve`` is answered by the ``mcp`` SDK's own client over stdio and over streamable HTTP on
127.0.0.1 (with the deterministic ``test:`` engine, and once with the real embedded engine); ``agentflow run``
runs a plan whose tools come from a real MCP server only when the user allows that server; ``agentflow mcp
tools`` lists a server's tools.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from mcp_types import CallToolResult, TextContent

ROOT = Path(__file__).resolve().parents[2]
TEST_SERVER = ROOT / "tests" / "integration" / "mcp_servers" / "mcp_test_server.py"
pytestmark = [pytest.mark.e2e, pytest.mark.anyio]

SERVED = """\
apiVersion: agentflow/v1
kind: Plan
name: count-words
description: Count the words of a text.
tools: [agentflow.plans.builtin_tools:word_count]
inputs:
  text: {type: string}
outputs:
  words: {value: "{{steps.count}}", type: integer}
steps:
  - id: count
    tool: word_count
    args: {text: "{{inputs.text}}"}
"""

REMARK = """\
apiVersion: agentflow/v1
kind: Plan
name: remark
engine: {spec: "llamacpp:default", max_tokens: 12}
inputs:
  topic: {type: string}
outputs:
  remark: {value: "{{steps.say}}", type: string}
steps:
  - id: say
    prompt: "Say one short sentence about {{inputs.topic}}."
"""


def agentflow(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``python -m agentflow ARGS`` and return the finished process."""
    return subprocess.run(
        [sys.executable, "-m", "agentflow", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env={**os.environ, "NO_COLOR": "1"},
    )


def text_of(result: CallToolResult) -> str:
    return "".join(block.text for block in result.content if isinstance(block, TextContent))


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_mcp_serve_over_stdio_is_answered_by_the_sdk_client(tmp_path: Path) -> None:
    plan = write(tmp_path, "count.yaml", SERVED)
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "agentflow", "mcp", "serve", str(plan), "--engine", "test:"],
        cwd=str(tmp_path),
    )
    async with Client(params) as client:
        assert client.server_info is not None and client.server_info.name == "agentflow"
        [tool] = (await client.list_tools()).tools
        assert tool.name == "count-words" and tool.input_schema["required"] == ["text"]
        result = await client.call_tool("count-words", {"text": "a b c d"})
        bad = await client.call_tool("count-words", {})
    assert not result.is_error and result.structured_content == {"words": 4}
    assert bad.is_error and "needs input 'text'" in text_of(bad)


def start_http_server(tmp_path: Path, *plans: Path) -> tuple[subprocess.Popen[str], str]:
    serve = ["mcp", "serve", *map(str, plans), "--http", "--port", "0", "--engine", "test:"]
    process = subprocess.Popen(
        [sys.executable, "-m", "agentflow", *serve],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 120
    line = ""
    while time.monotonic() < deadline:
        line = process.stderr.readline()
        if " at http://" in line or not line:
            break
    if " at http://" not in line:
        process.kill()
        raise AssertionError(f"agentflow mcp serve --http did not start: {line}{process.stderr.read()}")
    return process, line.rsplit(" at ", 1)[1].strip()


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_mcp_serve_over_http_is_answered_by_the_sdk_client_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    plan = write(tmp_path, "count.yaml", SERVED)
    process, url = start_http_server(tmp_path, plan)
    try:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/mcp")
        async with Client(url) as client:
            names = [t.name for t in (await client.list_tools()).tools]
            result = await client.call_tool("count-words", {"text": "one two"})
        assert names == ["count-words"]
        assert result.structured_content == {"words": 2}
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_mcp_serve_refuses_a_non_loopback_host(tmp_path: Path) -> None:
    plan = write(tmp_path, "count.yaml", SERVED)
    done = agentflow(
        "mcp", "serve", str(plan), "--http", "--host", "0.0.0.0", "--engine", "test:", cwd=tmp_path
    )
    assert done.returncode == 2
    assert "plans are served on loopback addresses only" in done.stderr


async def test_mcp_serve_runs_plans_on_the_real_embedded_engine(tmp_path: Path) -> None:
    plan = write(tmp_path, "remark.yaml", REMARK)
    params = StdioServerParameters(
        command=sys.executable, args=["-m", "agentflow", "mcp", "serve", str(plan)], cwd=str(tmp_path)
    )
    async with Client(params, read_timeout_seconds=300) as client:
        result = await client.call_tool("remark", {"topic": "tea"})
    assert not result.is_error, text_of(result)
    assert isinstance(result.structured_content, dict)
    remark = result.structured_content["remark"]
    assert isinstance(remark, str) and remark.strip()


def mcp_plan(tmp_path: Path) -> tuple[Path, list[str]]:
    command = [sys.executable, str(TEST_SERVER), "--log", str(tmp_path / "calls.jsonl"), "stdio"]
    text = f"""\
apiVersion: agentflow/v1
kind: Plan
name: mcp-sum
tools:
  - mcp: calc
    command: {json.dumps(command)}
    tools: [add]
inputs:
  a: {{type: integer}}
outputs:
  total: {{value: "{{{{steps.total}}}}", type: integer}}
steps:
  - id: total
    tool: calc.add
    args: {{a: "{{{{inputs.a}}}}", b: 2}}
"""
    return write(tmp_path, "mcp-sum.yaml", text), command


def test_run_uses_an_mcp_server_only_when_the_user_allows_it(tmp_path: Path) -> None:
    plan, command = mcp_plan(tmp_path)
    refused = agentflow("run", str(plan), "--input", "a=40", "--engine", "test:", "--no-save", cwd=tmp_path)
    assert refused.returncode == 2
    assert "mcp-sum.yaml:5:5: MCP source 'calc'" in refused.stderr and "--allow-mcp" in refused.stderr
    assert not (tmp_path / "calls.jsonl").exists()

    allowed = agentflow(
        "run", str(plan), "--input", "a=40", "--engine", "test:", "--no-save", "--json",
        "--allow-mcp", shlex.join(command),
        cwd=tmp_path,
    )  # fmt: skip
    assert allowed.returncode == 0, allowed.stderr
    payload = json.loads(allowed.stdout)
    assert payload["outputs"] == {"total": 42} and payload["usage"]["tool_calls"] == 1
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert [c for c in calls if "tool" in c] == [{"tool": "add", "args": {"a": 40, "b": 2}}]

    validated = agentflow("validate", str(plan), "--allow-mcp", shlex.join(command), cwd=tmp_path)
    assert validated.returncode == 0 and "calc.* (MCP stdio)" in validated.stdout


def test_run_with_the_users_own_mcp_source_and_a_bound_secret(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    plan = write(
        tmp_path,
        "forecast.yaml",
        """\
apiVersion: agentflow/v1
kind: Plan
name: forecast
tools: [{mcp: weather, tools: [forecast]}]
steps:
  - id: fc
    tool: weather.forecast
    args: {city: Oslo}
""",
    )
    server = shlex.join([sys.executable, str(TEST_SERVER), "--log", str(log), "stdio"])
    user_flags = ["--mcp", f"weather={server}", "--mcp-secret", "weather.forecast.api_key=E2E_WEATHER_KEY"]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "agentflow",
            "run",
            str(plan),
            "--engine",
            "test:",
            "--no-save",
            "--json",
            *user_flags,
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1", "E2E_WEATHER_KEY": "sk-e2e-31337"},
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["outputs"] == {"result": "Sunny in Oslo, 21 C"}
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert [c for c in calls if "tool" in c] == [
        {"tool": "forecast", "args": {"city": "Oslo", "api_key": "sk-e2e-31337"}}
    ]


def test_mcp_tools_lists_a_servers_tools(tmp_path: Path) -> None:
    server = shlex.join([sys.executable, str(TEST_SERVER), "--log", str(tmp_path / "calls.jsonl"), "stdio"])
    done = agentflow("mcp", "tools", f"calc={server}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "calc.add(a: integer, b: integer)  Add two integers." in done.stdout.splitlines()
    missing = agentflow("mcp", "tools", "calc=no-such-mcp-binary", cwd=tmp_path)
    assert missing.returncode == 2 and "command 'no-such-mcp-binary' was not found" in missing.stderr
