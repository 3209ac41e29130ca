"""Helpers of the EvoGit integration tests: the tiny candidate program, its fitness command, a git runner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def init_repo(repo: Path, files: dict[str, str] | None = None) -> Path:
    """Create a repository at ``repo`` with one commit of ``files`` (default: ``code.py``)."""
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    for rel, text in (files or {"code.py": CODE}).items():
        path = repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "initial")
    return repo
