"""The README's first command installs a package that type checkers see.

The test copies the checkout, runs the README's ``pip install`` exactly as written in a fresh virtual
environment (pip's cache makes it quick once llama-cpp-python's wheel is built), then runs
``mypy --strict`` against that environment on a user script that imports agentflow, and on a script
with a type error that mypy must catch (so the check cannot pass on ``Any``).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
pytestmark = pytest.mark.e2e

USER_SCRIPT = """\
from agentflow import Err, flow, run_sync


@flow
async def double(x: int) -> int:
    return x * 2


outcome = run_sync(double, {"x": 21})
if isinstance(outcome, Err):
    raise SystemExit(str(outcome.error))
answer: int = outcome.value
print(answer)
"""

WRONG_SCRIPT = """\
from agentflow.plans.builtin_tools import word_count

words: str = word_count("two words")
"""


def readme_install_command() -> list[str]:
    """The ``pip install ...`` part of the README's first set-up command."""
    first = re.findall(r"```bash\n(.*?)```", README, re.S)[0].strip()
    parts = [p.strip() for p in first.split("&&")]
    install = next(p for p in parts if p.startswith("pip install"))
    return shlex.split(install)


def _copy_checkout(target: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)


@pytest.mark.timeout(1800)
def test_readme_install_leaves_a_package_that_mypy_strict_sees(tmp_path: Path) -> None:
    command = readme_install_command()
    assert command[:3] == ["pip", "install", "-e"], command
    src = tmp_path / "src"
    _copy_checkout(src)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", *command], cwd=src, capture_output=True, text=True, timeout=1500
    )
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-3000:]

    work = tmp_path / "user"
    work.mkdir()
    (work / "user.py").write_text(USER_SCRIPT, encoding="utf-8")
    (work / "wrong.py").write_text(WRONG_SCRIPT, encoding="utf-8")

    def mypy(script: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "mypy",
                "--strict",
                "--no-incremental",
                "--python-executable",
                str(python),
                script,
            ],
            cwd=work,
            capture_output=True,
            text=True,
            timeout=600,
        )

    ok = mypy("user.py")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    wrong = mypy("wrong.py")
    assert wrong.returncode == 1, wrong.stdout + wrong.stderr
    assert (
        'Incompatible types in assignment (expression has type "int", variable has type "str")'
        in wrong.stdout
    )
    ran = subprocess.run([str(python), "user.py"], cwd=work, capture_output=True, text=True, timeout=300)
    assert ran.returncode == 0 and ran.stdout.strip() == "42", ran.stderr[-2000:]
