"""`agentflow run --journal` records a plan run's steps; `--resume RUN_ID` replays them instead of re-running."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentflow.cli import main

ROOT = Path(__file__).resolve().parents[3]
PLAN = str(ROOT / "examples" / "calc_loop.yaml")


def test_resume_replays_journaled_plan_steps(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    common = ["--engine", "test:", "--quiet", "--json", "--runs-dir", str(tmp_path / "runs")]
    journal = str(tmp_path / "j.db")
    assert main(["run", PLAN, *common, "--journal", journal, "--run-id", "r1"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert main(["run", PLAN, *common, "--journal", journal, "--resume", "r1"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["outputs"] == first["outputs"]
    assert first["usage"]["tool_calls"] > 0
    assert second["usage"]["tool_calls"] == 0 and second["usage"]["llm_calls"] == 0


def test_resume_with_a_different_run_id_is_bad_input(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["run", PLAN, "--engine", "test:", "--resume", "a", "--run-id", "b"]) == 2
