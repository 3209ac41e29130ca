"""What ``resume`` may import (issue 18 item 7): a journal file is data, so a workflow it names is
imported only when the user allowed it (argument, ``--allow-workflow``, ``$AGENTFLOW_RESUME_ALLOW``) or
named it; a plan recorded by path is always fine."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import anyio.to_thread
import pytest

from agentflow.cli import build_parser, main
from agentflow.dsl import step
from agentflow.errors import ConfigError
from agentflow.runs import show_run
from agentflow.runtime import resume, run

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[3]
PLAN = str(ROOT / "examples" / "calc_loop.yaml")
RAN: list[int] = []


@step
async def double(n: int) -> int:
    RAN.append(n)
    if len(RAN) == 1:
        raise RuntimeError("first attempt fails")
    return n * 2


@pytest.fixture
def db(tmp_path: Path) -> str:
    RAN.clear()
    return str(tmp_path / "journal.db")


def _forge(db: str, **columns: str) -> None:
    """Edit the run row as someone with write access to the journal file could."""
    with sqlite3.connect(db) as conn:
        for column, value in columns.items():
            conn.execute(f"UPDATE runs SET {column} = ?", (value,))


async def test_resume_refuses_a_module_the_journal_names_that_the_user_did_not_allow(
    db: str, tmp_path: Path
) -> None:
    await run(double, {"n": 2}, run_id="r1", journal=db)
    target = tmp_path / "pwned"
    _forge(db, workflow="os:system", inputs=json.dumps({"command": f"touch {target}"}))
    with pytest.raises(
        ConfigError, match=r"records workflow 'os:system', which is not in the allowed workflows"
    ):
        await resume("r1", journal=db)
    assert not target.exists()


async def test_resume_refuses_a_state_type_the_user_did_not_allow(db: str, tmp_path: Path) -> None:
    await run(double, {"n": 2}, run_id="r1", journal=db)
    _forge(db, state_type="evil_module:Model", state="{}")
    with pytest.raises(ConfigError, match="records state type 'evil_module:Model'"):
        await resume("r1", journal=db, allow_workflows=[f"{__name__}:*"])


async def test_resume_imports_a_workflow_matching_an_allowed_pattern(db: str) -> None:
    await run(double, {"n": 2}, run_id="r1", journal=db)
    out = await resume("r1", journal=db, allow_workflows=[f"{__name__}:*"])
    assert out.unwrap() == 4


async def test_resume_allowlist_from_the_environment(db: str, monkeypatch: pytest.MonkeyPatch) -> None:
    await run(double, {"n": 3}, run_id="r1", journal=db)
    monkeypatch.setenv("AGENTFLOW_RESUME_ALLOW", f"other.module:*, {__name__}:double")
    assert (await resume("r1", journal=db)).unwrap() == 6


async def test_resume_with_the_workflow_named_by_the_user_needs_no_allowlist(db: str) -> None:
    await run(double, {"n": 5}, run_id="r1", journal=db)
    assert (await resume("r1", journal=db, workflow=double)).unwrap() == 10


async def test_cli_resume_refuses_an_unallowed_module_with_a_usage_error(
    db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await run(double, {"n": 2}, run_id="r1", journal=db)
    _forge(db, workflow="subprocess:getoutput", inputs=json.dumps({"cmd": "id"}))
    parser = build_parser()
    args = parser.parse_args(["resume", "r1", "--journal", db])
    assert await anyio.to_thread.run_sync(args.func, args) == 2
    err = capsys.readouterr().err
    assert "not in the allowed workflows" in err and "--allow-workflow 'subprocess:*'" in err


def test_plan_run_is_recorded_by_path_and_resumes_without_an_allowlist(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    journal = str(tmp_path / "j.db")
    common = ["--engine", "test:", "--quiet", "--json"]
    assert main(["run", PLAN, *common, "--journal", journal, "--run-id", "p1"]) == 0
    first = json.loads(capsys.readouterr().out)
    detail = anyio.run(show_run, "p1", journal)
    assert detail.run.workflow == f"plan:{Path(PLAN).resolve()}"
    assert main(["resume", "p1", "--journal", journal, "--engine", "test:", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["outputs"] == first["outputs"]
