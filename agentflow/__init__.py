"""agentflow: typed, composable multi-agent LLM workflows."""

from __future__ import annotations

import os as _os

__version__ = "0.1.0"

# In a source checkout the subpackages agentflow.dsl/.agents/.memory/.executors live in top-level
# folders (pyproject maps them with package-dir). When this file is imported straight from the
# checkout (the repo root on sys.path), point the package path at the root too so they resolve.
_here = _os.path.dirname(__file__)
_root = _os.path.dirname(_here)
if not _os.path.isdir(_os.path.join(_here, "dsl")) and _os.path.isfile(_os.path.join(_root, "dsl", "__init__.py")):
    __path__.append(_root)
