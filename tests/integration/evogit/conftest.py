"""Fixtures for EvoGit integration tests: real temporary git repositories with a tiny fitness problem."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

# The candidate code: fitness is -(x - 10)^2, so agents improve it by moving X towards 10.
CODE = '''"""Candidate code."""


def value():
    return 3


def helper():
    return 0
'''

FITNESS = f'{sys.executable} -c "import code; v = code.value(); print(-(v - 10) ** 2)"'


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` and return stdout (raises on failure)."""
    res = subprocess.run(
        ["git", "-c", "user.name=test", "-c", "user.email=test@localhost", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return res.stdout.strip()


@pytest.fixture
def make_repo(tmp_path: Path) -> Callable[..., Path]:
    """``make_repo(files={...})``: a fresh repository with one commit of ``files`` (default: code.py)."""

    def make(files: dict[str, str] | None = None, name: str = "repo") -> Path:
        repo = tmp_path / name
        repo.mkdir()
        git(repo, "init", "-q", "-b", "main")
        for rel, text in (files or {"code.py": CODE}).items():
            path = repo / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        git(repo, "add", ".")
        git(repo, "commit", "-q", "-m", "initial")
        return repo

    return make
