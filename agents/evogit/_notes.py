"""The population as stored in the repository: fitness notes, evaluated refs and steering tags.

Everything EvoGit knows lives in git, so any process (or a person with plain git) can read it:

    refs/notes/agentflow                  one JSON note per evaluated commit (``FitnessNote``)
    refs/agentflow/evaluated/<sha>        keeps every evaluated commit reachable (fsck-clean, gc-safe)
    refs/tags/agentflow/promoted/<sha>    a person promoted this commit: chosen more often as a parent
    refs/tags/agentflow/pruned/<sha>      a person pruned this commit: never chosen as a parent

``git notes add`` replaces the notes ref without checking its old value, so two writers could
lose each other's note. ``PopulationStore.write`` therefore writes the note on a private copy of
the notes ref and publishes it with a compare-and-swap ``update-ref``, retrying on a lost race.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ._git import EvoGitError, GitRepo

__all__ = [
    "EVALUATED_PREFIX",
    "NOTES_REF",
    "PROMOTED_PREFIX",
    "PRUNED_PREFIX",
    "FitnessNote",
    "Individual",
    "Population",
    "PopulationStore",
]

NOTES_REF = "refs/notes/agentflow"
EVALUATED_PREFIX = "refs/agentflow/evaluated/"
PROMOTED_PREFIX = "refs/tags/agentflow/promoted/"
PRUNED_PREFIX = "refs/tags/agentflow/pruned/"

Status = Literal["ok", "failed", "timeout", "violation"]
Operator = Literal["seed", "mutation", "crossover"]


class FitnessNote(BaseModel):
    """The JSON note attached to an evaluated commit.

    Attributes:
        schema_version: Format tag of the note.
        commit: The evaluated commit.
        status: ``ok`` (a fitness was read), ``failed`` (non-zero exit or no number printed),
            ``timeout`` (wall or CPU limit hit) or ``violation`` (the sandbox saw the candidate
            change something outside its checkout).
        fitness: The number the fitness command printed last (higher is better); ``None`` unless ok.
        parents: The parent individuals this candidate was made from.
        operator: How the candidate was made.
        detail: What the operator did (file and region edited, how conflicts were resolved).
        agent: The agent that made it (``agent-3``).
        island: The agent's island.
        generation: The agent's generation counter when it made the candidate.
        exit_code: The fitness command's exit code (``None`` if killed).
        duration_s: Wall time of the fitness command.
        stdout_tail: The end of its standard output.
        stderr_tail: The end of its standard error.
        sandbox: The isolation layers that were enforced for this evaluation.
        engine: The LLM engine that wrote the edit, if any.
        host: The machine that evaluated it.
        pid: The evaluating process.
        created: When the note was written (Unix time).
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    schema_version: Literal["agentflow.evogit/v1"] = "agentflow.evogit/v1"
    commit: str
    status: Status
    fitness: float | None = None
    parents: list[str] = Field(default_factory=list)
    operator: Operator = "mutation"
    detail: str = ""
    agent: str = ""
    island: int = 0
    generation: int = 0
    exit_code: int | None = None
    duration_s: float = 0.0
    stdout_tail: str = ""
    stderr_tail: str = ""
    sandbox: list[str] = Field(default_factory=list)
    engine: str | None = None
    host: str = Field(default_factory=socket.gethostname)
    pid: int = Field(default_factory=os.getpid)
    created: float = Field(default_factory=time.time)


@dataclass(frozen=True, slots=True)
class Individual:
    """One evaluated commit with its note and the steering tags people put on it."""

    note: FitnessNote
    promoted: bool = False
    pruned: bool = False

    @property
    def sha(self) -> str:
        """The commit id."""
        return self.note.commit

    @property
    def viable(self) -> bool:
        """Evaluated successfully with a fitness and not pruned: may be chosen as a parent."""
        return self.note.status == "ok" and self.note.fitness is not None and not self.pruned


