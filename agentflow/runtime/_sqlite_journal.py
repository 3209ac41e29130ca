"""``SqliteJournal``: the default ``Journal``, one SQLite file in WAL mode.

Durability:

* ``journal_mode=WAL`` and one ``BEGIN IMMEDIATE`` transaction per write: a process killed at any
  instant (SIGKILL included) leaves every acknowledged write in the file and no half-written one.
* ``synchronous=FULL`` by default: every commit is fsynced, so a begun row of a non-idempotent step
  also survives power loss (the exactly-once guarantee rests on it). ``"NORMAL"`` survives process
  crashes only and is faster on slow disks.

Storage stays bounded: states are stored once per distinct content (a step that leaves the state
unchanged adds a 64-character reference, not another copy), and ``delete_runs`` (``agentflow runs gc``)
drops old runs and the states nothing references any more.

All SQLite calls run in anyio worker threads under a one-slot ``CapacityLimiter``: one connection,
never used by two threads at once. Across processes, SQLite's locks serialize writers.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal, TypeVar

import anyio
import anyio.to_thread

from agentflow.errors import ConfigError, ResumeError, RuntimeFailure

from ._journal import Journal, RunRecord, RunStatus, StepRecord

__all__ = ["SqliteJournal"]

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    status TEXT NOT NULL,
    workflow TEXT,
    inputs TEXT,
    state_type TEXT,
    state TEXT,
    result TEXT,
    error TEXT,
    owner_host TEXT,
    owner_pid INTEGER,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS runs_by_update ON runs (updated_at);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL,
    path TEXT NOT NULL,
    identity TEXT NOT NULL,
    scope TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    idempotent INTEGER NOT NULL,
    status TEXT NOT NULL,
    value TEXT,
    kind TEXT,
    state_hash TEXT,
    prompt TEXT,
    answer_schema TEXT,
    attempts INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY (run_id, path)
);
CREATE TABLE IF NOT EXISTS states (
    hash TEXT PRIMARY KEY,
    json TEXT NOT NULL
);
"""

_RUN_KEYS = (
    "run_id",
    "status",
    "workflow",
    "inputs",
    "state_type",
    "state",
    "result",
    "error",
    "owner_host",
    "owner_pid",
    "created_at",
    "updated_at",
)
_RUN_COLUMNS = ", ".join(_RUN_KEYS)

