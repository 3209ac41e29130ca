"""Load a helper module of the benchmarks (``bench/_<name>.py``) in tests; bench/ is scripts, not a package."""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def bench_module(name: str) -> types.ModuleType:
    """``bench/<name>.py`` as a module (registered as ``bench_<name>``, so its dataclasses work)."""
    key = f"bench_{name.lstrip('_')}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, BENCH / f"{name}.py")
    assert spec is not None and spec.loader is not None, f"no bench module {name!r} in {BENCH}"
    module = importlib.util.module_from_spec(spec)
    sys.modules[key] = module
    spec.loader.exec_module(module)
    return module
