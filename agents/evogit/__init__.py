"""agentflow.agents.evogit: a population of LLM coding agents evolving a git repository (EvoGit).

The commit graph is the phylogenetic graph; fitness and evaluation logs are JSON git notes in
``refs/notes/agentflow``; each agent works in its own worktree on ``agentflow/agent-<i>``; mutation
is an LLM rewrite of one region of a file, crossover a real ``git merge``; the fitness command
runs in a sandbox; people steer by promoting or pruning commits. Run it with ``evolve(config)``
or ``python -m agentflow.agents.evogit --repo . --fitness "CMD"``.
"""

from ._conflicts import Hunk, choose_by_fitness, conflict_prompt, parse_conflicts, render
from ._edit import (
    Applied,
    EditResult,
    Region,
    Rejected,
    apply_reply,
    extract_code_block,
    find_regions,
    mutation_prompt,
)
from ._evolve import Candidate, EvolveConfig, EvolveReport, evaluate_commit, evolve
from ._git import EvoGitError, GitRepo, GitResult
from ._notes import (
    EVALUATED_PREFIX,
    NOTES_REF,
    PROMOTED_PREFIX,
    PRUNED_PREFIX,
    FitnessNote,
    Individual,
    Population,
    PopulationStore,
)
from ._sandbox import Sandbox, SandboxLimits, SandboxResult, parse_fitness
from ._selection import SelectionPolicy, tournament
from ._steer import StatusRow, graph_svg, lineage, promote, prune, resolve_commit, status_rows

__all__ = [
    "EVALUATED_PREFIX",
    "NOTES_REF",
    "PROMOTED_PREFIX",
    "PRUNED_PREFIX",
    "Applied",
    "Candidate",
    "EditResult",
    "EvoGitError",
    "EvolveConfig",
    "EvolveReport",
    "FitnessNote",
    "GitRepo",
    "GitResult",
    "Hunk",
    "Individual",
    "Population",
    "PopulationStore",
    "Region",
    "Rejected",
    "Sandbox",
    "SandboxLimits",
    "SandboxResult",
    "SelectionPolicy",
    "StatusRow",
    "apply_reply",
    "choose_by_fitness",
    "conflict_prompt",
    "evaluate_commit",
    "evolve",
    "extract_code_block",
    "find_regions",
    "graph_svg",
    "lineage",
    "mutation_prompt",
    "parse_conflicts",
    "parse_fitness",
    "promote",
    "prune",
    "render",
    "resolve_commit",
    "status_rows",
    "tournament",
]
