"""A real MCP server for the tests, written with the ``mcp`` SDK's ``MCPServer``.

    python mcp_test_server.py --log CALLS.jsonl stdio
    python mcp_test_server.py --log CALLS.jsonl http PORT

Every tool call is appended to the log (one JSON object per line: tool and arguments), and the first line
holds the server's pid, so tests can see exactly what crossed to the server and whether the process ended.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import anyio
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

app = MCPServer("agentflow-test-tools", log_level="WARNING")
_log_path = ""


def _log(tool: str, **arguments: object) -> None:
    with open(_log_path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"tool": tool, "args": arguments}) + "\n")


@app.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    _log("add", a=a, b=b)
    return a + b


@app.tool()
def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    _log("multiply", a=a, b=b)
    return a * b


@app.tool()
def forecast(city: str, api_key: str) -> str:
    """The weather forecast for a city (needs an API key)."""
    _log("forecast", city=city, api_key=api_key)
    if not api_key.startswith("sk-"):
        raise ToolError("invalid API key")
    return f"Sunny in {city}, 21 C"


@app.tool()
def echo(text: str) -> str:
    """Repeat a text."""
    _log("echo", text=text)
    return text


@app.tool()
def read_env(name: str) -> str:
    """The value of an environment variable of the server process ('' when unset)."""
    _log("read_env", name=name)
    return os.environ.get(name, "")


@app.tool()
def city_info(city: str) -> dict[str, object]:
    """Facts about a city as an object."""
    _log("city_info", city=city)
    return {"city": city, "population": 709000 if city == "Oslo" else 1000}


@app.tool()
def delete_all() -> str:
    """Delete everything (dangerous: never allowed to agents)."""
    _log("delete_all")
    return "deleted everything"


@app.tool()
def fail(reason: str) -> str:
    """Always fails with the given reason."""
    _log("fail", reason=reason)
    raise ToolError(f"failed on purpose: {reason}")


@app.tool()
async def slow(seconds: float) -> str:
    """Sleep, then answer."""
    _log("slow", seconds=seconds)
    await anyio.sleep(seconds)
    return "done"


def main() -> None:
    global _log_path
    parser = argparse.ArgumentParser()
    parser.add_argument("--log", required=True)
    parser.add_argument("transport", choices=["stdio", "http"])
    parser.add_argument("port", nargs="?", type=int, default=0)
    args = parser.parse_args()
    _log_path = args.log
    with open(_log_path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"pid": os.getpid(), "started": time.time()}) + "\n")
    if args.transport == "stdio":
        app.run()
    else:
        anyio.run(lambda: app.run_streamable_http_async(host="127.0.0.1", port=args.port))


if __name__ == "__main__":
    main()
