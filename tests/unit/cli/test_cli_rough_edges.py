"""CLI details a new user meets first: engine choice, set-up errors, local tools, tracebacks, progress."""

from __future__ import annotations

import io
import sys
import uuid
from pathlib import Path

import anyio
import pytest
from rich.console import Console

from agentflow import cli
from agentflow._progress import RunProgress, count_calls
from agentflow.dsl import LLMCall, StepEnded, StepStarted, ToolCall
from agentflow.runs import load_journaled_run

ROOT = Path(__file__).parents[3]
CALC = str(ROOT / "examples" / "calc_loop.yaml")


def _tool_plan(tmp_path: Path, body: str) -> tuple[str, str]:
    """A tool module in ``tmp_path`` (a fresh name, so no test sees another's import) and a plan using it."""
    module = f"localtools_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(body, encoding="utf-8")
    plan = tmp_path / "plan.yaml"
    plan.write_text(
        "apiVersion: agentflow/v1\nkind: Plan\nname: local\n"
        f"tools: ['{module}:shout']\n"
        "steps:\n  - {id: s, tool: shout, args: {text: hi}}\n",
        encoding="utf-8",
    )
    return module, str(plan)


def test_run_finds_a_tool_module_in_the_working_directory_with_allow_tool_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module, plan = _tool_plan(
        tmp_path,
        'def shout(text: str) -> str:\n    """Shout.\n\n    Args:\n        text: What.\n    """\n'
        "    return text.upper()\n",
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    assert cli.main(["run", plan, "--engine", "test:", "--no-save", "--allow-tool", f"{module}:*"]) == 0
    assert "HI" in capsys.readouterr().out
    assert sys.path[-1] == str(tmp_path), (
        "the working directory goes last: it never shadows installed modules"
    )


def test_run_verbose_prints_the_tool_exception_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module, plan = _tool_plan(tmp_path, "def shout(text: str) -> str:\n    return {}[text]\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    args = ["run", plan, "--engine", "test:", "--no-save", "--allow-tool", f"{module}:*"]
    assert cli.main(args) == 1
    quiet = capsys.readouterr().err
    assert "KeyError" in quiet and "--verbose" in quiet and "Traceback" not in quiet
    assert cli.main([*args, "--verbose"]) == 1
    loud = capsys.readouterr().err
    assert "Traceback (most recent call last)" in loud
    assert f"{module}.py" in loud and "return {}[text]" in loud


def test_run_with_a_missing_gguf_file_exits_2_with_a_cli_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nope.gguf"
    assert cli.main(["run", CALC, "--engine", f"llamacpp:{missing}", "--no-save"]) == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "does not exist" in err
    assert "--engine llamacpp:default" in err and "model_path" not in err


def test_run_uses_agentflow_engine_when_no_engine_option_is_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGENTFLOW_ENGINE", "test:")
    journal = str(tmp_path / "j.db")
    assert cli.main(["run", CALC, "--journal", journal, "--run-id", "env"]) == 0
    assert anyio.run(load_journaled_run, "env", journal).engine == "test"


def test_journaled_run_records_the_default_inputs_it_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = str(tmp_path / "j.db")
    assert cli.main(["run", CALC, "--engine", "test:", "--journal", journal, "--run-id", "d"]) == 0
    assert anyio.run(load_journaled_run, "d", journal).inputs == {"start": 3}


def test_schema_help_describes_the_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["schema", "--help"])
    assert "JSON Schema of the agentflow/v1 plan format" in capsys.readouterr().out


def test_evolve_help_is_written_for_users(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["evolve", "--help"])
    out = capsys.readouterr().out
    assert "population of LLM coding agents" in out and "register(" not in out


def test_count_calls_counts_llm_tool_and_failed_tool_calls() -> None:
    llm = LLMCall(path="p/b", prompt_tokens=10, cached_tokens=4, completion_tokens=3)
    tools = [ToolCall(path="x", tool="t"), ToolCall(path="y", tool="t", status="error", error="no")]
    counts = count_calls([llm, llm, *tools, StepStarted(path="p")])
    assert (counts.llm_calls, counts.tool_calls, counts.failed_tool_calls) == (2, 2, 1)


def test_progress_live_display_shows_steps_and_llm_calls_on_a_terminal() -> None:
    out = io.StringIO()
    progress = RunProgress("demo", console=Console(file=out, force_terminal=True, width=120))
    assert progress.live
    with progress.show():
        progress.feed(StepStarted(path="demo/a"))
        progress.feed(StepStarted(path="demo/b"))
        progress.feed(LLMCall(path="demo/a", prompt_tokens=100, cached_tokens=50))
        progress.feed(StepEnded(path="demo/a", ok=True, seconds=0.1))
        shot = io.StringIO()
        Console(file=shot, width=200).print(progress.render())
    picture = shot.getvalue()
    assert "1 done · 1 running" in picture and "demo/b" in picture
    assert "1 done · 0 running · 0 queued · 100 prompt tokens (50% cached)" in picture
    assert "done   demo/a" not in out.getvalue(), "no plain lines while the live display is shown"


def test_progress_prints_plain_lines_for_finished_steps_when_not_a_terminal() -> None:
    stream = io.StringIO()
    progress = RunProgress("demo", console=Console(file=io.StringIO()), stream=stream)
    assert not progress.live
    with progress.show():
        progress.feed(StepStarted(path="demo/a"))
        progress.feed(StepEnded(path="demo/a", ok=True, seconds=0.1))
        progress.feed(StepStarted(path="demo/b"))
        progress.feed(StepEnded(path="demo/b", ok=False, seconds=0.1, error_type="ToolError"))
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert "done   demo/a" in lines[0] and "FAILED demo/b" in lines[1]
