"""A run's trace is stored with the run in the journal, per attempt, on SQLite and PostgreSQL: written as
the attempt ends (completed, failed, cancelled half-way), read back as the same typed events, capped in
bytes (saying so), redacted of secrets, and refused with a clear error when damaged."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import anyio
import pytest
from _journals import journal_at, raw_sql

from agentflow.dsl import Err, Log, Ok, RunJournaled, SchedulerSummary, StepReplayed, flow, step, tell
from agentflow.errors import ConfigError, JournalError
from agentflow.plans import load_plan_text
from agentflow.runs import show_run
from agentflow.runtime import Journal, SqliteJournal, run
from agentflow.runtime._run_trace import CUT_EVENT
from agentflow.secrets import secret

pytestmark = pytest.mark.anyio

PLAN = """
apiVersion: agentflow/v1
kind: Plan
name: traced
tools: ["agentflow.plans.builtin_tools:calculator"]
inputs:
  n: {type: number, default: 4}
outputs:
  total: {value: "{{steps.twice}}", type: number}
  remark: {value: "{{steps.remark}}", type: string}
steps:
  - id: twice
    tool: calculator
    args: {expression: "{{inputs.n}} * 2"}
  - id: remark
    prompt: "Say something about {{steps.twice}}."
"""

RAN: list[str] = []
GATE: list[anyio.Event] = []  # set when the stuck step is reached; empty: the step does not block


@step
async def first() -> int:
    RAN.append("first")
    return 1


@step
async def stuck() -> int:
    RAN.append("stuck")
    if GATE:
        GATE[0].set()
        await anyio.sleep_forever()
    return 2


@flow
async def two_steps() -> int:
    return await first() + await stuck()


@pytest.fixture(autouse=True)
def _fresh() -> None:
    RAN.clear()
    GATE.clear()


async def test_trace_round_trips_with_the_run(journal_db: str) -> None:
    loaded = load_plan_text(PLAN, file="traced.yaml")
    out = await run(loaded.workflow, {"n": 4}, engine="test:", run_id="t1", journal=journal_db)
    assert isinstance(out, Ok) and out.value["total"] == 8
    detail = await show_run("t1", journal_db)
    (attempt,) = detail.attempts
    assert attempt.events == out.trace  # every event, typed, in order, content included
    assert isinstance(attempt.events[0], RunJournaled) and isinstance(attempt.events[-1], SchedulerSummary)
    trace = attempt.trace
    assert (trace.attempt, trace.status, trace.name, trace.dropped) == (1, "completed", "traced", 0)
    assert trace.engine == "test" and trace.count == len(out.trace)
    assert trace.started <= trace.finished
    assert [type(c).__name__ for c in attempt.calls()] == ["ToolCall", "LLMCall"]
    assert detail.run.attempts == 1


async def test_each_attempt_stores_its_own_trace_and_a_resume_replays_finished_steps(journal_db: str) -> None:
    GATE.append(anyio.Event())
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: run(two_steps, run_id="c1", journal=journal_db))
        await GATE[0].wait()
        tg.cancel_scope.cancel()  # as Ctrl-C does: the attempt is cancelled half-way
    detail = await show_run("c1", journal_db)
    assert detail.run.status == "failed" and "cancelled" in (detail.run.error or "")
    assert "agentflow resume c1" in (detail.run.error or "")
    (cancelled,) = detail.attempts
    assert cancelled.trace.status == "failed"
    ended = [(e.kind, e.path) for e in cancelled.events if e.kind in ("step.start", "step.end")]
    assert ended == [("step.start", "first"), ("step.end", "first"), ("step.start", "stuck")]

    GATE.clear()
    out = await run(two_steps, run_id="c1", journal=journal_db)
    assert out.unwrap() == 3
    assert RAN == ["first", "stuck", "stuck"]  # first finished before the cancel: replayed, not re-run
    detail = await show_run("c1", journal_db)
    assert detail.run.attempts == 2 and [a.trace.attempt for a in detail.attempts] == [1, 2]
    resumed = detail.attempts[1]
    assert resumed.trace.status == "completed"
    assert [e.path for e in resumed.events if isinstance(e, StepReplayed)] == ["first"]
    assert detail.trace == (*cancelled.events, *resumed.events)


async def test_a_trace_over_the_cap_keeps_its_ends_and_says_what_was_left_out(journal_db: str) -> None:
    @flow
    async def chatty() -> int:
        for i in range(400):
            await tell("tick", i=i, pad="x" * 40)
        return 400

    journal = journal_at(journal_db, max_trace_bytes=4096)
    assert isinstance(journal, Journal)
    async with journal:
        out = await run(chatty, run_id="big", journal=journal)
        assert out.unwrap() == 400
        (attempt,) = (await show_run("big", journal)).attempts
    stored = attempt.trace
    assert stored.dropped > 300 and stored.count == len(out.trace) - stored.dropped + 1
    assert len(stored.events.encode()) <= 4096
    assert attempt.events[0] == out.trace[0] and attempt.events[-1] == out.trace[-1]
    (cut,) = [e for e in attempt.events if isinstance(e, Log) and e.name == CUT_EVENT]
    assert cut.data["dropped_events"] == stored.dropped and cut.data["max_trace_bytes"] == 4096
    kept = [e for e in attempt.events if not (isinstance(e, Log) and e.name == CUT_EVENT)]
    assert all(e in out.trace for e in kept)


async def test_no_secret_value_reaches_a_stored_trace(
    journal_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = 'tr4ce-"secret"\\value'
    monkeypatch.setenv("TRACE_DEMO_TOKEN", value)

    @step
    async def leak() -> str:
        token = secret("TRACE_DEMO_TOKEN").reveal()
        await tell("oops", token=token)
        return f"got {token}"

    out = await run(leak, run_id="s1", journal=journal_db)
    assert isinstance(out, Ok)
    (text,) = raw_sql(journal_db, "SELECT events FROM traces WHERE run_id = ?", ("s1",))[0]
    assert isinstance(text, str) and "oops" in text and "[secret]" in text
    assert value not in text and json.dumps(value)[1:-1] not in text


async def test_a_damaged_trace_line_is_a_journal_error_naming_run_attempt_and_line(journal_db: str) -> None:
    out = await run(two_steps, run_id="d1", journal=journal_db)
    assert out.unwrap() == 3
    (text,) = raw_sql(journal_db, "SELECT events FROM traces WHERE run_id = ?", ("d1",))[0]
    assert isinstance(text, str)
    lines = text.splitlines()
    lines[1] = '{"kind": "step.start", "time": "soon"}'
    raw_sql(journal_db, "UPDATE traces SET events = ? WHERE run_id = ?", ("\n".join(lines), "d1"))
    with pytest.raises(JournalError, match=r"run 'd1', trace of attempt 1, line 2 is not a valid event"):
        await show_run("d1", journal_db)


async def test_a_failed_run_stores_its_trace_and_error(journal_db: str) -> None:
    @step
    async def broken() -> int:
        raise ValueError("no good")

    out = await run(broken, run_id="f1", journal=journal_db)
    assert isinstance(out, Err)
    detail = await show_run("f1", journal_db)
    (attempt,) = detail.attempts
    assert attempt.trace.status == "failed" and attempt.events == out.trace
    assert any(e.kind == "step.end" and "no good" in str(getattr(e, "error", "")) for e in attempt.events)


def test_max_trace_bytes_must_be_a_usable_cap(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="max_trace_bytes must be a whole number of bytes, at least 1024"):
        SqliteJournal(tmp_path / "j.db", max_trace_bytes=10)


async def test_a_journal_whose_traces_table_was_dropped_is_refused_as_damaged(tmp_path: Path) -> None:
    db = tmp_path / "j.db"
    async with SqliteJournal(db):
        pass
    with sqlite3.connect(db) as conn:
        conn.execute("DROP TABLE traces")
    with pytest.raises(JournalError, match="table 'traces' is missing"):
        SqliteJournal(db)


async def test_a_postgres_journal_from_before_traces_is_migrated_and_keeps_its_runs(
    postgres_url: str,
) -> None:
    import uuid

    import psycopg

    from agentflow.runtime import PostgresJournal
    from agentflow.runtime._postgres_journal import _MIGRATIONS

    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # the version-1 layout, as written before
        conn.execute(f"CREATE SCHEMA {schema}".encode())
        for statement in _MIGRATIONS[1].replace("{s}", schema).split(";"):
            if statement.strip():
                conn.execute(statement.encode())
        conn.execute(f"CREATE TABLE {schema}.journal_version (version INTEGER NOT NULL)".encode())
        conn.execute(f"INSERT INTO {schema}.journal_version VALUES (1)".encode())
        conn.execute(
            f"INSERT INTO {schema}.runs (run_id, status, inputs, state, created_at, updated_at) "
            f"VALUES ('old', 'completed', '{{}}', 'null', 1, 1)".encode()
        )
    async with PostgresJournal(f"{postgres_url}?schema={schema}") as journal:
        old = await show_run("old", journal)
        assert old.run.attempts == 1 and old.attempts == ()
        assert (await run(two_steps, run_id="new", journal=journal)).unwrap() == 3
        assert [a.trace.attempt for a in (await show_run("new", journal)).attempts] == [1]
