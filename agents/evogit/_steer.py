"""Human steering and inspection: promote/prune commits, a status table, and the graph as SVG.

Promotion and pruning are plain refs (``refs/tags/agentflow/promoted/<sha>``, ``.../pruned/<sha>``),
so they can also be made with ``git tag`` and pushed like any tag. ``graph_svg`` draws the
phylogenetic graph from the fitness notes (generations top to bottom, colour = fitness) without
any external tool.
"""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from agentflow.errors import ConfigError

from ._git import GitRepo
from ._notes import Individual, Population, PopulationStore

__all__ = ["StatusRow", "graph_svg", "lineage", "promote", "prune", "resolve_commit", "status_rows"]


async def resolve_commit(repo: GitRepo, rev: str) -> str:
    """The full commit id of ``rev``.

    Raises:
        ConfigError: ``rev`` names no commit.
    """
    sha = await repo.rev_parse(rev)
    if sha is None:
        raise ConfigError(
            f"{rev!r} names no commit in {repo.toplevel}; pass a commit id from `evolve status`"
        )
    return sha


async def promote(repo: GitRepo, rev: str) -> str:
    """Promote a commit (chosen more often as a parent); returns its full id."""
    sha = await resolve_commit(repo, rev)
    await PopulationStore(repo).promote(sha)
    return sha


async def prune(repo: GitRepo, rev: str) -> str:
    """Prune a commit (never chosen as a parent again); returns its full id."""
    sha = await resolve_commit(repo, rev)
    await PopulationStore(repo).prune(sha)
    return sha


@dataclass(frozen=True, slots=True)
class StatusRow:
    """One line of ``evolve status``."""

    sha: str
    fitness: float | None
    status: str
    operator: str
    agent: str
    generation: int
    tags: str
    lineage: str


def lineage(population: Population, sha: str, limit: int = 6) -> list[str]:
    """``sha`` and its ancestors along the fittest parent, newest first (at most ``limit``)."""
    chain: list[str] = []
    current: str | None = sha
    while current is not None and len(chain) < limit and current not in chain:
        chain.append(current)
        ind = population.individuals.get(current)
        if ind is None or not ind.note.parents:
            break
        current = max(ind.note.parents, key=lambda p: population.fitness_of(p) or float("-inf"))
    return chain


def status_rows(population: Population, top: int = 10) -> list[StatusRow]:
    """The ``top`` fittest commits (then promoted ones not among them), with lineage."""
    ranked = sorted(
        (i for i in population.individuals.values() if i.note.status == "ok" and i.note.fitness is not None),
        key=lambda i: -(i.note.fitness or 0.0),
    )
    chosen = ranked[:top] + [
        i for i in population.individuals.values() if i.promoted and i not in ranked[:top]
    ]
    rows = []
    for ind in chosen:
        chain = lineage(population, ind.sha)
        rows.append(
            StatusRow(
                ind.sha,
                ind.note.fitness,
                ind.note.status,
                ind.note.operator,
                ind.note.agent,
                ind.note.generation,
                _tags(ind),
                " <- ".join(s[:8] for s in chain[1:]),
            )
        )
    return rows


def _tags(ind: Individual) -> str:
    return ",".join(t for t, on in (("promoted", ind.promoted), ("pruned", ind.pruned)) if on)


def _depths(population: Population) -> dict[str, int]:
    depth: dict[str, int] = {}

    def visit(sha: str, trail: frozenset[str]) -> int:
        if sha in depth:
            return depth[sha]
        ind = population.individuals.get(sha)
        parents = [
            p for p in (ind.note.parents if ind else []) if p in population.individuals and p not in trail
        ]
        d = 0 if not parents else 1 + max(visit(p, trail | {sha}) for p in parents)
        depth[sha] = d
        return d

    for sha in population.individuals:
        visit(sha, frozenset())
    return depth


def _colour(fitness: float | None, lo: float, hi: float) -> str:
    if fitness is None:
        return "#bbbbbb"
    t = 0.5 if hi <= lo else (fitness - lo) / (hi - lo)
    red = int(220 * (1 - t) + 40 * t)
    green = int(60 * (1 - t) + 170 * t)
    return f"#{red:02x}{green:02x}50"


def graph_svg(population: Population) -> str:
    """The commit graph of the population as a standalone SVG document."""
    depth = _depths(population)
    layers: dict[int, list[Individual]] = {}
    for ind in sorted(population.individuals.values(), key=lambda i: i.note.created):
        layers.setdefault(depth[ind.sha], []).append(ind)
    fits = [i.note.fitness for i in population.individuals.values() if i.note.fitness is not None]
    lo, hi = (min(fits), max(fits)) if fits else (0.0, 0.0)
    dx, dy, r = 110, 80, 16
    width = max((len(v) for v in layers.values()), default=1) * dx + 60
    height = (max(layers, default=0) + 1) * dy + 80
    pos: dict[str, tuple[int, int]] = {}
    for d, inds in layers.items():
        for k, ind in enumerate(inds):
            pos[ind.sha] = (40 + k * dx + dx // 2, 50 + d * dy)
    best = population.best()
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="monospace" font-size="10">',
        f'<text x="10" y="18" font-size="13">EvoGit population: {len(population.individuals)} evaluated commits'
        f"{'' if best is None else f', best {best.sha[:8]} = {best.note.fitness:g}'}</text>",
    ]
    for ind in population.individuals.values():
        x2, y2 = pos[ind.sha]
        for p in ind.note.parents:
            if p in pos:
                x1, y1 = pos[p]
                dash = ' stroke-dasharray="4 3"' if ind.note.operator == "crossover" else ""
                parts.append(f'<line x1="{x1}" y1="{y1 + r}" x2="{x2}" y2="{y2 - r}" stroke="#777"{dash}/>')
    for ind in population.individuals.values():
        x, y = pos[ind.sha]
        stroke = "#d4a017" if ind.promoted else ("#000" if best and ind.sha == best.sha else "#444")
        width_px = 4 if ind.promoted or (best and ind.sha == best.sha) else 1
        fill = "#eeeeee" if ind.pruned else _colour(ind.note.fitness, lo, hi)
        fit = "-" if ind.note.fitness is None else f"{ind.note.fitness:.4g}"
        title = escape(f"{ind.sha} {ind.note.status} {ind.note.operator} {ind.note.agent} {ind.note.detail}")
        parts.append(
            f'<g><title>{title}</title><circle cx="{x}" cy="{y}" r="{r}" fill="{fill}" '
            f'stroke="{stroke}" stroke-width="{width_px}"/>'
            f'<text x="{x}" y="{y + 3}" text-anchor="middle">{escape(ind.sha[:7])}</text>'
            f'<text x="{x}" y="{y + r + 11}" text-anchor="middle">{escape(fit)}'
            f"{' ✗' if ind.pruned else ''}</text></g>"
        )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
