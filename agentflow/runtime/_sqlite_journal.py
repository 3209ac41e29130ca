"""``SqliteJournal``: the default ``Journal``, one SQLite file in WAL mode.

Durability:

* ``journal_mode=WAL`` and one ``BEGIN IMMEDIATE`` transaction per write: a process killed at any
  instant (SIGKILL included) leaves every acknowledged write in the file and no half-written one.
* ``synchronous=FULL`` by default: every commit is fsynced, so a begun row of a non-idempotent step
  also survives power loss (the exactly-once guarantee rests on it). ``"NORMAL"`` survives process
  crashes only and is faster on slow disks.

What a file must be. A journal is created whole: the schema is written to a temporary file next to
the path, which is then hard-linked into place, so no process ever sees a half-made journal (and six
threads or processes opening a new journal at once all end up with the same one). An existing file is
used only if it is an agentflow journal: marked by ``PRAGMA application_id`` (or, from before the mark,
holding the ``runs``, ``steps`` and ``states`` tables) with every table and column present. A file of
zero bytes, a file that is not SQLite, another program's database or a journal with a dropped table is
refused with a ``JournalError`` naming the file and what is wrong: silently starting a new journal there
would run finished side effects again. The schema version is ``PRAGMA user_version``; older journals are
migrated forward in one transaction on open.

Storage stays bounded: states are stored once per distinct content (a step that leaves the state
unchanged adds a 64-character reference, not another copy), each attempt's trace is capped at
``max_trace_bytes``, and ``delete_runs`` (``agentflow runs gc``) drops old runs with their traces and the
states nothing references any more.

All SQLite calls run in anyio worker threads under a one-slot ``CapacityLimiter``: one connection,
never used by two threads at once. Across processes, SQLite's locks serialize writers; leases (see
``agentflow.runtime._journal``) are decided inside the ``BEGIN IMMEDIATE`` transaction of each write.
"""

from __future__ import annotations

import hashlib
import os
import socket
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Literal, TypeVar

import anyio
import anyio.to_thread

from agentflow._sqlite import sqlite_hint
from agentflow.errors import ConfigError, JournalError

from ._journal import (
    DEFAULT_LEASE_S,
    DEFAULT_MAX_TRACE_BYTES,
    RUN_KEYS,
    TRACE_KEYS,
    Claim,
    Journal,
    Lease,
    LeaseRow,
    RunRecord,
    RunStatus,
    StepRecord,
    TraceRecord,
    check_trace_cap,
    check_writer,
    decode_row,
    decode_steps,
    lease_refusal,
    new_lease_token,
    new_run_record,
)

__all__ = ["SqliteJournal"]

T = TypeVar("T")

APPLICATION_ID = 0x4146_4A4C
"""``PRAGMA application_id`` of an agentflow journal ("AFJL")."""

SCHEMA_VERSION = 3
"""``PRAGMA user_version`` of a current journal. 1: runs, steps, states. 2: run leases. 3: attempts and
traces."""

