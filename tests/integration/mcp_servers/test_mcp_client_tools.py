"""MCP servers' tools as registry tools, against a real SDK server over stdio and streamable HTTP on 127.0.0.1.

Covers schemas, calls, errors as ``ToolError``, time limits, bounded results, secrets (only bound arguments
carry a secret's value; the server's environment and every other argument never do), and the lifetime of
connections and server processes under asyncio and trio (cancellation included).
"""

from __future__ import annotations

import asyncio
import sys

import anyio
import pytest
from _mcp_servers import HttpServer, ServerLog, process_alive, stdio_source

from agentflow.errors import ConfigError, StepTimeout, ToolError
from agentflow.mcp import MCPSource, mcp_tools
from agentflow.secrets import REDACTED, secret

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

BOTH_BACKENDS = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
SECRET_VALUE = "sk-mcp-7d41c0ffee99"


def source_for(transport: str, log: ServerLog, http_server: HttpServer, **options: object) -> MCPSource:
    if transport == "stdio":
        return stdio_source(log, **options)
    return MCPSource.http("t", http_server.url, **options)  # type: ignore[arg-type]


def calls_of(transport: str, log: ServerLog, http_server: HttpServer) -> list[dict[str, object]]:
    return (log if transport == "stdio" else http_server.log).calls()


@BOTH_BACKENDS
@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_server_tools_become_registry_tools_with_schemas_and_calls(
    transport: str, log: ServerLog, http_server: HttpServer
) -> None:
    async with mcp_tools(source_for(transport, log, http_server)) as tools:
        assert {"t.add", "t.city_info", "t.delete_all", "t.echo", "t.forecast"} <= set(tools.names())
        add = tools.get("t.add")
        assert add.description == "Add two integers."
        assert add.required == frozenset({"a", "b"})
        assert add.parameters["properties"]["a"]["type"] == "integer"  # type: ignore[index,call-overload]
        assert await add.invoke({"a": 2, "b": 40}) == 42  # the SDK's {"result": ...} wrapping is undone
        assert await tools.get("t.city_info").invoke({"city": "Oslo"}) == {
            "city": "Oslo",
            "population": 709000,
        }
    assert {"tool": "add", "args": {"a": 2, "b": 40}} in calls_of(transport, log, http_server)


@pytest.mark.parametrize("transport", ["stdio", "http"])
async def test_tool_failure_and_bad_arguments_raise_tool_errors_without_bad_calls_crossing(
    transport: str, log: ServerLog, http_server: HttpServer
) -> None:
    async with mcp_tools(source_for(transport, log, http_server)) as tools:
        with pytest.raises(ToolError, match="failed on purpose: disk full"):
            await tools.get("t.fail").invoke({"reason": "disk full"})
        before = len(calls_of(transport, log, http_server))
        with pytest.raises(ToolError, match=r"'x' is not of type 'integer'.*call it as t\.add\(a: integer"):
            await tools.get("t.add").invoke({"a": "x", "b": 1})
        with pytest.raises(ToolError, match=r"Additional properties are not allowed \(.c. was unexpected\)"):
            await tools.get("t.add").invoke({"a": 1, "b": 2, "c": 3})
        assert len(calls_of(transport, log, http_server)) == before  # refused here, never sent


async def test_a_call_past_the_source_timeout_is_a_step_timeout(log: ServerLog) -> None:
    async with mcp_tools(stdio_source(log, timeout=0.5)) as tools:
        with pytest.raises(StepTimeout, match=r"t\.slow"):
            await tools.get("t.slow").invoke({"seconds": 30})
        assert await tools.get("t.add").invoke({"a": 1, "b": 1}) == 2  # the session survives the timeout


async def test_long_results_are_cut_to_the_source_limit(log: ServerLog) -> None:
    async with mcp_tools(stdio_source(log, max_result_chars=50)) as tools:
        result = await tools.get("t.echo").invoke({"text": "x" * 500})
    assert isinstance(result, str)
    assert result.startswith("x" * 50) and "[cut: 450 more characters]" in result


async def test_only_listed_tools_are_exposed_and_unknown_names_are_config_errors(log: ServerLog) -> None:
    async with mcp_tools(stdio_source(log, tools=["add"])) as tools:
        assert tools.names() == ["t.add"]
    with pytest.raises(ConfigError, match=r"has no tool\(s\) \['nope'\]; it has: add, city_info"):
        async with mcp_tools(stdio_source(log, tools=["add", "nope"])):
            pass


