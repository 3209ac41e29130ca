"""`agentflow runs show|list|export` and `agentflow report` over the journal: one store, the same run ids
(``latest`` included), each attempt's LLM and tool calls with their content on request; run files (exported,
or saved by older agentflow versions, formats 1 and 2) still open with `report`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_report import V1_LINES

from agentflow.cli import main
from agentflow.report import load_run, save_run

ROOT = Path(__file__).resolve().parents[3]
PLAN = str(ROOT / "examples" / "calc_loop.yaml")


@pytest.fixture
def journaled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    """A journal holding one plan run, ``c1`` (five calculator calls and one LLM call on the test engine)."""
    journal = str(tmp_path / "j.db")
    assert main(["run", PLAN, "--engine", "test:", "--quiet", "--journal", journal, "--run-id", "c1"]) == 0
    capsys.readouterr()
    return journal


def test_runs_show_lists_each_calls_start_duration_and_status(
    journaled: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["runs", "show", "latest", "--journal", journaled]) == 0
    out = capsys.readouterr().out
    assert "run       c1" in out and "attempts  1" in out
    assert "attempt 1: completed" in out
    calls = [
        line.split() for line in out.splitlines() if " tool calculator " in line or " llm generate " in line
    ]
    assert [c[2] for c in calls] == ["ok"] * 7 and [c[3] for c in calls] == ["tool"] * 6 + ["llm"]
    assert calls[-1][-1] == "calc-loop/verdict/small"
    assert "args:" not in out and "completion:" not in out, "content is shown with --content only"


def test_runs_show_content_shows_prompts_completions_arguments_and_results(
    journaled: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["runs", "show", "c1", "--journal", journaled, "-v"]) == 0
    out = capsys.readouterr().out
    assert '      args: {"expression": "3 * 1"}' in out and "      result: 3.0" in out
    assert "      user: The number 96.0 is modest. Say so in five words." in out
    assert "      completion: echo: The number 96.0 is modest" in out


def test_runs_show_json_has_the_run_its_steps_attempts_and_calls(
    journaled: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["runs", "show", "c1", "--journal", journaled, "--json"]) == 0
    bare = json.loads(capsys.readouterr().out)
    assert bare["run"]["run_id"] == "c1" and bare["run"]["status"] == "completed"
    assert {"calc-loop/first", "calc-loop/grow/double[4]"} <= {s["path"] for s in bare["steps"]}
    assert [(a["attempt"], a["status"], a["dropped"]) for a in bare["attempts"]] == [(1, "completed", 0)]
    assert [c["kind"] for c in bare["calls"]] == ["tool.call"] * 6 + ["llm.call"]
    assert all(c["attempt"] == 1 and c["started"] > 0 for c in bare["calls"])
    assert all("args" not in c and "completion" not in c and "messages" not in c for c in bare["calls"])
    assert main(["runs", "show", "c1", "--journal", journaled, "--json", "--content"]) == 0
    full = json.loads(capsys.readouterr().out)
    assert full["calls"][0]["args"] == {"expression": "3 * 1"} and full["calls"][0]["result"] == "3.0"
    assert full["calls"][-1]["completion"].startswith("echo: The number 96.0")


def test_runs_list_shows_the_run_and_reads_no_journal_into_being(
    journaled: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["runs", "list", "--journal", journaled]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[1].split()[:3] == ["c1", "completed", "1"]
    missing = tmp_path / "elsewhere" / "j.db"
    assert main(["runs", "list", "--journal", str(missing)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1 and not missing.parent.exists()
    assert main(["runs", "show", "latest", "--journal", str(missing)]) == 2
    assert "there is no journal at" in capsys.readouterr().err


def test_exported_run_opens_with_report_anywhere(
    journaled: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out" / "c1.jsonl"
    assert main(["runs", "export", "c1", "--journal", journaled, "-o", str(target)]) == 0
    assert f"wrote {target}" in capsys.readouterr().out
    record = load_run(str(target))
    assert (
        record.run_id == "c1" and record.ok and record.plan == "calc-loop" and record.inputs == {"start": 3}
    )
    html = tmp_path / "r.html"
    assert main(["report", str(target), "-o", str(html)]) == 0
    from_journal = tmp_path / "j.html"
    assert main(["report", "c1", "--journal", journaled, "-o", str(from_journal)]) == 0
    assert html.read_text(encoding="utf-8") == from_journal.read_text(encoding="utf-8")


@pytest.mark.parametrize("version", [1, 2])
def test_old_saved_run_files_still_open_with_report(
    version: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if version == 1:
        path = tmp_path / "old.jsonl"
        path.write_text("\n".join(json.dumps(line) for line in V1_LINES) + "\n", encoding="utf-8")
    else:
        path = save_run(load_run(str(_v1_file(tmp_path))), tmp_path / "runs")
    html = tmp_path / "old.html"
    assert main(["report", str(path), "-o", str(html)]) == 0
    text = html.read_text(encoding="utf-8")
    assert "error: no such key" in text and "timeout" in text


def _v1_file(tmp_path: Path) -> Path:
    path = tmp_path / "v1.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in V1_LINES) + "\n", encoding="utf-8")
    return path


def test_a_run_id_saved_by_an_older_agentflow_points_at_its_file(
    journaled: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".agentflow" / "runs").mkdir(parents=True)
    (tmp_path / ".agentflow" / "runs" / "old.jsonl").write_text(
        "\n".join(json.dumps(line) for line in V1_LINES) + "\n", encoding="utf-8"
    )
    assert main(["report", "old", "--journal", journaled, "-o", "r.html"]) == 2
    err = capsys.readouterr().err
    assert "has no run 'old'" in err and "agentflow report .agentflow/runs/old.jsonl" in err
