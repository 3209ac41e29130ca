"""The git boundary of EvoGit: one command runner over the ``git`` executable with lock-contention retries.

Every git operation EvoGit performs goes through ``GitRepo``. Commands run in a worker thread
(``anyio.to_thread.run_sync``) as ``git`` subprocesses; failures are translated to
``EvoGitError`` here and nowhere else. Several agents, in one process or in many, share one
repository, so a command that failed because another writer held a lock (``index.lock``, a ref
lock, ``packed-refs.lock``) is retried with jittered backoff (the DSL's ``Retrier``).

Every command runs with automatic gc and maintenance disabled (a background ``gc --auto`` would
pack refs under the feet of concurrent writers), hooks disabled (the user's hooks are not ours to
run in a tight loop) and a fixed fallback identity.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import anyio

from agentflow.dsl import Backoff, Retrier, RetryNotice
from agentflow.errors import ConfigError, RuntimeFailure

__all__ = ["EvoGitError", "GitRepo", "GitResult"]

_BASE_CONFIG: tuple[str, ...] = (
    "-c",
    "gc.auto=0",
    "-c",
    "maintenance.auto=false",
    "-c",
    "core.hooksPath=/dev/null",
    "-c",
    "commit.gpgsign=false",
    "-c",
    "tag.gpgsign=false",
    "-c",
    "user.name=agentflow",
    "-c",
    "user.email=agentflow@localhost",
    "-c",
    "advice.detachedHead=false",
)

_CONTENTION_MARKERS: tuple[str, ...] = (
    "index.lock",
    ".lock': file exists",
    "cannot lock ref",
    "unable to create",
    "could not lock",
    "unable to lock",
    "another git process",
    "/commondir",  # another process is adding a worktree right now (its admin files are half-written)
    "/gitdir",
)


class EvoGitError(RuntimeFailure):
    """A git operation of EvoGit failed (the message names the command, its exit code and stderr)."""


@dataclass(frozen=True, slots=True)
class GitResult:
    """The outcome of one git command.

    Attributes:
        status: The exit code.
        stdout: Standard output (trailing newline stripped).
        stderr: Standard error.
    """

    status: int
    stdout: str
    stderr: str


_CONTENTION_BACKOFF = Backoff(initial=0.015, factor=1.6, max=0.5, jitter=0.5)
"""Waits between tries of a command that met another writer's lock: short, growing, jittered apart."""


class _Contended(Exception):
    """A git command failed because another writer held a lock (retryable); carries its result."""

    def __init__(self, result: GitResult) -> None:
        super().__init__(result.stderr.strip())
        self.result = result


def _is_contention(stderr: str) -> bool:
    low = stderr.lower()
    return any(m in low for m in _CONTENTION_MARKERS)


