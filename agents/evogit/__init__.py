"""agentflow.agents.evogit: a population of coding agents evolving a git repository."""

from __future__ import annotations

__all__: list[str] = []
