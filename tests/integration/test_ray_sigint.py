"""Cancellation reaches a Ray task even when the driver was started with SIGINT ignored (``cmd &``, nohup).

Ray cancels a running task by raising ``KeyboardInterrupt`` in the worker (a simulated SIGINT); workers
inherit an ignored SIGINT from such a driver, and without agentflow restoring the handler a timed-out step
would keep running. The driver runs in a subprocess that ignores SIGINT, as a background job does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("ray", reason="ray is not installed (pip install 'agentflow[ray]')")

DRIVER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path

    import ray

    from agentflow import Err, run
    from agentflow.errors import StepTimeout
    from agentflow.executors._ray import ray_step

    marker = Path(sys.argv[1])


    @ray_step
    def slow() -> str:
        marker.write_text("started")
        try:
            deadline = time.monotonic() + 40
            while time.monotonic() < deadline:
                time.sleep(0.05)
        except KeyboardInterrupt:
            marker.write_text("interrupted")
            raise
        marker.write_text("finished")
        return "slept"


    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        out = __import__("anyio").run(run, slow().timeout(15.0))
        assert isinstance(out, Err) and isinstance(out.error, StepTimeout), out
        deadline = time.monotonic() + 30  # a hang guard, not a timing assertion
        while marker.read_text() != "interrupted" and time.monotonic() < deadline:
            time.sleep(0.05)
        print("marker:", marker.read_text())
    finally:
        ray.shutdown()
    """
)


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def test_timed_out_ray_step_is_interrupted_when_driver_ignores_sigint(tmp_path: Path) -> None:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    marker = tmp_path / "marker.txt"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    done = subprocess.run(
        [sys.executable, str(script), str(marker)],
        preexec_fn=_ignore_sigint,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "marker: interrupted" in done.stdout, (done.stdout, done.stderr[-3000:])
