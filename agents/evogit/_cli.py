"""The ``evolve`` command line: ``run`` (also the default), ``promote``, ``prune``, ``status``, ``graph``.

``register(subparsers)`` adds ``evolve`` to another program's argparse sub-commands (the
``agentflow`` CLI); ``main(argv)`` runs it standalone (``python -m agentflow.agents.evogit``).
Each handler returns an exit code: 0 ok, 1 failed, 2 bad input. The chosen handler is stored on
the namespace as ``func``: ``args.func(args) -> int``.

    agentflow evolve --repo . --fitness "python evaluate.py" --agents 4 --generations 10
    agentflow evolve run --repo . --fitness "pytest -q && python bench.py" --engine openai:http://h/v1#m
    agentflow evolve status --repo .
    agentflow evolve promote 1a2b3c4 --repo .
    agentflow evolve graph -o population.svg --repo .
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from agentflow.errors import AgentflowError, RuntimeFailure, UserError

if TYPE_CHECKING:
    from ._evolve import Candidate, EvolveConfig, EvolveReport
    from ._git import GitRepo

__all__ = ["main", "register"]

Handler = Callable[[argparse.Namespace], int]

DESCRIPTION = """\
Evolve a git repository with a population of LLM coding agents (EvoGit).

Each agent edits files matching --target in its own worktree, commits the candidate and scores it
with --fitness (a shell command that prints a number, higher is better) in a sandbox. The commit
graph is the population; `promote`/`prune` steer selection, `status` and `graph` show it.

examples:
  agentflow evolve --repo . --fitness "python evaluate.py" --agents 4 --generations 10
  agentflow evolve run --repo . --fitness "pytest -q && python bench.py" --engine openai:http://h/v1#m
  agentflow evolve status --repo .
  agentflow evolve promote 1a2b3c4 --repo .
  agentflow evolve graph -o population.svg --repo .
"""
"""The ``evolve`` command's help text (the module docstring is for developers)."""


def _add_run_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument("--repo", default=default("."), help="working tree of the repository to evolve")
    parser.add_argument(
        "--fitness", default=default(None), help="shell command printing the fitness (higher is better)"
    )
    parser.add_argument("--agents", type=int, default=default(4), help="concurrent agents in this process")
    parser.add_argument("--generations", type=int, default=default(5), help="candidates per agent")
    parser.add_argument("--engine", default=default("llamacpp:default"), help="LLM engine spec")
    parser.add_argument(
        "--target",
        action="append",
        default=default(None),
        help="glob of files agents may edit (repeatable; default *.py)",
    )
    parser.add_argument(
        "--goal", default=default(None), help="one line telling the LLM what the fitness measures"
    )
    parser.add_argument("--base", default=default("HEAD"), help="commit to start from")
    parser.add_argument("--crossover-rate", type=float, default=default(0.25))
    parser.add_argument("--tournament-size", type=int, default=default(3))
    parser.add_argument("--islands", type=int, default=default(1))
    parser.add_argument("--seed", type=int, default=default(0))
    parser.add_argument("--max-tokens", type=int, default=default(512))
    parser.add_argument(
        "--edit-attempts",
        type=int,
        default=default(2),
        help="LLM answers per mutation (rejections are sent back)",
    )
    parser.add_argument("--temperature", type=float, default=default(0.8))
    parser.add_argument(
        "--cpu-seconds", type=int, default=default(60), help="RLIMIT_CPU of the fitness command"
    )
    parser.add_argument(
        "--memory-mb", type=int, default=default(2048), help="RLIMIT_AS of the fitness command"
    )
    parser.add_argument(
        "--wall-seconds", type=float, default=default(120.0), help="wall limit of the fitness command"
    )
    parser.add_argument(
        "--max-processes",
        type=int,
        default=default(256),
        help="tasks (processes and threads) the fitness command may have at once",
    )
    parser.add_argument(
        "--pass-env",
        action="append",
        metavar="NAME",
        default=default(None),
        help="pass this environment variable to the fitness command (repeatable; others are dropped)",
    )
    parser.add_argument(
        "--isolation",
        choices=["auto", "namespaces", "limits-only"],
        default=default("auto"),
        help="sandbox isolation",
    )
    parser.add_argument(
        "--remote", default=default(None), help="git remote shared with other clones/machines (name or URL)"
    )
    parser.add_argument(
        "--json", dest="json_out", default=default(None), help="write the run report as JSON here"
    )
    parser.add_argument("--quiet", action="store_true", default=default(False), help="no per-candidate lines")


