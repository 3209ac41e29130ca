"""One real mutation end to end with the embedded SmolLM2-135M engine on the bin-packing example."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from _evogit_repos import git

from agentflow.agents.evogit import EvolveConfig, GitRepo, PopulationStore, evolve

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

TEMPLATE = Path(__file__).resolve().parents[3] / "examples" / "evolve_binpacking" / "template"


async def test_llamacpp_mutation_end_to_end_is_applied_or_rejected(make_repo: Callable[..., Path]) -> None:
    files = {p.name: p.read_text() for p in TEMPLATE.glob("*.py")}
    repo = make_repo(files)
    config = EvolveConfig(
        repo=repo,
        fitness=f"{sys.executable} evaluate.py",
        agents=1,
        generations=1,
        engine="llamacpp:default",
        targets=("heuristic.py",),
        goal="pack items into as few bins as possible (fitness = minus the excess bins in percent)",
        crossover_rate=0.0,
        max_tokens=200,
        seed=1,
    )
    report = await evolve(config)
    [cand] = report.candidates
    assert report.base_fitness is not None and report.base_fitness < 0
    if cand.sha is None:
        assert cand.status == "rejected" and cand.detail.startswith("mutate heuristic.py:priority: rejected:")
        assert git(repo, "rev-parse", "agentflow/agent-0") == report.base
    else:
        note = await PopulationStore(GitRepo(repo)).read(cand.sha)
        assert note is not None and (note.engine or "").startswith("llamacpp") and note.status == cand.status
        assert note.detail == "mutate heuristic.py:priority"
