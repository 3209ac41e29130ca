"""Tools from MCP servers: connect with the official ``mcp`` SDK and register each server tool as a ``Tool``.

``async with mcp_tools(source, ...) as registry:`` starts (stdio) or reaches (streamable HTTP) every source,
lists its tools and yields a :class:`~agentflow.executors.ToolRegistry` in which each server tool is an
ordinary tool named ``<source>.<tool>``: its JSON Schema is the server's ``inputSchema``, calls are validated
here before they are sent, each call has the source's time limit, and a failed call (``isError``, a protocol
error, a dead server) raises :class:`~agentflow.errors.ToolError`, which agents turn into an observation.
Agents and plans restrict them with allowlists like any other tool (``registry.allowlist([...])``).

The connections live exactly as long as the ``async with`` block, on the task that entered it: leaving it
(normally, by an error or by cancellation) closes every session and ends every stdio server process (the
SDK closes stdin, then terminates the process group), in any anyio backend.

What reaches a server is bounded: arguments are redacted (no value of a secret revealed in this process
crosses) except the arguments the user bound to secret handles in ``MCPSource.secrets``, which are revealed
as the call is sent; a stdio server gets only the basic environment plus the user's ``env``. What comes back
is bounded too: results are cut at ``max_result_chars`` and redacted, descriptions at 2,000 characters, and a
listing at 1,000 tools.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from typing import IO, TYPE_CHECKING

from pydantic import JsonValue

from agentflow.errors import ConfigError, ToolError
from agentflow.executors import Tool, ToolRegistry
from agentflow.executors._tool import TOOL_NAME
from agentflow.secrets import Secret, redact, redact_data

from ._source import MCPSource, require_sdk

if TYPE_CHECKING:
    import mcp_types
    from mcp import Client

__all__ = ["mcp_tools"]

MAX_TOOLS = 1000
"""Most tools taken from one server's listing."""

MAX_PAGES = 100
"""Most pages of one server's tool listing."""

MAX_DESCRIPTION_CHARS = 2000
"""A tool description (which goes into prompts) is cut to this length."""

_STDERR_TAIL_CHARS = 2000


def _client_info() -> mcp_types.Implementation:
    import mcp_types

    from agentflow import __version__

    return mcp_types.Implementation(name="agentflow", version=__version__)


def _reveal(value: str | Secret) -> str:
    return value.reveal() if isinstance(value, Secret) else value


class _Connection:
    """One open SDK client session and what is needed to report on it."""

    def __init__(self, source: MCPSource, client: Client, stderr: IO[str] | None) -> None:
        self.source = source
        self.client = client  # an entered mcp.Client; lives until the enclosing mcp_tools block ends
        self.stderr = stderr  # the stdio server's stderr (a temporary file), read for error messages
        self.open = True  # False once the block has ended

    def stderr_tail(self) -> str:
        if self.stderr is None:
            return ""
        try:
            self.stderr.flush()
            size = self.stderr.seek(0, os.SEEK_END)
            self.stderr.seek(max(0, size - _STDERR_TAIL_CHARS))
            tail = self.stderr.read().strip()
        except (OSError, ValueError):
            return ""
        return f"; the server's stderr ends with: {redact(tail)[-_STDERR_TAIL_CHARS:]}" if tail else ""


async def _open(stack: AsyncExitStack, source: MCPSource) -> _Connection:
    """Start or reach one source and complete the MCP handshake; the stack closes it."""
    from mcp import Client, StdioServerParameters
    from mcp.client._transport import Transport
    from mcp.client.streamable_http import streamable_http_client
    from mcp.shared._httpx_utils import create_mcp_http_client

    transport: Transport
    stderr: IO[str] | None = None
    if source.command is not None:
        stderr = stack.enter_context(tempfile.TemporaryFile("w+", encoding="utf-8", errors="replace"))  # noqa: SIM115
        params = StdioServerParameters(
            command=source.command[0],
            args=list(source.command[1:]),
            env={k: _reveal(v) for k, v in source.env.items()},
            cwd=source.cwd,
        )
        from mcp.client.stdio import stdio_client

        transport = stdio_client(params, errlog=stderr)
    else:
        assert source.url is not None
        import httpx2

        http = create_mcp_http_client(
            headers={k: _reveal(v) for k, v in source.headers.items()},
            timeout=httpx2.Timeout(source.connect_timeout, read=max(source.timeout, source.connect_timeout)),
        )
        await stack.enter_async_context(http)
        transport = streamable_http_client(source.url, http_client=http)
    client = Client(
        transport,
        read_timeout_seconds=source.connect_timeout,
        client_info=_client_info(),
        cache=None,
    )
    connection = _Connection(source, client, stderr)
    try:
        await stack.enter_async_context(client)
    except Exception as exc:
        if isinstance(_sole(exc), FileNotFoundError) and source.command is not None:
            raise ConfigError(
                f"cannot start MCP server {source.name!r}: command {source.command[0]!r} was not found; "
                "check the command and PATH"
            ) from None
        raise ToolError(
            source.name,
            f"cannot connect to MCP server ({source.transport}: {source.target}): {_describe(exc)}"
            + connection.stderr_tail(),
        ) from exc
    stack.callback(setattr, connection, "open", False)
    return connection


