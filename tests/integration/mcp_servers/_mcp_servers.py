"""A real MCP test server (``mcp_test_server.py``, written with the SDK) over stdio and streamable HTTP.

``ServerLog`` reads what the server recorded: its pid (first line) and every tool call with its arguments,
so a test sees exactly what crossed to the server. ``running_http_server`` starts the server on a free
127.0.0.1 port and waits until it accepts connections.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from agentflow.mcp import MCPSource

SERVER = Path(__file__).with_name("mcp_test_server.py")
"""The test server script."""

_STARTUP_LIMIT_S = 60.0


class ServerLog:
    """The JSON-lines log one test server writes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _lines(self) -> list[dict[str, object]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line]

    def pids(self) -> list[int]:
        """The pids of the server processes that logged here, in start order."""
        return [int(str(line["pid"])) for line in self._lines() if "pid" in line]

    def calls(self) -> list[dict[str, object]]:
        """Every call: ``{"tool": name, "args": {...}}``."""
        return [line for line in self._lines() if "tool" in line]

    def tools_called(self) -> list[str]:
        """The names of the tools called, in order."""
        return [str(c["tool"]) for c in self.calls()]


def stdio_command(log: ServerLog) -> list[str]:
    """The command that starts the test server over stdio."""
    return [sys.executable, str(SERVER), "--log", str(log.path), "stdio"]


def stdio_source(log: ServerLog, name: str = "t", **options: object) -> MCPSource:
    """The test server as a stdio source named ``name``."""
    return MCPSource.stdio(name, stdio_command(log), **options)  # type: ignore[arg-type]


def stdio_target(log: ServerLog) -> str:
    """The stdio command as an allowlist matches it."""
    return shlex.join(stdio_command(log))


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists (a reaped child does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class HttpServer:
    """The test server serving streamable HTTP on 127.0.0.1."""

    def __init__(self, log: ServerLog, port: int, process: subprocess.Popen[bytes]) -> None:
        self.log = log
        self.port = port
        self.process = process

    @property
    def url(self) -> str:
        """The MCP endpoint."""
        return f"http://127.0.0.1:{self.port}/mcp"


@contextlib.contextmanager
def running_http_server(log: ServerLog) -> Iterator[HttpServer]:
    """Start the test server over HTTP, wait until it listens, and stop it afterwards."""
    port = free_port()
    stderr = log.path.with_suffix(".stderr")
    with open(stderr, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, str(SERVER), "--log", str(log.path), "http", str(port)],
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    try:
        deadline = time.monotonic() + _STARTUP_LIMIT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"the MCP test server exited: {stderr.read_text(errors='replace')[-2000:]}"
                )
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the MCP test server did not listen within {_STARTUP_LIMIT_S} s")
            time.sleep(0.1)
        yield HttpServer(log, port, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
