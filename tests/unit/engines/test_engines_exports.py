"""The public surface of agentflow.engines: a sorted, resolvable __all__; backend libraries load on first use."""

from __future__ import annotations

import subprocess
import sys

import pytest

import agentflow.engines as engines


def test_all_is_sorted_and_every_name_resolves() -> None:
    assert list(engines.__all__) == sorted(engines.__all__, key=lambda n: (not n.isupper(), n))
    for name in engines.__all__:
        assert getattr(engines, name) is not None, name


def test_unknown_attribute_raises_attribute_error() -> None:
    with pytest.raises(AttributeError, match="NoSuchEngine"):
        engines.NoSuchEngine  # noqa: B018


def test_importing_engines_loads_no_backend_library() -> None:
    code = (
        "import sys, agentflow.engines\n"
        "heavy = [m for m in ('llama_cpp', 'vllm', 'ray') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
