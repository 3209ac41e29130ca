"""Shared test configuration.

- ``anyio_backend``: async tests run on asyncio (tests that must also run on trio parametrize it).
- Unit tests may not open network connections except to 127.0.0.1 (a socket guard fails them).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


_real_connect = socket.socket.connect


def _guarded_connect(self: socket.socket, address: object) -> None:
    host = address[0] if isinstance(address, tuple) else address
    if (
        isinstance(host, str)
        and host not in ("127.0.0.1", "localhost", "::1")
        and self.family != socket.AF_UNIX
    ):
        raise RuntimeError(f"tests may not reach the network: connect to {address!r} refused")
    _real_connect(self, address)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(socket.socket, "connect", _guarded_connect)
    yield
