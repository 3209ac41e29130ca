"""Child-side supervisor of the EvoGit sandbox: limits, one command, and a kill that reaches its whole tree.

Run as ``python -I -S _sandbox_launch.py '<json spec>'`` by ``Sandbox``; it imports nothing of
agentflow so it starts fast. It stays alive as the parent of the fitness command:

- it is a child subreaper (``PR_SET_CHILD_SUBREAPER``), so every descendant the command orphans,
  including one that left with ``setsid`` or a double fork, is re-parented to it and stays findable;
- its child joins the evaluation's pids cgroup (when ``Sandbox`` made one), sets the resource
  limits (inherited by everything the command starts) and execs the command;
- when the command exits, or on SIGTERM/SIGINT/SIGHUP (the wall-timeout kill, or the evolve process
  dying: ``PR_SET_PDEATHSIG``), it SIGKILLs every live descendant, found by walking ``/proc``, until
  none is left, then exits with the command's status (``128+N`` for signal ``N``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import sys
import time

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_PR_SET_NO_NEW_PRIVS = 38
_KILLED = 128 + signal.SIGKILL
_KILL_SECONDS = 10.0


def main() -> None:
    """Supervise ``spec["argv"]`` under the limits in ``spec``; exit with its status."""
    spec = json.loads(sys.argv[1])
    libc = ctypes.CDLL(None, use_errno=True)
    # Wait for signals synchronously: SIGCHLD (a child ended) and the stop signals stay blocked.
    waited = {signal.SIGCHLD, *_STOP_SIGNALS}
    signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    # A dying evolve process sends SIGTERM, which ends in the tree kill below.
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != int(spec["parent"]):
        os._exit(_KILLED)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    child = os.fork()
    if child == 0:
        _exec_command(spec, waited)
    status = _supervise(child, waited)
    _kill_descendants()
    os._exit(status)


def _exec_command(spec: dict[str, object], waited: set[signal.Signals]) -> None:
    """In the forked child: join the cgroup, apply limits, exec. Never returns."""
    try:
        cgroup = spec.get("cgroup")
        if isinstance(cgroup, str):
            with open(os.path.join(cgroup, "cgroup.procs"), "w") as procs:
                procs.write(str(os.getpid()))
        cpu = spec.get("cpu")
        if isinstance(cpu, int):
            # Soft limit sends SIGXCPU, the hard limit one second later SIGKILL.
            resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
        for limit, key in ((resource.RLIMIT_AS, "memory"), (resource.RLIMIT_FSIZE, "fsize")):
            value = spec.get(key)
            if isinstance(value, int):
                resource.setrlimit(limit, (value, value))
        nproc = spec.get("nproc")
        if isinstance(nproc, int):
            resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        # No setuid/file-capability gains: every descendant stays ours to kill.
        if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        # Python ignores SIGPIPE; the command gets the default. SIGXFSZ stays ignored, so a write
        # beyond RLIMIT_FSIZE fails with "File too large" instead of killing the writer silently.
        signal.signal(signal.SIGPIPE, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, waited)
        argv = [str(a) for a in _as_list(spec["argv"])]
        os.execvp(argv[0], argv)
    except BaseException as exc:  # report why, and leave the forked child at once
        with contextlib.suppress(OSError):
            os.write(2, f"evogit sandbox: could not start the fitness command: {exc}\n".encode())
        os._exit(126)


def _as_list(value: object) -> list[object]:
    if not isinstance(value, list):
        raise TypeError(f"argv must be a list, not {value!r}")
    return value


def _supervise(child: int, waited: set[signal.Signals]) -> int:
    """Reap children until ``child`` ends (its exit status) or a stop signal arrives (137)."""
    while True:
        status = _reap(child)
        if status is not None:
            return status
        info = signal.sigtimedwait(waited, 0.5)
        if info is not None and info.si_signo in _STOP_SIGNALS:
            return _KILLED


def _reap(child: int) -> int | None:
    """Collect every ended child; the status of ``child`` if it was among them."""
    found: int | None = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return found if found is not None else _KILLED
        if pid == 0:
            return found
        if pid == child:
            found = os.waitstatus_to_exitcode(status)
            found = 128 - found if found < 0 else found


def _kill_descendants() -> None:
    """SIGKILL every live descendant until none is left, reaping them (orphans come to us).

    A process forking while we kill shows up in the next walk (or, orphaned, as our child), so
    the rounds end once nothing is alive. Bounded by ``_KILL_SECONDS`` for processes stuck in
    the kernel (uninterruptible sleep); ``Sandbox`` kills the cgroup and our group after us.
    """
    me = os.getpid()
    deadline = time.monotonic() + _KILL_SECONDS
    while time.monotonic() < deadline:
        live = _descendants(me)
        for pid in live:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        _reap(-1)
        if not live:
            return
        time.sleep(0.005)


def _descendants(root: int) -> list[int]:
    """Live (non-zombie) descendants of ``root``, from a walk over ``/proc/*/stat``."""
    children: dict[int, list[int]] = {}
    zombies: set[int] = set()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: parse after the last ')'.
        fields = stat[stat.rfind(b")") + 2 :].split()
        pid = int(name)
        children.setdefault(int(fields[1]), []).append(pid)
        if fields[0] in (b"Z", b"X"):
            zombies.add(pid)
    found: list[int] = []
    stack = [root]
    while stack:
        for pid in children.get(stack.pop(), ()):
            stack.append(pid)
            if pid not in zombies:
                found.append(pid)
    return found


if __name__ == "__main__":
    main()
