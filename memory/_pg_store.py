"""The memory store on PostgreSQL: ``PgStoreCore``, the synchronous core the memory trees run on when
``MemoryStore`` is given a ``postgresql://`` URL.

The trees' SQL is written once, for SQLite; ``PgConnection`` runs it on PostgreSQL through four
mechanical rewrites (``?`` placeholders become ``%s``; ``INSERT OR IGNORE`` becomes ``INSERT ...
ON CONFLICT DO NOTHING``; ``IS ?`` becomes ``IS NOT DISTINCT FROM %s``; an insert into ``tnodes`` returns
its new ``id`` as ``lastrowid``), so both backends share every query and every invariant of the trees.

Durability and concurrency, as in SQLite: one transaction per write; writers to one tree are serialized
across processes and machines by a transaction-scoped advisory lock on the tree (the SQLite store's
``BEGIN IMMEDIATE``), which is what the trees' ``MAX(seq) + 1`` numbering rests on; readers never block.
Reads that must agree (``snapshot``) run in one ``REPEATABLE READ`` transaction.

Schema. Tables live in a PostgreSQL schema (``agentflow_memory`` by default, ``?schema=NAME`` in the
URL), created and migrated on first use under an advisory lock, with the SQLite store's discipline: the
versions applied are recorded in ``schema_version``, migrations only add, and the runner rolls the whole
upgrade back if any table lost a row. Version 2 is the SQLite store's version 2 layout (PostgreSQL
stores start there). Retrieval is the same BM25 index over stored rows as on SQLite (its statistics are
rebuilt from the rows each process reads), so results are identical on both backends.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from agentflow._postgres import PgPool
from agentflow.errors import ConfigError, MemoryStoreError
from agentflow.memory._index import TreeIndex
from agentflow.memory._models import StoreStats, TreeStats
from agentflow.memory._schema import LATEST_VERSION

if TYPE_CHECKING:
    import psycopg

    from agentflow.memory._store import Connection

__all__ = ["PgConnection", "PgStoreCore"]

_SCHEMA_V2 = """
CREATE TABLE {s}.trees (tree_id TEXT PRIMARY KEY, kind TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL);
CREATE TABLE {s}.tnodes (
    id BIGSERIAL PRIMARY KEY,
    tree_id TEXT NOT NULL REFERENCES {s}.trees(tree_id),
    key TEXT NOT NULL,
    level INTEGER NOT NULL,
    parent BIGINT REFERENCES {s}.tnodes(id),
    ts DOUBLE PRECISION NOT NULL,
    position INTEGER NOT NULL DEFAULT 0,
    speaker TEXT,
    text TEXT NOT NULL DEFAULT '',
    meta TEXT NOT NULL DEFAULT '{}',
    content_hash TEXT,
    summary TEXT NOT NULL DEFAULT '',
    dirty INTEGER NOT NULL DEFAULT 0,
    seq BIGINT NOT NULL DEFAULT 0,
    UNIQUE (tree_id, key)
);
CREATE UNIQUE INDEX tnodes_hash ON {s}.tnodes(tree_id, content_hash) WHERE content_hash IS NOT NULL;
CREATE INDEX tnodes_seq ON {s}.tnodes(tree_id, seq);
CREATE INDEX tnodes_parent_position ON {s}.tnodes(parent, position);
CREATE INDEX tnodes_dirty ON {s}.tnodes(tree_id, level) WHERE dirty > 0;
CREATE TABLE {s}.task_nodes (
    tree_id TEXT NOT NULL REFERENCES {s}.trees(tree_id),
    id TEXT NOT NULL,
    parent TEXT,
    title TEXT NOT NULL,
    input TEXT NOT NULL DEFAULT '',
    output TEXT,
    error TEXT,
    status TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION,
    ord INTEGER NOT NULL,
    PRIMARY KEY (tree_id, id)
);
CREATE TABLE {s}.task_deps (
    tree_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    dep_id TEXT NOT NULL,
    ord INTEGER NOT NULL,
    PRIMARY KEY (tree_id, node_id, dep_id)
);
CREATE INDEX task_nodes_parent ON {s}.task_nodes(tree_id, parent);
"""

PG_MIGRATIONS: dict[int, str] = {LATEST_VERSION: _SCHEMA_V2}
"""SQL that takes a PostgreSQL memory store to each version (stores are created at the latest one)."""

_LOCK_KEY = 0x4146_4D53
"""The advisory lock that serializes creating and migrating the schema ("AFMS")."""

_INSERT_OR_IGNORE = re.compile(r"^\s*INSERT OR IGNORE INTO", re.IGNORECASE)
_IS_PARAM = re.compile(r"\bIS \?")


class PgCursor:
    """What a statement returned: its rows, ``rowcount`` and, for an insert into ``tnodes``, ``lastrowid``."""

    def __init__(self, rows: list[tuple[Any, ...]] | None, rowcount: int, lastrowid: int | None) -> None:
        self._rows = rows or []
        self._next = 0
        self.rowcount = rowcount
        self.lastrowid = lastrowid

    def fetchone(self) -> Any:
        if self._next >= len(self._rows):
            return None
        row = self._rows[self._next]
        self._next += 1
        return row

    def fetchall(self) -> list[Any]:
        rest = self._rows[self._next :]
        self._next = len(self._rows)
        return rest

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class PgConnection:
    """A pooled psycopg connection that runs the memory trees' SQLite-dialect SQL (see the module
    docstring); driver errors become ``MemoryStoreError`` naming the operation and the server."""

    def __init__(self, conn: psycopg.Connection[tuple[Any, ...]], where: str) -> None:
        self._conn = conn  # its search_path is the store's schema (set when the pool opened it)
        self._where = where

    @staticmethod
    def translate(sql: str) -> tuple[str, bool]:
        """The PostgreSQL form of a statement, and whether it returns the new row's id."""
        ignore = bool(_INSERT_OR_IGNORE.match(sql))
        if ignore:
            sql = _INSERT_OR_IGNORE.sub("INSERT INTO", sql, count=1) + " ON CONFLICT DO NOTHING"
        sql = _IS_PARAM.sub("IS NOT DISTINCT FROM ?", sql).replace("%", "%%").replace("?", "%s")
        returns_id = sql.lstrip().upper().startswith("INSERT INTO TNODES") and "RETURNING" not in sql.upper()
        if returns_id:
            sql += " RETURNING id"
        return sql, returns_id

    def execute(self, sql: str, parameters: Sequence[Any] = (), /) -> PgCursor:
        text, returns_id = self.translate(sql)
        with _errors(self._where):
            cur = self._conn.execute(text.encode(), _plain(parameters))
            rows = [_normal(r) for r in cur.fetchall()] if cur.description else None
        lastrowid = int(rows[0][0]) if returns_id and rows else None
        return PgCursor(rows, cur.rowcount, lastrowid)

    def executemany(self, sql: str, parameters: Iterable[Sequence[Any]], /) -> PgCursor:
        text, _ = self.translate(sql)
        with _errors(self._where):
            cur = self._conn.cursor()
            cur.executemany(text.encode(), [_plain(p) for p in parameters])
        return PgCursor(None, cur.rowcount, None)


