"""Share one population between machines through a git remote.

Without a remote, processes on one machine share the repository directly. With ``--remote NAME``
each machine evolves its own clone and synchronises through the remote only:

* before each generation it fetches the remote's evaluated refs, steering tags and notes, and
  merges the remote notes into the local ones (``git notes merge -s ours`` on a private ref,
  published locally by compare-and-swap, as ``PopulationStore.write`` does);
* after each candidate it pushes the candidate's ``refs/agentflow/evaluated/<sha>`` (carrying its
  objects), its agent branch and the notes ref in one ``git push --atomic`` whose notes update is
  guarded by ``--force-with-lease`` against the remote notes it last merged; a lost race fetches,
  merges and tries again;
* agent slots are claimed on the remote with a create-only push (lease on "must not exist"), so
  two machines never run the same ``agentflow/agent-<i>``.

Steering tags are fetched without pruning: a prune lifted on one clone is not deleted on the
others (promote or prune again there). Claims left by a crashed machine on another host stay
until someone deletes them (``git push REMOTE :refs/agentflow/claims/agent-<i>``).
"""

from __future__ import annotations

import uuid

from agentflow.errors import ConfigError

from ._git import EvoGitError, GitRepo
from ._notes import EVALUATED_PREFIX, NOTES_REF

__all__ = ["RemoteSync"]

_REMOTE_NOTES = "refs/notes/agentflow-remote"
_FETCH_SPECS = (
    f"+{EVALUATED_PREFIX}*:{EVALUATED_PREFIX}*",
    "+refs/tags/agentflow/*:refs/tags/agentflow/*",
    f"+{NOTES_REF}:{_REMOTE_NOTES}",
)
_ATTEMPTS = 100


class RemoteSync:
    """Synchronises the population of a clone with one git remote.

    Args:
        repo: A working tree of the clone.
        remote: The remote's name (``git remote``) or URL.
    """

    def __init__(self, repo: GitRepo, remote: str) -> None:
        self.repo = repo
        self.remote = remote

    async def check(self) -> None:
        """Fail early with a clear message when the remote cannot be reached."""
        res = await self.repo.run("ls-remote", "--heads", self.remote, check=False)
        if res.status != 0:
            raise ConfigError(
                f"evolve remote {self.remote!r} cannot be reached from {self.repo.toplevel}: "
                f"{res.stderr.strip()[:300]}; pass --remote with a name from `git remote -v` or a URL"
            )

    async def pull(self) -> None:
        """Fetch the remote population and merge its notes into the local notes."""
        res = await self.repo.run("fetch", "--quiet", "--no-tags", self.remote, *_FETCH_SPECS, check=False)
        if res.status != 0 and "couldn't find remote ref" not in res.stderr.lower():
            raise EvoGitError(f"git fetch {self.remote} failed: {res.stderr.strip()[:500]}")
        await self._merge_notes()

    async def _merge_notes(self) -> None:
        theirs = await self.repo.rev_parse_any(_REMOTE_NOTES)
        if theirs is None:
            return
        for _ in range(_ATTEMPTS):
            ours = await self.repo.rev_parse_any(NOTES_REF)
            if ours is None:
                if await self.repo.update_ref(NOTES_REF, theirs, ""):
                    return
                continue
            if ours == theirs or await self._is_ancestor(theirs, ours):
                return
            temp = f"refs/notes/agentflow-tmp/{uuid.uuid4().hex}"
            try:
                await self.repo.run("update-ref", temp, ours)
                await self.repo.run("notes", f"--ref={temp}", "merge", "-q", "-s", "ours", _REMOTE_NOTES)
                merged = await self.repo.out("rev-parse", temp)
            finally:
                await self.repo.run("update-ref", "-d", temp, check=False)
            if await self.repo.update_ref(NOTES_REF, merged, ours):
                return
        raise EvoGitError(f"could not merge the notes of {self.remote} after {_ATTEMPTS} concurrent retries")

    async def _is_ancestor(self, a: str, b: str) -> bool:
        res = await self.repo.run("merge-base", "--is-ancestor", a, b, check=False, ok_codes=(0, 1))
        return res.status == 0

    async def push(self, sha: str, branch: str | None = None) -> None:
        """Publish one evaluated candidate (its ref, objects, note) and optionally an agent branch."""
        for _ in range(_ATTEMPTS):
            await self.pull()
            remote_notes = await self.repo.rev_parse_any(_REMOTE_NOTES) or ""
            specs = [f"{EVALUATED_PREFIX}{sha}:{EVALUATED_PREFIX}{sha}", f"{NOTES_REF}:{NOTES_REF}"]
            if branch is not None:
                specs.append(f"+refs/heads/{branch}:refs/heads/{branch}")
            res = await self.repo.run(
                "push",
                "--quiet",
                "--atomic",
                "--no-verify",
                f"--force-with-lease={NOTES_REF}:{remote_notes}",
                self.remote,
                *specs,
                check=False,
                retry=False,
            )
            if res.status == 0:
                return
            if not _lost_race(res.stderr):
                raise EvoGitError(f"git push to {self.remote} failed: {res.stderr.strip()[:500]}")
        raise EvoGitError(f"could not push {sha} to {self.remote} after {_ATTEMPTS} concurrent retries")

    async def claim(self, ref: str, blob: str) -> bool:
        """Create ``ref`` on the remote pointing at ``blob``; ``False`` if it already exists there."""
        res = await self.repo.run(
            "push",
            "--quiet",
            "--no-verify",
            f"--force-with-lease={ref}:",
            self.remote,
            f"{blob}:{ref}",
            check=False,
            retry=False,
        )
        if res.status == 0:
            return True
        if _lost_race(res.stderr):
            return False
        raise EvoGitError(f"claiming {ref} on {self.remote} failed: {res.stderr.strip()[:500]}")

    async def release(self, ref: str, blob: str) -> None:
        """Delete our claim ``ref`` on the remote (only if it still points at ``blob``)."""
        await self.repo.run(
            "push",
            "--quiet",
            "--no-verify",
            f"--force-with-lease={ref}:{blob}",
            self.remote,
            f":{ref}",
            check=False,
            retry=False,
        )


def _lost_race(stderr: str) -> bool:
    low = stderr.lower()
    return any(
        m in low
        for m in (
            "stale info",
            "non-fast-forward",
            "fetch first",
            "cannot lock ref",
            "failed to update ref",
            "unable to lock",
            "atomic push failed",
            "already exists",
        )
    )
