"""What a journal file must be: empty, foreign, damaged or hand-edited files are refused with a
``JournalError`` naming the file and the row; a new journal opened by many threads at once is one journal;
an older journal is migrated forward."""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

import anyio
import pytest

from agentflow.dsl import step
from agentflow.errors import JournalError
from agentflow.runs import list_runs, show_run
from agentflow.runtime import SqliteJournal, run

pytestmark = pytest.mark.anyio

CALLS: list[str] = []


@step(idempotent=False)
async def charge(amount: int) -> int:
    CALLS.append(f"charge{amount}")
    return amount


@step
async def pay(amount: int) -> int:
    return await charge(amount)


@pytest.fixture(autouse=True)
def _fresh() -> None:
    CALLS.clear()


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "journal.db")


async def test_zero_length_journal_is_refused_not_silently_started_anew(db: str) -> None:
    Path(db).write_bytes(b"")
    with pytest.raises(JournalError, match=r"is an empty file \(0 bytes\), not a journal"):
        await run(pay, {"amount": 1}, run_id="r1", journal=db)
    assert CALLS == []
    assert Path(db).stat().st_size == 0  # nothing written over it


async def test_file_that_is_not_sqlite_is_refused(db: str) -> None:
    Path(db).write_text("these are my notes, not a journal\n" * 20)
    with pytest.raises(JournalError, match="is not an agentflow journal"):
        SqliteJournal(db)


async def test_another_programs_sqlite_database_is_refused_and_left_unchanged(db: str) -> None:
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE contacts (name TEXT)")
    with pytest.raises(JournalError, match=r"a SQLite database but not an agentflow journal .*contacts"):
        await list_runs(db)
    with sqlite3.connect(db) as conn:
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == [
            "contacts"
        ]


async def test_dropped_states_table_gives_a_journal_error_naming_it(db: str) -> None:
    await run(pay, {"amount": 1}, run_id="r1", journal=db)
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE states")
    with pytest.raises(JournalError, match=r"is damaged: table 'states' is missing"):
        await run(pay, {"amount": 1}, run_id="r1", journal=db)
    with sqlite3.connect(db) as conn:  # not silently re-created empty
        assert "states" not in {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}


async def test_corrupt_owner_pid_gives_a_journal_error_naming_file_and_run(db: str) -> None:
    await run(pay, {"amount": 1}, run_id="r1", journal=db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET owner_pid = 'abc'")
    with pytest.raises(JournalError, match=rf"journal '{db}': run 'r1' has owner_pid='abc'"):
        await run(pay, {"amount": 1}, run_id="r1", journal=db)
    with pytest.raises(JournalError, match="run 'r1' has owner_pid='abc'"):
        await show_run("r1", db)


async def test_corrupt_step_row_gives_a_journal_error_naming_the_row(db: str) -> None:
    await run(pay, {"amount": 1}, run_id="r1", journal=db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE steps SET ordinal = 'first' WHERE path = 'pay/charge'")
    with pytest.raises(JournalError, match=r"step row \('r1', 'pay/charge'\) has ordinal='first'"):
        await show_run("r1", db)


async def test_step_row_whose_state_was_deleted_gives_a_journal_error(db: str) -> None:
    await run(pay, {"amount": 1}, run_id="r1", journal=db)
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM states")
    with pytest.raises(
        JournalError, match=r"step row \('r1', 'pay'\) refers to state .* not in the states table"
    ):
        await run(pay, {"amount": 1}, run_id="r1", journal=db)


async def test_committed_row_without_value_gives_a_journal_error_not_an_assertion(db: str) -> None:
    await run(pay, {"amount": 1}, run_id="r1", journal=db)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE steps SET value = NULL WHERE path = 'pay/charge'")
        conn.execute("DELETE FROM steps WHERE path = 'pay'")
    out = await run(pay, {"amount": 1}, run_id="r1", journal=db)
    assert isinstance(out.error, JournalError)  # type: ignore[union-attr]
    assert "step row ('r1', 'pay/charge') is committed but has no value" in str(out.error)  # type: ignore[union-attr]
    assert CALLS == ["charge1"]  # from the first run only


@pytest.mark.parametrize("attempt", range(60))
def test_new_journal_opened_from_six_threads_at_once_never_fails(tmp_path: Path, attempt: int) -> None:
    path = tmp_path / f"new{attempt}.db"
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def open_it() -> None:
        barrier.wait()
        try:
            journal = SqliteJournal(path)
            anyio.run(journal.aclose)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_it) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    # One journal (with SQLite's own -wal/-shm files), no leftover temporary files.
    assert {name.removesuffix("-wal").removesuffix("-shm") for name in os.listdir(tmp_path)} == {path.name}


async def test_journal_from_before_leases_is_migrated_and_keeps_its_runs(db: str) -> None:
    with sqlite3.connect(db) as conn:  # the version-1 layout, as older agentflow wrote it
        conn.executescript(
            """
            CREATE TABLE runs (run_id TEXT PRIMARY KEY, status TEXT NOT NULL, workflow TEXT, inputs TEXT,
                state_type TEXT, state TEXT, result TEXT, error TEXT, owner_host TEXT, owner_pid INTEGER,
                created_at REAL NOT NULL, updated_at REAL NOT NULL);
            CREATE TABLE steps (run_id TEXT NOT NULL, path TEXT NOT NULL, identity TEXT NOT NULL,
                scope TEXT NOT NULL, ordinal INTEGER NOT NULL, idempotent INTEGER NOT NULL, status TEXT NOT NULL,
                value TEXT, kind TEXT, state_hash TEXT, prompt TEXT, answer_schema TEXT, attempts INTEGER NOT NULL,
                created_at REAL NOT NULL, updated_at REAL NOT NULL, PRIMARY KEY (run_id, path));
            CREATE TABLE states (hash TEXT PRIMARY KEY, json TEXT NOT NULL);
            INSERT INTO runs VALUES ('old', 'failed', NULL, '{"amount":1}', NULL, 'null', NULL, 'boom', 'h', NULL, 1, 1);
            INSERT INTO steps VALUES ('old', 'pay/charge', 'charge', 'pay', 0, 0, 'committed', '1', 'typed',
                '74234e98afe7498fb5daf1f36ac2d78acc339464f950703b8c019892f982b90b', NULL, NULL, 1, 1, 1);
            INSERT INTO states VALUES ('74234e98afe7498fb5daf1f36ac2d78acc339464f950703b8c019892f982b90b', 'null');
            """
        )
    out = await run(pay, {"amount": 1}, run_id="old", journal=db)
    assert out.unwrap() == 1
    assert CALLS == []  # the old journal's committed charge was replayed
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 3
        columns = {r[1] for r in conn.execute("PRAGMA table_info(runs)")}
        traces = conn.execute("SELECT attempt, status FROM traces WHERE run_id = 'old'").fetchall()
    assert {"lease_token", "lease_expires", "attempts"} <= columns
    assert traces == [(2, "completed")]  # the old row counts as attempt 1; this resume stored its trace
