"""Parent selection over the whole commit graph: tournaments, steering weights and islands.

Every viable evaluated commit can be a parent, not just the tips of branches. A tournament draws
``tournament_size`` contestants (with replacement; a promoted commit is ``promoted_weight`` times as
likely to be drawn, a pruned one never) and the fittest wins. With ``islands > 1`` each agent draws
from its own island (the commits its island made, plus promoted ones), except that with probability
``migration_rate`` it draws from the whole graph, as in FunSearch's island model.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from agentflow.errors import ConfigError

from ._notes import Individual, Population

__all__ = ["SelectionPolicy", "tournament"]


@dataclass(frozen=True, slots=True)
class SelectionPolicy:
    """How parents are chosen.

    Attributes:
        tournament_size: Contestants per tournament (1 = uniform random choice).
        promoted_weight: Draw weight of promoted commits (others weigh 1; pruned ones 0).
        islands: Number of islands agents are spread over (1 = one panmictic population).
        migration_rate: Chance that an island agent draws from the whole graph.
    """

    tournament_size: int = 3
    promoted_weight: float = 4.0
    islands: int = 1
    migration_rate: float = 0.1

    def __post_init__(self) -> None:
        if self.tournament_size < 1 or self.promoted_weight < 1 or self.islands < 1:
            raise ConfigError(
                f"invalid selection policy {self}: tournament_size >= 1, promoted_weight >= 1 and "
                "islands >= 1 are required"
            )
        if not 0.0 <= self.migration_rate <= 1.0:
            raise ConfigError(f"migration_rate must be within [0, 1], got {self.migration_rate}")


def tournament(
    population: Population,
    rng: random.Random,
    policy: SelectionPolicy,
    *,
    island: int = 0,
    exclude: frozenset[str] = frozenset(),
) -> Individual | None:
    """Choose one parent, or ``None`` when no viable commit is left.

    Args:
        population: The evaluated commits.
        rng: The agent's random generator.
        policy: Selection settings.
        island: The choosing agent's island.
        exclude: Commits that may not be chosen (e.g. the other parent of a crossover).
    """
    local = policy.islands > 1 and rng.random() >= policy.migration_rate
    pool = [i for i in population.viable(island if local else None) if i.sha not in exclude]
    if local and not pool:
        pool = [i for i in population.viable() if i.sha not in exclude]
    if not pool:
        return None
    weights = [policy.promoted_weight if i.promoted else 1.0 for i in pool]
    contestants = rng.choices(pool, weights=weights, k=policy.tournament_size)
    return max(contestants, key=lambda i: i.note.fitness if i.note.fitness is not None else float("-inf"))
