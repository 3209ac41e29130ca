"""Fixtures for EvoGit integration tests: real temporary git repositories with a tiny fitness problem."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from _evogit_repos import init_repo


@pytest.fixture
def make_repo(tmp_path: Path) -> Callable[..., Path]:
    """``make_repo(files={...})``: a fresh repository with one commit of ``files`` (default: code.py)."""

    def make(files: dict[str, str] | None = None, name: str = "repo") -> Path:
        return init_repo(tmp_path / name, files)

    return make
