"""A pids cgroup per fitness evaluation: a process-count limit that counts only the sandbox's tasks.

``RLIMIT_NPROC`` counts every process of the user and is not enforced at all for uid 0, so when
the OS lets us create cgroups (root on a host or VM, a delegated cgroup v2 subtree) each evaluation
gets its own cgroup with ``pids.max``: fork bombs hit ``EAGAIN`` at the limit, and the cgroup's
member list reaches every process the command started, even one that escaped its supervisor.

Both cgroup versions are supported: v2 (a ``cgroup2`` mount whose root enables ``pids`` for its
children) and v1 (a ``cgroup`` mount with the ``pids`` controller, the evaluation cgroup made
under our own). ``PidsCgroup.available()`` probes once per process by creating and removing one.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from pathlib import Path

__all__ = ["CGROUP_PREFIX", "PidsCgroup"]

CGROUP_PREFIX = "agentflow-evogit-"
"""Name prefix of evaluation cgroups: ``agentflow-evogit-<evolve pid>-<n>``."""
_counter = itertools.count()
_probe: dict[str, Path | None] = {}


def _mounts() -> list[tuple[str, str, str, str]]:
    """``(root, mount point, fs type, super options)`` of every mount, from ``/proc/self/mountinfo``."""
    rows: list[tuple[str, str, str, str]] = []
    with contextlib.suppress(OSError), open("/proc/self/mountinfo") as f:
        for line in f:
            head, _, tail = line.partition(" - ")
            fields, tail_fields = head.split(), tail.split()
            if len(fields) >= 5 and len(tail_fields) >= 3:
                rows.append((_unescape(fields[3]), _unescape(fields[4]), tail_fields[0], tail_fields[2]))
    return rows


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def _own_paths() -> dict[str, str]:
    """Our cgroup path per hierarchy: ``""`` for v2, the controller list for v1."""
    paths: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/self/cgroup") as f:
        for line in f:
            parts = line.rstrip("\n").split(":", 2)
            if len(parts) == 3:
                paths[parts[1]] = parts[2]
    return paths


def _relative(path: str, root: str) -> str:
    """``path`` (from /proc/self/cgroup) below a mount whose root is ``root``."""
    if root != "/" and (path == root or path.startswith(root + "/")):
        path = path[len(root) :]
    return path.lstrip("/")


def _parent_candidates() -> list[Path]:
    """Directories under which an evaluation cgroup with a ``pids`` controller could be made."""
    own = _own_paths()
    found: list[Path] = []
    for root, point, fstype, options in _mounts():
        if fstype == "cgroup2":
            # v2: only a cgroup without processes may enable controllers for its children, so use
            # the mount's root (exempt from that rule) when it hands out the pids controller.
            controls = Path(point, "cgroup.subtree_control")
            with contextlib.suppress(OSError):
                if "pids" in controls.read_text().split():
                    found.append(Path(point))
        elif fstype == "cgroup" and "pids" in options.split(","):
            for controllers, path in own.items():
                if "pids" in controllers.split(","):
                    found.append(Path(point, _relative(path, root)))
    return found


class PidsCgroup:
    """One evaluation's pids cgroup: create, hand its path to the launcher, kill and remove.

    Args:
        parent: The directory to create it in (from ``PidsCgroup.available()``).
        max_processes: ``pids.max``: tasks (processes and threads) the cgroup may hold.
    """

    def __init__(self, parent: Path, max_processes: int) -> None:
        self.path = parent / f"{CGROUP_PREFIX}{os.getpid()}-{next(_counter)}"
        self.path.mkdir()
        try:
            (self.path / "pids.max").write_text(str(max_processes))
        except OSError:
            self.path.rmdir()
            raise

    @staticmethod
    def available() -> Path | None:
        """Where evaluation cgroups can be made here (probed once, for real), or ``None``."""
        if "parent" not in _probe:
            _probe["parent"] = None
            for parent in _parent_candidates():
                try:
                    PidsCgroup(parent, 8).remove()
                except OSError:
                    continue
                _probe["parent"] = parent
                break
        return _probe["parent"]

    def members(self) -> list[int]:
        """Pids of the processes in the cgroup now."""
        try:
            text = (self.path / "cgroup.procs").read_text()
        except OSError:
            return []
        return [int(pid) for pid in text.split()]

    def kill(self, seconds: float = 10.0) -> bool:
        """SIGKILL every member until the cgroup is empty (at most ``seconds``); whether it is."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            members = self.members()
            if not members:
                return True
            for pid in members:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.005)
        return not self.members()

    def remove(self) -> None:
        """Kill what is left and delete the cgroup (a busy one is left for ``remove_stale_checkouts``)."""
        if self.kill():
            with contextlib.suppress(OSError):
                self.path.rmdir()
