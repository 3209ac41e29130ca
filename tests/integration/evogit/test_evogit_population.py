"""Notes round trip, concurrent note publishing, steering (promote/prune), status and graph commands."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from _evogit_repos import git

from agentflow.agents.evogit import (
    NOTES_REF,
    FitnessNote,
    GitRepo,
    PopulationStore,
    SelectionPolicy,
    tournament,
)
from agentflow.agents.evogit._cli import main

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def _commits(repo: Path, n: int) -> list[str]:
    shas = []
    for i in range(n):
        (repo / "code.py").write_text(f"def value():\n    return {i}\n")
        git(repo, "commit", "-q", "-am", f"c{i}")
        shas.append(git(repo, "rev-parse", "HEAD"))
    return shas


async def test_notes_round_trip_through_git(make_repo: Callable[..., Path]) -> None:
    repo = make_repo()
    sha = git(repo, "rev-parse", "HEAD")
    store = PopulationStore(GitRepo(repo))
    note = FitnessNote(
        commit=sha, status="ok", fitness=1.25, operator="seed", stdout_tail="1.25\n", agent="seed"
    )
    await store.write(note)
    assert await store.read(sha) == note
    # plain git sees the same JSON
    raw = json.loads(git(repo, "notes", f"--ref={NOTES_REF}", "show", sha))
    assert raw["fitness"] == 1.25 and raw["schema_version"] == "agentflow.evogit/v1"
    assert git(repo, "rev-parse", f"refs/agentflow/evaluated/{sha}") == sha
    population = await store.population()
    assert population.individuals[sha].note == note


async def test_concurrent_note_writers_lose_no_note(make_repo: Callable[..., Path]) -> None:
    repo = make_repo()
    shas = _commits(repo, 16)

    async def write(i: int, sha: str) -> None:
        # a separate store per writer, as separate agents or processes would have
        await PopulationStore(GitRepo(repo)).write(FitnessNote(commit=sha, status="ok", fitness=float(i)))

    async with anyio.create_task_group() as tg:
        for i, sha in enumerate(shas):
            tg.start_soon(write, i, sha)
    population = await PopulationStore(GitRepo(repo)).population()
    assert {s: population.fitness_of(s) for s in shas} == {s: float(i) for i, s in enumerate(shas)}


def test_promote_and_prune_steer_selection_and_show_in_status(
    make_repo: Callable[..., Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = make_repo()
    shas = _commits(repo, 3)
    store = PopulationStore(GitRepo(repo))
    for i, sha in enumerate(shas):
        note = FitnessNote(commit=sha, status="ok", fitness=float(i), parents=shas[:i][-1:])
        anyio.run(store.write, note)
    best, promoted = shas[2], shas[0]
    assert main(["prune", best[:10], "--repo", str(repo)]) == 0
    assert main(["promote", promoted, "--repo", str(repo)]) == 0
    assert git(repo, "rev-parse", f"refs/tags/agentflow/pruned/{best}") == best
    population = anyio.run(store.population)
    assert population.individuals[best].pruned and population.individuals[promoted].promoted
    rng = random.Random(3)
    picks = [tournament(population, rng, SelectionPolicy(tournament_size=1)) for _ in range(400)]
    names = [p.sha for p in picks if p is not None]
    assert best not in names
    assert names.count(promoted) > names.count(shas[1])
    # promoting lifts a prune
    assert main(["promote", best, "--repo", str(repo)]) == 0
    assert not anyio.run(store.population).individuals[best].pruned

    capsys.readouterr()
    out_json = tmp_path / "status.json"
    assert main(["status", "--repo", str(repo), "--json", str(out_json)]) == 0
    table = capsys.readouterr().out
    assert best[:10] in table and "promoted" in table
    rows = json.loads(out_json.read_text())
    assert rows[0]["sha"] == best and rows[0]["lineage"].startswith(shas[1][:8])

    svg = tmp_path / "graph.svg"
    assert main(["graph", "-o", str(svg), "--repo", str(repo)]) == 0
    text = svg.read_text()
    assert text.startswith("<svg") and text.count("<circle") == 3 and best[:7] in text


def test_prune_unknown_revision_returns_2(make_repo: Callable[..., Path]) -> None:
    repo = make_repo()
    assert main(["prune", "no-such-rev", "--repo", str(repo)]) == 2
