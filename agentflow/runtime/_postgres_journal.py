"""``PostgresJournal``: the ``Journal`` on PostgreSQL, for runs served by several processes and machines.

The same guarantees as ``SqliteJournal``: one transaction per write, committed (and so durable under
the server's own ``synchronous_commit``) when the method returns; exactly-once effects, divergence
detection, interrupts and answers come from ``RunJournal`` unchanged. Leases make several processes on
several machines safe to point at the same runs: every write locks its run's row (``SELECT ... FOR
UPDATE``) and decides on the lease inside that transaction, with the *server's* clock for expiry, so
clocks that disagree between machines cannot give two holders the same run. A dead holder's run is
taken over when its lease expires (at once when the holder was a process of this host that is gone).
A holder stopped in the middle of a transaction (SIGSTOP, a paused VM) cannot keep the run's row
locked: the server ends a session idle in a transaction for a quarter of ``lease_s`` (at least 1 s;
``idle_in_transaction_session_timeout``), releasing its locks and rolling its write back. Each of the
stopped holder's connections can hold the row that long in turn, so a takeover waits at most about
``lease_s * (1 + max_connections / 4)``.

Schema. Tables live in a PostgreSQL schema (``agentflow`` by default): ``runs``, ``steps``, ``states``
(states stored once per content, as in SQLite), ``traces`` (one per attempt, capped at
``max_trace_bytes``) and ``journal_version``. They are created on first use
and migrated forward under a transaction-scoped advisory lock, so many processes starting at once
create them once. Garbage collection (``delete_runs``) takes the same advisory lock exclusively while
step writes take it shared, so a state being written is never collected.

    journal = PostgresJournal("postgresql://app@db.internal/agentflow?password_secret=PG_PASSWORD")
    await agentflow.run(workflow, inputs, run_id="order-17", journal=journal)

Anywhere a journal path is accepted, a ``postgresql://`` URL selects this journal (``journal=...``,
``--journal``, ``$AGENTFLOW_JOURNAL``).
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from agentflow._postgres import PgPool
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

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresJournal"]

T = TypeVar("T")

SCHEMA_VERSION = 2
"""The journal's schema version on PostgreSQL (its own history; it starts with leases). 2: attempts and
traces."""

_LOCK_KEY = 0x4146_4A4C
"""The advisory lock that serializes migrations, and garbage collection against step writes."""


_MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE {s}.runs (
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
        lease_token TEXT,
        lease_expires DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX runs_by_update ON {s}.runs (updated_at);
    CREATE TABLE {s}.steps (
        run_id TEXT NOT NULL,
        path TEXT NOT NULL,
        identity TEXT NOT NULL,
        scope TEXT NOT NULL,
        ordinal INTEGER NOT NULL,
        idempotent BOOLEAN NOT NULL,
        status TEXT NOT NULL,
        value TEXT,
        kind TEXT,
        state_hash TEXT,
        prompt TEXT,
        answer_schema TEXT,
        attempts INTEGER NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        seq BIGSERIAL,
        PRIMARY KEY (run_id, path)
    );
    CREATE TABLE {s}.states (hash TEXT PRIMARY KEY, json TEXT NOT NULL);
    """,
    2: """
    ALTER TABLE {s}.runs ADD COLUMN attempts INTEGER NOT NULL DEFAULT 1;
    CREATE TABLE {s}.traces (
        run_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        status TEXT NOT NULL,
        name TEXT NOT NULL,
        engine TEXT NOT NULL,
        format INTEGER NOT NULL,
        events TEXT NOT NULL,
        count INTEGER NOT NULL,
        dropped INTEGER NOT NULL,
        started DOUBLE PRECISION NOT NULL,
        finished DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (run_id, attempt)
    );
    """,
}
"""SQL that takes the schema from version ``n - 1`` to ``n`` (``{s}``: the schema name)."""

