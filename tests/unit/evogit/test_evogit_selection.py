"""Tournament selection over the population: fitness, steering tags and islands."""

from __future__ import annotations

import random

import pytest

from agentflow.agents.evogit import FitnessNote, Individual, Population, SelectionPolicy, tournament
from agentflow.errors import ConfigError


def _pop(*specs: tuple[str, float | None, int, bool, bool]) -> Population:
    inds = {}
    for sha, fit, island, promoted, pruned in specs:
        note = FitnessNote(
            commit=sha, status="ok" if fit is not None else "failed", fitness=fit, island=island
        )
        inds[sha] = Individual(note, promoted=promoted, pruned=pruned)
    return Population(inds)


def _pick(pop: Population, rng: random.Random, policy: SelectionPolicy, **kw: object) -> Individual:
    chosen = tournament(pop, rng, policy, **kw)  # type: ignore[arg-type]
    assert chosen is not None
    return chosen


def _fit(ind: Individual) -> float:
    assert ind.note.fitness is not None
    return ind.note.fitness


def test_tournament_never_picks_pruned_commit() -> None:
    pop = _pop(("best", 10.0, 0, False, True), ("a", 1.0, 0, False, False), ("b", 2.0, 0, False, False))
    rng = random.Random(0)
    picks = {_pick(pop, rng, SelectionPolicy(tournament_size=3)).sha for _ in range(300)}
    assert "best" not in picks and picks <= {"a", "b"}


def test_tournament_skips_failed_commits_and_returns_none_when_nothing_viable() -> None:
    pop = _pop(("bad", None, 0, False, False), ("gone", 1.0, 0, False, True))
    assert tournament(pop, random.Random(0), SelectionPolicy()) is None


def test_tournament_chooses_promoted_commit_more_often() -> None:
    specs = [(f"c{i}", 1.0, 0, False, False) for i in range(9)]
    plain = _pop(*specs, ("p", 1.0, 0, False, False))
    steered = _pop(*specs, ("p", 1.0, 0, True, False))
    policy = SelectionPolicy(tournament_size=1, promoted_weight=5.0)
    rng_a, rng_b = random.Random(7), random.Random(7)
    before = sum(_pick(plain, rng_a, policy).sha == "p" for _ in range(2000))
    after = sum(_pick(steered, rng_b, policy).sha == "p" for _ in range(2000))
    assert after > 2 * before


def test_tournament_prefers_fitter_with_larger_tournaments() -> None:
    pop = _pop(*[(f"c{i}", float(i), 0, False, False) for i in range(10)])
    rng = random.Random(1)
    mean_k1 = sum(_fit(_pick(pop, rng, SelectionPolicy(tournament_size=1))) for _ in range(500)) / 500
    mean_k5 = sum(_fit(_pick(pop, rng, SelectionPolicy(tournament_size=5))) for _ in range(500)) / 500
    assert mean_k5 > mean_k1


def test_tournament_stays_on_island_without_migration() -> None:
    pop = _pop(("i0", 1.0, 0, False, False), ("i1", 9.0, 1, False, False))
    policy = SelectionPolicy(islands=2, migration_rate=0.0)
    picks = {_pick(pop, random.Random(s), policy, island=0).sha for s in range(50)}
    assert picks == {"i0"}


def test_tournament_excludes_given_commits() -> None:
    pop = _pop(("a", 1.0, 0, False, False), ("b", 2.0, 0, False, False))
    pick = tournament(pop, random.Random(0), SelectionPolicy(), exclude=frozenset({"b"}))
    assert pick is not None and pick.sha == "a"


def test_selection_policy_rejects_bad_values() -> None:
    with pytest.raises(ConfigError, match="tournament_size"):
        SelectionPolicy(tournament_size=0)
    with pytest.raises(ConfigError, match="migration_rate"):
        SelectionPolicy(migration_rate=2.0)


def test_population_best_ignores_pruned_and_failed() -> None:
    pop = _pop(("a", 1.0, 0, False, False), ("b", 5.0, 0, False, True), ("c", None, 0, False, False))
    best = pop.best()
    assert best is not None and best.sha == "a"
    assert pop.fitness_of("c") is None
