"""The SQLite run journal: record, replay, resume, exactly-once refusal, divergence, serialization errors."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Annotated

import pytest
from _journals import raw_sql
from pydantic import BaseModel

from agentflow.dsl import Append, Err, Ok, RunJournaled, StepJournal, par, step, update
from agentflow.dsl._flow import named
from agentflow.errors import ConfigError, ResumeError, SerializationError
from agentflow.runs import show_run
from agentflow.runtime import (
    RunJournal,
    SqliteJournal,
    idempotency_key,
    resolve_step,
    run,
)

pytestmark = pytest.mark.anyio


class Calls:
    """What each side-effecting step did, in order (the test's stand-in for the outside world)."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.fail_at: set[str] = set()

    def hit(self, what: str) -> None:
        self.log.append(what)
        if what in self.fail_at:
            self.fail_at.discard(what)
            raise RuntimeError(f"{what} failed")


CALLS = Calls()


@pytest.fixture(autouse=True)
def _fresh_calls() -> None:
    CALLS.log.clear()
    CALLS.fail_at.clear()


@pytest.fixture
def db(journal_db: str) -> str:
    """The journal, once per backend (SQLite file, PostgreSQL schema)."""
    return journal_db


@pytest.fixture
def sqlite_db(tmp_path: Path) -> str:
    return str(tmp_path / "journal.db")


class Notes(BaseModel):
    seen: Annotated[list[str], Append] = []


@step
async def fetch(i: int) -> int:
    CALLS.hit(f"fetch{i}")
    await update(seen=[f"fetch{i}"])
    return i * 10


@step(idempotent=False)
async def pay(amount: int) -> str:
    CALLS.hit(f"pay{amount}")
    return f"receipt-{amount}"


@step
async def pipeline(n: int) -> list[str]:
    amounts = await par.map(fetch, list(range(n)))
    return [await pay(a) for a in amounts]


async def test_run_journal_satisfies_the_step_journal_protocol(sqlite_db: str) -> None:
    async with SqliteJournal(sqlite_db) as j:
        assert isinstance(RunJournal(j, "r", []), StepJournal)


async def test_completed_run_replays_every_step_without_rerunning(db: str) -> None:
    first = await run(pipeline, {"n": 3}, state=Notes(), run_id="r1", journal=db)
    assert first.unwrap() == ["receipt-0", "receipt-10", "receipt-20"]
    assert sorted(CALLS.log) == ["fetch0", "fetch1", "fetch2", "pay0", "pay10", "pay20"]
    CALLS.log.clear()
    again = await run(pipeline, {"n": 3}, state=Notes(), run_id="r1", journal=db)
    assert again.unwrap() == first.unwrap()
    assert again.state == first.state
    assert CALLS.log == []
    assert isinstance(again.trace[0], RunJournaled) and again.trace[0].resumed is True


async def test_resume_after_failure_reruns_only_unfinished_steps_and_restores_state(db: str) -> None:
    CALLS.fail_at.add("pay20")
    failed = await run(pipeline, {"n": 3}, state=Notes(), run_id="r1", journal=db)
    assert isinstance(failed, Err)
    assert (await show_run("r1", db)).run.status == "failed"
    CALLS.log.clear()
    # pay20 raised: nothing was charged, the operator allows one more attempt.
    await resolve_step("r1", "pipeline/pay[2]", journal=db, rerun=True)
    resumed = await run(pipeline, {"n": 3}, state=Notes(), run_id="r1", journal=db)
    assert resumed.unwrap() == ["receipt-0", "receipt-10", "receipt-20"]
    assert CALLS.log == ["pay20"]
    assert isinstance(resumed.state, Notes)
    assert sorted(resumed.state.seen) == ["fetch0", "fetch1", "fetch2"]
    replayed = [e.path for e in resumed.trace if e.kind == "step.replayed"]
    assert replayed == [
        "pipeline/[0]/fetch",
        "pipeline/[1]/fetch",
        "pipeline/[2]/fetch",
        "pipeline/pay",
        "pipeline/pay[1]",
    ]


async def test_non_idempotent_step_begun_without_commit_is_refused_on_resume(db: str) -> None:
    CALLS.fail_at.add("pay10")
    await run(pipeline, {"n": 2}, state=Notes(), run_id="r1", journal=db)
    CALLS.log.clear()
    out = await run(pipeline, {"n": 2}, state=Notes(), run_id="r1", journal=db)
    assert isinstance(out, Err) and isinstance(out.error, ResumeError)
    assert out.error.where == "pipeline/pay[1]"
    assert "not idempotent" in out.error.message
    assert f"agentflow runs resolve r1 pipeline/pay[1] --journal {db} --value JSON" in out.error.message
    assert CALLS.log == []  # refused before running anything again


async def test_resolve_with_value_records_the_result_and_the_step_never_runs_again(db: str) -> None:
    CALLS.fail_at.add("pay10")
    await run(pipeline, {"n": 2}, state=Notes(), run_id="r1", journal=db)
    await resolve_step("r1", "pipeline/pay[1]", journal=db, value="receipt-by-hand")
    CALLS.log.clear()
    out = await run(pipeline, {"n": 2}, state=Notes(), run_id="r1", journal=db)
    assert out.unwrap() == ["receipt-0", "receipt-by-hand"]
    assert CALLS.log == []


async def test_resolve_refuses_unknown_steps_and_ambiguous_requests(db: str) -> None:
    await run(pipeline, {"n": 1}, state=Notes(), run_id="r1", journal=db)
    with pytest.raises(ConfigError, match="no unfinished step"):
        await resolve_step("r1", "pipeline/pay", journal=db, rerun=True)
    with pytest.raises(ConfigError, match="exactly one"):
        await resolve_step("r1", "pipeline/pay", journal=db)


async def test_reordered_steps_fail_with_resume_error_naming_the_first_divergent_step(db: str) -> None:
    @step
    async def a() -> int:
        return 1

    @step
    async def b() -> int:
        return 2

    @step
    async def c() -> int:
        CALLS.hit("c")
        return 3

    CALLS.fail_at.add("c")
    await run(named("wf", a() >> b() >> c()), run_id="r1", journal=db)

    out = await run(named("wf", b() >> a() >> c()), run_id="r1", journal=db)
    assert isinstance(out, Err) and isinstance(out.error, ResumeError)
    assert out.error.where == "wf/b"
    assert "recorded 'wf/a' as step 1 of 'wf'" in out.error.message


async def test_replaced_step_fails_with_resume_error_naming_the_new_step(db: str) -> None:
    @step
    async def a() -> int:
        return 1

    @step
    async def b() -> int:
        return 2

    @step
    async def x() -> int:
        CALLS.hit("x")
        return 2

    @step
    async def c() -> int:
        CALLS.hit("c")
        return 3

    CALLS.fail_at.add("c")
    await run(named("wf", a() >> b() >> c()), run_id="r1", journal=db)
    CALLS.log.clear()
    out = await run(named("wf", a() >> x() >> c()), run_id="r1", journal=db)
    assert isinstance(out, Err) and isinstance(out.error, ResumeError)
    assert out.error.where == "wf/x"
    assert CALLS.log == []  # x did not run


async def test_step_that_failed_without_recording_may_be_fixed_before_resuming(db: str) -> None:
    @step
    async def a() -> int:
        CALLS.hit("a")
        return 1

    @step
    async def broken() -> int:
        raise RuntimeError("bug")

    @step
    async def fixed() -> int:
        return 2

    await run(named("wf", a() >> broken()), run_id="r1", journal=db)
    out = await run(named("wf", a() >> fixed()), run_id="r1", journal=db)
    assert out.unwrap() == 2
    assert CALLS.log == ["a"]


async def test_removed_step_is_detected_when_its_scope_finishes(db: str) -> None:
    @step
    async def a() -> int:
        return 1

    @step
    async def b() -> int:
        return 2

    @step
    async def boom() -> int:
        CALLS.hit("boom")
        return 3

    CALLS.fail_at.add("boom")
    await run(named("wf", a() >> b() >> boom()), run_id="r1", journal=db)
    out = await run(named("wf", a() >> boom()), run_id="r1", journal=db)
    assert isinstance(out, Err) and isinstance(out.error, ResumeError)
    # boom is now step 2 of wf where b was recorded: that is the first divergent step.
    assert out.error.where == "wf/boom"

    await run(named("wf2", a() >> b()), run_id="r2", journal=db)
    # wf2 committed, so it replays whole; remove the commit to model a crash just before it.
    raw_sql(db, "DELETE FROM steps WHERE run_id = 'r2' AND path = 'wf2'")
    out = await run(named("wf2", a()), run_id="r2", journal=db)
    assert isinstance(out, Err) and isinstance(out.error, ResumeError)
    assert out.error.where == "wf2/b"
    assert "without reaching it" in out.error.message


async def test_resume_with_other_inputs_is_refused(db: str) -> None:
    await run(pipeline, {"n": 1}, state=Notes(), run_id="r1", journal=db)
    with pytest.raises(ResumeError, match="was started with inputs"):
        await run(pipeline, {"n": 2}, state=Notes(), run_id="r1", journal=db)


async def test_unserializable_result_fails_the_step_with_the_path_to_the_bad_value(db: str) -> None:
    class Item(BaseModel):
        model_config = {"arbitrary_types_allowed": True}
        name: str
        when: object = None

    class Listing(BaseModel):
        items: list[Item]

    @step
    async def listing() -> Listing:
        return Listing(items=[Item(name=str(i)) for i in range(3)] + [Item(name="x", when=object())])

    out = await run(named("wf", listing()), run_id="r1", journal=db)
    assert isinstance(out, Err) and isinstance(out.error, SerializationError)
    assert out.error.path == "result.items[3].when"
    assert out.error.where == "wf/listing"
    assert "wf/listing: cannot serialize value at result.items[3].when" in str(out.error)


async def test_unserializable_state_fails_with_the_state_path(db: str) -> None:
    class Box(BaseModel):
        model_config = {"arbitrary_types_allowed": True}
        things: list[object] = []

    @step
    async def put_thing() -> int:
        await update(things=[1, threading.Lock()])
        return 1

    out = await run(named("wf", put_thing()), state=Box(), run_id="r1", journal=db)
    assert isinstance(out, Err) and isinstance(out.error, SerializationError)
    assert out.error.path == "state.things[1]"


async def test_retry_inside_a_run_replays_children_committed_by_the_failed_attempt(db: str) -> None:
    tries = {"n": 0}

    @step
    async def child() -> int:
        CALLS.hit("child")
        return 5

    @step(retry=3)
    async def flaky() -> int:
        v = await child()
        tries["n"] += 1
        if tries["n"] < 2:
            raise RuntimeError("again")
        return v

    out = await run(flaky, run_id="r1", journal=db)
    assert out.unwrap() == 5
    assert CALLS.log == ["child"]


async def test_idempotency_key_is_stable_across_resumes(db: str) -> None:
    keys: list[str] = []

    @step
    async def effect() -> str:
        key = await idempotency_key()
        keys.append(key)
        CALLS.hit("effect")
        return key

    @step
    async def wf() -> str:
        return await effect()

    CALLS.fail_at.add("effect")
    await run(wf, run_id="r1", journal=db)
    out = await run(wf, run_id="r1", journal=db)
    assert out.unwrap() == "r1:wf/effect"
    assert keys == ["r1:wf/effect", "r1:wf/effect"]


async def test_rows_record_identity_status_values_and_timestamps(db: str) -> None:
    await run(pipeline, {"n": 1}, state=Notes(), run_id="r1", journal=db)
    detail = await show_run("r1", db)
    assert detail.run.status == "completed"
    assert detail.run.result == '["receipt-0"]'
    rows = {s.path: s for s in detail.steps}
    assert set(rows) == {"pipeline", "pipeline/[0]/fetch", "pipeline/pay"}
    pay_row = rows["pipeline/pay"]
    assert (pay_row.identity, pay_row.status, pay_row.value, pay_row.idempotent) == (
        "pay",
        "committed",
        '"receipt-0"',
        False,
    )
    assert pay_row.created_at <= pay_row.updated_at
    assert rows["pipeline/[0]/fetch"].state == '{"seen":["fetch0"]}'


async def test_identical_states_are_stored_once(db: str) -> None:
    @step
    async def same(i: int) -> int:
        return i

    @step
    async def many() -> int:
        total = 0
        for i in range(20):
            total += await same(i)
        return total

    await run(many, state=Notes(seen=["x"]), run_id="r1", journal=db)
    ((states,),) = raw_sql(db, "SELECT COUNT(*) FROM states")
    ((steps,),) = raw_sql(db, "SELECT COUNT(*) FROM steps")
    assert steps == 21
    assert states == 1


async def test_journal_file_uses_wal_mode(sqlite_db: str) -> None:
    async with SqliteJournal(sqlite_db):
        pass
    with sqlite3.connect(sqlite_db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_memory_path_is_refused() -> None:
    with pytest.raises(ConfigError, match="file path"):
        SqliteJournal(":memory:")


async def test_run_without_journal_is_unchanged() -> None:
    out = await run(pipeline, {"n": 1}, state=Notes())
    assert isinstance(out, Ok)
    assert all(e.kind != "run.journal" for e in out.trace)


async def test_repeated_step_and_parallel_branch_paths_stay_distinct(db: str) -> None:
    # Branch i of a par is its own path segment (research/[1]/search), so the 2nd research step
    # (research[1]) can never read the first one's branch records.
    @step
    async def search(q: str) -> str:
        return q

    @step
    async def research(qs: list[str]) -> list[str]:
        if len(qs) > 1:
            return list(await par(*[search(q) for q in qs]))
        return [await search(qs[0])]

    @step
    async def wf() -> list[str]:
        return [*(await research(["a", "b"])), *(await research(["c"]))]

    assert (await wf().run()).unwrap() == ["a", "b", "c"]
    out = await run(wf, run_id="r1", journal=db)
    assert out.unwrap() == ["a", "b", "c"]
    again = await run(wf, run_id="r1", journal=db)
    assert again.unwrap() == ["a", "b", "c"]


async def test_run_held_by_another_live_process_is_not_resumed_or_collected(db: str) -> None:
    import os
    import socket

    from agentflow.runs import gc_runs

    await run(pipeline, {"n": 1}, state=Notes(), run_id="r1", journal=db)
    raw_sql(
        db,
        "UPDATE runs SET status = 'running', owner_host = ?, owner_pid = ?, lease_token = 'held', "
        "lease_expires = ?, updated_at = 0",
        (socket.gethostname(), os.getppid(), time.time() + 60),
    )
    with pytest.raises(ResumeError, match=f"being run by process {os.getppid()}"):
        await run(pipeline, {"n": 1}, state=Notes(), run_id="r1", journal=db)
    assert await gc_runs(db, older_than="1d", include_unfinished=True) == []


async def test_cli_runs_resolve_settles_a_refused_step(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    import anyio.to_thread

    from agentflow.runs._cli import register

    CALLS.fail_at.add("pay0")
    await run(pipeline, {"n": 1}, state=Notes(), run_id="r1", journal=db)
    parser = argparse.ArgumentParser(prog="agentflow")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["runs", "resolve", "r1", "pipeline/pay", "--value", '"by-hand"', "--journal", db]
    )
    assert await anyio.to_thread.run_sync(args.func, args) == 0
    assert "agentflow resume r1" in capsys.readouterr().out
    CALLS.log.clear()
    out = await run(pipeline, {"n": 1}, state=Notes(), run_id="r1", journal=db)
    assert out.unwrap() == ["by-hand"]
    assert CALLS.log == []
    args = parser.parse_args(["runs", "resolve", "r1", "pipeline/pay", "--rerun", "--journal", db])
    assert await anyio.to_thread.run_sync(args.func, args) == 2
    assert "no unfinished step" in capsys.readouterr().err
