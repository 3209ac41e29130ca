"""Mutation and crossover on real temporary git repositories, with deterministic LLM doubles."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from _evogit_repos import FITNESS, git

from agentflow.agents.evogit import EvolveConfig, GitRepo, PopulationStore, evaluate_commit, evolve
from agentflow.engines import FunctionEngine, GenerationRequest
from agentflow.errors import ConfigError

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


def _last_user(request: GenerationRequest) -> str:
    assert request.messages is not None
    return [m.content for m in request.messages if m.role == "user"][-1]


def _set_value(n: int) -> Callable[[GenerationRequest], str]:
    def answer(request: GenerationRequest) -> str:
        prompt = _last_user(request)
        if "`value`" in prompt:
            return f"Here you go:\n```python\ndef value():\n    return {n}\n```\n"
        return "```python\ndef helper():\n    return 1\n```"

    return answer


def _config(repo: Path, **kw: object) -> EvolveConfig:
    base: dict[str, object] = {
        "repo": repo,
        "fitness": FITNESS,
        "agents": 1,
        "generations": 1,
        "crossover_rate": 0.0,
    }
    base.update(kw)
    return EvolveConfig.model_validate(base)


async def test_mutation_commits_validated_edit_and_keeps_fitter_child(make_repo: Callable[..., Path]) -> None:
    repo = make_repo()
    report = await evolve(_config(repo, generations=3), FunctionEngine(_set_value(9)))
    assert report.base_fitness == -49.0
    evaluated = [c for c in report.candidates if c.sha is not None]
    assert evaluated, report.candidates
    improved = [c for c in evaluated if c.fitness == -1.0]
    assert improved and improved[0].kept and improved[0].operator == "mutation"
    sha = improved[0].sha
    assert sha is not None
    assert "return 9" in git(repo, "show", f"{sha}:code.py")
    assert git(repo, "rev-parse", f"{sha}^") in improved[0].parents
    note = await PopulationStore(GitRepo(repo)).read(sha)
    assert (
        note is not None
        and note.status == "ok"
        and note.fitness == -1.0
        and note.detail.startswith("mutate code.py:")
    )
    tip = git(repo, "rev-parse", "agentflow/agent-0")
    assert (await PopulationStore(GitRepo(repo)).read(tip)).fitness == report.best_fitness  # type: ignore[union-attr]
    assert report.best_fitness == -1.0
    # the agent's worktree and claim are gone after the run
    assert "agentflow/worktrees" not in git(repo, "worktree", "list")
    assert git(repo, "for-each-ref", "refs/agentflow/claims") == ""


async def test_mutation_worse_child_is_recorded_but_branch_stays_on_parent(
    make_repo: Callable[..., Path],
) -> None:
    repo = make_repo({"code.py": "def value():\n    return 3\n"})
    worse = FunctionEngine(lambda r: "```python\ndef value():\n    return -5\n```")
    report = await evolve(_config(repo, targets=("code.py",)), worse)
    [cand] = report.candidates
    assert cand.status == "ok" and cand.fitness == -225.0 and not cand.kept
    assert git(repo, "rev-parse", "agentflow/agent-0") == report.base
    assert cand.sha is not None and git(repo, "rev-parse", f"refs/agentflow/evaluated/{cand.sha}") == cand.sha


async def test_mutation_invalid_reply_is_rejected_without_commit(make_repo: Callable[..., Path]) -> None:
    repo = make_repo()
    report = await evolve(
        _config(repo, generations=2), FunctionEngine(lambda r: "```python\ndef value(:\n```")
    )
    assert [c.status for c in report.candidates] == ["rejected", "rejected"]
    assert all("parse" in c.detail for c in report.candidates)
    assert git(repo, "for-each-ref", "--format=%(refname)", "refs/agentflow/evaluated").splitlines() == [
        f"refs/agentflow/evaluated/{report.base}"
    ]


async def _conflicting_parents(repo: Path, a: int, b: int) -> tuple[str, str, str]:
    """Two sibling commits that change the same line of code.py differently, both evaluated; the base pruned."""
    base = git(repo, "rev-parse", "HEAD")
    shas = []
    for n in (a, b):
        git(repo, "checkout", "-q", "--detach", base)
        text = (repo / "code.py").read_text().replace("return 3", f"return {n}")
        (repo / "code.py").write_text(text)
        git(repo, "commit", "-q", "-am", f"value {n}")
        shas.append(git(repo, "rev-parse", "HEAD"))
    git(repo, "checkout", "-q", "main")
    grepo = GitRepo(repo)
    store = PopulationStore(grepo)
    sandbox = _config(repo).sandbox()
    for sha in shas:
        await evaluate_commit(grepo, store, sandbox, sha, operator="mutation", parents=(base,))
    await evaluate_commit(grepo, store, sandbox, base, operator="seed")
    await store.prune(base)
    return base, shas[0], shas[1]


async def test_crossover_merges_real_conflict_with_llm_resolution(make_repo: Callable[..., Path]) -> None:
    repo = make_repo()
    _, a, b = await _conflicting_parents(repo, 8, 13)
    seen: list[str] = []

    def answer(request: GenerationRequest) -> str:
        prompt = _last_user(request)
        seen.append(prompt)
        nums = [int(x) for x in re.findall(r"return (\d+)", prompt)]
        return f"```python\n    return {sum(nums[-2:]) // 2}\n```"

    report = await evolve(_config(repo, crossover_rate=1.0), FunctionEngine(answer))
    [cand] = report.candidates
    assert cand.operator == "crossover" and set(cand.parents) == {a, b}
    assert "code.py:llm" in cand.detail
    assert cand.sha is not None
    parents = git(repo, "log", "-1", "--format=%P", cand.sha).split()
    assert set(parents) == {a, b}
    merged = git(repo, "show", f"{cand.sha}:code.py")
    assert "return 10" in merged and "<<<<<<<" not in merged
    assert cand.fitness == 0.0 and cand.kept
    assert any("Version A" in p and "Common ancestor" in p for p in seen)


async def test_crossover_falls_back_to_fitter_parent_hunks_when_llm_fails(
    make_repo: Callable[..., Path],
) -> None:
    repo = make_repo()
    _, a, b = await _conflicting_parents(repo, 8, 15)
    report = await evolve(_config(repo, crossover_rate=1.0), FunctionEngine(lambda r: "I cannot merge this."))
    [cand] = report.candidates
    assert set(cand.parents) == {a, b}
    assert cand.operator == "crossover" and "code.py:fitness-hunks" in cand.detail
    assert cand.sha is not None
    merged = git(repo, "show", f"{cand.sha}:code.py")
    assert "return 8" in merged and "return 15" not in merged  # 8 scores -4, 15 scores -25
    assert cand.fitness == -4.0


async def test_evolve_refuses_to_start_when_fitness_fails_on_base(make_repo: Callable[..., Path]) -> None:
    repo = make_repo()
    config = _config(repo, fitness="echo 'no such benchmark' >&2; exit 3")
    with pytest.raises(ConfigError, match=r"exit code 3.*no such benchmark"):
        await evolve(config, FunctionEngine(_set_value(9)))
    assert git(repo, "for-each-ref", "refs/agentflow/claims") == ""


async def test_mutation_repair_turn_sends_rejection_reason_back(make_repo: Callable[..., Path]) -> None:
    repo = make_repo({"code.py": "def value():\n    return 3\n"})
    turns: list[int] = []

    def answer(request: GenerationRequest) -> str:
        assert request.messages is not None
        turns.append(len(request.messages))
        last = request.messages[-1].content
        if "That edit was rejected: the new function does not parse" in last:
            return "```python\ndef value():\n    return 10\n```"
        return "```python\ndef value(:\n    return 10\n```"

    report = await evolve(_config(repo, edit_attempts=2), FunctionEngine(answer))
    [cand] = report.candidates
    assert cand.status == "ok" and cand.fitness == 0.0
    assert turns[1] == turns[0] + 2  # the second request carries the rejected answer and the reason


async def test_llm_token_budget_stops_evolution_after_the_call_that_spent_it(
    make_repo: Callable[..., Path],
) -> None:
    from agentflow.errors import BudgetExceededError

    repo = make_repo()
    calls: list[GenerationRequest] = []

    def answer(request: GenerationRequest) -> str:
        calls.append(request)
        return _set_value(9)(request)

    with pytest.raises(BudgetExceededError) as caught:
        await evolve(_config(repo, generations=5, max_llm_tokens=20), FunctionEngine(answer))
    # The first mutation's call spent the budget (its prompt alone is longer); no request reached the
    # engine after the refusal.
    assert len(calls) == 1
    assert caught.value.used >= caught.value.limit == 20


async def test_every_mutation_call_is_recorded_with_its_prompt_and_answer(
    make_repo: Callable[..., Path],
) -> None:
    from agentflow.dsl import LLMCall

    repo = make_repo()
    report = await evolve(_config(repo, generations=2), FunctionEngine(_set_value(9)))
    calls = [e for e in report.trace if isinstance(e, LLMCall)]
    assert calls and all(c.role == "mutation" and c.status == "ok" for c in calls)
    assert all(c.completion is not None and "```python" in c.completion for c in calls)
    assert all(c.messages is not None and c.messages[0][0] == "system" for c in calls)