@dataclass(frozen=True, slots=True)
class Population:
    """A snapshot of every evaluated commit of the repository."""

    individuals: dict[str, Individual]

    def viable(self, island: int | None = None) -> list[Individual]:
        """Individuals that may be parents, optionally only those of one island (promoted ones always)."""
        return [
            ind
            for ind in self.individuals.values()
            if ind.viable and (island is None or ind.note.island == island or ind.promoted)
        ]

    def best(self) -> Individual | None:
        """The fittest viable individual (ties: the earliest note)."""
        pool = self.viable()
        if not pool:
            return None
        return max(pool, key=lambda i: (i.note.fitness or 0.0, -i.note.created))

    def fitness_of(self, sha: str) -> float | None:
        """The fitness of ``sha`` if it was evaluated successfully."""
        ind = self.individuals.get(sha)
        return ind.note.fitness if ind is not None and ind.note.status == "ok" else None


class PopulationStore:
    """Reads and writes the population of one repository.

    Args:
        repo: Any working tree of the repository.
    """

    def __init__(self, repo: GitRepo) -> None:
        self.repo = repo
        # Parsed notes by note blob id; blobs are immutable, so this cache is valid for the store's life.
        self._by_blob: dict[str, FitnessNote | None] = {}

    async def write(self, note: FitnessNote) -> None:
        """Attach ``note`` to its commit and make the commit reachable from ``refs/agentflow/evaluated``.

        The note goes first, the ref second: a crash in between leaves a noted but unreferenced commit,
        never a referenced commit without a note.
        """
        payload = note.model_dump_json()
        temp = f"refs/notes/agentflow-tmp/{uuid.uuid4().hex}"
        try:
            for _ in range(200):
                old = (await self.repo.rev_parse(NOTES_REF)) or ""
                if old:
                    await self.repo.run("update-ref", temp, old)
                else:
                    await self.repo.run("update-ref", "-d", temp, check=False)
                await self.repo.run("notes", f"--ref={temp}", "add", "-f", "-m", payload, note.commit)
                new = await self.repo.out("rev-parse", temp)
                if await self.repo.update_ref(NOTES_REF, new, old):
                    break
            else:
                raise EvoGitError(f"could not publish the note of {note.commit} after 200 concurrent retries")
        finally:
            await self.repo.run("update-ref", "-d", temp, check=False)
        await self.repo.run("update-ref", f"{EVALUATED_PREFIX}{note.commit}", note.commit)

    async def read(self, sha: str) -> FitnessNote | None:
        """The note of one commit, or ``None`` when it has none (or an unreadable one)."""
        res = await self.repo.run("notes", f"--ref={NOTES_REF}", "show", sha, check=False)
        if res.status != 0:
            return None
        return _parse(res.stdout)

    async def population(self) -> Population:
        """Every noted commit with its steering tags."""
        listing = await self.repo.run("notes", f"--ref={NOTES_REF}", "list", check=False)
        pairs = [line.split() for line in listing.stdout.splitlines() if line.strip()]
        missing = [blob for blob, _ in pairs if blob not in self._by_blob]
        for blob, data in (await self.repo.read_blobs(missing)).items():
            self._by_blob[blob] = _parse(data.decode("utf-8", "replace"))
        tags = await self.repo.refs(PROMOTED_PREFIX.rstrip("/"), PRUNED_PREFIX.rstrip("/"))
        promoted = {oid for name, oid in tags.items() if name.startswith(PROMOTED_PREFIX)}
        pruned = {oid for name, oid in tags.items() if name.startswith(PRUNED_PREFIX)}
        individuals: dict[str, Individual] = {}
        for blob, commit in pairs:
            note = self._by_blob.get(blob)
            if note is None or note.commit != commit:
                continue
            individuals[commit] = Individual(note, promoted=commit in promoted, pruned=commit in pruned)
        return Population(individuals)

    async def promote(self, sha: str) -> None:
        """Tag ``sha`` promoted (and lift a prune)."""
        await self.repo.run("update-ref", f"{PROMOTED_PREFIX}{sha}", sha)
        await self.repo.run("update-ref", "-d", f"{PRUNED_PREFIX}{sha}", check=False)

    async def prune(self, sha: str) -> None:
        """Tag ``sha`` pruned (and lift a promotion)."""
        await self.repo.run("update-ref", f"{PRUNED_PREFIX}{sha}", sha)
        await self.repo.run("update-ref", "-d", f"{PROMOTED_PREFIX}{sha}", check=False)


def _parse(text: str) -> FitnessNote | None:
    try:
        return FitnessNote.model_validate_json(text.strip())
    except ValidationError:
        return None
