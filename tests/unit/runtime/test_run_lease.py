"""Run leases: one holder per run id at a time, in one process and across processes; renewal, takeover
of a dead or expired holder, fencing of a holder that lost its lease, operator writes while held."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import anyio
import pytest
from _journals import journal_at, raw_sql

from agentflow.dsl import Err, step
from agentflow.errors import ResumeError
from agentflow.runs import show_run
from agentflow.runtime import resolve_step, run

pytestmark = pytest.mark.anyio

EFFECTS: list[str] = []
GATE: dict[str, anyio.Event] = {}


@pytest.fixture(autouse=True)
def _fresh() -> None:
    EFFECTS.clear()
    GATE.clear()


@pytest.fixture
def db(journal_db: str) -> str:
    """The journal, once per backend (SQLite file, PostgreSQL schema)."""
    return journal_db


@step(idempotent=False)
async def charge(amount: int) -> int:
    """A strict effect that waits at the gate (if one is set) after taking effect."""
    EFFECTS.append(f"charge{amount}")
    gate = GATE.get("charge")
    if gate is not None:
        await gate.wait()
    return amount * 2


@step
async def pay(amount: int) -> int:
    return await charge(amount)


def _lease(db: str, run_id: str) -> tuple[str | None, float | None]:
    rows = raw_sql(db, "SELECT lease_token, lease_expires FROM runs WHERE run_id = ?", (run_id,))
    return (None, None) if not rows else (rows[0][0], rows[0][1])  # type: ignore[return-value]


async def _wait_until_running(db: str, run_id: str) -> None:
    with anyio.fail_after(30):
        while not EFFECTS or _lease(db, run_id)[0] is None:  # the step ran: the journal exists
            await anyio.sleep(0.01)


def _dead_pid() -> int:
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    return int(proc.stdout)


async def test_two_concurrent_runs_with_the_same_run_id_in_one_process_run_the_effect_once(db: str) -> None:
    GATE["charge"] = anyio.Event()
    outcomes: list[object] = []

    async def first() -> None:
        outcomes.append(await run(pay, {"amount": 5}, run_id="r1", journal=db))

    async with anyio.create_task_group() as tg:
        tg.start_soon(first)
        await _wait_until_running(db, "r1")
        with pytest.raises(ResumeError, match="already being run in this process"):
            await run(pay, {"amount": 5}, run_id="r1", journal=db)
        GATE["charge"].set()
    assert EFFECTS == ["charge5"]
    assert outcomes[0].unwrap() == 10  # type: ignore[attr-defined]
    assert _lease(db, "r1") == (None, None)  # released at the end


async def test_two_concurrent_runs_sharing_one_journal_object_are_refused_too(db: str) -> None:
    GATE["charge"] = anyio.Event()
    async with journal_at(db) as journal, anyio.create_task_group() as tg:
        tg.start_soon(lambda: run(pay, {"amount": 1}, run_id="r1", journal=journal))
        await _wait_until_running(db, "r1")
        with pytest.raises(ResumeError, match="already being run in this process"):
            await run(pay, {"amount": 1}, run_id="r1", journal=journal)
        GATE["charge"].set()
    assert EFFECTS == ["charge1"]
    # Finished: the same run id replays now, nothing runs twice.
    again = await run(pay, {"amount": 1}, run_id="r1", journal=db)
    assert again.unwrap() == 2 and EFFECTS == ["charge1"]


async def test_lease_is_renewed_while_the_run_is_live(db: str) -> None:
    GATE["charge"] = anyio.Event()
    async with journal_at(db, lease_s=0.3) as journal, anyio.create_task_group() as tg:
        tg.start_soon(lambda: run(pay, {"amount": 1}, run_id="r1", journal=journal))
        await _wait_until_running(db, "r1")
        token, first_expiry = _lease(db, "r1")
        assert first_expiry is not None
        with anyio.fail_after(30):
            while (_lease(db, "r1")[1] or 0) <= first_expiry:
                await anyio.sleep(0.05)
        assert _lease(db, "r1")[0] == token
        GATE["charge"].set()


async def test_lease_of_a_dead_process_on_this_host_is_taken_over_at_once(db: str) -> None:
    await run(pay, {"amount": 3}, run_id="r1", journal=db)
    raw_sql(  # as a process SIGKILLed while it held the run would leave it
        db,
        "UPDATE runs SET status = 'running', owner_host = ?, owner_pid = ?, lease_token = 'old', lease_expires = ?",
        (socket.gethostname(), _dead_pid(), time.time() + 3600),
    )
    out = await run(pay, {"amount": 3}, run_id="r1", journal=db)
    assert out.unwrap() == 6
    assert EFFECTS == ["charge3"]


async def test_lease_of_a_holder_on_another_host_is_taken_over_only_after_it_expires(db: str) -> None:
    await run(pay, {"amount": 3}, run_id="r1", journal=db)

    def hold(expires: float) -> None:
        raw_sql(
            db,
            "UPDATE runs SET status = 'running', owner_host = 'elsewhere', owner_pid = 7, "
            "lease_token = 'theirs', lease_expires = ?",
            (expires,),
        )

    hold(time.time() + 3600)
    with pytest.raises(ResumeError, match="being run by process 7 on host 'elsewhere'"):
        await run(pay, {"amount": 3}, run_id="r1", journal=db)
    hold(time.time() - 1)
    assert (await run(pay, {"amount": 3}, run_id="r1", journal=db)).unwrap() == 6
    assert EFFECTS == ["charge3"]


async def test_a_holder_whose_lease_was_taken_over_records_nothing_more(db: str) -> None:
    GATE["charge"] = anyio.Event()
    outcomes: list[object] = []

    async def holder() -> None:
        outcomes.append(await run(pay, {"amount": 4}, run_id="r1", journal=db))

    async with anyio.create_task_group() as tg:
        tg.start_soon(holder)
        await _wait_until_running(db, "r1")
        # Another machine took the run over after the lease expired.
        raw_sql(db, "UPDATE runs SET lease_token = 'new-holder', owner_host = 'elsewhere', owner_pid = 9")
        GATE["charge"].set()
    out = outcomes[0]
    assert isinstance(out, Err) and isinstance(out.error, ResumeError)
    assert "lost its lease" in out.error.message
    detail = await show_run("r1", db)
    assert detail.run.status == "running"  # the old holder did not end the new holder's run
    assert _lease(db, "r1")[0] == "new-holder"
    assert {s.path: s.status for s in detail.steps} == {"pay/charge": "begun"}


async def test_a_holder_that_cannot_renew_its_lease_is_cancelled(db: str) -> None:
    GATE["charge"] = anyio.Event()  # never set: only losing the lease ends the step
    async with journal_at(db, lease_s=0.3) as journal:
        outcomes: list[object] = []

        async def holder() -> None:
            outcomes.append(await run(pay, {"amount": 4}, run_id="r1", journal=journal))

        with anyio.fail_after(60):
            async with anyio.create_task_group() as tg:
                tg.start_soon(holder)
                await _wait_until_running(db, "r1")
                raw_sql(db, "UPDATE runs SET lease_token = 'new-holder'")
    out = outcomes[0]
    assert isinstance(out, Err) and isinstance(out.error, ResumeError)
    assert "lost its lease" in out.error.message


async def test_operator_resolve_is_refused_while_a_live_holder_runs_the_run(db: str) -> None:
    GATE["charge"] = anyio.Event()
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: run(pay, {"amount": 2}, run_id="r1", journal=db))
        await _wait_until_running(db, "r1")
        with pytest.raises(ResumeError, match="already being run in this process"):
            await resolve_step("r1", "pay/charge", journal=db, rerun=True)
        GATE["charge"].set()
