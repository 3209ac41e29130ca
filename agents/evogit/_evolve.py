"""The evolution loop: a population of LLM coding agents evolving one git repository.

Each agent owns a worktree on its branch ``agentflow/agent-<i>`` (under ``.git/agentflow/worktrees``)
and repeats, once per generation:

1. read the population (fitness notes of every evaluated commit) from the repository;
2. choose parents by tournament over the whole graph (``SelectionPolicy``);
3. make a child commit: a mutation (the LLM rewrites one region of one target file, validated by
   ``apply_reply``) or a crossover (a real ``git merge`` of two parents; conflicted hunks are merged
   by the LLM, and if that fails to give a valid file, each hunk takes the fitter parent's side);
4. evaluate the child in the sandbox and publish its ``FitnessNote`` (note first, then the
   ``refs/agentflow/evaluated/<sha>`` ref that keeps it reachable);
5. keep the fitter of parent and child: the agent's branch moves to the winner.

Agents coordinate only through the repository, so several processes (each running ``evolve``)
can share it: agent slots are claimed with create-only refs ``refs/agentflow/claims/agent-<i>``,
notes are published by compare-and-swap, git lock contention is retried. A crash loses at most
the candidate being evaluated; a stale claim of a dead process on this host is taken over. With
``remote`` set, clones on several machines share one population through that git remote
(``RemoteSync``: fetch and merge before each generation, atomic leased push after each candidate).
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import random
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

import anyio
from pydantic import BaseModel, ConfigDict, Field

from agentflow.dsl import Event, StepScope
from agentflow.engines import Engine, GenerationRequest, Message, engine_from_spec
from agentflow.errors import BudgetExceededError, ConfigError, EngineError
from agentflow.runtime import RunContext, TokenBudget, call_llm
from agentflow.scheduler import Scheduler

from ._conflicts import Hunk, choose_by_fitness, conflict_prompt, parse_conflicts, render
from ._edit import Applied, Rejected, apply_reply, extract_code_block, find_regions, mutation_prompt
from ._git import EvoGitError, GitRepo
from ._notes import FitnessNote, Individual, Population, PopulationStore
from ._remote import RemoteSync
from ._sandbox import Sandbox, SandboxLimits, SandboxResult, remove_stale_checkouts
from ._selection import SelectionPolicy, tournament

__all__ = ["Candidate", "EvolveConfig", "EvolveReport", "evaluate_commit", "evolve"]

CLAIMS_PREFIX = "refs/agentflow/claims/"
BRANCH_PREFIX = "agentflow/agent-"

_SYSTEM = (
    "You are an expert programmer improving code by small, correct changes. "
    "Answer with exactly one fenced code block containing the requested code."
)


class EvolveConfig(BaseModel):
    """Settings of one ``evolve`` run (the CLI flags map onto these fields).

    Attributes:
        repo: A working tree of the repository to evolve (needs at least one commit).
        fitness: Shell command run in a checkout of each candidate; prints a number, higher is better.
        agents: Concurrent agents in this process.
        generations: Candidates each agent makes.
        engine: Engine spec for the LLM (``llamacpp:default``, ``openai:<url>#<model>``, ``test:``...).
        targets: Glob patterns (against tracked paths) of the files agents may edit.
        goal: One line telling the LLM what the fitness measures.
        base: The commit evolution starts from when the repository has no evaluated commits yet.
        crossover_rate: Chance that a generation merges two parents instead of mutating one.
        tournament_size: Contestants per parent tournament.
        promoted_weight: How much more often promoted commits are drawn.
        islands: Islands the agents are spread over (1 = none).
        migration_rate: Chance an island agent draws a parent from the whole graph.
        seed: Seed of the agents' random choices (agent ``i`` uses ``seed * 1000 + i``).
        max_tokens: Token budget of each LLM answer.
        temperature: Sampling temperature of mutations.
        cpu_seconds: RLIMIT_CPU of the fitness command.
        memory_mb: RLIMIT_AS of the fitness command, in MiB.
        file_mb: RLIMIT_FSIZE of the fitness command, in MiB.
        wall_seconds: Wall-clock limit of the fitness command.
        max_processes: Tasks (processes and threads) the fitness command may have at once.
        pass_env: Names of environment variables passed to the fitness command; every other
            variable but PATH and the locale is dropped (API keys included).
        isolation: Sandbox isolation (``auto``, ``namespaces``, ``limits-only``).
        eval_concurrency: Fitness commands run at once (0 = number of CPUs).
        edit_attempts: LLM answers per mutation: a rejected edit is sent back with the reason
            (``apply_reply``'s) and the model tries again, up to this many answers in all.
        max_llm_tokens: Most LLM tokens (prompt + completion) the whole evolution may use (``None``:
            unlimited); past it ``evolve`` stops with ``BudgetExceededError``.
        remote: A git remote (name or URL) through which several clones, on several machines,
            share one population (``None``: only processes sharing this repository coordinate).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    repo: Path
    fitness: str = Field(min_length=1)
    agents: int = Field(default=4, ge=1, le=256)
    generations: int = Field(default=5, ge=1)
    engine: str = "llamacpp:default"
    targets: tuple[str, ...] = ("*.py",)
    goal: str = "make the number printed by the fitness command as large as possible"
    base: str = "HEAD"
    crossover_rate: float = Field(default=0.25, ge=0.0, le=1.0)
    tournament_size: int = Field(default=3, ge=1)
    promoted_weight: float = Field(default=4.0, ge=1.0)
    islands: int = Field(default=1, ge=1)
    migration_rate: float = Field(default=0.1, ge=0.0, le=1.0)
    seed: int = 0
    max_tokens: int = Field(default=512, ge=16)
    temperature: float = Field(default=0.8, ge=0.0)
    cpu_seconds: int = Field(default=60, ge=1)
    memory_mb: int = Field(default=2048, ge=32)
    file_mb: int = Field(default=64, ge=1)
    wall_seconds: float = Field(default=120.0, gt=0)
    max_processes: int = Field(default=256, ge=8)
    pass_env: tuple[str, ...] = ()
    isolation: Literal["auto", "namespaces", "limits-only"] = "auto"
    eval_concurrency: int = Field(default=0, ge=0)
    edit_attempts: int = Field(default=2, ge=1)
    max_llm_tokens: int | None = Field(default=None, ge=1)
    remote: str | None = None

    def sandbox(self) -> Sandbox:
        """The sandbox these settings describe."""
        limits = SandboxLimits(
            cpu_seconds=self.cpu_seconds,
            memory_bytes=self.memory_mb << 20,
            file_bytes=self.file_mb << 20,
            wall_seconds=self.wall_seconds,
            max_processes=self.max_processes,
        )
        return Sandbox(self.fitness, limits, isolation=self.isolation, pass_env=self.pass_env)

    def policy(self) -> SelectionPolicy:
        """The parent-selection policy these settings describe."""
        return SelectionPolicy(self.tournament_size, self.promoted_weight, self.islands, self.migration_rate)


CandidateStatus = Literal["ok", "failed", "timeout", "violation", "rejected"]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One attempt of one agent.

    Attributes:
        sha: The candidate commit (``None`` when the edit was rejected before committing).
        status: ``ok``/``failed``/``timeout``/``violation`` (evaluated) or ``rejected`` (invalid edit).
        fitness: Its fitness when ``ok``.
        operator: ``mutation`` or ``crossover``.
        parents: The parent commits.
        agent: The agent (``agent-2``).
        generation: The agent's generation index.
        detail: What was done (region edited, conflict resolution) or why it was rejected.
        kept: Whether the agent's branch moved to it (it was at least as fit as its parents).
        elapsed_s: Seconds since the run started when it finished.
    """

    sha: str | None
    status: CandidateStatus
    fitness: float | None
    operator: Literal["mutation", "crossover"]
    parents: tuple[str, ...]
    agent: str
    generation: int
    detail: str
    kept: bool
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class EvolveReport:
    """What one ``evolve`` call did.

    Attributes:
        base: The commit evolution started from.
        base_fitness: Its fitness.
        candidates: Every attempt, in completion order.
        best: The fittest viable commit in the repository at the end.
        best_fitness: Its fitness.
        elapsed_s: Wall time of the run.
        sandbox_layers: The isolation layers the sandbox enforced.
        agents: The agent slots this process ran.
        trace: The run's events: one ``LLMCall`` per LLM request (prompts and answers included).
    """

    base: str
    base_fitness: float | None
    candidates: tuple[Candidate, ...]
    best: str | None
    best_fitness: float | None
    elapsed_s: float
    sandbox_layers: tuple[str, ...]
    agents: tuple[int, ...] = field(default=())
    trace: tuple[Event, ...] = field(default=())

    @property
    def evaluated(self) -> int:
        """Candidates that reached the sandbox."""
        return sum(1 for c in self.candidates if c.sha is not None)

    @property
    def per_minute(self) -> float:
        """Evaluated candidates per minute of wall time."""
        return 60.0 * self.evaluated / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def curve(self) -> list[tuple[float, float | None]]:
        """Best fitness so far after each attempt: ``(elapsed seconds, best)`` pairs, base first."""
        best = self.base_fitness
        points: list[tuple[float, float | None]] = [(0.0, best)]
        for c in self.candidates:
            if c.status == "ok" and c.fitness is not None and (best is None or c.fitness > best):
                best = c.fitness
            points.append((c.elapsed_s, best))
        return points


async def evaluate_commit(
    repo: GitRepo,
    store: PopulationStore,
    sandbox: Sandbox,
    sha: str,
    *,
    operator: Literal["seed", "mutation", "crossover"],
    parents: tuple[str, ...] = (),
    agent: str = "",
    island: int = 0,
    generation: int = 0,
    detail: str = "",
    engine: str | None = None,
    worktree: GitRepo | None = None,
) -> FitnessNote:
    """Evaluate ``sha`` in the sandbox and publish its fitness note.

    When ``worktree`` is given it must be unchanged afterwards (clean, HEAD still ``sha``); if not,
    the candidate is marked ``violation`` and the worktree is restored.
    """
    result = await sandbox.evaluate(repo, sha)
    status = _status(result)
    if worktree is not None:
        head = await worktree.head()
        if head != sha or not await worktree.is_clean():
            status = "violation"
            await worktree.run("reset", "--hard", "-q", sha)
            await worktree.run("clean", "-fdxq")
    out_tail, err_tail = result.tails()
    note = FitnessNote(
        commit=sha,
        status=status,
        fitness=result.fitness if status == "ok" else None,
        parents=list(parents),
        operator=operator,
        detail=detail,
        agent=agent,
        island=island,
        generation=generation,
        exit_code=result.exit_code,
        duration_s=round(result.duration_s, 4),
        stdout_tail=out_tail,
        stderr_tail=err_tail,
        sandbox=list(result.layers),
        engine=engine,
    )
    await store.write(note)
    return note


def _status(result: SandboxResult) -> Literal["ok", "failed", "timeout", "violation"]:
    if "Read-only file system" in result.stderr:
        # The command tried to write outside its checkout and the read-only mounts stopped it.
        return "violation"
    if result.timed_out:
        return "timeout"
    return "ok" if result.ok else "failed"


class _Run:
    """State shared by the agents of one ``evolve`` call (lives for the call)."""

    def __init__(
        self, config: EvolveConfig, repo: GitRepo, engine: Engine, on_candidate: _Listener | None
    ) -> None:
        self.config = config
        self.repo = repo
        self.store = PopulationStore(repo)
        self.sandbox = config.sandbox()
        self.policy = config.policy()
        self.engine = engine
        self.on_candidate = on_candidate
        self.started = time.perf_counter()
        # Every attempt of every agent of this process, in completion order.
        self.candidates: list[Candidate] = []
        workers = config.eval_concurrency or (os.cpu_count() or 1)
        # Bounds concurrent fitness commands (each is a CPU-heavy process).
        self.eval_limiter = anyio.CapacityLimiter(workers)
        self.run_id = uuid.uuid4().hex[:8]
        # Serialises `git worktree add` of this process's agents (git reads every worktree's admin
        # files while adding one, and fails on one that is half-written).
        self.worktree_lock = anyio.Lock()
        # Synchronisation with other clones (None without --remote).
        self.sync = RemoteSync(repo, config.remote) if config.remote else None
        # Every LLM request of every agent is recorded here (LLMCall events) and charged to one budget.
        self.trace: list[Event] = []
        budget = TokenBudget(config.max_llm_tokens) if config.max_llm_tokens is not None else None
        self.scope = StepScope(
            RunContext(engine=engine, run_id=self.run_id, budget=budget), self.trace, "evolve"
        )

    def record(self, candidate: Candidate) -> None:
        self.candidates.append(candidate)
        if self.on_candidate is not None:
            self.on_candidate(candidate)

    async def ask(self, prompt: str | list[Message], *, temperature: float, seed: int, role: str) -> str:
        """One LLM answer; raises ``EngineError`` (the caller rejects the attempt) or ``BudgetExceededError``."""
        messages = [Message("user", prompt)] if isinstance(prompt, str) else list(prompt)
        request = GenerationRequest(
            messages=(Message("system", _SYSTEM), *messages),
            max_tokens=self.config.max_tokens,
            temperature=temperature,
            seed=seed,
        )
        return (await call_llm(request, scope=self.scope, role=role)).text


_Listener = Callable[[Candidate], None]


async def evolve(
    config: EvolveConfig,
    engine: Engine | None = None,
    *,
    on_candidate: _Listener | None = None,
) -> EvolveReport:
    """Run ``config.agents`` agents for ``config.generations`` generations each.

    Args:
        config: The run's settings.
        engine: The LLM engine (shared by all agents and left open); ``None`` creates ``config.engine``
            for the run and closes it afterwards.
        on_candidate: Called after every attempt (progress display).

    Returns:
        The run's report; the population itself is in the repository.

    Raises:
        ConfigError: The repository, base revision or targets are unusable.
        EvoGitError: A git operation failed for a reason other than lock contention.
    """
    repo = await GitRepo.open(config.repo)
    base = await repo.rev_parse(config.base)
    if base is None:
        raise ConfigError(
            f"evolve base {config.base!r} names no commit in {repo.toplevel}; commit the starting code "
            "first or pass --base REV"
        )
    tracked = (await repo.out("ls-tree", "-r", "--name-only", base)).splitlines()
    if not any(_is_target(p, config.targets) for p in tracked):
        raise ConfigError(
            f"no tracked file of {config.base} matches the evolve targets {list(config.targets)}; "
            "pass --target GLOB naming the files agents may edit"
        )
    owned = engine is None
    # Every LLM request of every agent goes through one KV-reuse-aware scheduler (pass a Scheduler as
    # ``engine`` to share one with other work).
    the_engine = Scheduler(engine_from_spec(config.engine)) if engine is None else engine
    state = _Run(config, repo, the_engine, on_candidate)
    slots: list[int] = []
    claim_blob = ""
    try:
        await anyio.to_thread.run_sync(remove_stale_checkouts)
        if state.sync is not None:
            await state.sync.check()
            await state.sync.pull()
        base_note = await state.store.read(base)
        if base_note is None:
            base_note = await evaluate_commit(
                repo, state.store, state.sandbox, base, operator="seed", agent="seed", detail="starting point"
            )
            if state.sync is not None:
                await state.sync.push(base)
        if base_note.status != "ok" and not (await state.store.population()).viable():
            raise ConfigError(
                f"the fitness command {config.fitness!r} did not produce a fitness on the starting commit "
                f"{base[:10]} (status {base_note.status}, exit code {base_note.exit_code}; stderr: "
                f"{base_note.stderr_tail[-400:].strip()!r}; stdout: {base_note.stdout_tail[-200:].strip()!r}); "
                "fix the command so it exits 0 and prints a number as its last output"
            )
        claim_blob = await _claim_blob(repo)
        slots = await _claim_slots(repo, config.agents, claim_blob, state.sync)
        try:
            async with anyio.create_task_group() as tg:
                for slot in slots:
                    tg.start_soon(_agent, state, slot, base)
        except* BudgetExceededError as spent:
            raise spent.exceptions[0] from None
    finally:
        with anyio.CancelScope(shield=True):
            await _release_slots(repo, slots, claim_blob, state.sync)
            if owned:
                await the_engine.aclose()
    population = await state.store.population()
    best = population.best()
    return EvolveReport(
        base=base,
        base_fitness=base_note.fitness,
        candidates=tuple(state.candidates),
        best=best.sha if best else None,
        best_fitness=best.note.fitness if best else None,
        elapsed_s=time.perf_counter() - state.started,
        sandbox_layers=state.sandbox.layers(),
        trace=tuple(state.trace),
        agents=tuple(slots),
    )


def _is_target(path: str, targets: tuple[str, ...]) -> bool:
    name = path.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(path, t) or fnmatch.fnmatch(name, t) for t in targets)


async def _claim_blob(repo: GitRepo) -> str:
    """A blob naming this process (host, pid, time): the value of its claim refs."""
    info = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()})
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        fh.write(info)
        path = fh.name
    try:
        return await repo.out("hash-object", "-w", path)
    finally:
        os.unlink(path)


async def _claim_slots(repo: GitRepo, count: int, blob: str, sync: RemoteSync | None) -> list[int]:
    """Claim ``count`` free agent slots with create-only refs (taking over stale claims of dead local processes)."""
    claimed: list[int] = []
    slot = 0
    while len(claimed) < count:
        ref = f"{CLAIMS_PREFIX}agent-{slot}"
        if await repo.update_ref(ref, blob, ""):
            if sync is None or await sync.claim(ref, blob):
                claimed.append(slot)
            else:
                await repo.delete_ref(ref, blob)
        else:
            current = await repo.rev_parse_any(ref)
            if (
                current is not None
                and await _claim_is_stale(repo, current)
                and await repo.delete_ref(ref, current)
            ):
                if sync is not None:
                    await sync.release(ref, current)
                continue  # retry the same slot
        slot += 1
    return claimed


async def _claim_is_stale(repo: GitRepo, blob: str) -> bool:
    data = (await repo.read_blobs([blob])).get(blob, b"")
    try:
        info = json.loads(data)
        host, pid = str(info["host"]), int(info["pid"])
    except (ValueError, KeyError, TypeError):
        return True
    if host != socket.gethostname():
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


async def _release_slots(repo: GitRepo, slots: list[int], blob: str, sync: RemoteSync | None) -> None:
    for slot in slots:
        if sync is not None:
            await sync.release(f"{CLAIMS_PREFIX}agent-{slot}", blob)
        path = _worktree_path(repo, slot)
        await repo.run("worktree", "remove", "--force", str(path), check=False)
        await anyio.to_thread.run_sync(partial(shutil.rmtree, path, ignore_errors=True))
        await repo.delete_ref(f"{CLAIMS_PREFIX}agent-{slot}")


def _worktree_path(repo: GitRepo, slot: int) -> Path:
    return repo.common_dir / "agentflow" / "worktrees" / f"agent-{slot}"


async def _open_worktree(repo: GitRepo, slot: int, base: str) -> GitRepo:
    # Invariant: we hold the claim of ``slot``, so nobody else touches this worktree path. No
    # ``git worktree prune`` here: it would delete another process's half-created worktree.
    path = _worktree_path(repo, slot)
    if path.exists():
        await repo.run("worktree", "remove", "--force", str(path), check=False)
        await anyio.to_thread.run_sync(lambda: shutil.rmtree(path, ignore_errors=True))
    path.parent.mkdir(parents=True, exist_ok=True)
    branch = f"{BRANCH_PREFIX}{slot}"
    if await repo.rev_parse(f"refs/heads/{branch}") is not None:
        await repo.run("worktree", "add", "--force", str(path), branch)
    else:
        await repo.run("worktree", "add", "--force", "-b", branch, str(path), base)
    return await repo.at(path)


async def _agent(state: _Run, slot: int, base: str) -> None:
    config = state.config
    name = f"agent-{slot}"
    island = slot % config.islands
    rng = random.Random(config.seed * 1000 + slot)
    async with state.worktree_lock:
        worktree = await _open_worktree(state.repo, slot, base)
    failures = 0
    for generation in range(config.generations):
        try:
            await _generation(state, worktree, rng, slot, name, island, generation)
            failures = 0
        except EvoGitError as exc:
            # One failed git operation costs this candidate only; repeated failures end the run.
            failures += 1
            if failures >= _MAX_GIT_FAILURES:
                raise
            state.record(_rejected("mutation", (), name, generation, f"git error: {exc}", state))
            await worktree.run("merge", "--abort", check=False)
            await worktree.run("reset", "--hard", "-q", check=False)


_MAX_GIT_FAILURES = 3


async def _generation(
    state: _Run, worktree: GitRepo, rng: random.Random, slot: int, name: str, island: int, generation: int
) -> None:
    """One candidate of one agent: make it, evaluate it, keep the fitter of parent and child."""
    if state.sync is not None:
        await state.sync.pull()
    population = await state.store.population()
    made = await _make_child(state, worktree, population, rng, name, island, generation)
    if isinstance(made, Candidate):
        state.record(made)
        return
    sha, operator, parents, detail = made
    async with state.eval_limiter:
        note = await evaluate_commit(
            state.repo,
            state.store,
            state.sandbox,
            sha,
            operator=operator,
            parents=parents,
            agent=name,
            island=island,
            generation=generation,
            detail=detail,
            engine=state.engine.name,
            worktree=worktree,
        )
    parent_fitness = [f for f in (population.fitness_of(p) for p in parents) if f is not None]
    best_parent = max(parents, key=lambda p: population.fitness_of(p) or float("-inf"))
    kept = note.status == "ok" and (not parent_fitness or (note.fitness or 0.0) >= max(parent_fitness))
    # Selection: the agent's branch keeps the fitter of parent(s) and child.
    await worktree.run("checkout", "-q", "-f", "-B", f"{BRANCH_PREFIX}{slot}", sha if kept else best_parent)
    if state.sync is not None:
        await state.sync.push(sha, f"{BRANCH_PREFIX}{slot}")
    state.record(
        Candidate(
            sha,
            note.status,
            note.fitness,
            operator,
            parents,
            name,
            generation,
            detail,
            kept,
            time.perf_counter() - state.started,
        )
    )


_Made = tuple[str, Literal["mutation", "crossover"], tuple[str, ...], str]


async def _make_child(
    state: _Run,
    worktree: GitRepo,
    population: Population,
    rng: random.Random,
    agent: str,
    island: int,
    generation: int,
) -> _Made | Candidate:
    """Build one child commit in the worktree; a ``Candidate`` (rejected) when no valid child came out."""
    policy = state.policy
    first = tournament(population, rng, policy, island=island)
    if first is None:
        return _rejected("mutation", (), agent, generation, "no viable parent (all pruned or failing)", state)
    if rng.random() < state.config.crossover_rate:
        # A merge with an ancestor or descendant adds nothing: draw again (a few times) for a parent
        # from another line; if none comes up, mutate instead.
        excluded = {first.sha}
        for _ in range(3):
            second = tournament(population, rng, policy, island=island, exclude=frozenset(excluded))
            if second is None:
                break
            if not await _related(worktree, first.sha, second.sha):
                return await _crossover(state, worktree, first, second, rng, agent, generation)
            excluded.add(second.sha)
    return await _mutation(state, worktree, first, rng, agent, generation)


async def _related(repo: GitRepo, a: str, b: str) -> bool:
    for x, y in ((a, b), (b, a)):
        res = await repo.run("merge-base", "--is-ancestor", x, y, check=False, ok_codes=(0, 1))
        if res.status == 0:
            return True
    return False


def _rejected(
    operator: Literal["mutation", "crossover"],
    parents: tuple[str, ...],
    agent: str,
    generation: int,
    detail: str,
    state: _Run,
) -> Candidate:
    elapsed = time.perf_counter() - state.started
    return Candidate(None, "rejected", None, operator, parents, agent, generation, detail, False, elapsed)


async def _commit(worktree: GitRepo, agent: str, message: str) -> str:
    env = {
        "GIT_AUTHOR_NAME": f"agentflow {agent}",
        "GIT_AUTHOR_EMAIL": f"{agent}@agentflow.localhost",
        "GIT_COMMITTER_NAME": f"agentflow {agent}",
        "GIT_COMMITTER_EMAIL": f"{agent}@agentflow.localhost",
    }
    await worktree.run("commit", "-q", "--no-verify", "-m", message, env=env)
    return await worktree.head()


async def _checkout(worktree: GitRepo, sha: str) -> None:
    await worktree.run("merge", "--abort", check=False)
    await worktree.run("checkout", "-q", "-f", "--detach", sha)
    await worktree.run("clean", "-fdxq")


async def _mutation(
    state: _Run, worktree: GitRepo, parent: Individual, rng: random.Random, agent: str, generation: int
) -> _Made | Candidate:
    await _checkout(worktree, parent.sha)
    files = [p for p in (await worktree.out("ls-files")).splitlines() if _is_target(p, state.config.targets)]
    rng.shuffle(files)
    for path in files:
        source = await anyio.Path(worktree.path / path).read_text(encoding="utf-8")
        regions = find_regions(path, source)
        if not regions:
            continue
        region = rng.choice(regions)
        prompt = mutation_prompt(source, region, goal=state.config.goal, fitness=parent.note.fitness)
        messages = [Message("user", prompt)]
        result: Applied | Rejected | None = None
        for _ in range(state.config.edit_attempts):
            try:
                reply = await state.ask(
                    messages,
                    temperature=state.config.temperature,
                    seed=rng.randrange(1 << 30),
                    role="mutation",
                )
            except EngineError as exc:
                detail = f"LLM call failed for {region.label}: {exc}"
                return _rejected("mutation", (parent.sha,), agent, generation, detail, state)
            result = apply_reply(source, region, reply)
            if isinstance(result, Applied):
                break
            # Repair turn: show the model why its edit was refused and ask again.
            messages += [
                Message("assistant", reply),
                Message(
                    "user",
                    f"That edit was rejected: {result.reason}. Reply again with the complete new version "
                    "in one code block.",
                ),
            ]
        if not isinstance(result, Applied):
            reason = result.reason if result is not None else "no attempt"
            detail = f"mutate {region.label}: rejected: {reason}"
            return _rejected("mutation", (parent.sha,), agent, generation, detail, state)
        await anyio.Path(worktree.path / path).write_text(result.new_source, encoding="utf-8")
        await worktree.run("add", "--", path)
        detail = f"mutate {region.label}"
        sha = await _commit(
            worktree, agent, f"evogit: {detail}\n\nparent {parent.sha}\nagent {agent} gen {generation}"
        )
        return sha, "mutation", (parent.sha,), detail
    return _rejected(
        "mutation", (parent.sha,), agent, generation, "no editable region in the target files", state
    )


async def _crossover(
    state: _Run,
    worktree: GitRepo,
    ours: Individual,
    theirs: Individual,
    rng: random.Random,
    agent: str,
    generation: int,
) -> _Made | Candidate:
    parents = (ours.sha, theirs.sha)
    await _checkout(worktree, ours.sha)
    merged = await worktree.run(
        "-c",
        "merge.conflictStyle=diff3",
        "merge",
        "--no-ff",
        "--no-commit",
        "--no-edit",
        theirs.sha,
        check=False,
        ok_codes=(0, 1),
    )
    methods: list[str] = []
    if merged.status != 0:
        conflicted = (await worktree.out("diff", "--name-only", "--diff-filter=U")).splitlines()
        if not conflicted:
            await worktree.run("merge", "--abort", check=False)
            return _rejected(
                "crossover", parents, agent, generation, f"merge failed: {merged.stderr.strip()[:300]}", state
            )
        for path in conflicted:
            method = await _resolve_file(state, worktree, path, ours, theirs, rng)
            methods.append(f"{path}:{method}")
            await worktree.run("add", "--", path)
    resolution = ", ".join(methods) if methods else "clean merge"
    detail = f"crossover {ours.sha[:10]} x {theirs.sha[:10]} ({resolution})"
    sha = await _commit(worktree, agent, f"evogit: {detail}\n\nagent {agent} gen {generation}")
    return sha, "crossover", parents, detail


async def _resolve_file(
    state: _Run, worktree: GitRepo, path: str, ours: Individual, theirs: Individual, rng: random.Random
) -> str:
    """Resolve one conflicted file in place; returns how (``llm`` or ``fitness-hunks``)."""
    file = anyio.Path(worktree.path / path)
    text = await file.read_text(encoding="utf-8", errors="replace")
    try:
        segments = parse_conflicts(text)
    except ValueError:
        side = "--theirs" if (theirs.note.fitness or 0.0) > (ours.note.fitness or 0.0) else "--ours"
        await worktree.run("checkout", side, "--", path)
        return f"whole-file{side}"
    hunks = [s for s in segments if isinstance(s, Hunk)]
    resolutions: list[str] = []
    for index in range(len(hunks)):
        try:
            reply: str | None = await state.ask(
                conflict_prompt(path, segments, index),
                temperature=0.2,
                seed=rng.randrange(1 << 30),
                role="merge",
            )
        except EngineError:
            reply = None  # this hunk falls back to choosing a side by fitness
        block = extract_code_block(reply) if reply is not None else None
        if block is None or "<<<<<<<" in block or ">>>>>>>" in block or "=======" in block:
            break
        resolutions.append(block if block.endswith("\n") else block + "\n")
    if len(resolutions) == len(hunks) and _valid(path, render(segments, resolutions)):
        await file.write_text(render(segments, resolutions), encoding="utf-8")
        return "llm"
    fallback = choose_by_fitness(segments, ours.note.fitness, theirs.note.fitness)
    await file.write_text(render(segments, fallback), encoding="utf-8")
    return "fitness-hunks"


def _valid(path: str, text: str) -> bool:
    if not path.endswith(".py"):
        return True
    try:
        ast.parse(text)
    except SyntaxError:
        return False
    return True
