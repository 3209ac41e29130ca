"""Fixtures for the MCP integration tests: a call log per test and one HTTP test server per module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _mcp_servers import HttpServer, ServerLog, running_http_server


@pytest.fixture
def log(tmp_path: Path) -> ServerLog:
    """A fresh call log for a stdio test server started by the test."""
    return ServerLog(tmp_path / "calls.jsonl")


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpServer]:
    """The test server over streamable HTTP on 127.0.0.1, shared by a module's tests."""
    log = ServerLog(tmp_path_factory.mktemp("mcp-http") / "calls.jsonl")
    with running_http_server(log) as server:
        yield server
