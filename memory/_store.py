"""The SQLite store under the memory trees: connections, transactions, per-tree locks, statistics.

Durability choices:

* ``journal_mode=WAL``: readers never block the writer and a crash never leaves a half-written page.
* ``synchronous=NORMAL`` by default. In WAL mode a commit is appended to the WAL before ``COMMIT``
  returns, so a killed process (SIGKILL, OOM, a crash) loses nothing that was acknowledged; only an OS
  crash or power loss can roll back the last few commits, and even then the file stays consistent.
  ``FULL`` adds an fsync per commit, which survives power loss but costs ~50x in insert rate on ordinary
  disks (measured by ``bench/locomo_recall.py``). Choose it with ``MemoryStore(path, synchronous="FULL")``.
* One ``BEGIN IMMEDIATE`` transaction per write: the write lock is taken up front, so two processes
  never both read-then-write and a duplicate check and its insert see the same database.

Concurrency inside a process: each tree has its own re-entrant lock, held for a tree's writes and for
its in-memory index; connections come from a small pool (``sqlite3`` connections are not shared between
threads at the same time). Across processes SQLite's own locking serializes writers (``busy_timeout``).

``StoreCore`` is the synchronous core; ``MemoryStore`` is the async face that runs it in anyio worker
threads under a ``CapacityLimiter``. Given a ``postgresql://`` URL instead of a path, ``MemoryStore``
runs the same trees on ``PgStoreCore`` (``agentflow.memory._pg_store``), which offers the same interface:
the trees see a ``Connection`` either way.
"""

from __future__ import annotations

import functools
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, ParamSpec, Protocol, TypeVar

import anyio
import anyio.to_thread

from agentflow._sqlite import sqlite_hint
from agentflow.errors import ConfigError, MemoryStoreError
from agentflow.memory._index import TreeIndex
from agentflow.memory._models import StoreStats, TreeStats
from agentflow.memory._schema import migrate

if TYPE_CHECKING:
    from agentflow.memory._pg_store import PgStoreCore
    from agentflow.memory._summarize import Summarizer, SyncSummarizer
    from agentflow.memory._task import TaskMemoryTree
    from agentflow.memory._temporal import ScoringWeights, TemporalMemoryTree

__all__ = ["Connection", "Cursor", "MemoryStore", "StoreCore", "Synchronous"]

Synchronous = Literal["NORMAL", "FULL"]
P = ParamSpec("P")
T = TypeVar("T")


class Cursor(Protocol):
    """What a statement of the memory trees returns (``sqlite3.Cursor``, or the PostgreSQL store's)."""

    @property
    def rowcount(self) -> int: ...

    @property
    def lastrowid(self) -> int | None: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Connection(Protocol):
    """What the memory trees run their (SQLite-dialect) SQL on: ``sqlite3.Connection``, or the PostgreSQL
    store's ``PgConnection``."""

    def execute(self, sql: str, parameters: Any = ..., /) -> Cursor: ...

    def executemany(self, sql: str, parameters: Any, /) -> Cursor: ...


@contextmanager
def translate_errors(what: str, path: str) -> Iterator[None]:
    """Turn ``sqlite3`` exceptions into ``MemoryStoreError`` naming the operation and the file; a text
    that cannot be stored as UTF-8 (a lone surrogate, e.g. from ``surrogateescape`` decoding) is refused
    with its position (the write's transaction is rolled back: nothing of it is stored)."""
    try:
        yield
    except UnicodeEncodeError as exc:
        text = exc.object if isinstance(exc.object, str) else ""
        char = text[exc.start : exc.start + 1]
        shown = text[max(0, exc.start - 20) : exc.start + 20].encode("utf-8", "backslashreplace").decode()
        raise MemoryStoreError(
            f"{what} failed on memory store {path!r}: a text contains the lone surrogate "
            f"U+{ord(char) if char else 0:04X} at position {exc.start} (near {shown!r}), which is not valid "
            "Unicode and cannot be stored; clean the text first, e.g. "
            "text.encode('utf-8', 'replace').decode('utf-8')"
        ) from exc
    except sqlite3.Error as exc:
        hint = sqlite_hint(exc, "a memory store")
        raise MemoryStoreError(f"{what} failed on memory store {path!r}: {exc}; {hint}") from exc


