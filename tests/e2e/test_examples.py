"""Every Python example runs as a user runs it, on the real embedded engine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def test_hello_example_classifies_and_reports_usage() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "hello.py")],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    labels = [line.split()[0] for line in lines[:4]]
    assert all(label in {"positive", "negative", "neutral"} for label in labels), proc.stdout
    assert any(line.startswith("summary: ") and len(line) > len("summary: ") for line in lines)
    usage = next(line for line in lines if line.startswith("usage:"))
    assert "5 LLM calls" in usage


def test_compiler_math_example_plans_calls_tools_and_answers() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "compiler_math.py")],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    calls = [line for line in lines if line.startswith("  ") and "->" in line]
    assert calls, proc.stdout
    assert all(("lookup(" in c) or ("math(" in c) for c in calls)
    assert any(line.startswith("answer:") for line in lines)
