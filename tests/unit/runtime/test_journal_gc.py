"""Retention: ``runs list|show|gc`` as Python functions and CLI commands."""

from __future__ import annotations

import argparse
import time
from datetime import timedelta

import pytest
from _journals import raw_sql
from pydantic import BaseModel

from agentflow.dsl import Err, step, update
from agentflow.errors import ConfigError
from agentflow.runs import gc_runs, list_runs, parse_duration, show_run
from agentflow.runs._cli import register
from agentflow.runtime import interrupt, run

pytestmark = pytest.mark.anyio

DAY = 86400.0


class Counter(BaseModel):
    n: int = 0


@step
async def bump(i: int) -> int:
    await update(n=i)
    return i


@step
async def work(size: int) -> int:
    total = 0
    for i in range(size):
        total += await bump(i)
    return total


@step
async def ask_first() -> bool:
    class Yes(BaseModel):
        ok: bool

    return (await interrupt("go?", Yes)).ok


@pytest.fixture
def db(journal_db: str) -> str:
    """The journal, once per backend (SQLite file, PostgreSQL schema)."""
    return journal_db


def _age(db: str, run_id: str, seconds: float) -> None:
    """Pretend a run was last updated ``seconds`` ago."""
    raw_sql(db, "UPDATE runs SET updated_at = updated_at - ? WHERE run_id = ?", (seconds, run_id))


def _count(db: str, table: str) -> int:
    ((n,),) = raw_sql(db, f"SELECT COUNT(*) FROM {table}")
    return int(n)  # type: ignore[call-overload]


async def test_gc_deletes_finished_runs_older_than_the_duration_and_keeps_recent_ones(db: str) -> None:
    for rid in ("old", "new"):
        await run(work, {"size": 3}, state=Counter(), run_id=rid, journal=db)
    _age(db, "old", 8 * DAY)
    _age(db, "new", 1 * DAY)
    deleted = await gc_runs(db, older_than="7d")
    assert deleted == ["old"]
    assert [r.run_id for r in await list_runs(db)] == ["new"]
    assert raw_sql(db, "SELECT DISTINCT run_id FROM steps") == [("new",)]


async def test_gc_removes_states_no_remaining_step_references(db: str) -> None:
    await run(work, {"size": 4}, state=Counter(), run_id="a", journal=db)
    states_one_run = _count(db, "states")
    await run(work, {"size": 6}, state=Counter(), run_id="b", journal=db)
    assert _count(db, "states") > states_one_run
    _age(db, "b", 2 * DAY)
    await gc_runs(db, older_than=timedelta(days=1))
    assert _count(db, "states") == states_one_run


async def test_gc_keeps_suspended_and_crashed_runs_unless_asked(db: str) -> None:
    out = await run(ask_first, run_id="waits", journal=db)
    assert isinstance(out, Err)
    await run(work, {"size": 1}, state=Counter(), run_id="crashed", journal=db)
    raw_sql(db, "UPDATE runs SET status = 'running' WHERE run_id = 'crashed'")
    _age(db, "waits", 30 * DAY)
    _age(db, "crashed", 30 * DAY)
    assert await gc_runs(db, older_than="1d") == []
    assert sorted(await gc_runs(db, older_than="1d", include_unfinished=True, dry_run=True)) == [
        "crashed",
        "waits",
    ]
    assert len(await list_runs(db)) == 2
    assert sorted(await gc_runs(db, older_than="1d", include_unfinished=True)) == ["crashed", "waits"]
    assert await list_runs(db) == []


async def test_gc_with_a_fixed_now_is_deterministic(db: str) -> None:
    await run(work, {"size": 1}, state=Counter(), run_id="r", journal=db)
    assert await gc_runs(db, older_than=60, now=time.time() + 30) == []
    assert await gc_runs(db, older_than=60, now=time.time() + 90) == ["r"]


def test_parse_duration_accepts_units_and_combinations() -> None:
    assert parse_duration("30s") == 30
    assert parse_duration("15m") == 900
    assert parse_duration("12h") == 43200
    assert parse_duration("2w") == 14 * DAY
    assert parse_duration("1d12h") == 1.5 * DAY
    assert parse_duration("0.5h") == 1800


@pytest.mark.parametrize("bad", ["", "7", "d", "7days", "1d 2h", "-1d"])
def test_parse_duration_rejects_other_text_with_an_example(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"e\.g\. 7d"):
        parse_duration(bad)


async def test_cli_runs_list_show_and_gc(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    import anyio.to_thread

    await run(work, {"size": 2}, state=Counter(), run_id="r1", journal=db)
    parser = argparse.ArgumentParser(prog="agentflow")
    register(parser.add_subparsers(dest="command"))

    async def cli(*argv: str) -> int:
        args = parser.parse_args(list(argv))
        code: int = await anyio.to_thread.run_sync(args.func, args)
        return code

    assert await cli("runs", "list", "--journal", db) == 0
    out = capsys.readouterr().out
    assert "r1" in out and "completed" in out
    assert await cli("runs", "show", "r1", "--journal", db) == 0
    out = capsys.readouterr().out
    assert "work/bump[1]" in out and "committed" in out
    assert await cli("runs", "show", "missing", "--journal", db) == 2
    assert "no run 'missing'" in capsys.readouterr().err
    _age(db, "r1", 3 * DAY)
    assert await cli("runs", "gc", "--older-than", "2d", "--journal", db) == 0
    assert "deleted 1 run(s): r1" in capsys.readouterr().out
    assert (await list_runs(db)) == []
    with pytest.raises(ConfigError):
        await show_run("r1", db)
    assert await cli("runs", "gc", "--older-than", "soon", "--journal", db) == 2
