"""The SQLite schema of the memory store and its forward migrations.

Every database records the migrations applied to it in ``schema_version``. A new database is created
at version 1 and migrated forward like any old one, so the migration path is exercised on every open.
Migrations only add: tables, columns, indexes and backfilled values. The runner counts the rows of every
table before and after each step and rolls the whole upgrade back if any table lost a row.

Version history:

1. ``trees`` and ``tnodes`` (temporal nodes: root, period, session, leaf) with text and time only.
2. Content hashes (unique per tree, for duplicate-free concurrent inserts), summaries with a dirty
   generation counter, a per-tree change sequence (``tnodes.seq``: rows written by one transaction share its number) that lets readers catch up incrementally,
   and the task-tree tables ``task_nodes`` and ``task_deps``. The index on ``parent`` becomes one on
   ``(parent, position)`` (an index holds no data of its own; the row counts are unchanged).
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable

from agentflow.errors import MemoryStoreError

__all__ = ["LATEST_VERSION", "V1_SCHEMA", "content_hash", "migrate"]

V1_SCHEMA = """
CREATE TABLE schema_version (version INTEGER NOT NULL, applied_at REAL NOT NULL);
CREATE TABLE trees (tree_id TEXT PRIMARY KEY, kind TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE tnodes (
    id INTEGER PRIMARY KEY,
    tree_id TEXT NOT NULL REFERENCES trees(tree_id),
    key TEXT NOT NULL,
    level INTEGER NOT NULL,
    parent INTEGER REFERENCES tnodes(id),
    ts REAL NOT NULL,
    position INTEGER NOT NULL DEFAULT 0,
    speaker TEXT,
    text TEXT NOT NULL DEFAULT '',
    meta TEXT NOT NULL DEFAULT '{}',
    UNIQUE (tree_id, key)
);
CREATE INDEX tnodes_parent ON tnodes(parent);
"""
"""Version 1, kept verbatim: new databases start here, and tests build v1 files from it."""

LEAF_LEVEL = 3


def content_hash(leaf_id: str | None, session: str, speaker: str | None, text: str, at: float | None) -> str:
    """Hash what the caller said about a leaf; two inserts with the same hash are one leaf.

    Args:
        leaf_id: The caller's id for the leaf, or None when the store derives one.
        session: The session name.
        speaker: Who said it, if anyone.
        text: The leaf's text (compared exactly).
        at: The caller's timestamp in epoch seconds, or None when the caller gave none.
    """
    payload = repr((leaf_id, session, speaker, text, at))  # exact and stable for str, float and None
    return hashlib.sha256(payload.encode("utf-8", "surrogatepass")).hexdigest()


def _execute_script(conn: sqlite3.Connection, script: str) -> None:
    """Run ``;``-separated statements inside the current transaction (``executescript`` would commit it)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)


def _v2(conn: sqlite3.Connection) -> None:
    _execute_script(
        conn,
        """
        ALTER TABLE tnodes ADD COLUMN content_hash TEXT;
        ALTER TABLE tnodes ADD COLUMN summary TEXT NOT NULL DEFAULT '';
        ALTER TABLE tnodes ADD COLUMN dirty INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE tnodes ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
        CREATE TABLE task_nodes (
            tree_id TEXT NOT NULL REFERENCES trees(tree_id),
            id TEXT NOT NULL,
            parent TEXT,
            title TEXT NOT NULL,
            input TEXT NOT NULL DEFAULT '',
            output TEXT,
            error TEXT,
            status TEXT NOT NULL,
            created_at REAL NOT NULL,
            started_at REAL,
            finished_at REAL,
            ord INTEGER NOT NULL,
            PRIMARY KEY (tree_id, id)
        );
        CREATE TABLE task_deps (
            tree_id TEXT NOT NULL,
            node_id TEXT NOT NULL,
            dep_id TEXT NOT NULL,
            ord INTEGER NOT NULL,
            PRIMARY KEY (tree_id, node_id, dep_id)
        );
        CREATE INDEX task_nodes_parent ON task_nodes(tree_id, parent);
        """,
    )
    # Backfill: v1 leaves get the hash of their stored fields; a v1 duplicate keeps its row and gets a
    # disambiguated hash, so the unique index below can be built without dropping anything.
    seen: set[tuple[str, str]] = set()
    sessions = {
        row[0]: row[1]
        for row in conn.execute("SELECT id, key FROM tnodes WHERE level = ?", (LEAF_LEVEL - 1,))
    }
    rows = conn.execute(
        "SELECT id, tree_id, key, parent, speaker, text, ts FROM tnodes WHERE level = ? ORDER BY id",
        (LEAF_LEVEL,),
    ).fetchall()
    for node_id, tree_id, key, parent, speaker, text, ts in rows:
        session = sessions.get(parent, "").removeprefix("session:")
        digest = content_hash(key.removeprefix("leaf:"), session, speaker, text, ts)
        if (tree_id, digest) in seen:
            digest = f"{digest}:v1-duplicate:{node_id}"
        seen.add((tree_id, digest))
        conn.execute("UPDATE tnodes SET content_hash = ? WHERE id = ?", (digest, node_id))
    _execute_script(
        conn,
        """
        UPDATE tnodes SET seq = 1;
        UPDATE tnodes SET dirty = 1 WHERE level < 3;
        CREATE UNIQUE INDEX tnodes_hash ON tnodes(tree_id, content_hash) WHERE content_hash IS NOT NULL;
        CREATE INDEX tnodes_seq ON tnodes(tree_id, seq);
        CREATE INDEX tnodes_parent_position ON tnodes(parent, position);
        DROP INDEX tnodes_parent;
        CREATE INDEX tnodes_dirty ON tnodes(tree_id, level) WHERE dirty > 0;
        """,
    )


MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {2: _v2}
LATEST_VERSION = max(MIGRATIONS)


def _row_counts(conn: sqlite3.Connection) -> dict[str, int]:
    names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    return {name: conn.execute(f'SELECT COUNT(*) FROM "{name}"').fetchone()[0] for name in names}


def migrate(conn: sqlite3.Connection, *, path: str) -> int:
    """Create or upgrade the schema in one ``BEGIN IMMEDIATE`` transaction; return the version.

    Invariant: a migration step never lowers the row count of a table that existed before it; the
    runner checks this and rolls back the whole upgrade otherwise.

    Raises:
        MemoryStoreError: The file was written by a newer agentflow, or a migration failed.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        has_table = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
        ).fetchone()
        if not has_table:
            _execute_script(conn, V1_SCHEMA)
            conn.execute("INSERT INTO schema_version VALUES (1, ?)", (time.time(),))
        current = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 1
        if current > LATEST_VERSION:
            raise MemoryStoreError(
                f"memory store {path!r} has schema version {current}, newer than this agentflow "
                f"understands ({LATEST_VERSION}); upgrade agentflow to open it"
            )
        for version in range(current + 1, LATEST_VERSION + 1):
            before = _row_counts(conn)
            MIGRATIONS[version](conn)
            after = _row_counts(conn)
            lost = {name: (n, after.get(name, 0)) for name, n in before.items() if after.get(name, 0) < n}
            if lost:
                raise MemoryStoreError(
                    f"migration of {path!r} to schema version {version} would lose rows {lost}; "
                    "nothing was changed, report this as a bug"
                )
            conn.execute("INSERT INTO schema_version VALUES (?, ?)", (version, time.time()))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return LATEST_VERSION
