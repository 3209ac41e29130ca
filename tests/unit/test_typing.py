"""mypy --strict is clean on dsl/ and on the assert_type checks in tests/typing/."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(600)
def test_mypy_strict_is_clean_on_dsl_and_typing_checks(tmp_path: Path) -> None:
    if importlib.util.find_spec("mypy") is None:
        pytest.fail("mypy is not installed: install the test extra (pip install -e '.[test]')")
    # dsl/ on its own (it depends on nothing else of ours), then the assert_type checks, run from a
    # neutral directory so `agentflow` resolves to the installed package rather than the checkout.
    typing_checks = [str(path) for path in sorted((ROOT / "tests" / "typing").glob("*.py"))]
    for target in (str(ROOT / "dsl"), *typing_checks):
        cmd = [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(tmp_path / "cache"), target]
        proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, f"mypy --strict {target}:\n{proc.stdout}{proc.stderr}"
