"""`agentflow run` with a plan tool that calls argparse on bad input: the step fails, the CLI run does not end
with the tool's SystemExit (issue 18, item 7)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

TOOLS = '''
import argparse


def parse_flags(flag: str) -> str:
    """Parse one command-line flag with argparse.

    Args:
        flag: The flag.
    """
    parser = argparse.ArgumentParser(prog="parse_flags")
    parser.add_argument("--verbose", action="store_true")
    return repr(parser.parse_args([flag]))
'''

PLAN = """apiVersion: agentflow/v1
kind: Plan
name: exits
tools: [exit_tools:parse_flags]
steps:
  - {id: good, tool: parse_flags, args: {flag: --verbose}}
  - {id: bad, tool: parse_flags, args: {flag: --bogus}}
"""


def test_cli_run_survives_tool_calling_argparse_with_bogus_flag(tmp_path: Path) -> None:
    (tmp_path / "exit_tools.py").write_text(TOOLS)
    (tmp_path / "plan.yaml").write_text(PLAN)
    args = [
        "run",
        "plan.yaml",
        "--engine",
        "test:",
        "--journal",
        "runs.db",
        "--allow-tool",
        "exit_tools:parse_flags",
    ]
    proc = subprocess.run(
        [sys.executable, "-m", "agentflow", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "NO_COLOR": "1"},
    )
    # A failed run (1) with the tool's error, not argparse's exit status 2 ending the CLI.
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "raised SystemExit: 2" in proc.stderr
    listed = subprocess.run(
        [sys.executable, "-m", "agentflow", "runs", "list", "--journal", "runs.db", "--status", "failed"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert len(listed.stdout.splitlines()) == 2, "the failed run was not journaled: " + listed.stdout
