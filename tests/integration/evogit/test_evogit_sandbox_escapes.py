"""Attacks of a hostile fitness command on its sandbox, each tried for real (issue 18, item 4).

Host Unix sockets, the caller's environment, a fork bomb, and processes that leave the command's
process group or session to outlive the wall-timeout kill.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest

from agentflow.agents.evogit import Sandbox, SandboxLimits, SandboxResult
from agentflow.agents.evogit._sandbox import kept_paths

Isolation = Literal["namespaces", "limits-only"]

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

NAMESPACES = Sandbox.namespaces_available()
MODES = [
    pytest.param("limits-only", id="limits-only"),
    pytest.param(
        "namespaces",
        id="namespaces",
        marks=pytest.mark.skipif(not NAMESPACES, reason="this OS does not let us create namespaces"),
    ),
]
PY = sys.executable


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    directory = tmp_path / "checkout"
    (directory / ".tmp").mkdir(parents=True)
    return directory


async def _run(
    checkout: Path,
    command: str,
    isolation: Isolation,
    limits: SandboxLimits | None = None,
    **kwargs: object,
) -> SandboxResult:
    limits = limits or SandboxLimits(cpu_seconds=20, memory_bytes=1 << 30, wall_seconds=60)
    sandbox = Sandbox(command, limits, isolation=isolation, **kwargs)  # type: ignore[arg-type]
    return await sandbox.run_in(checkout)


def _processes_with(token: str) -> list[int]:
    """Live processes whose command line contains ``token``."""
    found: list[int] = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes()
            state = Path(f"/proc/{name}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
        except OSError:
            continue
        if token.encode() in cmdline and state not in (b"Z", b"X"):
            found.append(int(name))
    return found


def _sleeper(token: str) -> str:
    """A shell command that sleeps for a long time and carries ``token`` on its command line."""
    return f"sh -c 'sleep 600; : {token}'"


# --- host Unix sockets -------------------------------------------------------------------------

_CONNECT = """
import socket, sys
for target in sys.argv[1:]:
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(target.replace("@", "\\0", 1) if target.startswith("@") else target)
        print("REACHED", target)
    except OSError as exc:
        print("REFUSED", target, type(exc).__name__)
    finally:
        s.close()
print(1)
"""


@pytest.fixture
def host_sockets(tmp_path: Path) -> Iterator[list[str]]:
    """Listening Unix sockets of the host: in /tmp, in the home directory and an abstract one."""
    home_dir = Path(tempfile.mkdtemp(prefix=".agentflow-sock-", dir=Path.home()))
    paths = [str(tmp_path / "host.sock"), str(home_dir / "host.sock")]
    abstract = f"agentflow-test-{secrets.token_hex(6)}"
    listeners = []
    try:
        for path in paths:
            server = socket.socket(socket.AF_UNIX)
            server.bind(path)
            server.listen(8)
            listeners.append(server)
        server = socket.socket(socket.AF_UNIX)
        server.bind("\0" + abstract)
        server.listen(8)
        listeners.append(server)
        yield [*paths, "@" + abstract]
    finally:
        for server in listeners:
            server.close()
        shutil.rmtree(home_dir, ignore_errors=True)


@pytest.mark.skipif(not NAMESPACES, reason="this OS does not let us create namespaces")
async def test_fitness_command_cannot_connect_to_host_unix_sockets(
    checkout: Path, host_sockets: list[str]
) -> None:
    script = checkout / "connect.py"
    script.write_text(_CONNECT)
    command = " ".join([PY, "connect.py", *host_sockets])
    # The same command outside the namespaces reaches every socket: the listeners are real.
    control = await _run(checkout, command, "limits-only")
    assert control.stdout.count("REACHED") == 3, control.stdout + control.stderr
    result = await _run(checkout, command, "namespaces")
    assert result.exit_code == 0, result.stderr
    assert "REACHED" not in result.stdout
    assert result.stdout.count("REFUSED") == 3, result.stdout
    assert {"private-tmp", "no-host-sockets", "netns"} <= set(result.layers)


@pytest.mark.skipif(not NAMESPACES, reason="this OS does not let us create namespaces")
async def test_namespace_sandbox_gives_empty_private_tmp_and_run(checkout: Path, tmp_path: Path) -> None:
    (tmp_path / "host-file.txt").write_text("host data")
    command = (
        "echo run: $(ls -A /run); echo tmp: $(ls -A /tmp); echo shm: $(ls -A /dev/shm); "
        "echo scratch > /tmp/scratch && echo data > /dev/shm/x && ! touch /run/x 2>/dev/null && echo 1"
    )
    result = await _run(checkout, command, "namespaces")
    assert result.exit_code == 0 and result.fitness == 1.0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    # /tmp holds only the way to the checkout and to this interpreter's environment (both bound back in),
    # nothing else of the host's.
    wanted = [checkout.resolve(), *(Path(p) for p in kept_paths())]
    tops = sorted({p.relative_to("/tmp").parts[0] for p in wanted if p.is_relative_to("/tmp")})
    assert lines[0] == "run:" and lines[2] == "shm:"
    assert sorted(lines[1].removeprefix("tmp:").split()) == tops
    assert (tmp_path / "host-file.txt").read_text() == "host data"


# --- environment -------------------------------------------------------------------------------

_PRINT_ENV = f'{PY} -c "import json, os; print(json.dumps(dict(os.environ))); print(1)"'


@pytest.mark.parametrize("isolation", MODES)
async def test_fitness_command_does_not_see_openai_api_key(
    checkout: Path, isolation: Isolation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-must-not-leak")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-must-not-leak")
    monkeypatch.setenv("PYTHONPATH", "/must/not/leak")
    result = await _run(checkout, _PRINT_ENV, isolation)
    assert result.exit_code == 0, result.stderr
    env = __import__("json").loads(result.stdout.splitlines()[0])
    assert "must-not-leak" not in result.stdout and "/must/not/leak" not in result.stdout
    assert set(env) - {"PWD", "OLDPWD", "SHLVL", "_"} <= {
        "PATH",
        "LANG",
        "LANGUAGE",
        "LC_ALL",
        "LC_CTYPE",
        "TZ",
        "TERM",
        "HOME",
        "TMPDIR",
        "OPENBLAS_NUM_THREADS",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "PYTHONDONTWRITEBYTECODE",
    }
    assert env["HOME"] == str(checkout.resolve())
    assert "minimal-env" in result.layers


@pytest.mark.parametrize("isolation", MODES)
async def test_fitness_command_sees_variables_the_user_allows_by_name(
    checkout: Path, isolation: Isolation, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-allowed")
    result = await _run(
        checkout, _PRINT_ENV, isolation, pass_env=["OPENAI_API_KEY", "NOT_SET_ANYWHERE"], env={"SEED": "7"}
    )
    env = __import__("json").loads(result.stdout.splitlines()[0])
    assert env["OPENAI_API_KEY"] == "sk-allowed" and env["SEED"] == "7"
    assert "NOT_SET_ANYWHERE" not in env


# --- process count -----------------------------------------------------------------------------

_FORK_COUNT = """
import os, time
made = 0
while made < 10000:
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(600)
        os._exit(0)
    made += 1