class StoreCore:
    """The synchronous memory store: one SQLite file in WAL mode.

    Args:
        path: The database file (created if missing). ``":memory:"`` is refused: WAL needs a file.
        synchronous: ``"NORMAL"`` (survives process crashes) or ``"FULL"`` (also survives power loss).
        busy_timeout_s: How long a writer waits for another process's write lock.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "NORMAL",
        busy_timeout_s: float = 30.0,
    ) -> None:
        self.path = str(path)
        if self.path == ":memory:" or self.path.startswith("file::memory:"):
            raise ConfigError(
                f"memory store path {self.path!r} is in-memory, but the store needs WAL on a file; "
                "pass a file path (a temporary file is fine)"
            )
        if synchronous not in ("NORMAL", "FULL"):
            raise ConfigError(f"synchronous={synchronous!r} is not supported; use 'NORMAL' or 'FULL'")
        if busy_timeout_s <= 0:
            raise ConfigError(f"busy_timeout_s={busy_timeout_s!r} must be positive (seconds)")
        self.synchronous: Synchronous = synchronous
        self.busy_timeout_s = busy_timeout_s
        # Idle connections; every connection ever opened is in _all so close() reaches it.
        self._pool: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._all: list[sqlite3.Connection] = []
        self._guard = threading.Lock()
        # One re-entrant lock per tree id, created on first use, kept for the store's lifetime.
        self._tree_locks: dict[str, threading.RLock] = {}
        # One retrieval index per temporal tree, shared by every tree object on this store (guarded by
        # the tree's lock), so asking the store for a tree again does not reload it from disk.
        self._indexes: dict[str, TreeIndex] = {}
        self._closed = False
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with self.connection() as conn, translate_errors("opening and migrating", self.path):
            self.schema_version = migrate(conn, path=self.path)

    def _connect(self) -> sqlite3.Connection:
        with translate_errors("opening", self.path):
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                conn.close()
                raise MemoryStoreError(
                    f"memory store {self.path!r} cannot use WAL (journal_mode is {mode!r}); "
                    "put it on a local file system that supports shared memory"
                )
            conn.execute(f"PRAGMA synchronous={self.synchronous}")
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout_s * 1000)}")
            conn.execute("PRAGMA foreign_keys=ON")
            # Checkpoint every ~40 MB of WAL instead of ~4 MB: hot pages (the tree's root, the index
            # tails) are copied back once per checkpoint, so rarer checkpoints write less in total.
            conn.execute("PRAGMA wal_autocheckpoint=10000")
        return conn

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """Borrow a connection (autocommit mode) for the duration of the block."""
        if self._closed:
            raise MemoryStoreError(f"memory store {self.path!r} is closed; open a new MemoryStore")
        try:
            conn = self._pool.get_nowait()
        except queue.Empty:
            conn = self._connect()
            with self._guard:
                self._all.append(conn)
        try:
            yield conn
        finally:
            self._pool.put(conn)

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
    def write(self, tree_id: str, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``) on ``tree_id``, under its lock.

        Args:
            tree_id: The tree written to.
            what: Names the operation in error messages ("insert into tree 'x'").
        """
        with self.tree_lock(tree_id), self.connection() as conn, translate_errors(what, self.path):
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def snapshot(self, what: str) -> Iterator[sqlite3.Connection]:
        """A read transaction: every statement in the block sees the same committed state."""
        with self.connection() as conn, translate_errors(what, self.path):
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def ensure_tree(self, conn: Connection, tree_id: str, kind: str) -> None:
        """Create the ``trees`` row inside the caller's transaction; refuse a tree of another kind."""
        row = conn.execute("SELECT kind FROM trees WHERE tree_id = ?", (tree_id,)).fetchone()
        if row is None:
            conn.execute(
                "INSERT INTO trees (tree_id, kind, created_at) VALUES (?, ?, ?)", (tree_id, kind, time.time())
            )
        elif row[0] != kind:
            raise ConfigError(
                f"tree {tree_id!r} in {self.path!r} is a {row[0]} tree, not a {kind} tree; use another tree id"
            )

    def stats(self) -> StoreStats:
        """Count trees, nodes, leaves and dirty nodes."""
        with self.connection() as conn, translate_errors("reading statistics", self.path):
            trees: list[TreeStats] = []
            for tree_id, kind in conn.execute("SELECT tree_id, kind FROM trees ORDER BY tree_id").fetchall():
                if kind == "task":
                    n = conn.execute(
                        "SELECT COUNT(*) FROM task_nodes WHERE tree_id = ?", (tree_id,)
                    ).fetchone()[0]
                    trees.append(TreeStats(tree_id=tree_id, kind=kind, nodes=n, leaves=0, dirty=0))
                    continue
                nodes, leaves, dirty = conn.execute(
                    "SELECT COUNT(*), COALESCE(SUM(level = 3), 0), COALESCE(SUM(dirty > 0), 0) "
                    "FROM tnodes WHERE tree_id = ?",
                    (tree_id,),
                ).fetchone()
                trees.append(TreeStats(tree_id=tree_id, kind=kind, nodes=nodes, leaves=leaves, dirty=dirty))
            journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        size = sum(os.path.getsize(p) for p in (self.path, self.path + "-wal") if os.path.exists(p))
        return StoreStats(
            path=self.path,
            schema_version=self.schema_version,
            journal_mode=str(journal),
            synchronous=self.synchronous,
            trees=tuple(trees),
            bytes=size,
        )

    def integrity_check(self) -> str:
        """Run ``PRAGMA integrity_check``; returns ``"ok"`` for a healthy file."""
        with self.connection() as conn, translate_errors("integrity check", self.path):
            return "\n".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check").fetchall())

    def close(self) -> None:
        """Close every connection; later calls fail with ``MemoryStoreError``."""
        with self._guard:
            self._closed = True
            conns, self._all = self._all, []
        for conn in conns:
            conn.close()


