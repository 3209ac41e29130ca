"""`agentflow run` journals a plan run; `agentflow resume RUN` continues it with the plan and inputs it recorded,
replaying finished steps instead of re-running them."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from agentflow.cli import main
from agentflow.dsl import LLMCall, StepReplayed, ToolCall
from agentflow.runs import show_run

ROOT = Path(__file__).resolve().parents[3]
PLAN = str(ROOT / "examples" / "calc_loop.yaml")


def test_resume_replays_journaled_plan_steps_without_repeating_the_inputs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    common = ["--engine", "test:", "--quiet", "--json"]
    assert main(["run", PLAN, *common, "--run-id", "r1", "-i", "start=5"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(["resume", "r1", *common]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["outputs"] == first["outputs"]
    assert first["usage"]["tool_calls"] > 0
    assert second["usage"]["tool_calls"] == 0 and second["usage"]["llm_calls"] == 0
    detail = anyio.run(show_run, "r1", str(tmp_path / ".agentflow" / "journal.db"))
    assert detail.run.attempts == 2 and [a.trace.attempt for a in detail.attempts] == [1, 2]
    again = detail.attempts[1].events
    assert not any(isinstance(e, LLMCall | ToolCall) for e in again)
    assert any(isinstance(e, StepReplayed) for e in again)


def test_resume_latest_continues_the_run_updated_last(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    common = ["--engine", "test:", "--quiet", "--json"]
    assert main(["run", PLAN, *common, "--run-id", "older"]) == 0
    assert main(["run", PLAN, *common, "--run-id", "newer", "-i", "start=7"]) == 0
    capsys.readouterr()
    assert main(["resume", "latest", *common]) == 0
    assert json.loads(capsys.readouterr().out)["run_id"] == "newer"


def test_resume_of_an_unknown_run_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["resume", "nope", "--engine", "test:"]) == 2
    assert "there is no journal at" in capsys.readouterr().err
    assert main(["run", PLAN, "--engine", "test:", "--quiet", "--run-id", "r1"]) == 0
    assert main(["resume", "nope", "--engine", "test:"]) == 2
    assert "has no run 'nope' (latest: r1)" in capsys.readouterr().err
