"""SQLite store: WAL mode, versioned schema, forward migration from v1 data, error translation."""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentflow.errors import ConfigError, MemoryStoreError
from agentflow.memory import MemoryStore, StoreCore, TaskTreeCore, TemporalTreeCore
from agentflow.memory._schema import V1_SCHEMA

# Files written by version 1 are built from the code's own copy of its schema, pinned by its hash: editing
# that copy (which would change what "a version-1 file" means, and hide a migration bug) fails
# test_the_version_1_schema_is_frozen instead of silently drifting.
V1_SCHEMA_SHA256 = "77ea99c918e4b9cb091271c5f3abb60965bc7046eb908a61677d882af97d6ba0"


def test_the_version_1_schema_is_frozen() -> None:
    assert hashlib.sha256(V1_SCHEMA.encode()).hexdigest() == V1_SCHEMA_SHA256, (
        "memory/_schema.py's V1_SCHEMA changed: version 1 files exist in the wild with the old schema; "
        "add a migration instead of editing it"
    )


def _v1_file(path: Path) -> None:
    """A database exactly as version 1 wrote it, with two sessions and a duplicated leaf."""
    conn = sqlite3.connect(path)
    conn.executescript(V1_SCHEMA)
    conn.execute("INSERT INTO schema_version VALUES (1, 0)")
    conn.execute("INSERT INTO trees VALUES ('old', 'temporal', 0)")
    may = datetime(2023, 5, 8, tzinfo=UTC).timestamp()
    rows = [
        (1, "root", 0, None, may, 0, None, ""),
        (2, "period:2023-05", 1, 1, may, 0, None, ""),
        (3, "session:D1", 2, 2, may, 0, None, "D1"),
        (4, "leaf:D1:1", 3, 3, may, 0, "ann", "I adopted a grey cat"),
        (5, "leaf:D1:2", 3, 3, may, 1, "bob", "What is the cat called?"),
        (6, "leaf:D1:3", 3, 3, may, 2, "ann", "Her name is Misty"),
        (7, "leaf:D1:3b", 3, 3, may, 3, "ann", "Her name is Misty"),
    ]
    conn.executemany(
        "INSERT INTO tnodes (id, tree_id, key, level, parent, ts, position, speaker, text) "
        "VALUES (?, 'old', ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )
    conn.commit()
    conn.close()


def test_open_creates_wal_database_at_latest_version(tmp_path: Path) -> None:
    store = StoreCore(tmp_path / "m.db")
    stats = store.stats()
    assert stats.journal_mode == "wal"
    assert stats.schema_version == store.schema_version >= 2
    assert store.integrity_check() == "ok"
    with store.connection() as conn:
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")]
    assert versions == list(range(1, store.schema_version + 1))


def test_migration_from_v1_keeps_every_row_and_makes_leaves_searchable(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    _v1_file(path)
    store = StoreCore(path)
    with store.connection() as conn:
        assert (
            conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == store.schema_version >= 2
        )
        assert conn.execute("SELECT COUNT(*) FROM tnodes").fetchone()[0] == 7
        hashes = [r[0] for r in conn.execute("SELECT content_hash FROM tnodes WHERE level = 3")]
        assert len(hashes) == 4 and all(hashes) and len(set(hashes)) == 4
    tree = TemporalTreeCore(store, "old", summarize=lambda texts: " ".join(texts))
    assert tree.dirty() == {"root", "period:2023-05", "session:D1"}
    hits = tree.search("cat name", k=3)
    assert {h.leaf.id for h in hits} >= {"D1:1", "D1:2"}
    assert tree.path("D1:3")[2].summary.startswith("ann: I adopted a grey cat")
    # New inserts after the migration still deduplicate against migrated rows.
    again = tree.insert("Her name is Misty", session="D1", speaker="ann", leaf_id="D1:3")
    assert not again.created
    reopened = StoreCore(path)
    assert reopened.schema_version == store.schema_version
    assert reopened.integrity_check() == "ok"


def test_open_refused_when_file_has_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "m.db"
    store = StoreCore(path)
    store.close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_version VALUES (?, 0)", (store.schema_version + 1,))
    conn.commit()
    conn.close()
    with pytest.raises(MemoryStoreError, match="newer than this agentflow"):
        StoreCore(path)


def test_open_translates_sqlite_error_when_file_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(MemoryStoreError, match=r"junk\.db") as info:
        StoreCore(path)
    assert isinstance(info.value.__cause__, sqlite3.Error)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"synchronous": "OFF"}, "synchronous='OFF'"), ({"busy_timeout_s": 0}, "busy_timeout_s=0")],
)
def test_options_refused_when_invalid(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        StoreCore(tmp_path / "m.db", **kwargs)  # type: ignore[arg-type]


def test_in_memory_path_refused() -> None:
    with pytest.raises(ConfigError, match="WAL on a file"):
        StoreCore(":memory:")


def test_tree_kind_mismatch_refused(tmp_path: Path) -> None:
    store = StoreCore(tmp_path / "m.db")
    TemporalTreeCore(store, "x").insert("hi", session="s", at=datetime(2023, 1, 1, tzinfo=UTC))
    with pytest.raises(ConfigError, match="is a temporal tree, not a task tree"):
        TaskTreeCore(store, "x").add_task("plan")


def test_closed_store_refuses_work(tmp_path: Path) -> None:
    store = StoreCore(tmp_path / "m.db")
    store.close()
    with pytest.raises(MemoryStoreError, match="closed"):
        store.stats()


@pytest.mark.anyio
async def test_async_store_stats_count_trees(tmp_path: Path) -> None:
    async with MemoryStore(tmp_path / "m.db", synchronous="FULL") as store:
        await store.temporal("a").insert("x", session="s")
        await store.task_tree("b").add_task("plan")
        stats = await store.stats()
        assert stats.synchronous == "FULL"
        assert [(t.tree_id, t.kind, t.leaves) for t in stats.trees] == [
            ("a", "temporal", 1),
            ("b", "task", 0),
        ]
        assert await store.integrity_check() == "ok"


@pytest.mark.anyio
async def test_lone_surrogate_in_memory_text_is_refused_with_its_position_and_nothing_is_stored(
    tmp_path: Path,
) -> None:
    async with MemoryStore(tmp_path / "m.db") as store:
        temporal = store.temporal("chat")
        with pytest.raises(MemoryStoreError, match=r"lone surrogate U\+D800 at position 4"):
            await temporal.insert("bad \ud800 text", session="s1")
        tasks = store.task_tree("plan")
        with pytest.raises(MemoryStoreError, match=r"lone surrogate U\+DC80"):
            await tasks.add_task("search \udc80")
        await temporal.insert("good text", session="s1")
        assert [h.leaf.text for h in await temporal.search("text", k=5)] == ["good text"]
        assert await tasks.nodes() == []
        assert await store.integrity_check() == "ok"