_STEP_COLUMNS = (
    "run_id, path, identity, scope, ordinal, idempotent, status, value, kind, state_hash, prompt, "
    "answer_schema, attempts, created_at, updated_at"
)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class SqliteJournal(Journal):
    """A ``Journal`` in one SQLite file (created if missing).

    Args:
        path: The database file. ``":memory:"`` is refused: a journal that dies with the process
            cannot resume anything.
        synchronous: ``"FULL"`` (survives power loss) or ``"NORMAL"`` (survives process crashes).
        busy_timeout_s: How long a writer waits for another process's write lock.

    >>> import anyio, tempfile, os
    >>> async def demo() -> int:
    ...     async with SqliteJournal(os.path.join(tempfile.mkdtemp(), "j.db")) as j:
    ...         return len(await j.list_runs())
    >>> anyio.run(demo)
    0
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
        busy_timeout_s: float = 30.0,
    ) -> None:
        if str(path) == ":memory:":
            raise ConfigError("SqliteJournal needs a file path, not ':memory:'; pass e.g. 'runs.db'")
        if synchronous not in ("FULL", "NORMAL"):
            raise ConfigError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = sqlite3.connect(
                self.path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous}")
            conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise ConfigError(
                f"cannot open journal {str(self.path)!r}: {exc}; pass a writable file path on a local disk"
            ) from exc
        # The one connection; used only under _limiter (one thread at a time); closed by aclose.
        self._conn: sqlite3.Connection | None = conn
        self._limiter = anyio.CapacityLimiter(1)
        # Runs this object is running now (a second concurrent claim in this process is refused).
        self._active: set[str] = set()

    # -- plumbing ---------------------------------------------------------------------------------
    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise ConfigError(f"journal {str(self.path)!r} is closed; open a new SqliteJournal")
        try:
            return await anyio.to_thread.run_sync(fn, conn, limiter=self._limiter)
        except sqlite3.Error as exc:
            hint = (
                "another process holds the write lock; raise busy_timeout_s or retry"
                if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
                else "check that the file is an agentflow journal on a writable local disk"
            )
            raise RuntimeFailure(f"journal {str(self.path)!r} failed: {exc}; {hint}") from exc

    @contextmanager
    def _write(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- Journal ----------------------------------------------------------------------------------
    async def claim_run(
        self,
        run_id: str,
        *,
        workflow: str | None,
        inputs: str | None,
        state_type: str | None = None,
        state: str | None = None,
    ) -> tuple[RunRecord, list[StepRecord], bool]:
        """Create the run, or take over an existing one (see ``Journal.claim_run``)."""
        if run_id in self._active:
            raise ResumeError(f"run {run_id!r} is already running in this process; wait for it to finish")
        host, pid = socket.gethostname(), os.getpid()

        def claim(conn: sqlite3.Connection) -> tuple[RunRecord, list[StepRecord], bool]:
            with self._write(conn):
                row = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
                now = time.time()
                if row is None:
                    conn.execute(
                        "INSERT INTO runs (run_id, status, workflow, inputs, state_type, state, owner_host, "
                        "owner_pid, created_at, updated_at) VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?)",
                        (run_id, workflow, inputs, state_type, state, host, pid, now, now),
                    )
                    record = RunRecord(
                        run_id=run_id,
                        status="running",
                        workflow=workflow,
                        inputs=inputs,
                        state_type=state_type,
                        state=state,
                        owner_host=host,
                        owner_pid=pid,
                        created_at=now,
                        updated_at=now,
                    )
                    return record, [], True
                record = _run_record(row)
                if (
                    record.status == "running"
                    and record.owner_host == host
                    and record.owner_pid not in (None, pid)
                    and _pid_alive(record.owner_pid or 0)
                ):
                    raise ResumeError(
                        f"run {run_id!r} is being run by process {record.owner_pid} on this host; wait for it "
                        "to finish (or stop that process) before resuming"
                    )
                conn.execute(
                    "UPDATE runs SET status = 'running', owner_host = ?, owner_pid = ?, updated_at = ? "
                    "WHERE run_id = ?",
                    (host, pid, now, run_id),
                )
                return record, _steps(conn, run_id), False

        claimed = await self._call(claim)
        self._active.add(run_id)
        return claimed

    async def put_step(self, record: StepRecord) -> None:
        """Insert or replace one step row (one transaction; its state stored once per content)."""

        def put(conn: sqlite3.Connection) -> None:
            digest = None
            with self._write(conn):
                if record.state is not None:
                    digest = hashlib.sha256(record.state.encode()).hexdigest()
                    conn.execute(
                        "INSERT OR IGNORE INTO states (hash, json) VALUES (?, ?)", (digest, record.state)
                    )
                conn.execute(
                    f"INSERT OR REPLACE INTO steps ({_STEP_COLUMNS}) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        record.run_id,
                        record.path,
                        record.identity,
                        record.scope,
                        record.ordinal,
                        int(record.idempotent),
                        record.status,
                        record.value,
                        record.kind,
                        digest,
                        record.prompt,
                        record.answer_schema,
                        record.attempts,
                        record.created_at,
                        record.updated_at,
                    ),
                )

        await self._call(put)

    async def finish_run(
        self, run_id: str, status: RunStatus, *, result: str | None = None, error: str | None = None
    ) -> None:
        """Set the run's status (``completed``, ``failed``, ``suspended``) and release it."""

        def finish(conn: sqlite3.Connection) -> None:
            with self._write(conn):
                conn.execute(
                    "UPDATE runs SET status = ?, result = ?, error = ?, owner_pid = NULL, updated_at = ? "
                    "WHERE run_id = ?",
                    (status, result, error, time.time(), run_id),
                )

        try:
            await self._call(finish)
        finally:
            self._active.discard(run_id)

    async def get_run(self, run_id: str) -> RunRecord | None:
        """One run, or ``None``."""

        def get(conn: sqlite3.Connection) -> RunRecord | None:
            row = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
            return None if row is None else _run_record(row)

        return await self._call(get)

    async def list_runs(
        self, *, status: RunStatus | None = None, limit: int | None = None
    ) -> list[RunRecord]:
        """Runs, most recently updated first."""

        def list_(conn: sqlite3.Connection) -> list[RunRecord]:
            sql = f"SELECT {_RUN_COLUMNS} FROM runs"
            args: list[object] = []
            if status is not None:
                sql += " WHERE status = ?"
                args.append(status)
            sql += " ORDER BY updated_at DESC"
            if limit is not None:
                sql += " LIMIT ?"
                args.append(limit)
            return [_run_record(r) for r in conn.execute(sql, args).fetchall()]

        return await self._call(list_)

    async def get_steps(self, run_id: str) -> list[StepRecord]:
        """A run's steps in the order they first began."""
        return await self._call(lambda conn: _steps(conn, run_id))

    async def delete_runs(self, *, updated_before: float, statuses: tuple[RunStatus, ...]) -> list[str]:
        """Delete old runs with the given statuses, their steps, and unreferenced states. A run that a
        live process on this host is running is never deleted."""

        def delete(conn: sqlite3.Connection) -> list[str]:
            marks = ", ".join("?" for _ in statuses)
            with self._write(conn):
                host = socket.gethostname()
                ids = [
                    run_id
                    for run_id, status, owner_host, owner_pid in conn.execute(
                        "SELECT run_id, status, owner_host, owner_pid FROM runs "
                        f"WHERE updated_at < ? AND status IN ({marks})",
                        (updated_before, *statuses),
                    ).fetchall()
                    if run_id not in self._active
                    and not (
                        status == "running"
                        and owner_host == host
                        and owner_pid is not None
                        and owner_pid != os.getpid()
                        and _pid_alive(owner_pid)
                    )
                ]
                conn.executemany("DELETE FROM steps WHERE run_id = ?", [(i,) for i in ids])
                conn.executemany("DELETE FROM runs WHERE run_id = ?", [(i,) for i in ids])
                conn.execute(
                    "DELETE FROM states WHERE hash NOT IN "
                    "(SELECT state_hash FROM steps WHERE state_hash IS NOT NULL)"
                )
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            return ids

        return await self._call(delete)

    async def aclose(self) -> None:
        """Close the connection (idempotent)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(conn.close, limiter=self._limiter)

    @property
    def location(self) -> str:
        """The database file (what ``--journal`` takes)."""
        return str(self.path)

    def __repr__(self) -> str:
        return f"SqliteJournal({str(self.path)!r})"


def _run_record(row: tuple[object, ...]) -> RunRecord:
    return RunRecord.model_validate(dict(zip(_RUN_KEYS, row, strict=True)))


def _steps(conn: sqlite3.Connection, run_id: str) -> list[StepRecord]:
    rows = conn.execute(
        "SELECT s.run_id, s.path, s.identity, s.scope, s.ordinal, s.idempotent, s.status, s.value, s.kind, "
        "st.json, s.prompt, s.answer_schema, s.attempts, s.created_at, s.updated_at "
        "FROM steps s LEFT JOIN states st ON st.hash = s.state_hash WHERE s.run_id = ? "
        "ORDER BY s.created_at, s.rowid",
        (run_id,),
    ).fetchall()
    keys = (
        "run_id",
        "path",
        "identity",
        "scope",
        "ordinal",
        "idempotent",
        "status",
        "value",
        "kind",
        "state",
        "prompt",
        "answer_schema",
        "attempts",
        "created_at",
        "updated_at",
    )
    return [StepRecord.model_validate(dict(zip(keys, r, strict=True))) for r in rows]
