"""interrupt/resume: a run suspends durably at an interrupt and continues with a validated answer."""

from __future__ import annotations

import json

import anyio.to_thread
import pytest
from pydantic import BaseModel

from agentflow.cli import build_parser
from agentflow.dsl import Err, step
from agentflow.errors import ConfigError, ResumeError
from agentflow.runs import show_run
from agentflow.runtime import Interrupted, interrupt, resume, run

pytestmark = pytest.mark.anyio

DRAFTS: list[str] = []
ALLOW = [f"{__name__}:*"]
"""What these tests let a resume import (a resume imports only workflows the user allows)."""


class Approval(BaseModel):
    approved: bool
    note: str = ""


@step
async def draft(topic: str) -> str:
    DRAFTS.append(topic)
    return f"draft about {topic}"


@step
async def publish(topic: str) -> str:
    text = await draft(topic)
    answer = await interrupt(f"publish {text!r}?", Approval)
    return f"{text}: {'published' if answer.approved else 'rejected'} {answer.note}".strip()


@pytest.fixture(autouse=True)
def _fresh() -> None:
    DRAFTS.clear()


@pytest.fixture
def db(journal_db: str) -> str:
    """The journal, once per backend (SQLite file, PostgreSQL schema)."""
    return journal_db


async def test_interrupt_suspends_the_run_with_prompt_and_schema_in_the_journal(db: str) -> None:
    out = await run(publish, {"topic": "owls"}, run_id="r1", journal=db)
    assert isinstance(out, Err) and isinstance(out.error, Interrupted)
    assert out.error.prompt == "publish 'draft about owls'?"
    assert out.error.run_id == "r1"
    assert out.error.path == "publish/interrupt"
    assert out.error.schema["properties"]["approved"]["type"] == "boolean"
    assert f"agentflow resume r1 --journal {db} --answer" in str(out.error)
    detail = await show_run("r1", db)
    assert detail.run.status == "suspended"
    waiting = [s for s in detail.steps if s.status == "waiting"]
    assert [(s.path, s.prompt) for s in waiting] == [("publish/interrupt", "publish 'draft about owls'?")]
    assert waiting[0].answer_schema is not None
    assert json.loads(waiting[0].answer_schema)["required"] == ["approved"]


async def test_resume_with_an_answer_continues_without_rerunning_earlier_steps(db: str) -> None:
    await run(publish, {"topic": "owls"}, run_id="r1", journal=db)
    out = await resume("r1", journal=db, answer=Approval(approved=True, note="ok"), allow_workflows=ALLOW)
    assert out.unwrap() == "draft about owls: published ok"
    assert DRAFTS == ["owls"]
    assert (await show_run("r1", db)).run.status == "completed"


async def test_resume_with_an_invalid_answer_keeps_the_run_waiting(db: str) -> None:
    await run(publish, {"topic": "owls"}, run_id="r1", journal=db)
    bad = await resume("r1", journal=db, answer={"approved": "perhaps"}, allow_workflows=ALLOW)
    assert isinstance(bad, Err) and isinstance(bad.error, ResumeError)
    assert "does not match its schema" in bad.error.message
    assert "approved" in bad.error.message
    assert (await show_run("r1", db)).run.status == "suspended"
    good = await resume("r1", journal=db, answer={"approved": False}, allow_workflows=ALLOW)
    assert good.unwrap() == "draft about owls: rejected"


async def test_resume_without_an_answer_suspends_again(db: str) -> None:
    await run(publish, {"topic": "owls"}, run_id="r1", journal=db)
    again = await resume("r1", journal=db, allow_workflows=ALLOW)
    assert isinstance(again, Err) and isinstance(again.error, Interrupted)
    assert DRAFTS == ["owls"]


async def test_answering_a_run_that_waits_for_nothing_is_a_config_error(db: str) -> None:
    await run(draft, {"topic": "x"}, run_id="r1", journal=db)
    with pytest.raises(ConfigError, match="nothing to answer"):
        await resume("r1", journal=db, answer={"approved": True})
    with pytest.raises(ConfigError, match="no run 'nope'"):
        await resume("nope", journal=db)


async def test_interrupt_without_a_journal_still_reports_interrupted() -> None:
    out = await run(publish, {"topic": "owls"})
    assert isinstance(out, Err) and isinstance(out.error, Interrupted)
    assert "with a journal" in str(out.error)


async def test_cli_resume_answers_the_interrupt(db: str, capsys: pytest.CaptureFixture[str]) -> None:
    await run(publish, {"topic": "owls"}, run_id="r1", journal=db)
    parser = build_parser()
    args = parser.parse_args(
        ["resume", "r1", "--journal", db, "--answer", '{"approved": true}', "--allow-workflow", ALLOW[0]]
    )
    # The handler starts its own event loop, as the CLI does; run it in a worker thread here.
    code = await anyio.to_thread.run_sync(args.func, args)
    assert code == 0
    assert json.loads(capsys.readouterr().out.strip()) == "draft about owls: published"

    args = parser.parse_args(["resume", "r1", "--journal", db, "--answer", "{not json"])
    code = await anyio.to_thread.run_sync(args.func, args)
    assert code == 2
    assert "--answer must be JSON" in capsys.readouterr().err
