"""Every package's ``__all__`` resolves, has no duplicates, and lists every public name it defines."""

from __future__ import annotations

import importlib
import types

import pytest

PACKAGES = [
    "agentflow",
    "agentflow.dsl",
    "agentflow.engines",
    "agentflow.runtime",
    "agentflow.scheduler",
    "agentflow.executors",
    "agentflow.agents",
    "agentflow.memory",
    "agentflow.plans",
    "agentflow.agents.evogit",
    "agentflow.telemetry",
    "agentflow.runs",
    "agentflow.secrets",
    "agentflow.mcp",
    "agentflow.network",
    "agentflow.structured",
]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_resolves_and_covers_public_names(name: str) -> None:
    module = importlib.import_module(name)
    exported = list(module.__all__)
    assert len(exported) == len(set(exported)), f"{name}.__all__ has duplicates"
    for attr in exported:
        assert hasattr(module, attr), f"{name}.__all__ lists {attr!r}, which does not exist"
    public = {
        attr
        for attr, value in vars(module).items()
        if not attr.startswith("_")
        and not isinstance(value, types.ModuleType)
        and str(getattr(value, "__module__", name)).startswith(name)
        and attr not in {"annotations", "TYPE_CHECKING"}
    }
    missing = sorted(public - set(exported))
    assert not missing, f"{name} defines public names missing from __all__: {missing}"
