"""What only the PostgreSQL backends have: an unreachable server is a clear error with nothing lost,
passwords never shown (and taken from secret handles), schemas keeping stores apart, stats on the server.
The shared behaviour is tested on both backends by the journal and memory suites (``journal_db`` and
``memory_db`` fixtures)."""

from __future__ import annotations

import socket
import uuid
from datetime import UTC, datetime

import pytest

from agentflow.dsl import step
from agentflow.errors import ConfigError, JournalError, MemoryStoreError
from agentflow.memory import MemoryStore
from agentflow.runs import list_runs
from agentflow.runtime import PostgresJournal, run

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

CALLS: list[int] = []


@step(idempotent=False)
async def charge(n: int) -> int:
    CALLS.append(n)
    return n


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_journal_server_is_a_clear_error_and_no_step_runs() -> None:
    url = f"postgresql://agentflow:hunter22@127.0.0.1:{_closed_port()}/postgres"
    CALLS.clear()
    with pytest.raises(JournalError) as caught:
        await run(charge, {"n": 1}, run_id="r1", journal=url)
    message = str(caught.value)
    assert "cannot reach the PostgreSQL journal at 'postgresql://agentflow@127.0.0.1:" in message
    assert "Connection refused" in message and "Nothing was written" in message
    assert "hunter22" not in message
    assert CALLS == []


async def test_unreachable_memory_server_is_a_clear_memory_store_error() -> None:
    async with MemoryStore(f"postgresql://agentflow@127.0.0.1:{_closed_port()}/postgres") as store:
        with pytest.raises(MemoryStoreError, match="cannot reach the PostgreSQL memory store"):
            await store.temporal("chat").insert("hello", session="s1")


async def test_password_written_in_the_url_is_never_shown(postgres_url: str) -> None:
    with_password = (
        postgres_url.replace("agentflow@", "agentflow:hunter22@") + f"?schema=p_{uuid.uuid4().hex[:8]}"
    )
    journal = PostgresJournal(with_password)
    assert "hunter22" not in journal.location and "hunter22" not in repr(journal)
    await journal.aclose()


async def test_password_comes_from_a_secret_handle(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"{postgres_url}?schema=s_{uuid.uuid4().hex[:8]}&password_secret=AF_TEST_PG_PASSWORD"
    with pytest.raises(ConfigError, match="secret 'AF_TEST_PG_PASSWORD' is not set"):
        await list_runs(url)
    monkeypatch.setenv("AF_TEST_PG_PASSWORD", "not-needed-under-trust-auth")
    assert await list_runs(url) == []


async def test_schemas_keep_journals_apart(postgres_url: str) -> None:
    first, second = (f"{postgres_url}?schema=a_{uuid.uuid4().hex[:8]}" for _ in range(2))
    CALLS.clear()
    assert (await run(charge, {"n": 5}, run_id="same", journal=first)).unwrap() == 5
    assert (await run(charge, {"n": 6}, run_id="same", journal=second)).unwrap() == 6
    assert CALLS == [5, 6]
    assert [r.run_id for r in await list_runs(first)] == ["same"]


async def test_memory_store_on_postgres_reports_stats_integrity_and_refuses_lone_surrogates(
    postgres_url: str,
) -> None:
    async with MemoryStore(f"{postgres_url}?schema=m_{uuid.uuid4().hex[:8]}") as store:
        tree = store.temporal("chat")
        await tree.insert("we adopted a cat", session="s1", at=datetime(2024, 1, 2, tzinfo=UTC))
        with pytest.raises(MemoryStoreError, match=r"lone surrogate U\+D800"):
            await tree.insert("bad \ud800", session="s1")
        stats = await store.stats()
        assert (stats.journal_mode, stats.schema_version) == ("postgresql", 2)
        assert [(t.tree_id, t.leaves) for t in stats.trees] == [("chat", 1)]
        assert stats.bytes > 0
        assert await store.integrity_check() == "ok"
        assert [h.leaf.text for h in await tree.search("cat", k=3)] == ["we adopted a cat"]