class GitRepo:
    """A repository (or one of its worktrees) that EvoGit reads and writes.

    Args:
        path: The working tree (main checkout or a linked worktree).
        attempts: How many times a command failing on lock contention is tried.
        on_retry: Called before each retry of a command that met a lock (logs, tests).

    Raises:
        ConfigError: ``path`` is not inside a git working tree.
    """

    def __init__(
        self, path: Path | str, *, attempts: int = 60, on_retry: Callable[[RetryNotice], None] | None = None
    ) -> None:
        self.path = Path(path).resolve()
        self._attempts = attempts
        self._on_retry = on_retry
        probe = self.run_blocking("rev-parse", "--git-common-dir", "--show-toplevel", check=False)
        if probe.status != 0:
            raise ConfigError(
                f"evolve repository {str(self.path)!r} is not a git working tree ({probe.stderr.strip()}); "
                "pass --repo pointing at a checkout with at least one commit (git init && git commit)"
            )
        common, top = probe.stdout.splitlines()[:2]
        common_path = Path(common)
        # The shared .git directory of all worktrees (where refs, objects and our worktrees live).
        self.common_dir = (common_path if common_path.is_absolute() else self.path / common_path).resolve()
        self.toplevel = Path(top).resolve()

    @classmethod
    async def open(cls, path: Path | str) -> GitRepo:
        """Create a ``GitRepo`` without blocking the event loop (the constructor runs ``git rev-parse``)."""
        return await anyio.to_thread.run_sync(partial(cls, path))

    async def at(self, path: Path | str) -> GitRepo:
        """A ``GitRepo`` for another working tree of the same repository (e.g. an agent's worktree)."""
        return await anyio.to_thread.run_sync(
            partial(GitRepo, path, attempts=self._attempts, on_retry=self._on_retry)
        )

    def run_blocking(
        self,
        *args: str,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        ok_codes: Sequence[int] = (0,),
    ) -> GitResult:
        """Run ``git <args>`` once in this working tree, without retries, blocking the thread (the arguments
        are ``run``'s); returns the command's ``GitResult``."""
        environment = {**os.environ, **env} if env else None
        try:
            done = subprocess.run(
                ["git", *_BASE_CONFIG, *args],
                cwd=self.path,
                env=environment,
                capture_output=True,
                text=True,
                errors="replace",
            )
        except OSError as exc:
            raise ConfigError(f"cannot run git ({exc.strerror}); install git and put it on PATH") from exc
        result = GitResult(done.returncode, done.stdout.rstrip("\n"), done.stderr)
        if check and result.status not in ok_codes:
            raise self._failure(args, result)
        return result

    async def run(
        self,
        *args: str,
        check: bool = True,
        env: Mapping[str, str] | None = None,
        ok_codes: Sequence[int] = (0,),
        retry: bool = True,
    ) -> GitResult:
        """Run ``git <args>`` in a worker thread, retrying (with ``Retrier``) while it fails on lock contention.

        Args:
            *args: The git arguments.
            check: Raise ``EvoGitError`` on an exit code not in ``ok_codes``.
            env: Extra environment variables.
            ok_codes: Exit codes that count as success.
            retry: Retry when stderr shows lock contention.

        Returns:
            The command's ``GitResult`` (the last attempt's).
        """
        once = partial(self.run_blocking, *args, check=False, env=env, ok_codes=ok_codes)

        async def attempt(_: int) -> GitResult:
            result = await anyio.to_thread.run_sync(once)
            if result.status not in ok_codes and retry and _is_contention(result.stderr):
                raise _Contended(result)
            return result

        retrier = Retrier(
            attempts=self._attempts,
            backoff=_CONTENTION_BACKOFF,
            retryable=lambda error: isinstance(error, _Contended),
            on_retry=self._on_retry,
        )
        try:
            result = await retrier.call(attempt)
        except _Contended as contended:
            result = contended.result
        if check and result.status not in ok_codes:
            raise self._failure(args, result)
        return result

    def _failure(self, args: Sequence[str], result: GitResult) -> EvoGitError:
        return EvoGitError(
            f"git {' '.join(args)} failed in {self.path} with exit code {result.status}: "
            f"{result.stderr.strip()[:800]}"
        )

    async def out(self, *args: str) -> str:
        """The stdout of a command that must succeed."""
        return (await self.run(*args)).stdout

    async def rev_parse(self, rev: str) -> str | None:
        """The full commit id ``rev`` names, or ``None`` when it names no commit."""
        res = await self.run("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}", check=False)
        return res.stdout.strip() if res.status == 0 and res.stdout.strip() else None

    async def rev_parse_any(self, rev: str) -> str | None:
        """The object id ``rev`` names (any object type), or ``None``."""
        res = await self.run("rev-parse", "--verify", "--quiet", rev, check=False)
        return res.stdout.strip() if res.status == 0 and res.stdout.strip() else None

    async def update_ref(self, ref: str, new: str, old: str | None = None) -> bool:
        """Set ``ref`` to ``new`` if it currently equals ``old`` (``""``: must not exist; ``None``: any).

        Returns:
            ``True`` on success, ``False`` when another writer changed the ref first.
        """
        args = ["update-ref", ref, new] + ([] if old is None else [old])
        res = await self.run(*args, check=False, retry=False)
        if res.status == 0:
            return True
        low = res.stderr.lower()
        if "but expected" in low or "already exists" in low or "is at" in low or "unable to resolve" in low:
            return False
        if _is_contention(res.stderr):
            return False
        raise EvoGitError(f"git update-ref {ref} failed with exit code {res.status}: {res.stderr.strip()}")

    async def delete_ref(self, ref: str, old: str | None = None) -> bool:
        """Delete ``ref`` (only if it equals ``old`` when given); ``False`` if it changed meanwhile."""
        args = ["update-ref", "-d", ref] + ([] if old is None else [old])
        res = await self.run(*args, check=False)
        return res.status == 0

    async def refs(self, *patterns: str) -> dict[str, str]:
        """``{refname: object id}`` of the refs under ``patterns`` (e.g. ``refs/tags/agentflow``)."""
        text = await self.out("for-each-ref", "--format=%(refname) %(objectname)", *patterns)
        pairs = (line.split(" ", 1) for line in text.splitlines() if line.strip())
        return {name: oid for name, oid in pairs}

    async def read_blobs(self, oids: Sequence[str]) -> dict[str, bytes]:
        """The contents of many blobs at once (one ``git cat-file --batch``)."""
        if not oids:
            return {}

        def read() -> dict[str, bytes]:
            done = subprocess.run(
                ["git", *_BASE_CONFIG, "cat-file", "--batch"],
                cwd=self.path,
                input="".join(f"{oid}\n" for oid in oids).encode(),
                capture_output=True,
            )
            if done.returncode != 0:
                raise EvoGitError(
                    f"git cat-file --batch failed in {self.path}: {done.stderr.decode(errors='replace')[:800]}"
                )
            return _parse_batch(done.stdout, oids)

        return await anyio.to_thread.run_sync(read)

    async def head(self) -> str:
        """The commit HEAD points at."""
        return await self.out("rev-parse", "HEAD")

    async def is_clean(self) -> bool:
        """Whether the working tree has no changes (tracked or untracked)."""
        return (await self.out("status", "--porcelain", "--untracked-files=all")).strip() == ""


def _parse_batch(out: bytes, oids: Sequence[str]) -> dict[str, bytes]:
    """``git cat-file --batch`` output: ``<oid> <type> <size>\n<content>\n`` per object (``<oid> missing``)."""
    blobs: dict[str, bytes] = {}
    pos = 0
    for oid in oids:
        end = out.index(b"\n", pos)
        header = out[pos:end].decode()
        pos = end + 1
        parts = header.split()
        if len(parts) != 3:
            raise EvoGitError(f"git has no object {oid} ({header})")
        size = int(parts[2])
        blobs[oid] = out[pos : pos + size]
        pos += size + 1
    return blobs
