"""``agentflow mcp ...``: serve plans as MCP tools, list an MCP server's tools; and the user's MCP flags.

    agentflow mcp serve PLAN... [--http [--port N]] [--engine SPEC]   offer plans as MCP tools
    agentflow mcp tools NAME=COMMAND|URL                              list an MCP server's tools

The flags ``--mcp NAME=COMMAND|URL``, ``--allow-mcp PATTERN`` and ``--mcp-secret SOURCE.TOOL.ARG=ENV`` are the
user's side of MCP tool sources; ``agentflow run``/``validate``/``graph`` take them too (:func:`add_mcp_flags`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import anyio

from agentflow._cli_options import mcp_allow_from_args
from agentflow.errors import AgentflowError, UserError

from ._source import MCPSource, parse_source

__all__ = ["register"]


def _fail(message: str, code: int = 2) -> int:
    from rich.console import Console
    from rich.markup import escape

    Console(stderr=True, highlight=False, soft_wrap=True).print(
        f"[bold red]error:[/] {escape(message)}", markup=True
    )
    return code


def _cmd_serve(args: argparse.Namespace) -> int:
    from agentflow.plans import load_plan

    from ._server import serve_http, serve_stdio

    try:
        allow = mcp_allow_from_args(args)
        plans = [load_plan(p, allow_tools=args.allow_tool, allow_mcp=allow) for p in args.plans]
        if args.http:

            def ready(url: str) -> None:
                names = ", ".join(p.name for p in plans)
                print(f"agentflow mcp: serving {names} at {url}", file=sys.stderr, flush=True)

            anyio.run(
                lambda: serve_http(
                    plans,
                    engine=args.engine,
                    name=args.name,
                    host=args.host,
                    port=args.port,
                    path=args.path,
                    ready=ready,
                ),
                backend="asyncio",
            )
        else:
            anyio.run(lambda: serve_stdio(plans, engine=args.engine, name=args.name))
    except UserError as exc:
        return _fail(str(exc))
    except AgentflowError as exc:
        return _fail(str(exc), 1)
    except KeyboardInterrupt:
        return 0
    return 0


def _cmd_tools(args: argparse.Namespace) -> int:
    from ._client import mcp_tools

    async def show(sources: Sequence[MCPSource]) -> None:
        async with mcp_tools(*sources) as registry:
            for tool in registry:
                print(
                    f"{tool.signature_hint()}  {tool.description.splitlines()[0] if tool.description else ''}"
                )

    try:
        sources = [parse_source(text) for text in args.sources]
        anyio.run(show, sources)
    except UserError as exc:
        return _fail(str(exc))
    except AgentflowError as exc:
        return _fail(str(exc), 1)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``agentflow mcp serve`` and ``agentflow mcp tools``."""
    mcp = sub.add_parser(
        "mcp",
        help="MCP: serve plans as MCP tools, list an MCP server's tools",
        description="Model Context Protocol: offer plans to MCP clients, or look at an MCP server's tools.",
    )
    mcp_sub = mcp.add_subparsers(dest="mcp_command", metavar="COMMAND")

    def usage(_args: argparse.Namespace) -> int:
        mcp.print_help()
        return 2

    mcp.set_defaults(func=usage)

    serve = mcp_sub.add_parser(
        "serve",
        help="offer plans as MCP tools (stdio, or streamable HTTP on 127.0.0.1 with --http)",
        description="Offer each plan as an MCP tool: its arguments are the plan's inputs, its result the "
        "plan's outputs. Speaks MCP over stdin/stdout unless --http is given.",
        epilog="examples:\n  agentflow mcp serve examples/topic_digest.yaml\n"
        "  agentflow mcp serve examples/*.yaml --http --port 8000 --engine test:",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument("plans", nargs="+", metavar="PLAN")
    serve.add_argument(
        "--engine", help="engine spec for every plan (default: each plan's, or llamacpp:default)"
    )
    serve.add_argument("--name", default="agentflow", help="the server's name as clients see it")
    serve.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    serve.add_argument("--host", default="127.0.0.1", help="loopback address for --http (default 127.0.0.1)")
    serve.add_argument(
        "--port", type=int, default=8000, help="port for --http (default 8000; 0: any free port)"
    )
    serve.add_argument("--path", default="/mcp", help="endpoint path for --http (default /mcp)")
    from agentflow.cli import _add_allow_tool

    _add_allow_tool(serve)  # --allow-tool, and the MCP flags of add_mcp_flags
    serve.set_defaults(func=_cmd_serve)

    tools = mcp_sub.add_parser(
        "tools",
        help="list the tools of MCP servers",
        description="Connect to MCP servers and list their tools as agentflow sees them.",
        epilog="example:\n  agentflow mcp tools 'weather=python weather_server.py'",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tools.add_argument("sources", nargs="+", metavar="NAME=COMMAND|URL")
    tools.set_defaults(func=_cmd_tools)