class MemoryStore:
    """The async memory store: hands out trees and runs the synchronous core in worker threads.

    Nothing touches the disk until the first call, so a store can be built inside an event loop.

    Example:
        >>> async def main(path):
        ...     async with MemoryStore(path) as store:
        ...         tree = store.temporal("chat")
        ...         await tree.insert("I adopted a cat", session="s1", speaker="ann")
        ...         return [hit.leaf.text for hit in await tree.search("cat", k=1)]

    Args:
        path: The SQLite file, or a ``postgresql://`` URL for the PostgreSQL store (``?schema=NAME``,
            ``?password_secret=NAME``; see ``agentflow.memory._pg_store``).
        synchronous: ``"NORMAL"`` (default, survives process crashes) or ``"FULL"`` (survives power loss);
            SQLite only (PostgreSQL's durability is the server's ``synchronous_commit``).
        busy_timeout_s: How long a writer waits for another process's write lock.
        max_threads: Worker threads the store uses at once.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Synchronous = "NORMAL",
        busy_timeout_s: float = 30.0,
        max_threads: int = 4,
    ) -> None:
        if max_threads < 1:
            raise ConfigError(f"max_threads={max_threads!r} must be at least 1")
        self.path = str(path)
        self._options: tuple[Synchronous, float] = (synchronous, busy_timeout_s)
        if synchronous not in ("NORMAL", "FULL"):
            raise ConfigError(f"synchronous={synchronous!r} is not supported; use 'NORMAL' or 'FULL'")
        self._max_threads = max_threads
        # Created lazily: the core on first use (in a worker thread), the limiter inside the event loop.
        self._core: StoreCore | PgStoreCore | None = None
        self._core_guard = threading.Lock()
        self._limiter: anyio.CapacityLimiter | None = None

    @property
    def sync(self) -> StoreCore | PgStoreCore:
        """The synchronous core (opens the file or connects on first access; blocking)."""
        with self._core_guard:
            if self._core is None:
                from agentflow._postgres import is_postgres_url

                if is_postgres_url(self.path):
                    from agentflow.memory._pg_store import PgStoreCore

                    self._core = PgStoreCore(self.path, max_connections=self._max_threads)
                    self.path = self._core.path  # without a password written in the URL
                else:
                    synchronous, busy = self._options
                    self._core = StoreCore(self.path, synchronous=synchronous, busy_timeout_s=busy)
            return self._core

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a blocking function of the core in a worker thread under the store's limiter."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self._max_threads)
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs), limiter=self._limiter)

    def temporal(
        self,
        tree_id: str,
        *,
        summarizer: Summarizer | SyncSummarizer | None = None,
        weights: ScoringWeights | None = None,
    ) -> TemporalMemoryTree:
        """A temporal memory tree in this store (created on its first write)."""
        from agentflow.memory._temporal import TemporalMemoryTree

        return TemporalMemoryTree(self, tree_id, summarizer=summarizer, weights=weights)

    def task_tree(self, tree_id: str) -> TaskMemoryTree:
        """A task memory tree in this store (created on its first write)."""
        from agentflow.memory._task import TaskMemoryTree

        return TaskMemoryTree(self, tree_id)

    async def stats(self) -> StoreStats:
        """Count what the store holds."""
        return await self.run(lambda: self.sync.stats())

    async def integrity_check(self) -> str:
        """``PRAGMA integrity_check`` (``"ok"`` when healthy)."""
        return await self.run(lambda: self.sync.integrity_check())

    async def aclose(self) -> None:
        """Close the store's connections."""
        core = self._core
        if core is not None:
            await self.run(core.close)

    async def __aenter__(self) -> MemoryStore:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()
