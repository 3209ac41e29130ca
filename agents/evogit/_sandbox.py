"""Run a user's fitness command against one candidate commit, contained.

What is enforced, and by whom (``SandboxResult.layers`` records it for every run)::

    temp-checkout     the command runs in a fresh export of the commit (``git archive``), never in a
                      worktree or the user's checkout; the copy is deleted afterwards
    minimal-env       the command's environment is an explicit allowlist: PATH, LANG, LANGUAGE,
                      LC_ALL, LC_CTYPE, TZ and TERM from ours, HOME and TMPDIR inside the checkout,
                      single-threaded BLAS, plus what the user passes by value (``env``) or by name
                      (``pass_env``); everything else (``OPENAI_API_KEY``...) is dropped
    rlimit-cpu        RLIMIT_CPU (SIGXCPU, then SIGKILL one second later)
    rlimit-as         RLIMIT_AS: allocations beyond the limit fail (MemoryError in Python)
    rlimit-fsize      RLIMIT_FSIZE: no file may grow beyond the limit
    wall-timeout      the command is stopped after ``wall_seconds``
    tree-kill         a supervisor (``_sandbox_launch.py``, a child subreaper) SIGKILLs every
                      descendant when the command ends, times out or evolve dies: processes that
                      left with ``setsid`` or a double fork are re-parented to it and killed too;
                      no_new_privs keeps every descendant ours to kill
    pids-cgroup       a pids cgroup per evaluation (``pids.max = max_processes``, processes and
                      threads): only the command's tasks count, and its member list is killed as
                      well, so even a process that killed its supervisor dies (``_sandbox_cgroup``)
    rlimit-nproc      (instead, when no cgroup can be made and we are not root) RLIMIT_NPROC set to
                      our user's task count at launch plus ``max_processes``; it counts all of our
                      user's tasks, so the bound is on the total, and root ignores it
    netns             (Linux, root) a new network namespace with no interfaces up; abstract Unix
                      sockets live in the network namespace, so the host's are out of reach
    pidns             a new PID namespace: the command cannot see or signal our processes; killing
                      its init kills everything it started
    private-tmp       empty tmpfs mounts over /run, /var/run, /tmp, /var/tmp and /dev/shm (the last
                      three writable, ``file_bytes`` each): the host's runtime sockets (Docker,
                      containerd, Ray, ssh-agent, D-Bus) and shared temp files are not there;
                      the running interpreter's environment, when it lives under one of them (a
                      checkout or virtual environment in /tmp), is bound back read-only
    no-host-sockets   every other Unix socket the host has bound (``/proc/net/unix`` at launch) has
                      /dev/null mounted over it, so connecting to it is refused
    ro-filesystem     a private mount namespace in which every mount except the export (and the
                      private temp directories) is remounted read-only
    no-capabilities   the command runs with an empty capability bounding set and no_new_privs, so it
                      cannot undo the read-only mounts

The namespace layers need ``unshare`` and ``setpriv`` (util-linux) and the right to create
namespaces (root); ``Sandbox.namespaces_available`` checks once per process by running a real probe.
Without them only the first eight layers apply (the process limit as far as the OS allows), and
``evaluate_commit``'s check that the agent's worktree is unchanged afterwards is the only defence
against writes elsewhere: that mode is for trusted fitness commands. In that mode the command runs
as our user and may signal our processes, its supervisor included (only the pids cgroup still
reaches what it started then). Not limited in either mode: disk use inside the checkout beyond
RLIMIT_FSIZE per file, reads (the command can read what our user can read; the home directory is
not hidden because interpreters and toolchains often live there), and Unix sockets bound outside
the private directories after the evaluation started (a socket owned by root accepts the command,
which runs as uid 0 without capabilities).

If the evolve process dies, its fitness commands die with it (``PR_SET_PDEATHSIG`` on the
supervisor, which then kills the tree; ``unshare --kill-child`` for the namespace init, which takes
the whole PID namespace down). A write refused by the read-only mounts shows up as ``Read-only
file system`` on stderr; the candidate is then marked ``violation`` even if it went on to print a
number.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import anyio
import anyio.abc

from agentflow.errors import ConfigError

from ._git import GitRepo
from ._sandbox_cgroup import CGROUP_PREFIX, PidsCgroup

__all__ = ["Sandbox", "SandboxLimits", "SandboxResult", "parse_fitness", "remove_stale_checkouts"]

Isolation = Literal["auto", "namespaces", "limits-only"]

_LAUNCHER = Path(__file__).with_name("_sandbox_launch.py")
_TAIL = 4000
_READ_CAP = 1 << 20

# Runs as PID 1 of the new namespaces. Arguments: the checkout, the command, the size of each
# private tmpfs, then the host socket paths to hide. Hide the sockets, make every mount read-only,
# put empty tmpfs mounts over the runtime and temp directories (/run read-only unless the checkout
# is under it), bind the checkout back (through an fd opened before it was covered) writable,
# check that / is read-only, then run the command without capabilities. A signal death of the
# command is reported as 128+signal (unshare itself cannot re-raise signals in a PID namespace).
_NS_SCRIPT = r"""
set -e
d="$1"; cmd="$2"; size="$3"; keep="$4"; shift 4
exec 3<"$d"
#KEEP_OPEN#
for s in "$@"; do
  mount -n --bind /dev/null "$s" 2>/dev/null || [ ! -S "$s" ] || {
    echo "evogit sandbox: could not hide the host socket $s" >&2; exit 97; }
