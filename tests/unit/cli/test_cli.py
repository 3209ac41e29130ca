"""The ``agentflow`` CLI in-process: commands, exit codes, journaled runs, provider sub-commands."""

from __future__ import annotations

import argparse
import json
import sys
import types
import xml.etree.ElementTree as ET
from pathlib import Path

import anyio
import jsonschema
import pytest
import yaml

from agentflow import __version__, cli
from agentflow.report import RunRecord
from agentflow.runs import load_journaled_run

ROOT = Path(__file__).parents[3]
DIGEST = str(ROOT / "examples" / "topic_digest.yaml")


@pytest.fixture(autouse=True)
def _at_repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """The example plans read tables under examples/data/ relative to the working directory."""
    monkeypatch.chdir(ROOT)


def _journaled(run_id: str, journal: Path) -> RunRecord:
    return anyio.run(load_journaled_run, run_id, str(journal))


def _write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out.strip() == f"agentflow {__version__}"


@pytest.mark.parametrize("command", ["run", "resume", "validate", "graph", "report", "schema", "runs"])
def test_help_is_available_for_every_command(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    assert f"usage: agentflow {command}" in capsys.readouterr().out


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == 2
    assert "usage: agentflow" in capsys.readouterr().out


def test_schema_prints_the_plan_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(yaml.safe_load(Path(DIGEST).read_text(encoding="utf-8")), schema)


def test_validate_reports_ok_and_invalid_plans(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _write(
        tmp_path, "bad.yaml", "apiVersion: agentflow/v1\nkind: Plan\nsteps:\n  - {id: a, promt: x}\n"
    )
    assert cli.main(["validate", DIGEST]) == 0
    assert "ok" in capsys.readouterr().out
    assert cli.main(["validate", DIGEST, bad]) == 2
    out = capsys.readouterr().out
    assert f"{bad}:4:5" in out and "needs exactly one of the keys" in out


def test_run_json_prints_outputs_and_journals_the_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    journal = tmp_path / "j.db"
    code = cli.main(
        [
            "run",
            DIGEST,
            "--engine",
            "test:",
            "--json",
            "--journal",
            str(journal),
            "--run-id",
            "r1",
            "-i",
            "topics=Mars, Venus",
        ]
    )
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["ok"] is True and payload["run_id"] == "r1" and payload["plan"] == "topic-digest"
    assert len(payload["outputs"]["lines"]) == 2
    assert payload["usage"]["llm_calls"] == 3 and payload["usage"]["tool_calls"] == 5
    assert payload["journal"] == str(journal)
    record = _journaled("r1", journal)
    assert (
        record.ok
        and record.plan == "topic-digest"
        and record.inputs == {"topics": "Mars, Venus", "table": "examples/data/planets.csv"}
    )
    assert {e.kind for e in record.trace} >= {"step.start", "step.end", "llm.call", "tool.call"}


def test_run_plain_output_prints_progress_lines_when_not_a_tty(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["run", DIGEST, "--engine", "test:", "--no-save"]) == 0
    captured = capsys.readouterr()
    assert "digest:" in captured.out and "words:" in captured.out
    assert "done   topic-digest/topics" in captured.err and "done   topic-digest/count" in captured.err
    assert "start" not in captured.err, "plain progress prints finished steps only"


def test_run_with_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", DIGEST, "--engine", "test:", "--no-save", "-i", "nope=1"]) == 2
    assert "has no input(s) ['nope']" in capsys.readouterr().err
    assert cli.main(["run", DIGEST, "--engine", "test:", "--no-save", "-i", "novalue"]) == 2


def test_run_with_bad_engine_spec_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", DIGEST, "--engine", "warp:9", "--no-save"]) == 2
    assert "invalid engine spec" in capsys.readouterr().err


def test_run_of_an_invalid_plan_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _write(
        tmp_path, "bad.yaml", "apiVersion: agentflow/v1\nkind: Plan\nsteps: [{id: a, prompt: '{{x}}'}]\n"
    )
    assert cli.main(["run", bad, "--engine", "test:", "--no-save"]) == 2
    assert f"{bad}:3:" in capsys.readouterr().err


def test_run_that_fails_exits_1_and_is_journaled(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = _write(
        tmp_path,
        "fail.yaml",
        "apiVersion: agentflow/v1\nkind: Plan\nname: failing\n"
        "tools: [agentflow.plans.builtin_tools:calculator]\n"
        "steps:\n  - {id: c, tool: calculator, args: {expression: '1 / 0'}}\n",
    )
    journal = tmp_path / "j.db"
    assert cli.main(["run", plan, "--journal", str(journal), "--run-id", "bad", "--engine", "test:"]) == 1
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err and "agentflow resume bad --journal" in err
    record = _journaled("bad", journal)
    assert not record.ok and record.error is not None and "calculator" in record.error


def test_run_dry_run_prints_the_checked_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", DIGEST, "--dry-run"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["name"] == "topic-digest"


def test_run_needs_a_plan_or_a_goal(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run"]) == 2
    assert "--goal" in capsys.readouterr().err


def test_run_goal_dry_run_prints_a_generated_plan(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        cli.main(["run", "--goal", "say something about tea", "--engine", "test:", "--dry-run", "--no-save"])
        == 0
    )
    plan = yaml.safe_load(capsys.readouterr().out)
    assert plan["apiVersion"] == "agentflow/v1" and plan["steps"]


def test_graph_writes_svg(tmp_path: Path) -> None:
    out = tmp_path / "g.svg"
    assert cli.main(["graph", DIGEST, "-o", str(out)]) == 0
    assert ET.fromstring(out.read_text(encoding="utf-8")).tag == "{http://www.w3.org/2000/svg}svg"


@pytest.mark.parametrize("name", ["g.png", "g.gif", "g"])
def test_graph_rejects_formats_other_than_svg_naming_the_conversion(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["graph", DIGEST, "-o", str(tmp_path / name)]) == 2
    err = "".join(capsys.readouterr().err.split())  # the console may wrap long lines
    svg = tmp_path / "g.svg"
    assert f"writesSVGonly;write'{svg}'" in err and f"rsvg-convert-o{tmp_path / name}{svg}" in err
    assert list(tmp_path.iterdir()) == []


def test_report_writes_html_for_the_latest_journaled_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["run", DIGEST, "--engine", "test:", "--run-id", "r2", "--quiet"]) == 0
    html = tmp_path / "r.html"
    assert cli.main(["report", "latest", "-o", str(html)]) == 0
    assert "(run r2)" in capsys.readouterr().err
    text = html.read_text(encoding="utf-8")
    assert "topic-digest" in text and "LLM calls" in text and "cache hit rate" in text
    assert "<script" not in text and "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_report_of_an_unknown_run_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["report", "nope", "-o", str(tmp_path / "x.html")]) == 2
    assert "there is no journal at" in capsys.readouterr().err
    assert not (tmp_path / ".agentflow").exists(), "reading runs never makes an empty journal"
    assert cli.main(["run", DIGEST, "--engine", "test:", "--run-id", "r1", "--quiet"]) == 0
    assert cli.main(["report", "nope", "-o", str(tmp_path / "x.html")]) == 2
    assert "has no run 'nope' (latest: r1)" in capsys.readouterr().err
    assert cli.main(["report", "gone.jsonl", "-o", str(tmp_path / "x.html")]) == 2
    assert "run file 'gone.jsonl' does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["run", DIGEST, "--resume", "r1"], "agentflow resume RUN"),
        (["run", DIGEST, "--runs-dir", "runs"], "agentflow runs export RUN"),
        (["report", "r1", "-o", "r.html", "--runs-dir", "runs"], "runs are read from the journal"),
    ],
)
def test_removed_options_are_usage_errors_that_name_the_replacement(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert says in capsys.readouterr().err


def test_run_id_latest_is_reserved(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", DIGEST, "--engine", "test:", "--run-id", "latest"]) == 2
    assert "reserved" in capsys.readouterr().err


def test_subcommand_module_registers_its_command_when_dispatched(monkeypatch: pytest.MonkeyPatch) -> None:
    module = types.ModuleType("fake_provider_for_cli_test")

    def register(subparsers: object) -> None:
        parser = subparsers.add_parser("hello", help="say hello")  # type: ignore[attr-defined]
        parser.set_defaults(func=lambda args: 7)

    module.register = register  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "fake_provider_for_cli_test", module)
    monkeypatch.setattr(
        cli, "SUBCOMMANDS", (cli.Subcommand("hello", "say hello", "fake_provider_for_cli_test"),)
    )
    assert cli.main(["hello"]) == 7


def test_subcommand_import_error_propagates_when_dispatched_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "broken_provider_for_cli_test.py").write_text("import not_a_real_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(
        cli, "SUBCOMMANDS", (cli.Subcommand("broken", "broken", "broken_provider_for_cli_test"),)
    )
    assert "broken" in cli.build_parser().format_help()
    with pytest.raises(ModuleNotFoundError, match="not_a_real_dependency_xyz"):
        cli.build_parser("broken")


def _listed_help(parser: argparse.ArgumentParser) -> dict[str, str | None]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {action.dest: action.help for action in sub._choices_actions}


@pytest.mark.parametrize("entry", cli.SUBCOMMANDS, ids=lambda e: e.name)
def test_subcommand_table_help_matches_its_module_when_dispatched(entry: cli.Subcommand) -> None:
    assert _listed_help(cli.build_parser())[entry.name] == entry.help
    assert _listed_help(cli.build_parser(entry.name))[entry.name] == entry.help


def test_run_goal_writes_and_runs_a_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = cli.main(
        [
            "run",
            "--goal",
            "say something about tea",
            "--engine",
            "test:",
            "--json",
            "--journal",
            str(tmp_path / "j.db"),
        ]
    )
    assert code == 0
    captured = capsys.readouterr()
    payload = json.loads(captured.out)
    assert payload["ok"] is True and payload["plan"] == "meta-agent"
    assert "generated plan:" in captured.err and "apiVersion: agentflow/v1" in captured.err
    record = _journaled(payload["run_id"], tmp_path / "j.db")
    assert any(e.path.startswith("run_goal/write_plan") for e in record.trace)


def test_runs_record_prompts_and_tool_results_unless_no_content(tmp_path: Path) -> None:
    from agentflow.dsl import LLMCall, ToolCall

    journal = tmp_path / "j.db"
    base = ["run", DIGEST, "--engine", "test:", "--journal", str(journal), "--json"]
    assert cli.main([*base, "--run-id", "with"]) == 0
    assert cli.main([*base, "--run-id", "without", "--no-content"]) == 0
    full, bare = _journaled("with", journal).trace, _journaled("without", journal).trace
    llm = [e for e in full if isinstance(e, LLMCall)]
    tools = [e for e in full if isinstance(e, ToolCall)]
    assert llm and all(c.messages and c.completion is not None for c in llm)
    assert tools and all(t.args is not None and t.result is not None for t in tools)
    assert all(
        c.messages is None and c.prompt is None and c.completion is None
        for c in bare
        if isinstance(c, LLMCall)
    )
    assert all(t.args is None and t.result is None for t in bare if isinstance(t, ToolCall))
    assert len([e for e in bare if isinstance(e, LLMCall)]) == len(llm)


def test_run_stream_prints_each_calls_tokens_live_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["run", DIGEST, "--engine", "test:", "--no-save", "--stream", "--json"]) == 0
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if ">" in line and "echo:" in line]
    assert len(lines) == 4  # one line per LLM call, prefixed by its step path
    assert lines[0].startswith("topic-digest/per_topic/")
    assert json.loads(captured.out)["ok"] is True  # stdout keeps the result only
