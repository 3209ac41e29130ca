"""A throwaway PostgreSQL server on 127.0.0.1 for the tests (Debian's ``postgresql`` package).

``.ci/run`` starts one before the tests and stops it after (``python3 tests/_postgres_server.py start
DIR`` prints its URL; ``stop DIR``) and passes the URL in ``$AGENTFLOW_TEST_POSTGRES_URL``. Without that
variable the tests' ``postgres_url`` fixture starts one itself, and skips the PostgreSQL half of the
suites with the reason only when no server can be started; under CI (``$CI`` set) it fails instead.

Standard library only: ``.ci/run`` uses it before any virtual environment exists. As root (CI, the
developer machines), the server runs as the ``postgres`` user the package creates.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

URL_ENV = "AGENTFLOW_TEST_POSTGRES_URL"


class ServerUnavailable(RuntimeError):
    """No PostgreSQL server could be started here (the message says why)."""


def _bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise ServerUnavailable(
        "PostgreSQL is not installed (no initdb): apt-get install postgresql (.ci/run does this)"
    )


def _as_server_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    if shutil.which("runuser") is None:
        raise ServerUnavailable("running as root without runuser: cannot start PostgreSQL as another user")
    return ["runuser", "-u", "postgres", "--", *cmd]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(base: Path) -> str:
    """Create a cluster in ``base`` and start it on a free port; returns its URL."""
    bindir = _bin_dir()
    base.mkdir(parents=True, exist_ok=True)
    data, sock = base / "data", base / "sock"
    sock.mkdir(exist_ok=True)
    if os.geteuid() == 0:
        import pwd

        try:
            entry = pwd.getpwnam("postgres")
        except KeyError:
            raise ServerUnavailable("no 'postgres' user to run the server as (install postgresql)") from None
        for path in (base, sock):
            os.chown(path, entry.pw_uid, entry.pw_gid)
    log = base / "server.log"
    try:
        subprocess.run(
            _as_server_user(
                [str(bindir / "initdb"), "-D", str(data), "-U", "agentflow", "--auth=trust", "-E", "UTF8"]
            ),
            check=True,
            capture_output=True,
            text=True,
        )
        port = _free_port()
        options = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c max_connections=200"
        subprocess.run(
            _as_server_user(
                [str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start"]
            ),
            check=True,
            capture_output=True,
            text=True,
        )
    except subprocess.CalledProcessError as exc:
        detail = (exc.stderr or exc.stdout or "").strip().splitlines()[-1:] or ["no output"]
        raise ServerUnavailable(f"starting PostgreSQL failed: {detail[0]} (log: {log})") from exc
    (base / "port").write_text(str(port))
    return f"postgresql://agentflow@127.0.0.1:{port}/postgres"


def stop(base: Path) -> None:
    """Stop the server started in ``base`` (if it runs)."""
    data = base / "data"
    if (data / "postmaster.pid").exists():
        subprocess.run(
            _as_server_user([str(_bin_dir() / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
            check=False,
            capture_output=True,
        )


if __name__ == "__main__":
    command, where = sys.argv[1], Path(sys.argv[2])
    if command == "start":
        try:
            print(start(where))
        except ServerUnavailable as exc:
            print(f"postgres test server: {exc}", file=sys.stderr)
            sys.exit(1)
    elif command == "stop":
        stop(where)
    else:
        sys.exit(f"usage: {sys.argv[0]} start|stop DIR")
