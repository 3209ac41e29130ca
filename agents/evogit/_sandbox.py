"""Run a user's fitness command against one candidate commit, contained.

What is enforced, and by whom (``SandboxResult.layers`` records it for every run)::

    temp-checkout     the command runs in a fresh export of the commit (``git archive``), never in a
                      worktree or the user's checkout; the copy is deleted afterwards
    rlimit-cpu        RLIMIT_CPU (SIGXCPU, then SIGKILL one second later)
    rlimit-as         RLIMIT_AS: allocations beyond the limit fail (MemoryError in Python)
    rlimit-fsize      RLIMIT_FSIZE: no file may grow beyond the limit
    wall-timeout      the whole process group is killed after ``wall_seconds``
    netns             (Linux, root or user namespaces) a new network namespace with no interfaces up
    pidns             a new PID namespace: the command cannot see or signal our processes; killing
                      its init kills everything it started
    ro-filesystem     a private mount namespace in which every mount except the export is remounted
                      read-only, so nothing outside the candidate's checkout can be written
    no-capabilities   the command runs with an empty capability bounding set and no_new_privs, so it
                      cannot undo the read-only mounts

The namespace layers need ``unshare`` and ``setpriv`` (util-linux) and the right to create
namespaces; ``Sandbox.namespaces_available`` checks once per process by running a real probe.
Without them only the first five layers apply, and ``evaluate_commit``'s check that the agent's
worktree is unchanged afterwards is the only defence against writes elsewhere: that mode is for
trusted fitness commands. Not limited in either mode: the number of processes (RLIMIT_NPROC counts
all processes of the user, and the command runs as our uid), disk use inside the checkout beyond
RLIMIT_FSIZE per file, and reads (the command can read what our user can read).

If the evolve process dies, its fitness commands die with it (``PR_SET_PDEATHSIG`` on the launcher,
``unshare --kill-child`` for the namespace init, which takes the whole PID namespace down).
A write refused by the read-only mounts shows up as ``Read-only file system`` on stderr; the
candidate is then marked ``violation`` even if it went on to print a number.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio
import anyio.abc

from agentflow.errors import ConfigError

from ._git import GitRepo

__all__ = ["Sandbox", "SandboxLimits", "SandboxResult", "parse_fitness", "remove_stale_checkouts"]

Isolation = Literal["auto", "namespaces", "limits-only"]

_LAUNCHER = Path(__file__).with_name("_sandbox_launch.py")
_TAIL = 4000
_READ_CAP = 1 << 20

# Runs as PID 1 of the new namespaces: bind the export over itself, make every other mount
# read-only, check that it worked, then run the command without capabilities. A signal death of
# the command is reported as 128+signal (unshare itself cannot re-raise signals in a PID namespace).
_NS_SCRIPT = r"""
set -e
d="$1"; cmd="$2"
mount --bind "$d" "$d"
awk '{print $2}' /proc/self/mounts | while read -r m; do
  case "$m" in /proc|/proc/*) continue ;; esac
  mount -o remount,bind,ro "$m" 2>/dev/null || true
done
mount -o remount,bind,rw "$d"
if ( : > /.evogit-probe ) 2>/dev/null; then
  rm -f /.evogit-probe
  echo "evogit sandbox: could not make / read-only" >&2
  exit 97
fi
cd "$d"
set +e
setpriv --inh-caps=-all --bounding-set=-all --no-new-privs -- sh -c "$cmd"
rc=$?
exit $rc
"""

_FLOAT_RE = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")


def parse_fitness(stdout: str) -> float | None:
    """The fitness a command printed: the last number on its last non-empty output line.

    >>> parse_fitness("training...\\nfitness: -3.25\\n")
    -3.25
    >>> parse_fitness("no number here") is None
    True
    """
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        return None
    found = _FLOAT_RE.findall(lines[-1])
    if not found:
        return None
    value = float(found[-1])
    return value if math.isfinite(value) else None


@dataclass(frozen=True, slots=True)
class SandboxLimits:
    """Resource limits of one fitness evaluation.

    Attributes:
        cpu_seconds: CPU time of each process (RLIMIT_CPU).
        memory_bytes: Address space of each process (RLIMIT_AS).
        file_bytes: Largest file the command may write (RLIMIT_FSIZE).
        wall_seconds: Wall-clock limit for the whole command.
    """

    cpu_seconds: int = 60
    memory_bytes: int = 2 << 30
    file_bytes: int = 64 << 20
    wall_seconds: float = 120.0

    def __post_init__(self) -> None:
        if (
            self.cpu_seconds < 1
            or self.memory_bytes < (32 << 20)
            or self.file_bytes < 1
            or self.wall_seconds <= 0
        ):
            raise ConfigError(
                f"invalid sandbox limits {self}: cpu_seconds >= 1, memory_bytes >= 32 MiB, file_bytes >= 1 "
                "and wall_seconds > 0 are required"
            )


@dataclass(frozen=True, slots=True)
class SandboxResult:
    """What one contained run of the fitness command produced.

    Attributes:
        exit_code: The command's exit code (128+N when signal N killed it; ``None`` if we killed it).
        timed_out: The wall-clock limit or the CPU limit ended it.
        duration_s: Wall time.
        stdout: Its standard output (the last 1 MiB).
        stderr: Its standard error (the last 1 MiB).
        fitness: ``parse_fitness(stdout)`` when the command succeeded.
        layers: The isolation layers that were enforced.
    """

    exit_code: int | None
    timed_out: bool
    duration_s: float
    stdout: str
    stderr: str
    fitness: float | None
    layers: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """Exit code 0 and a finite fitness printed."""
        return self.exit_code == 0 and not self.timed_out and self.fitness is not None

    def tails(self) -> tuple[str, str]:
        """The last few KB of stdout and stderr (what goes into the note)."""
        return self.stdout[-_TAIL:], self.stderr[-_TAIL:]


_probe_cache: dict[str, bool] = {}
_EVAL_PREFIX = "evogit-eval-"


def remove_stale_checkouts() -> int:
    """Delete the temporary checkouts that killed evolve processes left behind; returns how many.

    A checkout directory is named ``evogit-eval-<pid>-<random>``; it is stale when no process with
    that pid is alive.
    """
    removed = 0
    for path in Path(tempfile.gettempdir()).glob(f"{_EVAL_PREFIX}*-*"):
        pid_text = path.name[len(_EVAL_PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)):
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Sandbox:
    """Evaluates commits with a fitness command under ``SandboxLimits``.

    Args:
        command: The shell command (``sh -c``) that prints the fitness; higher is better.
        limits: Resource limits.
        isolation: ``"auto"`` (namespaces when the OS allows, else limits only), ``"namespaces"``
            (fail if they are unavailable) or ``"limits-only"``.
        env: Extra environment variables for the command.
    """

    def __init__(
        self,
        command: str,
        limits: SandboxLimits | None = None,
        *,
        isolation: Isolation = "auto",
        env: dict[str, str] | None = None,
    ) -> None:
        if not command.strip():
            raise ConfigError("the fitness command is empty; pass --fitness 'CMD' that prints a number")
        self.command = command
        self.limits = limits or SandboxLimits()
        self.isolation = isolation
        self._env = dict(env or {})

    @staticmethod
    def namespaces_available() -> bool:
        """Whether this process can run commands in the namespace sandbox (probed once, for real)."""
        if "ns" not in _probe_cache:
            ok = shutil.which("unshare") is not None and shutil.which("setpriv") is not None
            if ok:
                with tempfile.TemporaryDirectory(prefix="evogit-probe-") as d:
                    argv = _ns_argv(d, "test -w . && ! touch /.evogit-outside 2>/dev/null")
                    try:
                        res = subprocess.run(argv, capture_output=True, timeout=20, check=False)
                        ok = res.returncode == 0
                    except (OSError, subprocess.TimeoutExpired):
                        ok = False
            _probe_cache["ns"] = ok
        return _probe_cache["ns"]

    def layers(self) -> tuple[str, ...]:
        """The isolation layers this sandbox will enforce here."""
        base = ("temp-checkout", "rlimit-cpu", "rlimit-as", "rlimit-fsize", "wall-timeout")
        if self._use_namespaces():
            return (*base, "netns", "pidns", "ro-filesystem", "no-capabilities")
        return base

    def _use_namespaces(self) -> bool:
        if self.isolation == "limits-only":
            return False
        available = self.namespaces_available()
        if self.isolation == "namespaces" and not available:
            raise ConfigError(
                "sandbox isolation 'namespaces' was requested but this OS does not let us create "
                "mount/network/PID namespaces (needs unshare + setpriv and root or user namespaces); "
                "use isolation 'auto' or 'limits-only'"
            )
        return available

    async def evaluate(self, repo: GitRepo, sha: str) -> SandboxResult:
        """Export ``sha`` to a fresh temporary directory and run the fitness command there."""
        prefix = f"{_EVAL_PREFIX}{os.getpid()}-"
        workdir = Path(await anyio.to_thread.run_sync(lambda: tempfile.mkdtemp(prefix=prefix)))
        try:
            checkout = workdir / "checkout"
            archive = workdir / "tree.tar"
            await repo.run("archive", "--format=tar", "-o", str(archive), sha)

            def unpack() -> None:
                checkout.mkdir()
                with tarfile.open(archive) as tar:
                    tar.extractall(checkout, filter="data")
                archive.unlink()
                (checkout / ".tmp").mkdir(exist_ok=True)

            await anyio.to_thread.run_sync(unpack)
            return await self.run_in(checkout)
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(lambda: shutil.rmtree(workdir, ignore_errors=True))

    async def run_in(self, checkout: Path) -> SandboxResult:
        """Run the fitness command with ``checkout`` as its (only writable) working directory."""
        use_ns = self._use_namespaces()
        layers = self.layers()
        argv = _ns_argv(str(checkout), self.command) if use_ns else ["sh", "-c", self.command]
        spec = {
            "cpu": self.limits.cpu_seconds,
            "memory": self.limits.memory_bytes,
            "fsize": self.limits.file_bytes,
            "argv": argv,
            "parent": os.getpid(),
        }
        env = {
            **os.environ,
            "HOME": str(checkout),
            "TMPDIR": str(checkout / ".tmp"),
            "OPENBLAS_NUM_THREADS": "1",
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "PYTHONDONTWRITEBYTECODE": "1",
            **self._env,
        }
        launcher = [sys.executable, "-I", "-S", str(_LAUNCHER), json.dumps(spec)]
        start = time.perf_counter()
        out = bytearray()
        err = bytearray()
        timed_out = False
        process = await anyio.open_process(launcher, cwd=str(checkout), env=env, start_new_session=True)
        drained = _Drained()
        try:
            async with anyio.create_task_group() as tg:
                assert process.stdout is not None and process.stderr is not None
                tg.start_soon(_drain, process.stdout, out, drained)
                tg.start_soon(_drain, process.stderr, err, drained)
                with anyio.move_on_after(self.limits.wall_seconds) as scope:
                    await process.wait()
                if scope.cancelled_caught:
                    timed_out = True
                    _kill_group(process.pid)
                    await process.wait()
                # Escaped grandchildren may hold the pipes open; do not wait for them forever.
                with anyio.move_on_after(2.0):
                    await drained.all_done.wait()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    _kill_group(process.pid)
                    await process.wait()
                _kill_group(process.pid)
                await process.aclose()
        duration = time.perf_counter() - start
        code = process.returncode
        exit_code = None if timed_out else (128 - code if code is not None and code < 0 else code)
        if exit_code in (128 + signal.SIGXCPU, 128 + signal.SIGKILL):
            timed_out = True
        stdout = out.decode("utf-8", "replace")
        stderr = err.decode("utf-8", "replace")
        fitness = parse_fitness(stdout) if exit_code == 0 and not timed_out else None
        return SandboxResult(exit_code, timed_out, duration, stdout, stderr, fitness, layers)


def _ns_argv(directory: str, command: str) -> list[str]:
    return [
        "unshare",
        "--mount",
        "--net",
        "--pid",
        "--fork",
        "--kill-child=SIGKILL",
        "--mount-proc",
        "--ipc",
        "--uts",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        _NS_SCRIPT,
        "evogit-sandbox",
        directory,
        command,
    ]


class _Drained:
    """Counts finished output pipes of one run."""

    def __init__(self) -> None:
        self.count = 0
        self.all_done = anyio.Event()

    def finish(self) -> None:
        self.count += 1
        if self.count == 2:
            self.all_done.set()


async def _drain(stream: anyio.abc.ByteReceiveStream, sink: bytearray, drained: _Drained) -> None:
    try:
        async for chunk in stream:
            sink.extend(chunk)
            if len(sink) > 2 * _READ_CAP:
                del sink[: len(sink) - _READ_CAP]
    except (anyio.ClosedResourceError, anyio.BrokenResourceError):
        pass
    drained.finish()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
