"""Raw SQL on a test journal of either backend (what someone with access to the file or database could
do): ``?`` placeholders and unqualified table names, as in SQLite."""

from __future__ import annotations

import sqlite3
from urllib.parse import parse_qs, urlsplit


def is_postgres(db: str) -> bool:
    return db.startswith("postgresql://")


def raw_sql(db: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Run one statement on the journal ``db`` (a SQLite path or a ``postgresql://...?schema=`` URL)."""
    if not is_postgres(db):
        with sqlite3.connect(db) as conn:
            return list(conn.execute(sql, params).fetchall())
    import psycopg

    parts = urlsplit(db)
    schema = parse_qs(parts.query)["schema"][0]
    with psycopg.connect(parts._replace(query="").geturl(), autocommit=True) as conn:
        conn.execute(f"SET search_path TO {schema}")
        cur = conn.execute(sql.replace("?", "%s"), params)  # type: ignore[arg-type]
        return list(cur.fetchall()) if cur.description else []


def journal_at(db: str, **options: float) -> object:
    """A journal object for ``db`` of its backend (``options``: ``lease_s`` and the like)."""
    from agentflow.runtime import PostgresJournal, SqliteJournal

    return PostgresJournal(db, **options) if is_postgres(db) else SqliteJournal(db, **options)  # type: ignore[arg-type]