_V1 = """
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

_MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: (
        "ALTER TABLE runs ADD COLUMN lease_token TEXT",
        "ALTER TABLE runs ADD COLUMN lease_expires REAL",
    ),
    3: (
        "ALTER TABLE runs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1",
        """CREATE TABLE traces (
            run_id TEXT NOT NULL,
            attempt INTEGER NOT NULL,
            status TEXT NOT NULL,
            name TEXT NOT NULL,
            engine TEXT NOT NULL,
            format INTEGER NOT NULL,
            events TEXT NOT NULL,
            count INTEGER NOT NULL,
            dropped INTEGER NOT NULL,
            started REAL NOT NULL,
            finished REAL NOT NULL,
            PRIMARY KEY (run_id, attempt)
        )""",
    ),
}
"""Statements that take a journal from version ``n - 1`` to ``n`` (they only add)."""

_RUN_COLUMNS = ", ".join(RUN_KEYS)

_STEP_COLUMNS = (
    "run_id, path, identity, scope, ordinal, idempotent, status, value, kind, state_hash, prompt, "
    "answer_schema, attempts, created_at, updated_at"
)

_TRACE_COLUMNS = ", ".join(TRACE_KEYS)

_TABLES: dict[str, frozenset[str]] = {
    "runs": frozenset((*RUN_KEYS, "lease_token")),
    "steps": frozenset(_STEP_COLUMNS.split(", ")),
    "states": frozenset(("hash", "json")),
    "traces": frozenset(TRACE_KEYS),
}
"""Every table of a current journal and its columns (checked on open)."""

_TABLE_SINCE: dict[str, int] = {"traces": 3}
"""The schema version that added a table (the others are there since version 1)."""


class SqliteJournal(Journal):
    """A ``Journal`` in one SQLite file (created if missing; an existing file must be a journal).

    Args:
        path: The database file. ``":memory:"`` is refused: a journal that dies with the process
            cannot resume anything.
        synchronous: ``"FULL"`` (survives power loss) or ``"NORMAL"`` (survives process crashes).
        busy_timeout_s: How long a writer waits for another process's write lock.
        lease_s: How long a run's lease lasts without renewal (see ``Journal``).
        max_trace_bytes: Most bytes of events one attempt's stored trace holds (see ``Journal``).

    Raises:
        JournalError: the file is empty, not SQLite, not a journal, or damaged (the message says which
            and how to fix it).

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
        lease_s: float = DEFAULT_LEASE_S,
        max_trace_bytes: int = DEFAULT_MAX_TRACE_BYTES,
    ) -> None:
        if str(path) == ":memory:":
            raise ConfigError("SqliteJournal needs a file path, not ':memory:'; pass e.g. 'runs.db'")
        if synchronous not in ("FULL", "NORMAL"):
            raise ConfigError(f"synchronous must be 'FULL' or 'NORMAL', got {synchronous!r}")
        if not lease_s > 0:
            raise ConfigError(f"lease_s must be a positive number of seconds, got {lease_s!r}")
        self.max_trace_bytes = check_trace_cap(max_trace_bytes)
        self.path = Path(path)
        self.lease_s = float(lease_s)
        self._busy_timeout_s = busy_timeout_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The one connection; used only under _limiter (one thread at a time); closed by aclose.
        self._conn: sqlite3.Connection | None = self._open(synchronous)
        self._limiter = anyio.CapacityLimiter(1)

    # -- opening ----------------------------------------------------------------------------------
    def _open(self, synchronous: str) -> sqlite3.Connection:
        if not self.path.exists():
            self._create()
        name = str(self.path)
        try:
            size = self.path.stat().st_size
        except OSError as exc:
            raise JournalError(f"cannot open journal {name!r}: {exc.strerror}") from exc
        if size == 0:
            raise JournalError(
                f"journal {name!r} is an empty file (0 bytes), not a journal: a journal that held runs "
                "was truncated, or the file was made by something else. Restore it from a backup, or "
                "delete it to start a new journal (finished side effects are then not known any more)"
            )
        try:
            conn = sqlite3.connect(
                self.path, timeout=self._busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise JournalError(f"cannot open journal {name!r}: {exc}; pass a readable journal file") from exc
        try:
            self._check_and_migrate(conn)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={synchronous}")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise JournalError(
                f"{name!r} is not an agentflow journal ({exc}); pass the path of a journal file, or a new "
                "path to start one"
            ) from exc
        except BaseException:
            conn.close()
            raise
        return conn

    def _create(self) -> None:
        """Write a new, complete journal to a temporary file and link it into place (atomic)."""
        tmp = self.path.with_name(f".{self.path.name}.{uuid.uuid4().hex}.new")
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                conn.executescript(_V1 + ";".join(s for v in sorted(_MIGRATIONS) for s in _MIGRATIONS[v]))
            finally:
                conn.close()
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass  # another thread or process created it first: use theirs
            except OSError:  # no hard links on this file system: rename unless it appeared meanwhile
                if not self.path.exists():
                    os.replace(tmp, self.path)
        except (OSError, sqlite3.Error) as exc:
            raise JournalError(
                f"cannot create journal {str(self.path)!r}: {exc}; pass a writable path on a local disk"
            ) from exc
        finally:
            for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
                with suppress(FileNotFoundError):
                    leftover.unlink()

    def _check_and_migrate(self, conn: sqlite3.Connection) -> None:
        """Refuse a file that is not a journal or is damaged; migrate an older journal forward."""
        name = str(self.path)
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        legacy = app_id == 0 and {"runs", "steps"} <= tables
        if app_id != APPLICATION_ID and not legacy:
            found = ", ".join(sorted(tables)) or "no tables"
            raise JournalError(
                f"{name!r} is a SQLite database but not an agentflow journal (application id {app_id}, "
                f"{found}); pass the path of a journal file, or a new path to start one"
            )
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise JournalError(
                f"journal {name!r} has schema version {version}, newer than this agentflow's "
                f"{SCHEMA_VERSION}; upgrade agentflow to use it"
            )
        had = max(1, version)  # a legacy journal (no version) has the version-1 tables
        missing_tables = sorted(t for t in set(_TABLES) - tables if _TABLE_SINCE.get(t, 1) <= had)
        if missing_tables:
            raise JournalError(
                f"journal {name!r} is damaged: table {missing_tables[0]!r} is missing (tables present: "
                f"{', '.join(sorted(tables))}); restore the journal from a backup. Nothing was changed"
            )
        if version < SCHEMA_VERSION or app_id != APPLICATION_ID:
            self._migrate(conn)
        for table, wanted in _TABLES.items():
            have = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
            if not wanted <= have:
                raise JournalError(
                    f"journal {name!r} is damaged: table {table!r} lacks column(s) "
                    f"{', '.join(sorted(wanted - have))}; restore the journal from a backup"
                )

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = max(1, conn.execute("PRAGMA user_version").fetchone()[0])
            for target in sorted(v for v in _MIGRATIONS if v > version):
                for statement in _MIGRATIONS[target]:
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            conn.execute(f"PRAGMA application_id={APPLICATION_ID}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- plumbing ---------------------------------------------------------------------------------
    async def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        conn = self._conn
        if conn is None:
            raise ConfigError(f"journal {str(self.path)!r} is closed; open a new SqliteJournal")
        try:
            return await anyio.to_thread.run_sync(fn, conn, limiter=self._limiter)
        except sqlite3.Error as exc:
            hint = sqlite_hint(exc, "an agentflow journal")
            raise JournalError(f"journal {str(self.path)!r} failed: {exc}; {hint}") from exc

    @contextmanager
    def _write(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _lease_row(self, conn: sqlite3.Connection, run_id: str) -> LeaseRow | None:
        row = conn.execute(
            "SELECT status, lease_token, owner_host, owner_pid, lease_expires FROM runs WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            return None
        status, token, host, pid, expires = row
        if not (pid is None or isinstance(pid, int)) or not (
            expires is None or isinstance(expires, int | float)
        ):
            bad = (
                ("owner_pid", pid)
                if not (pid is None or isinstance(pid, int))
                else ("lease_expires", expires)
            )
            raise JournalError(
                f"journal {str(self.path)!r}: run {run_id!r} has {bad[0]}={bad[1]!r}, not a number (the "
                "row was damaged or edited by hand); restore the journal from a backup, or set the column "
                "to NULL"
            )
        return LeaseRow(str(status), token, host, pid, float(expires) if expires is not None else None)

    def _check_writer(self, conn: sqlite3.Connection, run_id: str, lease: Lease | None) -> None:
        """Inside a write transaction: refuse a write whose lease was taken over, or an operator's write
        while a live holder runs the run."""
        check_writer(run_id, self._lease_row(conn, run_id), lease, time.time)

    # -- Journal ----------------------------------------------------------------------------------
    async def claim_run(
        self,
        run_id: str,
        *,
        workflow: str | None,
        inputs: str | None,
        state_type: str | None = None,
        state: str | None = None,
    ) -> Claim:
        """Create the run, or take over an existing one whose lease is free (see ``Journal.claim_run``)."""
        host, pid = socket.gethostname(), os.getpid()
        token = new_lease_token()
        lease_s = self.lease_s

        def claim(conn: sqlite3.Connection) -> Claim:
            with self._write(conn):
                now = time.time()
                lease = Lease(run_id, token, host, pid, now + lease_s, lease_s)
                lease_row = self._lease_row(conn, run_id)
                if lease_row is None:
                    conn.execute(
                        "INSERT INTO runs (run_id, status, workflow, inputs, state_type, state, owner_host, "
                        "owner_pid, lease_token, lease_expires, attempts, created_at, updated_at) "
                        "VALUES (?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, 1, ?, ?)",
                        (
                            run_id,
                            workflow,
                            inputs,
                            state_type,
                            state,
                            host,
                            pid,
                            token,
                            lease.expires_at,
                            now,
                            now,
                        ),
                    )
                    record = new_run_record(
                        lease, workflow=workflow, inputs=inputs, state_type=state_type, state=state, now=now
                    )
                    return Claim(record, [], True, lease)
                refusal = lease_refusal(run_id, lease_row, now)
                if refusal is not None:
                    raise refusal
                stored = self._get(conn, run_id)
                assert stored is not None  # the lease row above was read in this transaction
                conn.execute(
                    "UPDATE runs SET status = 'running', owner_host = ?, owner_pid = ?, lease_token = ?, "
                    "lease_expires = ?, attempts = attempts + 1, updated_at = ? WHERE run_id = ?",
                    (host, pid, token, lease.expires_at, now, run_id),
                )
                return Claim(stored, self._steps(conn, run_id), False, lease, stored.attempts + 1)

        return await self._call(claim)

    async def renew_lease(self, lease: Lease) -> Lease | None:
        """Extend the lease by ``lease.lease_s``; ``None`` when another holder took the run over."""

        def renew(conn: sqlite3.Connection) -> Lease | None:
            with self._write(conn):
                expires = time.time() + lease.lease_s
                cur = conn.execute(
                    "UPDATE runs SET lease_expires = ? WHERE run_id = ? AND lease_token = ?",
                    (expires, lease.run_id, lease.token),
                )
                if cur.rowcount == 0:
                    return None
            return Lease(lease.run_id, lease.token, lease.host, lease.pid, expires, lease.lease_s)

        return await self._call(renew)

    async def put_step(self, record: StepRecord, *, lease: Lease | None = None) -> None:
        """Insert or replace one step row (one transaction, fenced by ``lease``; its state stored once per
        content)."""

        def put(conn: sqlite3.Connection) -> None:
            digest = None
            with self._write(conn):
                self._check_writer(conn, record.run_id, lease)
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
        self,
        run_id: str,
        status: RunStatus,
        *,
        lease: Lease,
        result: str | None = None,
        error: str | None = None,
        trace: TraceRecord | None = None,
    ) -> None:
        """Set the run's status (``completed``, ``failed``, ``suspended``), store the attempt's trace and
        release the lease."""
        marks = ", ".join("?" for _ in TRACE_KEYS)

        def finish(conn: sqlite3.Connection) -> None:
            with self._write(conn):
                self._check_writer(conn, run_id, lease)
                conn.execute(
                    "UPDATE runs SET status = ?, result = ?, error = ?, owner_pid = NULL, lease_token = NULL, "
                    "lease_expires = NULL, updated_at = ? WHERE run_id = ?",
                    (status, result, error, time.time(), run_id),
                )
                if trace is not None:
                    conn.execute(
                        f"INSERT OR REPLACE INTO traces ({_TRACE_COLUMNS}) VALUES ({marks})",
                        tuple(getattr(trace, k) for k in TRACE_KEYS),
                    )

        await self._call(finish)

    async def get_run(self, run_id: str) -> RunRecord | None:
        """One run, or ``None``."""
        return await self._call(lambda conn: self._get(conn, run_id))

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
            return [self._run_record(r) for r in conn.execute(sql, args).fetchall()]

        return await self._call(list_)

    async def get_steps(self, run_id: str) -> list[StepRecord]:
        """A run's steps in the order they first began."""
        return await self._call(lambda conn: self._steps(conn, run_id))

    async def get_traces(self, run_id: str) -> list[TraceRecord]:
        """A run's stored traces, oldest attempt first."""

        def traces(conn: sqlite3.Connection) -> list[TraceRecord]:
            rows = conn.execute(
                f"SELECT {_TRACE_COLUMNS} FROM traces WHERE run_id = ? ORDER BY attempt", (run_id,)
            ).fetchall()
            return [
                decode_row(
                    TraceRecord,
                    dict(zip(TRACE_KEYS, r, strict=True)),
                    f"trace row ({r[0]!r}, attempt {r[1]!r})",
                    str(self.path),
                )
                for r in rows
            ]

        return await self._call(traces)

    async def delete_runs(self, *, updated_before: float, statuses: tuple[RunStatus, ...]) -> list[str]:
        """Delete old runs with the given statuses, their steps, and unreferenced states. A run whose
        lease a live holder holds is never deleted."""

        def delete(conn: sqlite3.Connection) -> list[str]:
            marks = ", ".join("?" for _ in statuses)
            with self._write(conn):
                now = time.time()
                candidates = [
                    r[0]
                    for r in conn.execute(
                        f"SELECT run_id FROM runs WHERE updated_at < ? AND status IN ({marks})",
                        (updated_before, *statuses),
                    ).fetchall()
                ]
                ids = []
                for run_id in candidates:
                    row = self._lease_row(conn, run_id)
                    if row is not None and lease_refusal(run_id, row, now) is None:
                        ids.append(run_id)
                conn.executemany("DELETE FROM steps WHERE run_id = ?", [(i,) for i in ids])
                conn.executemany("DELETE FROM traces WHERE run_id = ?", [(i,) for i in ids])
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

    # -- rows -------------------------------------------------------------------------------------
    def _get(self, conn: sqlite3.Connection, run_id: str) -> RunRecord | None:
        row = conn.execute(f"SELECT {_RUN_COLUMNS} FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else self._run_record(row)

    def _run_record(self, row: tuple[object, ...]) -> RunRecord:
        return decode_row(RunRecord, dict(zip(RUN_KEYS, row, strict=True)), f"run {row[0]!r}", str(self.path))

    def _steps(self, conn: sqlite3.Connection, run_id: str) -> list[StepRecord]:
        rows = conn.execute(
            "SELECT s.run_id, s.path, s.identity, s.scope, s.ordinal, s.idempotent, s.status, s.value, "
            "s.kind, st.json, s.prompt, s.answer_schema, s.attempts, s.created_at, s.updated_at, "
            "s.state_hash FROM steps s LEFT JOIN states st ON st.hash = s.state_hash WHERE s.run_id = ? "
            "ORDER BY s.created_at, s.rowid",
            (run_id,),
        ).fetchall()
        return decode_steps(rows, self.location)