def _sole(exc: BaseException) -> BaseException | None:
    """The one exception inside (nested) exception groups, ``exc`` itself if it is none, else None."""
    while isinstance(exc, BaseExceptionGroup):
        if len(exc.exceptions) != 1:
            return None
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        return "; ".join(_describe(e) for e in exc.exceptions)
    text = str(exc) or type(exc).__name__
    return redact(f"{type(exc).__name__}: {text}" if str(exc) else text)


async def _list_tools(connection: _Connection) -> list[mcp_types.Tool]:
    source = connection.source
    found: list[mcp_types.Tool] = []
    cursor: str | None = None
    try:
        for _ in range(MAX_PAGES):
            page = await connection.client.list_tools(cursor=cursor)
            found.extend(page.tools)
            cursor = page.next_cursor
            if cursor is None or len(found) >= MAX_TOOLS:
                break
    except Exception as exc:
        raise ToolError(
            source.name,
            f"MCP server ({source.transport}: {source.target}) failed to list its tools: {_describe(exc)}"
            + connection.stderr_tail(),
        ) from exc
    return found[:MAX_TOOLS]


def _tools_of(connection: _Connection, listed: list[mcp_types.Tool]) -> list[Tool]:
    source = connection.source
    by_name = {t.name: t for t in listed}
    wanted = list(source.tools) if source.tools is not None else list(by_name)
    missing = [n for n in wanted if n not in by_name]
    if missing:
        raise ConfigError(
            f"MCP server {source.name!r} has no tool(s) {missing}; it has: {', '.join(sorted(by_name)) or 'none'}"
        )
    unknown_bound = [n for n in source.secrets if n not in wanted]
    if unknown_bound:
        raise ConfigError(
            f"MCP source {source.name!r}: secrets are bound for tool(s) {unknown_bound}, which are not among its "
            f"exposed tools {wanted}"
        )
    tools = []
    for name in wanted:
        full = f"{source.name}.{name}"
        if TOOL_NAME.fullmatch(full) is None:
            raise ConfigError(
                f"MCP server {source.name!r} has a tool named {name!r}, which is not a usable tool name here "
                "(identifiers joined by dots); leave it out with tools=[...] (or 'tools:' in a plan)"
            )
        tools.append(_make_tool(connection, by_name[name], full))
    return tools


def _make_tool(connection: _Connection, listed: mcp_types.Tool, full: str) -> Tool:
    source = connection.source
    remote = str(listed.name)
    schema: dict[str, JsonValue] = json.loads(json.dumps(listed.input_schema))
    bound = dict(source.secrets.get(remote, {}))
    if bound:
        props = schema.get("properties")
        declared = set(props) if isinstance(props, dict) else set()
        undeclared = sorted(set(bound) - declared)
        if undeclared:
            raise ConfigError(
                f"MCP source {source.name!r}: tool {remote!r} declares no argument(s) {undeclared} to bind a "
                f"secret to; its arguments are {sorted(declared) or 'none'}"
            )
        assert isinstance(props, dict)
        schema["properties"] = {k: v for k, v in props.items() if k not in bound}
        required = schema.get("required")
        if isinstance(required, list):
            schema["required"] = [r for r in required if r not in bound]
    description = str(listed.description or listed.title or "")[:MAX_DESCRIPTION_CHARS]
    output_schema = listed.output_schema if isinstance(listed.output_schema, dict) else None

    async def call(**arguments: object) -> object:
        if not connection.open:
            raise ToolError(
                full,
                f"the connection to MCP server {source.name!r} is closed; call its tools inside the "
                "`async with mcp_tools(...)` block (or the plan run) that opened it",
            )
        sent = redact_data(arguments)
        assert isinstance(sent, dict)
        sent.update({k: v.reveal() for k, v in bound.items()})
        try:
            result = await connection.client.call_tool(remote, sent, read_timeout_seconds=source.timeout)
        except Exception as exc:
            raise ToolError(
                full,
                f"MCP server {source.name!r} ({source.transport}: {source.target}) failed the call: "
                f"{_describe(exc)}" + connection.stderr_tail(),
            ) from exc
        text = _text_of(result.content)
        if result.is_error:
            raise ToolError(full, f"the MCP server answered with an error: {_cut(redact(text), 2000)}")
        return _bounded(_value_of(result, text, output_schema), source.max_result_chars)

    try:
        return Tool.from_spec(
            {"name": full, "description": description, "parameters": schema},
            fn=call,
            nullable_optional=False,
            timeout=source.timeout,
        )
    except ConfigError as exc:
        raise ConfigError(f"MCP server {source.name!r}, tool {remote!r}: {exc.message}") from None