def _plain(parameters: Sequence[Any]) -> list[Any]:
    return list(parameters)


def _normal(row: tuple[Any, ...]) -> tuple[Any, ...]:
    """Rows as SQLite gives them: aggregates of integers as ``int``, not ``Decimal``."""
    return tuple(int(v) if isinstance(v, Decimal) and v == v.to_integral_value() else v for v in row)


@contextmanager
def _errors(where: str) -> Iterator[None]:
    import psycopg

    try:
        yield
    except UnicodeEncodeError as exc:
        text = exc.object if isinstance(exc.object, str) else ""
        char = text[exc.start : exc.start + 1]
        raise MemoryStoreError(
            f"a write to the memory store at {where} failed: a text contains the lone surrogate "
            f"U+{ord(char) if char else 0:04X} at position {exc.start}, which is not valid Unicode and cannot "
            "be stored; clean the text first, e.g. text.encode('utf-8', 'replace').decode('utf-8')"
        ) from exc
    except psycopg.Error as exc:
        raise MemoryStoreError(
            f"the memory store at {where} failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0]}"
        ) from exc


class PgStoreCore:
    """The synchronous memory store on PostgreSQL (the same interface as ``StoreCore``).

    Args:
        url: ``postgresql://user@host:port/database`` (``?schema=NAME``, ``?password_secret=NAME``).
        max_connections: Most connections (and worker threads) used at once.
        connect_timeout_s: How long to wait for the server before a ``MemoryStoreError``.
    """

    synchronous = "server"
    """Durability is the server's (``synchronous_commit``); reported by ``stats``."""

    def __init__(self, url: str, *, max_connections: int = 4, connect_timeout_s: float = 10.0) -> None:
        schema = PgPool.url_options(url).get("schema", "agentflow_memory")
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", schema):
            raise ConfigError(f"schema {schema!r} must be a lower-case identifier such as 'agentflow_memory'")
        self.schema = schema
        self._pg = PgPool(
            url,
            what="memory store",
            error=MemoryStoreError,
            max_size=max_connections,
            connect_timeout_s=connect_timeout_s,
            # A writer stopped inside a transaction would hold its tree's lock; the server ends it.
            settings={"search_path": schema, "idle_in_transaction_session_timeout": "30000"},
        )
        self.path = self._pg.url
        self._guard = threading.Lock()
        # Per-tree locks and indexes, as in StoreCore: created on first use, kept for the store's lifetime.
        self._tree_locks: dict[str, threading.RLock] = {}
        self._indexes: dict[str, TreeIndex] = {}
        self._pool = self._open()
        self.schema_version = self._migrate()

    def _open(self) -> Any:
        import psycopg_pool

        conninfo, kwargs = self._pg.connect_args()
        pool = psycopg_pool.ConnectionPool(
            conninfo,
            min_size=1,
            max_size=self._pg.max_size,
            kwargs={**kwargs, "autocommit": True},
            open=False,
            name="agentflow-memory",
        )
        try:
            self._pg.check_reachable()
            pool.open(wait=True, timeout=self._pg.connect_timeout_s)
        except BaseException:
            pool.close()
            raise
        return pool

    def _migrate(self) -> int:
        s = self.schema
        with self._raw() as conn, _errors(self.path), conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {s}".encode())
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {s}.schema_version (version INTEGER NOT NULL, "
                "applied_at DOUBLE PRECISION NOT NULL)".encode()
            )
            row = conn.execute(f"SELECT MAX(version) FROM {s}.schema_version".encode()).fetchone()
            current = int(row[0]) if row is not None and row[0] is not None else 0
            if current > LATEST_VERSION:
                raise MemoryStoreError(
                    f"the memory store at {self.path} (schema {s!r}) has schema version {current}, newer than "
                    f"this agentflow understands ({LATEST_VERSION}); upgrade agentflow to open it"
                )
            for version in sorted(v for v in PG_MIGRATIONS if v > current):
                before = self._row_counts(conn)
                for statement in PG_MIGRATIONS[version].replace("{s}", s).split(";"):
                    if statement.strip():
                        conn.execute(statement.encode())
                after = self._row_counts(conn)
                lost = {t: (n, after.get(t, 0)) for t, n in before.items() if after.get(t, 0) < n}
                if lost:
                    raise MemoryStoreError(
                        f"migration of the memory store at {self.path} to schema version {version} would lose "
                        f"rows {lost}; nothing was changed, report this as a bug"
                    )
                conn.execute(
                    f"INSERT INTO {s}.schema_version VALUES (%s, %s)".encode(), (version, time.time())
                )
        return LATEST_VERSION

    def _row_counts(self, conn: psycopg.Connection[tuple[Any, ...]]) -> dict[str, int]:
        names = [
            str(r[0])
            for r in conn.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (self.schema,)
            ).fetchall()
        ]
        counts = {}
        for name in names:
            row = conn.execute(f'SELECT COUNT(*) FROM {self.schema}."{name}"'.encode()).fetchone()
            counts[name] = int(row[0]) if row is not None else 0
        return counts

    @contextmanager
    def _raw(self) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
        with self._pg.translate("opening a connection"), self._pool.connection() as conn:
            yield conn

    @contextmanager
    def connection(self) -> Iterator[PgConnection]:
        """Borrow a connection (autocommit) for the duration of the block."""
        with self._raw() as conn:
            yield PgConnection(conn, self.path)

    def tree_lock(self, tree_id: str) -> threading.RLock:
        """The lock that serializes this process's work on one tree."""
        with self._guard:
            lock = self._tree_locks.get(tree_id)
            if lock is None:
                lock = self._tree_locks[tree_id] = threading.RLock()
            return lock

    def tree_index(self, tree_id: str) -> TreeIndex:
        """The in-memory retrieval index of a temporal tree (empty until its first search loads it)."""
        with self._guard:
            index = self._indexes.get(tree_id)
            if index is None:
                index = self._indexes[tree_id] = TreeIndex()
            return index

    @contextmanager
    def write(self, tree_id: str, what: str) -> Iterator[PgConnection]:
        """One write transaction on ``tree_id``: under the tree's lock in this process and its advisory
        lock across processes, so the tree's writers commit one after another."""
        with (
            self.tree_lock(tree_id),
            self._raw() as conn,
            _errors(f"{self.path} ({what})"),
            conn.transaction(),
        ):
            conn.execute(
                "SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"agentflow-tree:{tree_id}",)
            )
            yield PgConnection(conn, f"{self.path} ({what})")

    @contextmanager
    def snapshot(self, what: str) -> Iterator[PgConnection]:
        """A read transaction: every statement in the block sees the same committed state."""
        with self._raw() as conn, _errors(f"{self.path} ({what})"), conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            yield PgConnection(conn, f"{self.path} ({what})")

    def ensure_tree(self, conn: Connection, tree_id: str, kind: str) -> None:
        """Create the ``trees`` row inside the caller's transaction; refuse a tree of another kind."""
        conn.execute(
            "INSERT OR IGNORE INTO trees (tree_id, kind, created_at) VALUES (?, ?, ?)",
            (tree_id, kind, time.time()),
        )
        row = conn.execute("SELECT kind FROM trees WHERE tree_id = ?", (tree_id,)).fetchone()
        if row is not None and row[0] != kind:
            raise ConfigError(
                f"tree {tree_id!r} in {self.path!r} is a {row[0]} tree, not a {kind} tree; use another tree id"
            )

    def stats(self) -> StoreStats:
        """Count trees, nodes, leaves and dirty nodes."""
        trees: list[TreeStats] = []
        with self.connection() as conn:
            for tree_id, kind in conn.execute("SELECT tree_id, kind FROM trees ORDER BY tree_id").fetchall():
                if kind == "task":
                    n = conn.execute(
                        "SELECT COUNT(*) FROM task_nodes WHERE tree_id = ?", (tree_id,)
                    ).fetchone()[0]
                    trees.append(TreeStats(tree_id=tree_id, kind=kind, nodes=n, leaves=0, dirty=0))
                    continue
                nodes, leaves, dirty = conn.execute(
                    "SELECT COUNT(*), COUNT(*) FILTER (WHERE level = 3), COUNT(*) FILTER (WHERE dirty > 0) "
                    "FROM tnodes WHERE tree_id = ?",
                    (tree_id,),
                ).fetchone()
                trees.append(TreeStats(tree_id=tree_id, kind=kind, nodes=nodes, leaves=leaves, dirty=dirty))
            size = conn.execute(
                "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ? AND c.relkind = 'r'",
                (self.schema,),
            ).fetchone()[0]
        return StoreStats(
            path=self.path,
            schema_version=self.schema_version,
            journal_mode="postgresql",
            synchronous=self.synchronous,
            trees=tuple(trees),
            bytes=int(size),
        )

    def integrity_check(self) -> str:
        """``"ok"`` when every node's parent exists in the same tree and every task dependency exists."""
        with self.connection() as conn:
            orphans = conn.execute(
                "SELECT COUNT(*) FROM tnodes c LEFT JOIN tnodes p ON p.id = c.parent "
                "WHERE c.parent IS NOT NULL AND (p.id IS NULL OR p.tree_id != c.tree_id)"
            ).fetchone()[0]
            deps = conn.execute(
                "SELECT COUNT(*) FROM task_deps d LEFT JOIN task_nodes n ON n.tree_id = d.tree_id "
                "AND n.id = d.dep_id WHERE n.id IS NULL"
            ).fetchone()[0]
        problems = [f"{orphans} node(s) without their parent"] if orphans else []
        problems += [f"{deps} task dependency(ies) on missing tasks"] if deps else []
        return "\n".join(problems) or "ok"

    def close(self) -> None:
        """Close every connection; later calls fail with ``MemoryStoreError``."""
        self._pool.close()