def _add_repo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repo", default=argparse.SUPPRESS, help="working tree of the evolved repository")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``evolve`` command (and its sub-commands) to an argparse sub-command set."""
    evolve_parser = subparsers.add_parser(
        "evolve",
        help="evolve a repository with a population of LLM coding agents (EvoGit)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure(evolve_parser)


def configure(parser: argparse.ArgumentParser) -> None:
    """Give ``parser`` the ``evolve`` options and sub-commands."""
    _add_run_options(parser, suppress=False)
    actions = parser.add_subparsers(dest="evolve_action", metavar="{run,promote,prune,status,graph}")
    parser.set_defaults(func=_run, evolve_action="run")
    run_p = actions.add_parser("run", help="run the agents (the default)")
    _add_run_options(run_p, suppress=True)
    run_p.set_defaults(func=_run)
    for name, helptext, handler in (
        ("promote", "promote a commit: chosen more often as a parent", _promote),
        ("prune", "prune a commit: never chosen as a parent", _prune),
    ):
        p = actions.add_parser(name, help=helptext)
        p.add_argument("sha", help="the commit (any revision git understands)")
        _add_repo(p)
        p.set_defaults(func=handler)
    status_p = actions.add_parser("status", help="table of the best commits and their lineage")
    _add_repo(status_p)
    status_p.add_argument("--top", type=int, default=10)
    status_p.add_argument("--json", dest="json_out", default=None, help="also write the rows as JSON here")
    status_p.set_defaults(func=_status)
    graph_p = actions.add_parser("graph", help="draw the phylogenetic graph as SVG")
    _add_repo(graph_p)
    graph_p.add_argument("-o", "--output", required=True, help="output file (.svg)")
    graph_p.set_defaults(func=_graph)


def _guard(handler: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    err = Console(stderr=True)
    try:
        return handler(args)
    except (UserError, ValidationError) as exc:
        err.print(f"[red]evolve: {exc}[/red]")
        return 2
    except RuntimeFailure as exc:
        err.print(f"[red]evolve failed: {exc}[/red]")
        return 1
    except BaseExceptionGroup as group:
        # The agents run in a task group: their errors arrive grouped.
        leaves = _leaves(group)
        if not all(isinstance(e, AgentflowError | ValidationError) for e in leaves):
            raise
        for e in leaves:
            err.print(f"[red]evolve failed: {e}[/red]")
        return 2 if all(isinstance(e, UserError | ValidationError) for e in leaves) else 1


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(_leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


def _config(args: argparse.Namespace) -> EvolveConfig:
    if not args.fitness:
        raise UserError(
            "evolve run needs --fitness 'CMD' (a shell command that prints a number, higher is better)"
        )
    fields: dict[str, object] = {
        "repo": Path(args.repo),
        "fitness": args.fitness,
        "agents": args.agents,
        "generations": args.generations,
        "engine": args.engine,
        "base": args.base,
        "crossover_rate": args.crossover_rate,
        "tournament_size": args.tournament_size,
        "islands": args.islands,
        "seed": args.seed,
        "max_tokens": args.max_tokens,
        "edit_attempts": args.edit_attempts,
        "temperature": args.temperature,
        "cpu_seconds": args.cpu_seconds,
        "memory_mb": args.memory_mb,
        "wall_seconds": args.wall_seconds,
        "max_processes": args.max_processes,
        "pass_env": tuple(args.pass_env or ()),
        "isolation": args.isolation,
        "remote": args.remote,
    }
    if args.target:
        fields["targets"] = tuple(args.target)
    if args.goal:
        fields["goal"] = args.goal
    from ._evolve import EvolveConfig  # deferred: the command's modules load only when it runs

    return EvolveConfig.model_validate(fields)


def _run(args: argparse.Namespace) -> int:
    def handler(a: argparse.Namespace) -> int:
        config = _config(a)
        console = Console()

        def show(c: Candidate) -> None:
            if a.quiet:
                return
            fit = "-" if c.fitness is None else f"{c.fitness:.6g}"
            sha = (c.sha or "-")[:10]
            mark = "kept" if c.kept else ""
            console.print(
                f"{c.agent:>9} g{c.generation:<3} {c.operator:<9} {sha:<10} {c.status:<9} {fit:>12} {mark} {c.detail[:70]}"
            )

        from ._evolve import evolve

        report = anyio.run(lambda: evolve(config, on_candidate=show))
        console.print(
            f"evaluated {report.evaluated} candidates ({len(report.candidates) - report.evaluated} edits rejected) "
            f"in {report.elapsed_s:.1f} s = {report.per_minute:.2f}/min; base fitness {report.base_fitness}, "
            f"best {report.best_fitness} at {report.best}"
        )
        console.print(f"sandbox layers: {', '.join(report.sandbox_layers)}")
        if a.json_out:
            Path(a.json_out).write_text(json.dumps(_report_json(report), indent=2), encoding="utf-8")
        return 0

    return _guard(handler, args)


def _report_json(report: EvolveReport) -> dict[str, object]:
    return {
        "base": report.base,
        "base_fitness": report.base_fitness,
        "best": report.best,
        "best_fitness": report.best_fitness,
        "evaluated": report.evaluated,
        "attempts": len(report.candidates),
        "elapsed_s": report.elapsed_s,
        "per_minute": report.per_minute,
        "sandbox_layers": list(report.sandbox_layers),
        "curve": report.curve(),
        "candidates": [
            {
                "sha": c.sha,
                "status": c.status,
                "fitness": c.fitness,
                "operator": c.operator,
                "parents": list(c.parents),
                "agent": c.agent,
                "generation": c.generation,
                "detail": c.detail,
                "kept": c.kept,
                "elapsed_s": c.elapsed_s,
            }
            for c in report.candidates
        ],
    }


def _repo_of(args: argparse.Namespace) -> GitRepo:
    from ._git import GitRepo

    return GitRepo(getattr(args, "repo", "."))


def _promote(args: argparse.Namespace) -> int:
    def handler(a: argparse.Namespace) -> int:
        from ._steer import promote

        sha = anyio.run(promote, _repo_of(a), a.sha)
        Console().print(f"promoted {sha}")
        return 0

    return _guard(handler, args)


def _prune(args: argparse.Namespace) -> int:
    def handler(a: argparse.Namespace) -> int:
        from ._steer import prune

        sha = anyio.run(prune, _repo_of(a), a.sha)
        Console().print(f"pruned {sha}")
        return 0

    return _guard(handler, args)


def _status(args: argparse.Namespace) -> int:
    def handler(a: argparse.Namespace) -> int:
        from ._notes import PopulationStore
        from ._steer import status_rows

        population = anyio.run(PopulationStore(_repo_of(a)).population)
        rows = status_rows(population, a.top)
        counts: dict[str, int] = {}
        for ind in population.individuals.values():
            counts[ind.note.status] = counts.get(ind.note.status, 0) + 1
        table = Table(title=f"EvoGit: {len(population.individuals)} evaluated commits {counts}")
        for col in ("commit", "fitness", "op", "agent", "gen", "tags", "lineage (fittest parent first)"):
            table.add_column(col)
        for r in rows:
            fit = "-" if r.fitness is None else f"{r.fitness:.6g}"
            table.add_row(r.sha[:10], fit, r.operator, r.agent, str(r.generation), r.tags, r.lineage)
        Console().print(table)
        if a.json_out:
            payload = [_row_dict(r) for r in rows]
            Path(a.json_out).write_text(json.dumps(payload, indent=2), encoding="utf-8")
        return 0

    return _guard(handler, args)


def _row_dict(row: object) -> dict[str, object]:
    return {name: getattr(row, name) for name in getattr(row, "__slots__", ())}


def _graph(args: argparse.Namespace) -> int:
    def handler(a: argparse.Namespace) -> int:
        from ._notes import PopulationStore
        from ._steer import graph_svg

        population = anyio.run(PopulationStore(_repo_of(a)).population)
        Path(a.output).write_text(graph_svg(population), encoding="utf-8")
        Console().print(f"wrote {a.output} ({len(population.individuals)} commits)")
        return 0

    return _guard(handler, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``evolve`` command line standalone; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m agentflow.agents.evogit",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure(parser)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    handler: Handler = args.func
    return handler(args)
