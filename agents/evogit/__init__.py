"""agentflow.agents.evogit: a population of LLM coding agents evolving a git repository (EvoGit).

The commit graph is the phylogenetic graph; fitness and evaluation logs are JSON git notes in
``refs/notes/agentflow``; each agent works in its own worktree on ``agentflow/agent-<i>``; mutation
is an LLM rewrite of one region of a file, crossover a real ``git merge``; the fitness command
runs in a sandbox; people steer by promoting or pruning commits. Run it with ``evolve(config)``
or ``python -m agentflow.agents.evogit --repo . --fitness "CMD"``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from agentflow._lazy import lazy_attributes as _lazy_attributes

if TYPE_CHECKING:
    from ._cli import main, register
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
    "main",
    "mutation_prompt",
    "parse_conflicts",
    "parse_fitness",
    "promote",
    "prune",
    "register",
    "render",
    "resolve_commit",
    "status_rows",
    "tournament",
]

# Names load on first access: importing the package (e.g. for the CLI) stays light.
_LAZY: dict[str, str] = {
    "Applied": "._edit",
    "Candidate": "._evolve",
    "EVALUATED_PREFIX": "._notes",
    "EditResult": "._edit",
    "EvoGitError": "._git",
    "EvolveConfig": "._evolve",
    "EvolveReport": "._evolve",
    "FitnessNote": "._notes",
    "GitRepo": "._git",
    "GitResult": "._git",
    "Hunk": "._conflicts",
    "Individual": "._notes",
    "NOTES_REF": "._notes",
    "PROMOTED_PREFIX": "._notes",
    "PRUNED_PREFIX": "._notes",
    "Population": "._notes",
    "PopulationStore": "._notes",
    "Region": "._edit",
    "Rejected": "._edit",
    "Sandbox": "._sandbox",
    "SandboxLimits": "._sandbox",
    "SandboxResult": "._sandbox",
    "SelectionPolicy": "._selection",
    "StatusRow": "._steer",
    "apply_reply": "._edit",
    "choose_by_fitness": "._conflicts",
    "conflict_prompt": "._conflicts",
    "evaluate_commit": "._evolve",
    "evolve": "._evolve",
    "extract_code_block": "._edit",
    "find_regions": "._edit",
    "graph_svg": "._steer",
    "lineage": "._steer",
    "main": "._cli",
    "mutation_prompt": "._edit",
    "parse_conflicts": "._conflicts",
    "parse_fitness": "._sandbox",
    "promote": "._steer",
    "prune": "._steer",
    "register": "._cli",
    "render": "._conflicts",
    "resolve_commit": "._steer",
    "status_rows": "._steer",
    "tournament": "._selection",
}

__getattr__, __dir__ = _lazy_attributes(__name__, globals(), _LAZY)
