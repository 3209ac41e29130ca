"""The fitness sandbox: runaway, greedy and escaping candidates get a failing fitness and harm nothing."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest
from _evogit_repos import git

from agentflow.agents.evogit import (
    FitnessNote,
    GitRepo,
    PopulationStore,
    Sandbox,
    SandboxLimits,
    evaluate_commit,
)

Isolation = Literal["auto", "namespaces", "limits-only"]

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

FITNESS = f'{sys.executable} -c "import code; print(code.value())"'
NAMESPACES = Sandbox.namespaces_available()


async def _evaluate(
    repo: Path, body: str, limits: SandboxLimits | None = None, isolation: Isolation = "auto"
) -> FitnessNote:
    (repo / "code.py").write_text(f"def value():\n{body}\n")
    git(repo, "commit", "-q", "-am", "candidate")
    sha = git(repo, "rev-parse", "HEAD")
    grepo = GitRepo(repo)
    limits = limits or SandboxLimits(cpu_seconds=2, memory_bytes=512 << 20, wall_seconds=60)
    sandbox = Sandbox(FITNESS, limits, isolation=isolation)
    return await evaluate_commit(
        grepo, PopulationStore(grepo), sandbox, sha, operator="mutation", worktree=grepo
    )


async def test_sandbox_good_candidate_scores(make_repo: Callable[..., Path]) -> None:
    note = await _evaluate(make_repo(), "    return 4.5")
    assert note.status == "ok" and note.fitness == 4.5
    assert {"temp-checkout", "rlimit-cpu", "rlimit-as", "rlimit-fsize", "wall-timeout"} <= set(note.sandbox)


async def test_sandbox_infinite_loop_times_out(make_repo: Callable[..., Path]) -> None:
    note = await _evaluate(make_repo(), "    while True:\n        pass")
    assert note.status == "timeout" and note.fitness is None


async def test_sandbox_wall_limit_kills_sleeping_candidate(make_repo: Callable[..., Path]) -> None:
    limits = SandboxLimits(cpu_seconds=30, memory_bytes=512 << 20, wall_seconds=1.5)
    note = await _evaluate(make_repo(), "    import time\n    time.sleep(600)\n    return 1", limits)
    assert note.status == "timeout" and note.exit_code is None


async def test_sandbox_huge_allocation_fails(make_repo: Callable[..., Path]) -> None:
    note = await _evaluate(make_repo(), "    x = bytearray(8 << 30)\n    return len(x)")
    assert note.status == "failed" and note.fitness is None
    assert "MemoryError" in note.stderr_tail


@pytest.mark.skipif(not NAMESPACES, reason="without namespaces only the worktree check guards other files")
async def test_sandbox_write_outside_checkout_fails_and_harms_nothing(
    make_repo: Callable[..., Path], tmp_path: Path
) -> None:
    repo = make_repo()
    victim = tmp_path / "victim.txt"
    victim.write_text("original")
    body = (
        f"    open({str(victim)!r}, 'w').write('pwned')\n"
        f"    open({str(repo / 'code.py')!r}, 'w').write('pwned')\n"
        f"    open({str(tmp_path / 'new-file.txt')!r}, 'w').write('pwned')\n"
        "    return 100"
    )
    note = await _evaluate(repo, body)
    assert note.status in ("violation", "failed") and note.fitness is None
    assert victim.read_text() == "original"
    assert not (tmp_path / "new-file.txt").exists()
    assert git(repo, "status", "--porcelain") == ""
    assert (repo / "code.py").read_text() != "pwned"


@pytest.mark.skipif(not NAMESPACES, reason="this OS does not let us create network namespaces")
async def test_sandbox_has_no_network(make_repo: Callable[..., Path]) -> None:
    body = "    import socket\n    socket.create_connection(('192.0.2.1', 80), timeout=5)\n    return 1"
    note = await _evaluate(make_repo(), body)
    assert note.status == "failed" and "unreachable" in note.stderr_tail.lower()
    assert {"netns", "pidns", "ro-filesystem", "no-capabilities"} <= set(note.sandbox)


@pytest.mark.skipif(not NAMESPACES, reason="this OS does not let us create namespaces")
async def test_sandbox_candidate_cannot_remount_filesystem_writable(
    make_repo: Callable[..., Path], tmp_path: Path
) -> None:
    victim = tmp_path / "victim2.txt"
    body = (
        "    import subprocess\n"
        "    subprocess.run(['mount', '-o', 'remount,rw,bind', '/'], check=False)\n"
        f"    open({str(victim)!r}, 'w').write('pwned')\n"
        "    return 1"
    )
    note = await _evaluate(make_repo(), body)
    assert note.status in ("violation", "failed") and not victim.exists()


async def test_limits_only_mode_detects_write_into_worktree_and_restores_it(
    make_repo: Callable[..., Path],
) -> None:
    repo = make_repo()
    body = f"    open({str(repo / 'code.py')!r}, 'w').write('tampered')\n    return 100"
    note = await _evaluate(repo, body, isolation="limits-only")
    assert note.status == "violation" and note.fitness is None
    assert "ro-filesystem" not in note.sandbox
    assert git(repo, "status", "--porcelain") == ""
    assert (repo / "code.py").read_text() != "tampered"
