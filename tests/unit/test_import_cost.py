"""``import agentflow`` and ``agentflow --help`` stay light: heavy libraries load on first use, sub-commands on dispatch.

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


def test_top_level_names_are_the_objects_of_their_home_packages() -> None:
    assert agentflow.run is agentflow.runtime.run
    assert agentflow.Plan is agentflow.plans.Plan
    assert agentflow.Engine is agentflow.engines.Engine
    assert agentflow.Scheduler is agentflow.scheduler.Scheduler
    assert {"load_plan", "run_sync", "Scheduler"} <= set(dir(agentflow))


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        agentflow.no_such_name  # noqa: B018


HELP = (
    "import contextlib\nfrom agentflow.cli import main\n"
    "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(None):\n    main(['--help'])"
)

EXTRA_HEAVY = ("git", "llama_cpp", "vllm", "ray", "zmq", "rank_bm25", "prometheus_client")
"""Libraries of one engine, the EvoGit agents or the benchmarks: never needed to list the commands."""


def test_cli_help_imports_no_subcommand_module() -> None:
    from agentflow.cli import SUBCOMMANDS

    modules = tuple(entry.module for entry in SUBCOMMANDS)
    assert loaded_after(HELP, modules) == []


def test_cli_help_imports_no_agent_memory_or_heavy_module() -> None:
    modules = (
        "agentflow.agents",
        "agentflow.agents.evogit",
        "agentflow.memory",
        "agentflow.mcp",
        "agentflow.runs",
        "agentflow.report",
        *HEAVY,
        *EXTRA_HEAVY,
    )
    assert loaded_after(HELP, modules) == []


def test_dispatching_a_subcommand_imports_its_module() -> None:
    statement = HELP.replace("main(['--help'])", "main(['runs', '--help'])")
    assert loaded_after(statement, ("agentflow.runs._cli", "agentflow.memory._cli")) == [
        "agentflow.runs._cli"
    ]
