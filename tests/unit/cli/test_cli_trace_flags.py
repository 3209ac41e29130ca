"""`agentflow run --trace console` exports the run's spans; without --trace nothing is exported."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentflow.cli import main

ROOT = Path(__file__).resolve().parents[3]


def test_run_with_console_trace_prints_spans(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(
        [
            "run",
            str(ROOT / "examples" / "calc_loop.yaml"),
            "--engine",
            "test:",
            "--quiet",
            "--journal",
            str(tmp_path / "j.db"),
            "--trace",
            "console",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert '"name": "invoke_workflow' in out or '"gen_ai.operation.name"' in out


def test_run_without_trace_prints_no_spans(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(
        [
            "run",
            str(ROOT / "examples" / "calc_loop.yaml"),
            "--engine",
            "test:",
            "--quiet",
            "--journal",
            str(tmp_path / "j.db"),
        ]
    )
    assert code == 0
    assert "trace_id" not in capsys.readouterr().out


def test_plan_telemetry_block_configures_the_exporter(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    plan = (ROOT / "examples" / "calc_loop.yaml").read_text() + "telemetry:\n  exporter: console\n"
    path = tmp_path / "traced.yaml"
    path.write_text(plan)
    code = main(["run", str(path), "--engine", "test:", "--quiet", "--journal", str(tmp_path / "j.db")])
    assert code == 0
    assert '"trace_id"' in capsys.readouterr().out
