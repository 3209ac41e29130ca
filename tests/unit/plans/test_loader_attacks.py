"""Hostile plan files against the loader (issue 18, item 7 and the ReDoS part of item 6).

One test per attack, named after it: each must end in a ``PlanError`` at file:line:column (or a
refusal of the path), exit 2 from the CLI without a traceback, and never hang.
"""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from agentflow import cli
from agentflow.errors import PlanError
from agentflow.network import NetworkPolicy
from agentflow.plans import load_plan, load_plan_text

HEAD = "apiVersion: agentflow/v1\nkind: Plan\n"
STEP = "steps:\n  - id: s\n    prompt: hi\n"


def load(text: str, **options: object) -> object:
    return load_plan_text(text, file="p.yaml", network=NetworkPolicy(), **options)  # type: ignore[arg-type]


def error_of(text: str, **options: object) -> PlanError:
    with pytest.raises(PlanError) as info:
        load(text, **options)
    return info.value


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = cli.main(args)
    out = capsys.readouterr()
    return code, out.out + out.err


# -- the plan path --------------------------------------------------------------------------------


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifo_as_plan_path_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "plan.yaml"
    os.mkfifo(fifo)
    with pytest.raises(PlanError, match="FIFO, not a regular file"):
        load_plan(fifo)  # a blocking open would wait here forever for a writer


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_device_as_plan_path_is_refused() -> None:
    with pytest.raises(PlanError, match="device or socket, not a regular file"):
        load_plan("/dev/zero")


def test_huge_plan_file_is_refused_by_its_size(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as fh:
        fh.truncate(50_000_000)  # sparse: costs no disk
    with pytest.raises(PlanError, match="more than the 1000000 allowed"):
        load_plan(big)


# -- tool references --------------------------------------------------------------------------------


def test_private_builtin_tool_reference_is_a_clean_plan_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = HEAD + "tools: ['agentflow.plans.builtin_tools:_eval']\n" + STEP
    err = error_of(text)
    assert (err.line, err.column) == (3, 9) and "private name" in err.message
    plan = tmp_path / "p.yaml"
    plan.write_text(text)
    code, out = run_cli(["validate", str(plan)], capsys)
    assert code == 2 and "Traceback" not in out and "private name" in out


@pytest.mark.parametrize(
    ("attr", "why"),
    [
        ("Callable", "not a tool the module offers"),
        ("MAX_TABLE_BYTES", "not a function or Tool"),
        ("ast", "not a tool the module offers"),
    ],
)
def test_typing_object_class_or_non_function_is_refused_as_a_tool(attr: str, why: str) -> None:
    err = error_of(HEAD + f"tools: ['agentflow.plans.builtin_tools:{attr}']\n" + STEP)
    assert why in err.message and (err.line, err.column) == (3, 9)


def test_class_named_exactly_is_still_refused_as_a_tool() -> None:
    ref = "agentflow.plans.builtin_tools:Callable"
    err = error_of(HEAD + f"tools: ['{ref}']\n" + STEP, allow_tools=[ref])
    assert "is a class, not a function or Tool" in err.message


def test_wildcard_allows_no_function_a_module_only_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "evil_reexport.py").write_text(
        textwrap.dedent(
            '''
            from shutil import rmtree


            def search(query: str) -> str:
                """Search.

                Args:
                    query: What to look for.
                """
                return query
            '''
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "evil_reexport", raising=False)
    wildcard = ["evil_reexport:*"]
    assert load(HEAD + "tools: ['evil_reexport:search']\n" + STEP, allow_tools=wildcard)
    err = error_of(HEAD + "tools: ['evil_reexport:rmtree']\n" + STEP, allow_tools=wildcard)
    assert "imported from elsewhere" in err.message and "--allow-tool 'evil_reexport:rmtree'" in err.message
    # Named exactly by the user, a re-exported function is the user's choice.
    assert load(HEAD + "tools: ['evil_reexport:rmtree']\n" + STEP, allow_tools=["evil_reexport:rmtree"])


def test_tool_whose_parameters_have_no_schema_is_a_plan_error_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "odd_tools.py").write_text("import ast\n\n\ndef walk(node: ast.AST) -> int:\n    return 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "odd_tools", raising=False)
    err = error_of(HEAD + "tools: ['odd_tools:walk']\n" + STEP, allow_tools=["odd_tools:walk"])
    assert "cannot be used as a tool" in err.message and (err.line, err.column) == (3, 9)


# -- YAML 1.1 coercions ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("engine: {max_tokens: 1:30}", "read as 90 by YAML 1.1"),
        ("engine: {max_tokens: 0200}", "octal number 128"),
        ("engine: {max_tokens: 1_000}", "read as 1000"),
        ("telemetry: {capture_content: on}", "read as True"),
        ("telemetry: {capture_content: off}", "read as False"),
        ("description: yes", "read as True"),
    ],
)
def test_yaml11_coercion_is_an_error_at_its_position(line: str, fragment: str) -> None:
    err = error_of(HEAD + line + "\n" + STEP)
    assert fragment in err.message and "quote it" in err.message
    assert err.line == 3 and err.column is not None and err.column > 1


def test_yaml11_boolean_timeout_is_an_error_at_its_position() -> None:
    err = error_of(HEAD + "steps:\n  - id: s\n    prompt: hi\n    timeout: yes\n")
    assert (err.line, err.column) == (6, 14) and "read as True by YAML 1.1" in err.message


@pytest.mark.parametrize(
    "line",
    ["engine: {max_tokens: '90'}", "engine: {max_tokens: 90.0}", "telemetry: {capture_content: 'true'}"],
)
def test_wrong_type_is_not_coerced(line: str) -> None:
    err = error_of(HEAD + line + "\n" + STEP)
    assert err.line == 3 and "valid" in err.message


def test_yaml12_spellings_are_read_as_yaml12() -> None:
    text = HEAD + "engine: {max_tokens: 0o17, temperature: 1e-1, seed: 0x10}\ndescription: 'yes'\n" + STEP
    plan = load_plan_text(text, network=NetworkPolicy()).plan
    assert (plan.engine.max_tokens, plan.engine.temperature, plan.engine.seed) == (15, 0.1, 16)
    assert plan.description == "yes"


# -- engine specs, bad bytes ------------------------------------------------------------------------


def test_unknown_engine_scheme_fails_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plan = tmp_path / "p.yaml"
    plan.write_text(HEAD + "engine:\n  spec: 'gpt5:turbo'\n" + STEP)
    code, out = run_cli(["validate", str(plan)], capsys)
    assert code == 2 and f"{plan}:4:9:" in out and "unknown scheme 'gpt5'" in out


@pytest.mark.parametrize(("char", "name"), [("\x01", "U+0001"), ("\x00", "U+0000"), ("\x1b", "U+001B")])
def test_control_character_error_names_line_and_column(char: str, name: str) -> None:
    err = error_of(HEAD + "steps:\n  - id: s\n    prompt: 'ab" + char + "c'\n")
    assert (err.line, err.column) == (5, 16) and name in err.message


def test_non_utf8_error_names_line_and_column() -> None:
    raw = (HEAD + "steps:\n  - id: s\n    prompt: 'h\u00e9").encode() + b"\xff'\n"
    with pytest.raises(PlanError) as info:
        load_plan_text(raw, file="p.yaml", network=NetworkPolicy())
    assert (info.value.line, info.value.column) == (5, 16) and "0xff" in info.value.message