async def test_bound_secret_reaches_only_its_declared_argument_and_is_hidden_from_the_schema(
    log: ServerLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORECAST_KEY", SECRET_VALUE)
    source = stdio_source(log, secrets={"forecast": {"api_key": secret("FORECAST_KEY")}})
    async with mcp_tools(source) as tools:
        forecast = tools.get("t.forecast")
        assert "api_key" not in str(forecast.parameters) and forecast.required == frozenset({"city"})
        assert await forecast.invoke({"city": "Oslo"}) == "Sunny in Oslo, 21 C"
        # A revealed value in any other argument is blanked before it crosses, and in what comes back.
        echoed = await tools.get("t.echo").invoke({"text": f"the key is {SECRET_VALUE}"})
        # The server process never sees this process's environment (only HOME, PATH and the like).
        env_value = await tools.get("t.read_env").invoke({"name": "FORECAST_KEY"})
    assert echoed == f"the key is {REDACTED}"
    assert env_value == ""
    sent = log.calls()
    assert sent[0] == {"tool": "forecast", "args": {"city": "Oslo", "api_key": SECRET_VALUE}}
    assert SECRET_VALUE not in str(sent[1:])


async def test_binding_a_secret_to_an_undeclared_argument_is_refused(log: ServerLog) -> None:
    source = stdio_source(log, secrets={"echo": {"api_key": secret("FORECAST_KEY")}})
    with pytest.raises(ConfigError, match=r"tool 'echo' declares no argument\(s\) \['api_key'\]"):
        async with mcp_tools(source):
            pass
    assert log.calls() == []


async def test_user_environment_for_a_stdio_server_is_passed_with_secret_handles_revealed(
    log: ServerLog, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VENDOR_TOKEN", SECRET_VALUE)
    source = stdio_source(log, env={"SERVICE_TOKEN": secret("VENDOR_TOKEN"), "MODE": "test"})
    async with mcp_tools(source) as tools:
        read_env = tools.get("t.read_env")
        assert await read_env.invoke({"name": "MODE"}) == "test"
        # The server got the token; what comes back from it is redacted like any tool output.
        assert await read_env.invoke({"name": "SERVICE_TOKEN"}) == REDACTED


@BOTH_BACKENDS
async def test_leaving_the_block_ends_the_server_process_and_closes_its_tools(log: ServerLog) -> None:
    tasks_before = len(asyncio.all_tasks()) if _on_asyncio() else None
    async with mcp_tools(stdio_source(log)) as tools:
        add = tools.get("t.add")
        assert await add.invoke({"a": 1, "b": 2}) == 3
        [pid] = log.pids()
        assert process_alive(pid)
    assert not process_alive(pid)
    with pytest.raises(ToolError, match="connection to MCP server 't' is closed"):
        await add.invoke({"a": 1, "b": 2})
    if tasks_before is not None:
        assert len(asyncio.all_tasks()) == tasks_before


@BOTH_BACKENDS
async def test_cancelling_a_call_in_flight_ends_the_server_process_and_leaks_no_task(log: ServerLog) -> None:
    tasks_before = len(asyncio.all_tasks()) if _on_asyncio() else None
    started = anyio.Event()
    with anyio.move_on_after(30) as scope:
        async with mcp_tools(stdio_source(log)) as tools:
            slow = tools.get("t.slow")
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    started.set()
                    await slow.invoke({"seconds": 60})

                tg.start_soon(call)
                await started.wait()
                while "slow" not in log.tools_called():
                    await anyio.sleep(0.05)
                tg.cancel_scope.cancel()
            [pid] = log.pids()
            assert process_alive(pid)
    assert not scope.cancelled_caught
    assert not process_alive(pid)
    if tasks_before is not None:
        assert len(asyncio.all_tasks()) == tasks_before


@BOTH_BACKENDS
async def test_an_error_inside_the_block_still_ends_the_server_process(log: ServerLog) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with mcp_tools(stdio_source(log)):
            raise RuntimeError("boom")
    [pid] = log.pids()
    assert not process_alive(pid)


async def test_a_missing_command_is_a_config_error_naming_it(log: ServerLog) -> None:
    with pytest.raises(ConfigError, match="command 'no-such-mcp-server-binary' was not found"):
        async with mcp_tools(MCPSource.stdio("gone", ["no-such-mcp-server-binary"])):
            pass


async def test_a_server_that_dies_at_start_is_a_tool_error_with_its_stderr() -> None:
    crash = [sys.executable, "-c", "import sys; sys.stderr.write('config file missing\\n'); sys.exit(3)"]
    with pytest.raises(ToolError, match=r"cannot connect to MCP server.*config file missing"):
        async with mcp_tools(MCPSource.stdio("crash", crash, connect_timeout=20)):
            pass


async def test_an_http_url_where_nothing_listens_is_a_tool_error() -> None:
    from _mcp_servers import free_port

    url = f"http://127.0.0.1:{free_port()}/mcp"
    with pytest.raises(ToolError, match=f"cannot connect to MCP server \\(http: {url}\\)"):
        async with mcp_tools(MCPSource.http("down", url, connect_timeout=10)):
            pass


async def test_two_sources_are_told_apart_by_their_names(log: ServerLog, http_server: HttpServer) -> None:
    async with mcp_tools(stdio_source(log, name="local"), MCPSource.http("remote", http_server.url)) as tools:
        assert await tools.get("local.add").invoke({"a": 1, "b": 2}) == 3
        assert await tools.get("remote.multiply").invoke({"a": 3, "b": 4}) == 12
    with pytest.raises(ConfigError, match="given more than once"):
        async with mcp_tools(stdio_source(log), MCPSource.http("t", http_server.url)):
            pass


def _on_asyncio() -> bool:
    import sniffio

    return sniffio.current_async_library() == "asyncio"
