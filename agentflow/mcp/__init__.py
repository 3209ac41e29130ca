"""MCP (Model Context Protocol), with the official ``mcp`` SDK: MCP servers' tools as agentflow tools, and
agentflow plans served as MCP tools.

- :class:`MCPSource`: one MCP server to take tools from (a stdio command or a streamable HTTP URL), with
  which of its tools to expose, their time limit and the secrets the user binds to their arguments.
- :func:`mcp_tools`: ``async with mcp_tools(*sources) as registry`` connects and yields a
  :class:`~agentflow.executors.ToolRegistry` whose tools are named ``<source>.<tool>``.
- :class:`MCPAllowlist`: which sources a plan's ``tools: [{mcp: ...}]`` entries may use (the user's own
  sources, and commands/URLs the user allowed); a plan never widens it.
- :class:`PlanServer`, :func:`serve_stdio`, :func:`serve_http`: offer plans as MCP tools (``agentflow mcp
  serve``); a tool's arguments are the plan's declared inputs, its result the plan's outputs.

The SDK is imported only when a connection is opened or a server is built, so loading plans stays light.
"""

from ._client import mcp_tools
from ._server import PlanServer, serve_http, serve_stdio
from ._source import MCPAllowlist, MCPSource, parse_source

__all__ = [
    "MCPAllowlist",
    "MCPSource",
    "PlanServer",
    "mcp_tools",
    "parse_source",
    "serve_http",
    "serve_stdio",
]
