"""agentflow: typed, composable multi-agent LLM workflows."""

from __future__ import annotations

__version__ = "0.1.0"