def _text_of(content: Iterable[mcp_types.ContentBlock]) -> str:
    """The text of a tool result's content blocks; binary blocks become a short note."""
    import mcp_types

    parts: list[str] = []
    for block in content:
        if isinstance(block, mcp_types.TextContent):
            parts.append(block.text)
        elif isinstance(block, mcp_types.ImageContent | mcp_types.AudioContent):
            parts.append(f"[{block.type} {block.mime_type}, {len(block.data) * 3 // 4} bytes]")
        elif isinstance(block, mcp_types.ResourceLink):
            parts.append(f"[resource {block.name}: {block.uri}]")
        elif isinstance(block.resource, mcp_types.TextResourceContents):
            parts.append(block.resource.text)
        else:
            parts.append(f"[resource {block.resource.uri}, binary]")
    return "\n".join(parts)


def _value_of(
    result: mcp_types.CallToolResult, text: str, output_schema: Mapping[str, object] | None
) -> object:
    """The tool's value: its structured content when it has some, else its text.

    Servers built with the SDK's ``MCPServer`` wrap a non-object return value as ``{"result": value}`` and
    declare an output schema with that one required property; such a value is unwrapped.
    """
    structured = result.structured_content
    if structured is None:
        return redact(text)
    if (
        isinstance(structured, dict)
        and set(structured) == {"result"}
        and output_schema is not None
        and _keys(output_schema.get("properties")) == {"result"}
        and output_schema.get("required") == ["result"]
    ):
        structured = structured["result"]
    return redact_data(structured)


def _keys(value: object) -> set[str]:
    return {str(k) for k in value} if isinstance(value, dict) else set()


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + f"... [cut: {len(text) - limit} more characters]"


def _bounded(value: object, limit: int) -> object:
    if isinstance(value, str):
        return _cut(value, limit)
    encoded = json.dumps(value, ensure_ascii=False, default=str)
    return value if len(encoded) <= limit else _cut(encoded, limit)


@asynccontextmanager
async def mcp_tools(*sources: MCPSource, base: Iterable[Tool] = ()) -> AsyncIterator[ToolRegistry]:
    """Connect to MCP servers and yield a registry of their tools (plus ``base``), valid inside the block.

    Example:
        >>> from agentflow.mcp import MCPSource, mcp_tools
        >>> weather = MCPSource.stdio("weather", ["python", "weather_server.py"])
        >>> async def main() -> None:  # doctest: +SKIP
        ...     async with mcp_tools(weather) as tools:
        ...         print(tools.names())  # ['weather.forecast', ...]
        ...         await run(react("Weather in Oslo?", tools.allowlist(["weather.forecast"])), engine=...)

    Args:
        sources: The servers; each one's tools are registered as ``<source name>.<tool>``.
        base: Other tools to put in the same registry.

    Raises:
        ConfigError: Two sources share a name, a source lists or binds a tool the server lacks, a server tool
            name is unusable here, or a stdio command does not exist.
        ToolError: A server cannot be started or reached, or fails the handshake or the listing.
    """
    require_sdk()
    names = [s.name for s in sources]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"MCP sources {dupes} are given more than once; give each source its own name")
    registry = ToolRegistry(base)
    try:
        async with AsyncExitStack() as stack:
            for source in sources:
                connection = await _open(stack, source)
                for tool in _tools_of(connection, await _list_tools(connection)):
                    if tool.name in registry:
                        raise ConfigError(
                            f"MCP tool {tool.name!r} clashes with a tool of the same name; rename the source"
                        )
                    registry.register(tool)
            yield registry
    except BaseExceptionGroup as group:
        # The SDK's task groups wrap whatever ends the block (an error in it, a cancellation, a flow's
        # short-circuit); hand the caller that one exception as it was raised, not its wrapping.
        sole = _sole(group)
        if sole is None:
            raise
        raise sole from sole.__cause__
