"""Evolve the ``priority`` heuristic of online bin packing with EvoGit, then test it on the FunSearch sets.

    python examples/evolve_binpacking/run.py [--engine SPEC] [--agents N] [--generations G] [--workdir DIR]

Creates a git repository from ``template/`` (``heuristic.py`` holds ``priority(item, bins)``,
best fit to start; ``evaluate.py`` prints minus the excess bins in percent on training instances
drawn with a fixed seed from the OR3 and Weibull distributions), lets the agents evolve it, and
evaluates the fittest commit's heuristic against the OR3 and Weibull 5k instances of FunSearch
(``../shared/data/binpacking/funsearch_instances.json`` relative to the project root). With the
embedded 135M model most edits are rejected or score worse; a stronger engine
(``--engine openai:<url>#<model>``) is what finds better heuristics.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import types
from collections.abc import Callable
from pathlib import Path

import anyio
import numpy as np

from agentflow.agents.evogit import EvolveConfig, EvolveReport, evolve
from agentflow.engines import Engine

HERE = Path(__file__).resolve().parent
TEMPLATE = HERE / "template"
DATA = HERE.parents[1].parent / "shared" / "data" / "binpacking" / "funsearch_instances.json"
GOAL = (
    "online bin packing: priority(item, bins) scores the bins (remaining capacities) an item fits in and the "
    "highest score gets the item; use as few bins as possible. Fitness is minus the excess bins in percent "
    "over the L1 lower bound, so higher is better. Use numpy; return an array shaped like bins."
)

sys.path.insert(0, str(TEMPLATE))
from binpack import excess_percent  # noqa: E402

Instances = list[tuple[list[int], int]]
Priority = Callable[[float, np.ndarray], np.ndarray]


def make_repo(workdir: Path) -> Path:
    """A fresh git repository holding the template, one commit."""
    repo = workdir / "binpacking-repo"
    repo.mkdir(parents=True)
    for path in TEMPLATE.glob("*.py"):
        shutil.copy(path, repo / path.name)
    ident = ["-c", "user.name=agentflow example", "-c", "user.email=example@agentflow.localhost"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=repo, check=True)
    subprocess.run(["git", "add", "."], cwd=repo, check=True)
    subprocess.run(["git", *ident, "commit", "-q", "-m", "best fit"], cwd=repo, check=True)
    return repo


def load_datasets(path: Path = DATA) -> tuple[dict[str, Instances], dict[str, dict[str, float]]]:
    """The FunSearch OR3 and Weibull 5k instances and their published excess percentages."""
    if not path.exists():
        raise SystemExit(
            f"benchmark data not found at {path}; it lives in ../shared/data relative to the project root"
        )
    raw = json.loads(path.read_text())
    datasets = {
        name: [([int(x) for x in inst["items"]], int(inst["capacity"])) for inst in ds.values()]
        for name, ds in raw["datasets"].items()
    }
    return datasets, raw["published_excess_percent"]


def heuristic_at(repo: Path, sha: str) -> Priority:
    """The ``priority`` function of ``heuristic.py`` at commit ``sha``."""
    source = subprocess.run(
        ["git", "show", f"{sha}:heuristic.py"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout
    module = types.ModuleType("evolved_heuristic")
    exec(compile(source, f"{sha[:10]}:heuristic.py", "exec"), module.__dict__)
    fn: Priority = module.priority
    return fn


def excess(instances: Instances, priority: Priority) -> float:
    """Excess bins in percent over the L1 bound (FunSearch's definition)."""
    return excess_percent(instances, priority)


async def evolve_example(
    workdir: Path, *, engine: str | Engine, agents: int, generations: int, seed: int = 0
) -> tuple[Path, EvolveReport]:
    """Create the repository and evolve it with ``engine`` (a spec or an engine object)."""
    repo = make_repo(workdir)
    config = EvolveConfig(
        repo=repo,
        fitness=f"{sys.executable} evaluate.py",
        agents=agents,
        generations=generations,
        engine=engine if isinstance(engine, str) else engine.name,
        targets=("heuristic.py",),
        goal=GOAL,
        seed=seed,
        max_tokens=384,
        temperature=0.8,
        cpu_seconds=60,
        wall_seconds=120,
    )
    return repo, await evolve(config, None if isinstance(engine, str) else engine)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engine", default="llamacpp:default")
    parser.add_argument("--agents", type=int, default=2)
    parser.add_argument("--generations", type=int, default=2)
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where to create the repository (default: temp)"
    )
    parser.add_argument("--weibull", action="store_true", help="also evaluate on Weibull 5k (slower)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="evolve-binpacking-"))
    repo, report = anyio.run(
        lambda: evolve_example(workdir, engine=args.engine, agents=args.agents, generations=args.generations)
    )
    for c in report.candidates:
        fit = "-" if c.fitness is None else f"{c.fitness:.4f}"
        print(f"{c.agent} gen {c.generation} {c.operator:<9} {c.status:<9} {fit:>9}  {c.detail[:80]}")
    print(
        f"repository: {repo}\nbase fitness {report.base_fitness}, best {report.best_fitness} at {report.best}; "
        f"{report.evaluated} evaluated, {report.per_minute:.2f} candidates/min"
    )
    datasets, published = load_datasets()
    assert report.best is not None
    best = heuristic_at(repo, report.best)
    names = ["OR3", "Weibull 5k"] if args.weibull else ["OR3"]
    for name in names:
        print(
            f"{name}: evolved heuristic excess {excess(datasets[name], best):.2f} % "
            f"(best fit published {published[name]['best_fit']} %, FunSearch {published[name]['funsearch']} %)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
