"""Memory stores of either backend for the memory tests: ``store_core(location)`` builds the synchronous
core for a SQLite path or a ``postgresql://...?schema=`` URL; ``fresh(location)`` names a new empty store
of the same backend. Cores built here are closed by the ``memory_db`` fixture after each test."""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

from agentflow.memory import StoreCore
from agentflow.memory._pg_store import PgStoreCore

OPENED: list[StoreCore | PgStoreCore] = []


def store_core(location: str) -> StoreCore | PgStoreCore:
    core: StoreCore | PgStoreCore = (
        PgStoreCore(location) if location.startswith("postgresql://") else StoreCore(location)
    )
    OPENED.append(core)
    return core


def fresh(location: str) -> str:
    if not location.startswith("postgresql://"):
        return str(Path(location).with_name(f"{uuid.uuid4().hex[:12]}.db"))
    parts = urlsplit(location)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "schema"]
    return parts._replace(query=urlencode([*query, ("schema", f"m_{uuid.uuid4().hex[:12]}")])).geturl()


def close_opened() -> None:
    while OPENED:
        OPENED.pop().close()
