"""Shared test configuration.

- ``anyio_backend``: async tests run on asyncio (tests that must also run on trio parametrize it).
- Unit tests may not open network connections except to 127.0.0.1 (a socket guard fails them).
- ``$AGENTFLOW_JOURNAL`` points into each test's temporary directory (runs are journaled by default).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(autouse=True)
def _journal_in_tmp_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """``agentflow run`` journals every run (default ``.agentflow/journal.db`` in the working directory):
    tests that do not name a journal write theirs into their own temporary directory, never the checkout."""
    monkeypatch.setenv("AGENTFLOW_JOURNAL", str(tmp_path / ".agentflow" / "journal.db"))


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server on 127.0.0.1: ``$AGENTFLOW_TEST_POSTGRES_URL`` (``.ci/run`` starts one),
    else one started here for the session. Skips (with the reason) only when none can be started, and
    never under CI, where it fails instead."""
    import os
    import shutil
    import tempfile
    from pathlib import Path

    from _postgres_server import URL_ENV, ServerUnavailable, start, stop

    given = os.environ.get(URL_ENV)
    if given:
        yield given
        return
    base = Path(tempfile.mkdtemp(prefix="agentflow-pg-"))
    try:
        url = start(base)
    except ServerUnavailable as exc:
        shutil.rmtree(base, ignore_errors=True)
        if os.environ.get("CI"):
            pytest.fail(f"CI must test the PostgreSQL backends, but no server could be started: {exc}")
        pytest.skip(f"no PostgreSQL server for the PostgreSQL backends: {exc}")
    try:
        yield url
    finally:
        stop(base)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgres"])
def journal_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """Where a test's journal lives, once per backend: a new SQLite file, or a new schema in the test
    PostgreSQL server (``postgresql://...?schema=t_<random>``)."""
    import uuid

    if request.param == "sqlite":
        return str(tmp_path_factory.mktemp("journal") / "journal.db")
    url = request.getfixturevalue("postgres_url")
    return f"{url}?schema=t_{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["sqlite", "postgres"])
def memory_db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Where a test's memory store lives, once per backend: a new SQLite file, or a new schema in the
    test PostgreSQL server. Stores built with ``_stores.store_core`` are closed afterwards."""
    import uuid

    from _stores import close_opened

    if request.param == "sqlite":
        location = str(tmp_path_factory.mktemp("memory") / "m.db")
    else:
        location = f"{request.getfixturevalue('postgres_url')}?schema=m_{uuid.uuid4().hex[:12]}"
    try:
        yield location
    finally:
        close_opened()
