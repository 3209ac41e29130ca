"""Every code block of the documentation site runs (see tests/docs_blocks.py for the rules)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from docs_blocks import LANGUAGES, MODES, ROOT, Block, blocks, run_block, scratch

from agentflow.memory import load_jsonl

ALL = blocks()
README_COMMANDS = [
    b.strip() for b in re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
]


def test_every_block_has_a_known_language_and_marker() -> None:
    assert ALL, "the docs have code blocks"
    for block in ALL:
        assert block.lang in LANGUAGES, (
            f"{block.id}: fenced block language {block.lang!r}; use one of {sorted(LANGUAGES)}"
        )
        assert block.mode in MODES, f"{block.id}: docs-test marker {block.mode!r}; use one of {sorted(MODES)}"


def test_readme_blocks_are_the_readme_commands() -> None:
    marked = [b for b in ALL if b.mode == "readme"]
    assert marked
    for block in marked:
        assert block.code.strip() in README_COMMANDS, f"{block.id} differs from the README's set-up commands"


@pytest.mark.parametrize(
    "block", [b for b in ALL if b.lang in ("python", "bash") and b.mode == "default"], ids=lambda b: b.id
)
def test_block_runs(block: Block, tmp_path: Path) -> None:
    env = {**os.environ, "AGENTFLOW_ENGINE": "test:"}
    proc = run_block(block, scratch(tmp_path), env, timeout=300)
    assert proc.returncode == 0, (
        f"{block.id} failed:\n{block.code}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
    )


@pytest.mark.parametrize("block", [b for b in ALL if b.lang == "yaml"], ids=lambda b: b.id)
def test_plan_block_runs(block: Block, tmp_path: Path) -> None:
    work = scratch(tmp_path)
    plan = work / "plan.yaml"
    plan.write_text(block.code, encoding="utf-8")
    assert isinstance(yaml.safe_load(block.code), dict)
    proc = subprocess.run(
        [sys.executable, "-m", "agentflow", "run", str(plan), "--engine", "test:", "--no-save"],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, f"{block.id}:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"


@pytest.mark.parametrize("block", [b for b in ALL if b.lang == "jsonl"], ids=lambda b: b.id)
def test_jsonl_block_loads_as_notes(block: Block, tmp_path: Path) -> None:
    notes = tmp_path / "notes.jsonl"
    notes.write_text(block.code, encoding="utf-8")
    assert len(load_jsonl(notes)) == len([line for line in block.code.splitlines() if line.strip()])
