"""Status rows, lineage and the SVG graph, computed from an in-memory population."""

from __future__ import annotations

from agentflow.agents.evogit import FitnessNote, Individual, Population, graph_svg, lineage, status_rows


def _population() -> Population:
    notes = [
        FitnessNote(commit="s" * 40, status="ok", fitness=1.0, operator="seed", created=1.0),
        FitnessNote(commit="a" * 40, status="ok", fitness=2.0, parents=["s" * 40], created=2.0),
        FitnessNote(commit="b" * 40, status="failed", parents=["s" * 40], created=3.0),
        FitnessNote(commit="c" * 40, status="ok", fitness=1.5, parents=["s" * 40], created=4.0),
        FitnessNote(
            commit="m" * 40,
            status="ok",
            fitness=3.0,
            parents=["a" * 40, "c" * 40],
            operator="crossover",
            created=5.0,
        ),
    ]
    return Population({n.commit: Individual(n, pruned=n.commit == "c" * 40) for n in notes})


def test_lineage_follows_fittest_parent_to_seed() -> None:
    assert lineage(_population(), "m" * 40) == ["m" * 40, "a" * 40, "s" * 40]


def test_status_rows_rank_by_fitness_and_skip_failed() -> None:
    rows = status_rows(_population(), top=10)
    assert [r.sha[0] for r in rows] == ["m", "a", "c", "s"]
    assert rows[0].lineage == f"{'a' * 8} <- {'s' * 8}"
    assert rows[2].tags == "pruned"


def test_graph_svg_draws_every_commit_and_dashed_crossover_edges() -> None:
    svg = graph_svg(_population())
    assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
    assert svg.count("<circle") == 5
    assert svg.count("<line") == 5 and svg.count("stroke-dasharray") == 2
    assert "best mmmmmmmm = 3" in svg
