"""GitRepo's lock-contention retries against a real repository whose index is locked by "another writer"."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from _evogit_repos import git

from agentflow.agents.evogit import EvoGitError, GitRepo
from agentflow.dsl import RetryNotice
from agentflow.errors import ConfigError

pytestmark = [pytest.mark.integration, pytest.mark.anyio]


async def test_command_retries_until_lock_is_released_when_index_is_locked(
    make_repo: Callable[..., Path],
) -> None:
    repo = make_repo()
    lock = repo / ".git" / "index.lock"
    lock.write_text("")
    (repo / "new.py").write_text("x = 1\n")
    notices: list[RetryNotice] = []

    def release_after_first_failure(notice: RetryNotice) -> None:
        # The other writer finishes while we back off: the next attempt finds the index free.
        notices.append(notice)
        lock.unlink()

    grepo = GitRepo(repo, attempts=5, on_retry=release_after_first_failure)
    result = await grepo.run("add", "new.py")
    assert result.status == 0
    assert [n.attempt for n in notices] == [1]
    assert "index.lock" in str(notices[0].error)
    assert "new.py" in git(repo, "diff", "--cached", "--name-only")


async def test_command_fails_naming_the_lock_when_attempts_are_spent(make_repo: Callable[..., Path]) -> None:
    repo = make_repo()
    (repo / ".git" / "index.lock").write_text("")
    (repo / "new.py").write_text("x = 1\n")
    notices: list[RetryNotice] = []
    grepo = GitRepo(repo, attempts=3, on_retry=notices.append)
    with pytest.raises(EvoGitError, match=r"git add new.py failed .*index\.lock"):
        await grepo.run("add", "new.py")
    assert [n.attempt for n in notices] == [1, 2]


async def test_command_is_tried_once_when_retry_is_off(make_repo: Callable[..., Path]) -> None:
    repo = make_repo()
    (repo / ".git" / "index.lock").write_text("")
    (repo / "new.py").write_text("x = 1\n")
    notices: list[RetryNotice] = []
    grepo = GitRepo(repo, attempts=3, on_retry=notices.append)
    result = await grepo.run("add", "new.py", check=False, retry=False)
    assert result.status != 0 and "index.lock" in result.stderr
    assert notices == []


async def test_command_fails_at_once_when_git_cannot_run(make_repo: Callable[..., Path]) -> None:
    repo = make_repo()
    notices: list[RetryNotice] = []
    grepo = GitRepo(repo, attempts=5, on_retry=notices.append)
    shutil.rmtree(repo)  # the working tree vanished: git cannot even start there; nothing to wait for
    with pytest.raises(ConfigError, match="cannot run git"):
        await grepo.run("status")
    assert notices == []