done
awk '{print $2}' /proc/self/mounts | while read -r m; do
  case "$m" in /proc|/proc/*) continue ;; esac
  mount -n -o remount,bind,ro "$m" 2>/dev/null || true
done
for p in /run /var/run /tmp /var/tmp /dev/shm; do
  [ -d "$p" ] && [ ! -L "$p" ] || continue
  case "$p" in /run|/var/run) mode=ro ;; *) mode=rw ;; esac
  case "$d/" in "$p"/*) mode=rw ;; esac
  mount -n -t tmpfs -o "$mode,mode=1777,size=$size,nr_inodes=16384,nosuid,nodev" evogit-private "$p"
done
[ -d "$d" ] || mkdir -p "$d"
mount -n --no-canonicalize --bind /proc/self/fd/3 "$d"
mount -n -o remount,bind,rw "$d"
exec 3<&-
#KEEP_BIND#
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

# The directories the namespace sandbox covers with an empty tmpfs (see _NS_SCRIPT).
_PRIVATE_DIRS = ("/run", "/var/run", "/tmp", "/var/tmp", "/dev/shm")
# Taken from our environment by name; everything else is dropped unless the user passes it.
_ENV_PASSED = ("PATH", "LANG", "LANGUAGE", "LC_ALL", "LC_CTYPE", "TZ", "TERM")
_ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# How long the supervisor may take to kill the tree after SIGTERM (its own bound is 10 s).
_STOP_GRACE = 15.0

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
        max_processes: Tasks (processes and threads) the command may have at once, the
            sandbox's own few helpers included (see the ``pids-cgroup`` and ``rlimit-nproc`` layers).
    """

    cpu_seconds: int = 60
    memory_bytes: int = 2 << 30
    file_bytes: int = 64 << 20
    wall_seconds: float = 120.0
    max_processes: int = 256

    def __post_init__(self) -> None:
        if (
            self.cpu_seconds < 1
            or self.memory_bytes < (32 << 20)
            or self.file_bytes < 1
            or self.wall_seconds <= 0
            or self.max_processes < 8
        ):
            raise ConfigError(
                f"invalid sandbox limits {self}: cpu_seconds >= 1, memory_bytes >= 32 MiB, file_bytes >= 1, "
                "wall_seconds > 0 and max_processes >= 8 are required"
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
    """Delete the temporary checkouts and cgroups that killed evolve processes left behind.

    A checkout directory is named ``evogit-eval-<pid>-<random>``, a cgroup
    ``agentflow-evogit-<pid>-<n>``; it is stale when no process with that pid is alive. Returns
    how many were removed.
    """
    removed = 0
    for path in _stale(Path(tempfile.gettempdir()), _EVAL_PREFIX):
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    cgroups = PidsCgroup.available()
    for path in _stale(cgroups, CGROUP_PREFIX) if cgroups is not None else ():
        with contextlib.suppress(OSError):
            path.rmdir()
            removed += 1
    return removed


def _stale(directory: Path, prefix: str) -> list[Path]:
    """Entries ``<prefix><pid>-...`` of ``directory`` whose process is gone."""
    stale: list[Path] = []
    for path in directory.glob(f"{prefix}*-*"):
        pid_text = path.name[len(prefix) :].split("-", 1)[0]
        if pid_text.isdigit() and not _alive(int(pid_text)):
            stale.append(path)
    return stale


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
        env: Environment variables to give the command, by value.
        pass_env: Names of our environment variables to pass through (absent ones are skipped);
            only ``PATH``, ``LANG``, ``LANGUAGE``, ``LC_ALL``, ``LC_CTYPE``, ``TZ`` and ``TERM``
            pass without being named here.
    """

    def __init__(
        self,
        command: str,
        limits: SandboxLimits | None = None,
        *,
        isolation: Isolation = "auto",
        env: Mapping[str, str] | None = None,
        pass_env: Sequence[str] = (),
    ) -> None:
        if not command.strip():
            raise ConfigError("the fitness command is empty; pass --fitness 'CMD' that prints a number")
        for name in (*(env or {}), *pass_env):
            if not _ENV_NAME_RE.fullmatch(name):
                raise ConfigError(
                    f"invalid environment variable name {name!r} for the fitness command: use letters, "
                    "digits and '_', not starting with a digit"
                )
        self.command = command
        self.limits = limits or SandboxLimits()
        self.isolation = isolation
        self._env = dict(env or {})
        self._pass_env = tuple(pass_env)

    @staticmethod
    def namespaces_available() -> bool:
        """Whether this process can run commands in the namespace sandbox (probed once, for real)."""
        if "ns" not in _probe_cache:
            ok = shutil.which("unshare") is not None and shutil.which("setpriv") is not None
            if ok:
                with tempfile.TemporaryDirectory(prefix="evogit-probe-") as d:
                    argv = _ns_argv(d, "test -w . && ! touch /.evogit-outside 2>/dev/null", 1 << 20, [])
                    try:
                        res = subprocess.run(argv, capture_output=True, timeout=20, check=False)
                        ok = res.returncode == 0
                    except (OSError, subprocess.TimeoutExpired):
                        ok = False
            _probe_cache["ns"] = ok
        return _probe_cache["ns"]

    def layers(self) -> tuple[str, ...]:
        """The isolation layers this sandbox will enforce here."""
        base: tuple[str, ...] = ("temp-checkout", "minimal-env", "rlimit-cpu", "rlimit-as", "rlimit-fsize")
        base = (*base, "wall-timeout", "tree-kill", *_process_limit_layer())
        if self._use_namespaces():
            return (
                *base,
                "netns",
                "pidns",
                "private-tmp",
                "no-host-sockets",
                "ro-filesystem",
                "no-capabilities",
            )
        return base

    def environment(self, checkout: Path) -> dict[str, str]:
        """The complete environment the command gets when it runs in ``checkout``."""
        env = {name: os.environ[name] for name in (*_ENV_PASSED, *self._pass_env) if name in os.environ}
        env.update(
            HOME=str(checkout),
            TMPDIR=str(checkout / ".tmp"),
            OPENBLAS_NUM_THREADS="1",
            OMP_NUM_THREADS="1",
            MKL_NUM_THREADS="1",
            PYTHONDONTWRITEBYTECODE="1",
        )
        env.update(self._env)
        return env

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
        checkout = Path(os.path.realpath(checkout))
        if use_ns:
            sockets = await anyio.to_thread.run_sync(_host_unix_sockets, str(checkout))
            argv = _ns_argv(str(checkout), self.command, self.limits.file_bytes, sockets)
        else:
            argv = ["sh", "-c", self.command]
        cgroup = await anyio.to_thread.run_sync(self._make_cgroup)
        spec = {
            "cpu": self.limits.cpu_seconds,
            "memory": self.limits.memory_bytes,
            "fsize": self.limits.file_bytes,
            "argv": argv,
            "parent": os.getpid(),
            "cgroup": str(cgroup.path) if cgroup is not None else None,
            "nproc": None
            if cgroup is not None or os.getuid() == 0
            else _user_tasks() + self.limits.max_processes,
        }
        launcher = [sys.executable, "-I", "-S", str(_LAUNCHER), json.dumps(spec)]
        start = time.perf_counter()
        out = bytearray()
        err = bytearray()
        timed_out = False
        try:
            process = await anyio.open_process(
                launcher,
                cwd=str(checkout),
                env=self.environment(checkout),
                start_new_session=True,
                stdin=subprocess.DEVNULL,
            )
        except BaseException:
            if cgroup is not None:
                await anyio.to_thread.run_sync(cgroup.remove)
            raise
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
                    await _stop(process)
                # Escaped grandchildren may hold the pipes open; do not wait for them forever.
                with anyio.move_on_after(2.0):
                    await drained.all_done.wait()
                tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                if process.returncode is None:
                    await _stop(process)
                _kill_group(process.pid)
                if cgroup is not None:
                    await anyio.to_thread.run_sync(cgroup.remove)
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

    def _make_cgroup(self) -> PidsCgroup | None:
        parent = PidsCgroup.available()
        if parent is None:
            return None
        try:
            return PidsCgroup(parent, self.limits.max_processes)
        except OSError as exc:
            raise ConfigError(
                f"could not create the evaluation's pids cgroup under {parent}: {exc}; free the cgroup "
                "file system or run evolve where the probe fails (then RLIMIT_NPROC applies)"
            ) from exc


def _process_limit_layer() -> tuple[str, ...]:
    """The layer that bounds the command's process count here (none for root without cgroups)."""
    if PidsCgroup.available() is not None:
        return ("pids-cgroup",)
    return () if os.getuid() == 0 else ("rlimit-nproc",)


def _user_tasks() -> int:
    """Tasks (threads included) whose real uid is ours: what RLIMIT_NPROC counts against."""
    uid = str(os.getuid())
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                fields = dict(line.split(":", 1) for line in f if ":" in line)
        except OSError:
            continue
        if fields.get("Uid", "").split()[:1] == [uid]:
            total += int(fields.get("Threads", "1").strip() or 1)
    return total


def _host_unix_sockets(checkout: str) -> list[str]:
    """Path-bound Unix sockets of our network namespace outside the private dirs and ``checkout``."""
    found: set[str] = set()
    try:
        with open("/proc/net/unix", "rb") as f:
            lines = f.read().decode("utf-8", "surrogateescape").splitlines()[1:]
    except OSError:
        return []
    covered = tuple(os.path.realpath(d) + "/" for d in (*_PRIVATE_DIRS, checkout))
    for line in lines:
        fields = line.split(None, 7)
        if len(fields) < 8 or not fields[7].startswith("/"):
            continue  # unnamed or abstract (the network namespace hides those)
        path = os.path.realpath(fields[7])
        if path.startswith(covered) or path in found:
            continue
        with contextlib.suppress(OSError):
            if stat.S_ISSOCK(os.stat(path).st_mode):
                found.add(path)
    return sorted(found)


async def _stop(process: anyio.abc.Process) -> None:
    """Ask the supervisor to kill the command's tree; SIGKILL its group if it does not in time."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    with anyio.move_on_after(_STOP_GRACE):
        await process.wait()
    if process.returncode is None:
        _kill_group(process.pid)
        await process.wait()


_MAX_KEPT = 6  # file descriptors 4..9 carry the kept directories through the covering mounts (sh: one digit)


def kept_paths() -> list[str]:
    """Directories under the private temp directories that the command still needs, read-only: this
    interpreter's environment (a virtual environment or a checkout under /tmp would otherwise vanish, and
    with it the ``python`` a fitness command names)."""
    wanted: list[str] = []
    for raw in (sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))):
        path = os.path.realpath(raw)
        covered = any(
            path == p or path.startswith(p + "/") for p in _PRIVATE_DIRS if p not in ("/run", "/var/run")
        )
        if covered and os.path.isdir(path) and path not in wanted:
            wanted.append(path)
    outer = [p for p in wanted if not any(p != q and p.startswith(q + "/") for q in wanted)]
    return outer[:_MAX_KEPT]


def _ns_script(kept: Sequence[str]) -> str:
    """The namespace script with lines that carry ``kept`` through the tmpfs mounts and bind them back read-only."""
    opens = "\n".join(f'exec {4 + i}<"{path}"' for i, path in enumerate(kept))
    binds = "\n".join(
        f'mkdir -p "{path}" && mount -n --no-canonicalize --rbind /proc/self/fd/{4 + i} "{path}" && '
        f'mount -n -o remount,bind,ro "{path}"; exec {4 + i}<&-'
        for i, path in enumerate(kept)
    )
    return _NS_SCRIPT.replace("#KEEP_OPEN#", opens).replace("#KEEP_BIND#", binds)


def _ns_argv(directory: str, command: str, tmp_bytes: int, sockets: Sequence[str]) -> list[str]:
    kept = [p for p in kept_paths() if '"' not in p and "$" not in p and "`" not in p and "\\" not in p]
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
        _ns_script(kept),
        "evogit-sandbox",
        directory,
        command,
        str(tmp_bytes),
        ":".join(kept),
        *sockets,
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
