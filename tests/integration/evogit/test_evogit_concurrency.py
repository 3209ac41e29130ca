"""Many agents on one repository: in one process, in several processes, and after a crash."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from _evogit_repos import FITNESS, git

from agentflow.agents.evogit import EvolveConfig, GitRepo, PopulationStore, evolve
from agentflow.engines import FunctionEngine, GenerationRequest

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def _random_edits(seed: int) -> Callable[[GenerationRequest], str]:
    rng = random.Random(seed)

    def answer(request: GenerationRequest) -> str:
        assert request.messages is not None
        prompt = request.messages[-1].content
        n = rng.randint(0, 20)
        if "Version A" in prompt:
            return f"```python\n    return {n}\n```"
        name = "value" if "`value`" in prompt else "helper"
        return f"```python\ndef {name}():\n    return {n}\n```"

    return answer


def _assert_repo_consistent(repo: Path, shas: list[str]) -> None:
    fsck = subprocess.run(
        ["git", "fsck", "--strict", "--no-dangling", "--no-progress"],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    assert fsck.returncode == 0 and fsck.stdout.strip() == "", fsck.stdout + fsck.stderr
    reachable = set(git(repo, "rev-list", "--all").split())
    noted = {
        line.split()[1] for line in git(repo, "notes", "--ref=refs/notes/agentflow", "list").splitlines()
    }
    for sha in shas:
        assert sha in reachable and sha in noted, sha
    assert git(repo, "for-each-ref", "refs/agentflow/claims") == ""
    assert "agentflow/worktrees" not in git(repo, "worktree", "list")


async def test_four_agents_several_generations_leave_consistent_graph(make_repo: Callable[..., Path]) -> None:
    repo = make_repo()
    config = EvolveConfig(repo=repo, fitness=FITNESS, agents=4, generations=4, crossover_rate=0.35, seed=5)
    report = await evolve(config, FunctionEngine(_random_edits(1)))
    assert {c.agent for c in report.candidates} == {"agent-0", "agent-1", "agent-2", "agent-3"}
    assert len(report.candidates) == 16
    evaluated = [c.sha for c in report.candidates if c.sha is not None]
    assert len(evaluated) >= 12 and any(c.operator == "crossover" for c in report.candidates)
    _assert_repo_consistent(repo, [report.base, *evaluated])
    population = await PopulationStore(GitRepo(repo)).population()
    assert set(evaluated) <= set(population.individuals)
    for i in range(4):
        tip = git(repo, "rev-parse", f"agentflow/agent-{i}")
        assert tip in population.individuals  # every branch ends on an evaluated commit
    assert report.best_fitness is not None and report.best_fitness >= report.base_fitness  # type: ignore[operator]
    assert report.curve()[-1][1] == max(c.fitness for c in report.candidates if c.fitness is not None) or (
        report.curve()[-1][1] == report.base_fitness
    )


def _cli(repo: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "agentflow.agents.evogit",
        "--repo",
        str(repo),
        "--fitness",
        FITNESS,
        "--engine",
        "test:",
        "--quiet",
        *extra,
    ]


def test_two_processes_share_one_repository(make_repo: Callable[..., Path], tmp_path: Path) -> None:
    repo = make_repo()
    # Mutated candidates wait for `go` before scoring, so both processes hold their claims at once. The gate
    # lives in the host's /tmp, which the namespace sandbox hides (private tmpfs): the fitness command is
    # trusted here, so it runs with the limits only (the sandbox has its own tests).
    go = tmp_path / "go"
    gated = f"if [ $(grep -c 'def value' code.py) -gt 1 ]; then while [ ! -e {go} ]; do sleep 0.05; done; fi; {FITNESS}"
    procs = [
        subprocess.Popen(
            [
                *_cli(repo, "--agents", "2", "--generations", "2", "--seed", str(i)),
                *("--fitness", gated, "--isolation", "limits-only"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    claims = repo / ".git" / "refs" / "agentflow" / "claims"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(claims.glob("agent-*"))) < 4:
        time.sleep(0.05)
    go.write_text("go")
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs, strict=True):
        assert p.returncode == 0, out + err
    branches = set(git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads/agentflow").split())
    assert branches == {f"agentflow/agent-{i}" for i in range(4)}  # the processes claimed disjoint slots
    evaluated = [
        r.rsplit("/", 1)[1]
        for r in git(repo, "for-each-ref", "--format=%(refname)", "refs/agentflow/evaluated").split()
    ]
    authors = set(git(repo, "log", "--format=%an", *evaluated).splitlines())
    assert {f"agentflow agent-{i}" for i in range(4)} <= authors
    _assert_repo_consistent(repo, evaluated)


def test_crash_loses_only_candidate_under_evaluation(make_repo: Callable[..., Path], tmp_path: Path) -> None:
    repo = make_repo()
    # A candidate is slow to evaluate once code.py has been mutated (the test engine duplicates the file).
    # The flag is in the host's /tmp, which the namespace sandbox hides: limits-only isolation (trusted command).
    flag = tmp_path / "slow"
    flag.write_text("1")
    slow = f"if [ -e {flag} ] && [ $(grep -c 'def value' code.py) -gt 1 ]; then sleep 60; fi; {FITNESS}"
    first = subprocess.Popen(
        [*_cli(repo, "--agents", "1", "--generations", "3"), "--fitness", slow, "--isolation", "limits-only"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    claim = repo / ".git" / "refs" / "agentflow" / "claims" / "agent-0"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (claim.exists() and _evaluating(repo)):
        time.sleep(0.2)
    assert claim.exists(), "the first run never claimed agent-0"
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate()
    flag.unlink()
    before = set(git(repo, "for-each-ref", "--format=%(objectname)", "refs/agentflow/evaluated").split())
    second = subprocess.run(
        _cli(repo, "--agents", "1", "--generations", "2"), capture_output=True, text=True, timeout=300
    )
    assert second.returncode == 0, second.stdout + second.stderr
    after = set(git(repo, "for-each-ref", "--format=%(objectname)", "refs/agentflow/evaluated").split())
    assert before < after  # the rerun took over the dead process's stale claim and went on
    assert "agentflow/agent-0" in git(repo, "for-each-ref", "--format=%(refname:short)", "refs/heads")
    _assert_repo_consistent(repo, sorted(after))
    # the killed run's temporary checkout was cleaned up by the next run
    assert not list(Path(tempfile.gettempdir()).glob(f"evogit-eval-{first.pid}-*"))


def _evaluating(repo: Path) -> bool:
    wt = repo / ".git" / "agentflow" / "worktrees" / "agent-0"
    if not wt.exists():
        return False
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=wt, capture_output=True, text=True).stdout.strip()
    base = git(repo, "rev-parse", "main")
    return bool(head) and head != base


def test_two_clones_share_population_through_remote(make_repo: Callable[..., Path], tmp_path: Path) -> None:
    seed = make_repo()
    origin = tmp_path / "origin.git"
    subprocess.run(["git", "clone", "-q", "--bare", str(seed), str(origin)], check=True)
    clones = []
    for name in ("machine-a", "machine-b"):
        clone = tmp_path / name
        subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
        clones.append(clone)
    go = tmp_path / "go"  # in the host's /tmp: trusted command, limits-only isolation (as above)
    gated = f"if [ $(grep -c 'def value' code.py) -gt 1 ]; then while [ ! -e {go} ]; do sleep 0.05; done; fi; {FITNESS}"
    procs = [
        subprocess.Popen(
            [
                *_cli(clone, "--agents", "2", "--generations", "2", "--seed", str(i)),
                "--remote",
                "origin",
                "--crossover-rate",
                "0.5",
                "--fitness",
                gated,
                "--isolation",
                "limits-only",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, clone in enumerate(clones)
    ]
    deadline = time.monotonic() + 120
    while (
        time.monotonic() < deadline
        and len(git(origin, "for-each-ref", "refs/agentflow/claims").splitlines()) < 4
    ):
        time.sleep(0.1)
    go.write_text("go")
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, out + err
    # the remote holds the whole population: four distinct agent branches, every candidate with its note
    branches = set(git(origin, "for-each-ref", "--format=%(refname:short)", "refs/heads/agentflow").split())
    assert branches == {f"agentflow/agent-{i}" for i in range(4)}
    evaluated = git(origin, "for-each-ref", "--format=%(objectname)", "refs/agentflow/evaluated").split()
    assert len(evaluated) >= 5  # the base and candidates of both machines
    authors = set(git(origin, "log", "--format=%an", *evaluated).splitlines())
    assert {f"agentflow agent-{i}" for i in range(4)} <= authors
    noted = {
        line.split()[1] for line in git(origin, "notes", "--ref=refs/notes/agentflow", "list").splitlines()
    }
    assert set(evaluated) <= noted
    assert git(origin, "for-each-ref", "refs/agentflow/claims") == ""
    fsck = subprocess.run(
        ["git", "fsck", "--strict", "--no-dangling"], cwd=origin, capture_output=True, text=True
    )
    assert fsck.returncode == 0 and fsck.stdout.strip() == "", fsck.stdout + fsck.stderr


async def test_islands_tag_candidates_with_their_agents_island(make_repo: Callable[..., Path]) -> None:
    repo = make_repo()
    config = EvolveConfig(repo=repo, fitness=FITNESS, agents=2, generations=2, islands=2, crossover_rate=0.0)
    report = await evolve(config, FunctionEngine(_random_edits(2)))
    population = await PopulationStore(GitRepo(repo)).population()
    islands = {population.individuals[c.sha].note.island for c in report.candidates if c.sha is not None}
    by_agent = {
        c.agent: population.individuals[c.sha].note.island for c in report.candidates if c.sha is not None
    }
    assert islands <= {0, 1}
    assert all(island == int(agent.split("-")[1]) % 2 for agent, island in by_agent.items())