_SERVER_NOW = "SELECT EXTRACT(EPOCH FROM clock_timestamp())::float8"


class PostgresJournal(Journal):
    """A ``Journal`` in a PostgreSQL database.

    Args:
        url: ``postgresql://user@host:port/database`` (``?password_secret=NAME`` takes the password
            from ``secret(NAME)``; see ``agentflow._postgres``).
        schema: The PostgreSQL schema holding the tables (created if missing); default: the URL's
            ``?schema=NAME``, else ``agentflow``.
        lease_s: How long a run's lease lasts without renewal (see ``Journal``).
        max_trace_bytes: Most bytes of events one attempt's stored trace holds (see ``Journal``).
        max_connections: Most connections used at once.
        connect_timeout_s: How long to wait for the server before a ``JournalError``.

    Raises:
        ConfigError: a bad URL or schema name, or psycopg is not installed.
    """

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        lease_s: float = DEFAULT_LEASE_S,
        max_trace_bytes: int = DEFAULT_MAX_TRACE_BYTES,
        max_connections: int = 4,
        connect_timeout_s: float = 10.0,
    ) -> None:
        if not lease_s > 0:
            raise ConfigError(f"lease_s must be a positive number of seconds, got {lease_s!r}")
        self.lease_s = float(lease_s)
        self.max_trace_bytes = check_trace_cap(max_trace_bytes)
        self._pool = PgPool(
            url,
            what="journal",
            error=JournalError,
            max_size=max_connections,
            connect_timeout_s=connect_timeout_s,
            # A holder stopped inside a transaction (SIGSTOP, a paused VM) would keep its run's row
            # locked past its lease; the server ends such a session once it idles that long.
            settings={"idle_in_transaction_session_timeout": str(max(1000, round(self.lease_s * 250)))},
        )
        self.schema = schema or self._pool.options.get("schema", "agentflow")
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", self.schema):
            raise ConfigError(f"schema {self.schema!r} must be a lower-case identifier such as 'agentflow'")
        self._ready = False  # the schema is known to exist at the current version

    # -- plumbing ---------------------------------------------------------------------------------
    def _sql(self, text: str) -> str:
        return text.replace("{s}", self.schema)

    async def _run(self, fn: Callable[[psycopg.Connection[tuple[object, ...]]], T], what: str) -> T:
        if not self._ready:
            await self._pool.call(self._migrate, f"creating or migrating the journal schema {self.schema!r}")
            self._ready = True
        return await self._pool.call(fn, what)

    def _migrate(self, conn: psycopg.Connection[tuple[object, ...]]) -> None:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            conn.execute(self._sql("CREATE SCHEMA IF NOT EXISTS {s}"))
            conn.execute(
                self._sql("CREATE TABLE IF NOT EXISTS {s}.journal_version (version INTEGER NOT NULL)")
            )
            row = conn.execute(self._sql("SELECT MAX(version) FROM {s}.journal_version")).fetchone()
            version = int(row[0]) if row is not None and isinstance(row[0], int) else 0
            if version > SCHEMA_VERSION:
                raise JournalError(
                    f"the journal at {self.location!r} (schema {self.schema!r}) has version {version}, newer "
                    f"than this agentflow's {SCHEMA_VERSION}; upgrade agentflow to use it"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in self._sql(_MIGRATIONS[target]).split(";"):
                    if statement.strip():
                        conn.execute(statement.encode())
                conn.execute(self._sql("INSERT INTO {s}.journal_version (version) VALUES (%s)"), (target,))

    def _lease_row(self, conn: psycopg.Connection[tuple[object, ...]], run_id: str) -> LeaseRow | None:
        row = conn.execute(
            self._sql(
                "SELECT status, lease_token, owner_host, owner_pid, lease_expires FROM {s}.runs "
                "WHERE run_id = %s FOR UPDATE"
            ),
            (run_id,),
        ).fetchone()
        if row is None:
            return None
        status, token, host, pid, expires = row
        return LeaseRow(
            str(status),
            token if isinstance(token, str) else None,
            host if isinstance(host, str) else None,
            pid if isinstance(pid, int) else None,
            float(expires) if isinstance(expires, int | float) else None,
        )

    def _now(self, conn: psycopg.Connection[tuple[object, ...]]) -> float:
        row = conn.execute(_SERVER_NOW).fetchone()
        assert row is not None and isinstance(row[0], float)
        return row[0]

    def _check_writer(
        self, conn: psycopg.Connection[tuple[object, ...]], run_id: str, lease: Lease | None
    ) -> None:
        check_writer(run_id, self._lease_row(conn, run_id), lease, lambda: self._now(conn))

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

        def claim(conn: psycopg.Connection[tuple[object, ...]]) -> Claim:
            with conn.transaction():
                now, wall = self._now(conn), time.time()
                lease = Lease(run_id, token, host, pid, now + lease_s, lease_s)
                inserted = conn.execute(
                    self._sql(
                        "INSERT INTO {s}.runs (run_id, status, workflow, inputs, state_type, state, owner_host, "
                        "owner_pid, lease_token, lease_expires, attempts, created_at, updated_at) "
                        "VALUES (%s, 'running', %s, %s, %s, %s, %s, %s, %s, %s, 1, %s, %s) ON CONFLICT DO NOTHING"
                    ),
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
                        wall,
                        wall,
                    ),
                ).rowcount
                if inserted == 1:
                    record = new_run_record(
                        lease, workflow=workflow, inputs=inputs, state_type=state_type, state=state, now=wall
                    )
                    return Claim(record, [], True, lease)
                lease_row = self._lease_row(conn, run_id)
                assert lease_row is not None  # the insert conflicted with it, and runs are deleted only by gc
                refusal = lease_refusal(run_id, lease_row, now)
                if refusal is not None:
                    raise refusal
                stored = self._get(conn, run_id)
                assert stored is not None
                conn.execute(
                    self._sql(
                        "UPDATE {s}.runs SET status = 'running', owner_host = %s, owner_pid = %s, lease_token = %s, "
                        "lease_expires = %s, attempts = attempts + 1, updated_at = %s WHERE run_id = %s"
                    ),
                    (host, pid, token, lease.expires_at, wall, run_id),
                )
                return Claim(stored, self._steps(conn, run_id), False, lease, stored.attempts + 1)

        return await self._run(claim, f"claiming run {run_id!r}")

    async def renew_lease(self, lease: Lease) -> Lease | None:
        """Extend the lease by ``lease.lease_s`` (server clock); ``None`` when another holder took over."""

        def renew(conn: psycopg.Connection[tuple[object, ...]]) -> Lease | None:
            with conn.transaction():
                row = conn.execute(
                    self._sql(
                        "UPDATE {s}.runs SET lease_expires = EXTRACT(EPOCH FROM clock_timestamp())::float8 + %s "
                        "WHERE run_id = %s AND lease_token = %s RETURNING lease_expires"
                    ),
                    (lease.lease_s, lease.run_id, lease.token),
                ).fetchone()
            if row is None or not isinstance(row[0], float):
                return None
            return Lease(lease.run_id, lease.token, lease.host, lease.pid, row[0], lease.lease_s)

        return await self._run(renew, f"renewing the lease of run {lease.run_id!r}")

    async def put_step(self, record: StepRecord, *, lease: Lease | None = None) -> None:
        """Insert or replace one step row (one transaction, fenced by ``lease``)."""

        def put(conn: psycopg.Connection[tuple[object, ...]]) -> None:
            digest = None
            with conn.transaction():
                self._check_writer(conn, record.run_id, lease)
                conn.execute("SELECT pg_advisory_xact_lock_shared(%s)", (_LOCK_KEY,))
                if record.state is not None:
                    digest = hashlib.sha256(record.state.encode()).hexdigest()
                    conn.execute(
                        self._sql(
                            "INSERT INTO {s}.states (hash, json) VALUES (%s, %s) ON CONFLICT DO NOTHING"
                        ),
                        (digest, record.state),
                    )
                conn.execute(
                    self._sql(
                        "INSERT INTO {s}.steps (run_id, path, identity, scope, ordinal, idempotent, status, value, "
                        "kind, state_hash, prompt, answer_schema, attempts, created_at, updated_at) "
                        "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s) "
                        "ON CONFLICT (run_id, path) DO UPDATE SET identity = EXCLUDED.identity, "
                        "scope = EXCLUDED.scope, ordinal = EXCLUDED.ordinal, idempotent = EXCLUDED.idempotent, "
                        "status = EXCLUDED.status, value = EXCLUDED.value, kind = EXCLUDED.kind, "
                        "state_hash = EXCLUDED.state_hash, prompt = EXCLUDED.prompt, "
                        "answer_schema = EXCLUDED.answer_schema, attempts = EXCLUDED.attempts, "
                        "created_at = EXCLUDED.created_at, updated_at = EXCLUDED.updated_at"
                    ),
                    (
                        record.run_id,
                        record.path,
                        record.identity,
                        record.scope,
                        record.ordinal,
                        record.idempotent,
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

        await self._run(put, f"writing step {record.path!r} of run {record.run_id!r}")

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
        """Set the run's status, store the attempt's trace and release the lease (fenced by it)."""
        columns = ", ".join(TRACE_KEYS)
        marks = ", ".join("%s" for _ in TRACE_KEYS)
        updates = ", ".join(f"{k} = EXCLUDED.{k}" for k in TRACE_KEYS if k not in ("run_id", "attempt"))

        def finish(conn: psycopg.Connection[tuple[object, ...]]) -> None:
            with conn.transaction():
                self._check_writer(conn, run_id, lease)
                conn.execute(
                    self._sql(
                        "UPDATE {s}.runs SET status = %s, result = %s, error = %s, owner_pid = NULL, "
                        "lease_token = NULL, lease_expires = NULL, updated_at = %s WHERE run_id = %s"
                    ),
                    (status, result, error, time.time(), run_id),
                )
                if trace is not None:
                    conn.execute(
                        self._sql(
                            f"INSERT INTO {{s}}.traces ({columns}) VALUES ({marks}) "
                            f"ON CONFLICT (run_id, attempt) DO UPDATE SET {updates}"
                        ).encode(),
                        tuple(getattr(trace, k) for k in TRACE_KEYS),
                    )

        await self._run(finish, f"finishing run {run_id!r}")

    async def get_run(self, run_id: str) -> RunRecord | None:
        """One run, or ``None``."""
        return await self._run(lambda conn: self._get(conn, run_id), f"reading run {run_id!r}")

    async def list_runs(
        self, *, status: RunStatus | None = None, limit: int | None = None
    ) -> list[RunRecord]:
        """Runs, most recently updated first."""

        def list_(conn: psycopg.Connection[tuple[object, ...]]) -> list[RunRecord]:
            sql = f"SELECT {', '.join(RUN_KEYS)} FROM {self.schema}.runs"
            args: list[object] = []
            if status is not None:
                sql += " WHERE status = %s"
                args.append(status)
            sql += " ORDER BY updated_at DESC"
            if limit is not None:
                sql += " LIMIT %s"
                args.append(limit)
            return [self._run_record(r) for r in conn.execute(sql.encode(), args).fetchall()]

        return await self._run(list_, "listing runs")

    async def get_steps(self, run_id: str) -> list[StepRecord]:
        """A run's steps in the order they first began."""
        return await self._run(lambda conn: self._steps(conn, run_id), f"reading the steps of run {run_id!r}")

    async def get_traces(self, run_id: str) -> list[TraceRecord]:
        """A run's stored traces, oldest attempt first."""

        def traces(conn: psycopg.Connection[tuple[object, ...]]) -> list[TraceRecord]:
            rows = conn.execute(
                self._sql(
                    f"SELECT {', '.join(TRACE_KEYS)} FROM {{s}}.traces WHERE run_id = %s ORDER BY attempt"
                ).encode(),
                (run_id,),
            ).fetchall()
            return [
                decode_row(
                    TraceRecord,
                    dict(zip(TRACE_KEYS, r, strict=True)),
                    f"trace row ({r[0]!r}, attempt {r[1]!r})",
                    self.location,
                )
                for r in rows
            ]

        return await self._run(traces, f"reading the traces of run {run_id!r}")

    async def delete_runs(self, *, updated_before: float, statuses: tuple[RunStatus, ...]) -> list[str]:
        """Delete old runs with the given statuses whose lease is free, their steps, and unreferenced states."""

        def delete(conn: psycopg.Connection[tuple[object, ...]]) -> list[str]:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                now = self._now(conn)
                candidates = [
                    str(r[0])
                    for r in conn.execute(
                        self._sql("SELECT run_id FROM {s}.runs WHERE updated_at < %s AND status = ANY(%s)"),
                        (updated_before, list(statuses)),
                    ).fetchall()
                ]
                ids = []
                for run_id in candidates:
                    row = self._lease_row(conn, run_id)
                    if row is not None and lease_refusal(run_id, row, now) is None:
                        ids.append(run_id)
                conn.execute(self._sql("DELETE FROM {s}.steps WHERE run_id = ANY(%s)"), (ids,))
                conn.execute(self._sql("DELETE FROM {s}.traces WHERE run_id = ANY(%s)"), (ids,))
                conn.execute(self._sql("DELETE FROM {s}.runs WHERE run_id = ANY(%s)"), (ids,))
                conn.execute(
                    self._sql(
                        "DELETE FROM {s}.states st WHERE NOT EXISTS "
                        "(SELECT 1 FROM {s}.steps sp WHERE sp.state_hash = st.hash)"
                    )
                )
            return ids

        return await self._run(delete, "deleting old runs")

    async def aclose(self) -> None:
        """Close the connection pool (idempotent)."""
        await self._pool.aclose()

    @property
    def location(self) -> str:
        """The database URL without its password (what ``--journal`` takes)."""
        return self._pool.url

    def __repr__(self) -> str:
        return f"PostgresJournal({self.location!r}, schema={self.schema!r})"

    # -- rows -------------------------------------------------------------------------------------
    def _get(self, conn: psycopg.Connection[tuple[object, ...]], run_id: str) -> RunRecord | None:
        row = conn.execute(
            self._sql(f"SELECT {', '.join(RUN_KEYS)} FROM {{s}}.runs WHERE run_id = %s"), (run_id,)
        ).fetchone()
        return None if row is None else self._run_record(row)

    def _run_record(self, row: tuple[object, ...]) -> RunRecord:
        return decode_row(RunRecord, dict(zip(RUN_KEYS, row, strict=True)), f"run {row[0]!r}", self.location)

    def _steps(self, conn: psycopg.Connection[tuple[object, ...]], run_id: str) -> list[StepRecord]:
        rows = conn.execute(
            self._sql(
                "SELECT s.run_id, s.path, s.identity, s.scope, s.ordinal, s.idempotent, s.status, s.value, "
                "s.kind, st.json, s.prompt, s.answer_schema, s.attempts, s.created_at, s.updated_at, s.state_hash "
                "FROM {s}.steps s LEFT JOIN {s}.states st ON st.hash = s.state_hash WHERE s.run_id = %s "
                "ORDER BY s.created_at, s.seq"
            ),
            (run_id,),
        ).fetchall()
        return decode_steps(rows, self.location)