print(made)
"""


@pytest.mark.parametrize("isolation", MODES)
async def test_fork_bomb_is_bounded_by_max_processes(checkout: Path, isolation: Isolation) -> None:
    sandbox = Sandbox("true", isolation=isolation)
    if not {"pids-cgroup", "rlimit-nproc"} & set(sandbox.layers()):
        pytest.skip("no process-count mechanism here (root without a writable pids cgroup)")
    (checkout / "forks.py").write_text(_FORK_COUNT)
    limits = SandboxLimits(cpu_seconds=20, memory_bytes=1 << 30, wall_seconds=60, max_processes=32)
    result = await _run(checkout, f"{PY} forks.py", isolation, limits)
    assert result.exit_code == 0, result.stderr
    assert result.fitness is not None and 0 < result.fitness < 32
    assert not _processes_with("forks.py")


@pytest.mark.parametrize("isolation", MODES)
async def test_shell_fork_bomb_ends_at_wall_timeout_and_leaves_nothing(
    checkout: Path, isolation: Isolation
) -> None:
    sandbox = Sandbox("true", isolation=isolation)
    if not {"pids-cgroup", "rlimit-nproc"} & set(sandbox.layers()):
        pytest.skip("no process-count mechanism here (root without a writable pids cgroup)")
    token = f"bomb{secrets.token_hex(4)}"
    (checkout / f"{token}.sh").write_text(f'b() {{ b | b & }}; b; sleep 600; : "{token}"\n')
    limits = SandboxLimits(cpu_seconds=20, memory_bytes=1 << 30, wall_seconds=3, max_processes=64)
    result = await _run(checkout, f"sh {token}.sh", isolation, limits)
    assert result.timed_out and result.exit_code is None
    assert not _processes_with(token)


# --- processes that try to outlive the kill ---------------------------------------------------


@pytest.mark.parametrize("isolation", MODES)
async def test_setsid_child_does_not_outlive_wall_timeout(checkout: Path, isolation: Isolation) -> None:
    token = f"setsid{secrets.token_hex(4)}"
    command = f"setsid {_sleeper(token)} & sleep 600"
    limits = SandboxLimits(cpu_seconds=20, memory_bytes=1 << 30, wall_seconds=1.5)
    result = await _run(checkout, command, isolation, limits)
    assert result.timed_out
    assert not _processes_with(token)


@pytest.mark.parametrize("isolation", MODES)
async def test_double_forked_daemon_does_not_outlive_finished_command(
    checkout: Path, isolation: Isolation
) -> None:
    token = f"daemon{secrets.token_hex(4)}"
    command = f"( setsid {_sleeper(token)} & ) ; echo 2.5"
    result = await _run(checkout, command, isolation)
    assert result.exit_code == 0 and result.fitness == 2.5, result.stderr
    assert not _processes_with(token)


async def test_child_that_kills_its_supervisor_still_dies(checkout: Path) -> None:
    if "pids-cgroup" not in Sandbox("true", isolation="limits-only").layers():
        pytest.skip("without a pids cgroup, a limits-only command may kill its supervisor and escape")
    token = f"orphan{secrets.token_hex(4)}"
    command = f"setsid {_sleeper(token)} & sleep 0.2; kill -9 $PPID; sleep 600"
    limits = SandboxLimits(cpu_seconds=20, memory_bytes=1 << 30, wall_seconds=5)
    await _run(checkout, command, "limits-only", limits)
    assert not _processes_with(token)
