"""``infer_json`` for plans: the runtime's JSON-Schema inference (one LLM-call primitive for everything)."""

from __future__ import annotations

from agentflow.runtime import JsonCheck, infer_json

__all__ = ["JsonCheck", "infer_json"]
