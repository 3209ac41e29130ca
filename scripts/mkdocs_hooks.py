"""MkDocs hook: let mkdocstrings find ``agentflow.dsl``, ``agentflow.agents``... in the source tree.

pyproject.toml maps top-level folders into the ``agentflow`` namespace (``package-dir``), which a static
reader such as griffe cannot follow. Before the build this hook lays out the package as it is installed
(``agentflow/`` with ``dsl/``, ``agents/``, ``memory/``, ``executors/`` inside), as symbolic links in a
git-ignored folder ``build/docs-src`` (mkdocs.yml points the Python handler there).
"""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def layout(target: Path) -> Path:
    """Build the installed layout of ``agentflow`` under ``target``; returns ``target``."""
    mapping: dict[str, str] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"
    ]["package-dir"]
    shutil.rmtree(target, ignore_errors=True)
    for name, folder in mapping.items():
        # Real folders holding links to the files: griffe does not descend into linked folders.
        destination = target.joinpath(*name.split("."))
        source = ROOT / folder
        for path in sorted(source.rglob("*.py")) + sorted(source.rglob("py.typed")):
            relative = path.relative_to(source)
            if "__pycache__" in relative.parts or (destination / relative).is_symlink():
                continue  # agentflow/dsl... are links to the top-level folders: each file is laid out once
            (destination / relative).parent.mkdir(parents=True, exist_ok=True)
            (destination / relative).symlink_to(path)
    return target


def on_startup(command: str, dirty: bool) -> None:
    """Lay the package out where mkdocs.yml's ``paths`` points, before any plugin reads its configuration:
    mkdocstrings' Python handler drops search paths that do not exist when it is configured (on a fresh
    checkout ``build/docs-src`` does not exist yet)."""
    layout(ROOT / "build" / "docs-src")


def on_config(config: Any) -> Any:
    """Lay the package out again for ``mkdocs serve`` rebuilds (files may have been added)."""
    layout(ROOT / "build" / "docs-src")
    return config
