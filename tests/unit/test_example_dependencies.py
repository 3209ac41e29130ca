"""Every example's imports are installed by the command its docs give.

An example needs only the core dependencies unless its docstring names an extra
(``pip install -e '.[examples]' ...``); every third-party module it imports, at the top or inside a
function, must come from a distribution that those requirements install (directly or through their
own dependencies).
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata as metadata
import re
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").rglob("*.py"))
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
_NAME = re.compile(r"^[A-Za-z0-9._-]+")


def _dist(requirement: str) -> str:
    match = _NAME.match(requirement.strip())
    assert match, requirement
    return match.group(0).lower().replace("_", "-").replace(".", "-")


def _closure(requirements: list[str], extras: set[str]) -> set[str]:
    """Distributions installed by ``requirements`` (ours expanded with ``extras``), transitively."""
    todo = [_dist(r) for r in requirements]
    for extra in extras:
        todo += [_dist(r) for r in PROJECT["optional-dependencies"][extra]]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name in seen or name == "agentflow":
            continue
        seen.add(name)
        try:
            requires = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        todo += [_dist(r) for r in requires if "extra ==" not in r.partition(";")[2]]
    return seen


@functools.cache
def _modules() -> dict[str, list[str]]:
    return dict(metadata.packages_distributions())


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    local = {p.stem for p in path.parent.rglob("*.py")}  # the example's own modules
    return {m for m in found if m not in sys.stdlib_module_names and m not in local and m != "agentflow"}


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_example_imports_are_installed_by_its_documented_command(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    extras = set(re.findall(r"pip install -e '\.\[([\w,-]+)\]'", text))
    extras = {e for group in extras for e in group.split(",")}
    assert extras <= set(PROJECT["optional-dependencies"]), f"{path.name} names an unknown extra {extras}"
    provided = _closure(PROJECT["dependencies"], extras)
    modules = _modules()
    for module in sorted(_imports(path)):
        dists = {_dist(d) for d in modules.get(module, [])}
        assert dists & provided, (
            f"{path.relative_to(ROOT)} imports {module!r} (from {sorted(dists) or 'nothing installed'}), which "
            f"neither the core dependencies nor the extras its docstring names ({sorted(extras)}) install"
        )


def test_the_check_sees_a_missing_extra() -> None:
    assert "starlette" not in _closure(PROJECT["dependencies"], set())
    assert "starlette" in _closure(PROJECT["dependencies"], {"examples"})
