"""``import agentflow`` stays light: heavy libraries and subpackages load on first use, not on import.

Structural checks in a fresh interpreter (what ``sys.modules`` holds after an import), never timings.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import agentflow

HEAVY = ("numpy", "jsonschema", "yaml", "opentelemetry.sdk", "mcp")
"""Libraries only some features need; each costs tens to hundreds of milliseconds to import."""


def loaded_after(statement: str, candidates: tuple[str, ...]) -> list[str]:
    """Which of ``candidates`` a fresh interpreter has in ``sys.modules`` after running ``statement``."""
    code = f"import sys\n{statement}\nprint(','.join(m for m in {candidates!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


@pytest.mark.parametrize(
    "module",
    [
        "agentflow",
        "agentflow.cli",
        "agentflow.executors",
        "agentflow.mcp",
        "agentflow.memory",
        "agentflow.plans",
        "agentflow.runtime",
        "agentflow.telemetry",
    ],
)
def test_importing_loads_no_heavy_library_when_nothing_is_used(module: str) -> None:
    assert loaded_after(f"import {module}", HEAVY) == []


def test_importing_agentflow_loads_only_the_dsl_when_nothing_else_is_used() -> None:
    lazy = ("agentflow.engines", "agentflow.plans", "agentflow.runtime", "agentflow.scheduler")
    assert loaded_after("import agentflow", lazy) == []


def test_top_level_names_are_the_objects_of_their_home_packages() -> None:
    assert agentflow.run is agentflow.runtime.run
    assert agentflow.Plan is agentflow.plans.Plan
    assert agentflow.Engine is agentflow.engines.Engine
    assert agentflow.Scheduler is agentflow.scheduler.Scheduler
    assert {"load_plan", "run_sync", "Scheduler"} <= set(dir(agentflow))


def test_from_import_of_a_lazy_name_works_in_a_fresh_interpreter() -> None:
    assert loaded_after("from agentflow import Plan, run", ("agentflow.plans", "agentflow.runtime")) == [
        "agentflow.plans",
        "agentflow.runtime",
    ]


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        agentflow.no_such_name  # noqa: B018


def test_cli_help_loads_no_agent_or_git_module() -> None:
    statement = (
        "import contextlib\nfrom agentflow.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(None):\n    main(['--help'])"
    )
    heavy = ("git", "agentflow.agents._compiler", "agentflow.agents.evogit._evolve", *HEAVY)
    assert loaded_after(statement, heavy) == []


def test_agent_packages_load_their_modules_on_first_use() -> None:
    statement = "import agentflow.agents, agentflow.agents.evogit"
    assert loaded_after(statement, ("git", "agentflow.agents._compiler", "agentflow.agents._meta")) == []
    assert loaded_after("from agentflow.agents import react", ("agentflow.agents._react",)) == [
        "agentflow.agents._react"
    ]
