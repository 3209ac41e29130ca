"""Child-side launcher of the EvoGit sandbox: set resource limits, then exec the isolated command.

Run as ``python -I -S _sandbox_launch.py '<json spec>'`` by ``Sandbox``; it imports nothing of
agentflow so it starts fast. The limits are inherited by everything the command starts.
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import signal
import sys

_PR_SET_PDEATHSIG = 1


def main() -> None:
    """Apply ``RLIMIT_CPU``/``RLIMIT_AS``/``RLIMIT_FSIZE``/``RLIMIT_CORE`` and exec ``argv``."""
    spec = json.loads(sys.argv[1])
    # Die with the evolve process: a crashed evolve run must not leave fitness commands behind.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != int(spec["parent"]):
        os._exit(137)
    cpu = spec.get("cpu")
    if cpu is not None:
        # Soft limit sends SIGXCPU, the hard limit one second later SIGKILL.
        resource.setrlimit(resource.RLIMIT_CPU, (int(cpu), int(cpu) + 1))
    for name, key in (("RLIMIT_AS", "memory"), ("RLIMIT_FSIZE", "fsize")):
        value = spec.get(key)
        if value is not None:
            resource.setrlimit(getattr(resource, name), (int(value), int(value)))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    argv = [str(a) for a in spec["argv"]]
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
