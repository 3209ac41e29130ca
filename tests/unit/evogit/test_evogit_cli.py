"""The evolve command line: argument parsing, both `evolve --repo` and `evolve run`, and exit codes."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from agentflow.agents.evogit._cli import main, register


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agentflow")
    register(parser.add_subparsers(dest="command"))
    return parser


def test_register_accepts_plain_evolve_with_run_options() -> None:
    args = _parser().parse_args(
        ["evolve", "--repo", "r", "--fitness", "echo 1", "--agents", "3", "--generations", "2"]
    )
    assert (args.evolve_action, args.repo, args.fitness, args.agents, args.generations) == (
        "run",
        "r",
        "echo 1",
        3,
        2,
    )
    assert callable(args.func)


def test_register_accepts_run_subcommand_keeping_parent_options() -> None:
    args = _parser().parse_args(["evolve", "--repo", "r", "run", "--fitness", "true", "--engine", "test:"])
    assert (args.evolve_action, args.repo, args.fitness, args.engine) == ("run", "r", "true", "test:")


def test_register_parses_steering_subcommands() -> None:
    parser = _parser()
    assert parser.parse_args(["evolve", "promote", "abc", "--repo", "x"]).sha == "abc"
    assert parser.parse_args(["evolve", "prune", "abc"]).evolve_action == "prune"
    assert parser.parse_args(["evolve", "graph", "-o", "g.svg"]).output == "g.svg"
    assert parser.parse_args(["evolve", "status", "--top", "3"]).top == 3


def test_main_returns_2_when_fitness_missing(tmp_path: Path) -> None:
    assert main(["--repo", str(tmp_path)]) == 2


def test_main_returns_2_when_repo_is_not_git(tmp_path: Path) -> None:
    assert main(["status", "--repo", str(tmp_path)]) == 2


def test_graph_requires_output() -> None:
    with pytest.raises(SystemExit):
        _parser().parse_args(["evolve", "graph"])


def test_run_options_accept_pass_env_and_max_processes() -> None:
    args = _parser().parse_args(
        [
            "evolve",
            "--fitness",
            "true",
            "--pass-env",
            "HF_TOKEN",
            "--pass-env",
            "SEED",
            "--max-processes",
            "64",
        ]
    )
    assert (args.pass_env, args.max_processes) == (["HF_TOKEN", "SEED"], 64)
