"""Memory for agents: ``remember``/``recall`` tools over a temporal memory tree, and an LLM summarizer for
the trees' lazily recomputed summaries."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from agentflow.engines import Engine, GenerationRequest, Message
from agentflow.executors import Tool
from agentflow.memory import TemporalMemoryTree
from agentflow.runtime import call_llm

__all__ = ["EngineSummarizer", "memory_tools"]


def memory_tools(tree: TemporalMemoryTree, *, session: str = "agent", k_max: int = 20) -> list[Tool]:
    """``remember(text)`` and ``recall(query, k)`` tools bound to ``tree``.

    Recalled entries are returned as data (``[id] time speaker: text``); agents put them in prompts as
    delimited observations like any tool output, never as instructions.

    Args:
        tree: The temporal tree to write and search.
        session: The session new memories are filed under.
        k_max: The most entries one recall may return.
    """

    async def remember(text: str) -> str:
        """Store a fact or note in long-term memory.

        Args:
            text: The fact to remember, in one sentence.
        """
        # Dated by day: the same fact remembered twice on one day is one leaf (duplicates are refused
        # atomically by the store); remembered again on a later day, it is a new dated observation.
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        result = await tree.insert(text, session=session, at=today)
        return (
            f"remembered as {result.leaf.id}" if result.created else f"already remembered as {result.leaf.id}"
        )

    async def recall(query: str, k: int = 5) -> list[str]:
        """Search long-term memory.

        Args:
            query: What to look for.
            k: How many entries to return.
        """
        hits = await tree.search(query, max(1, min(k, k_max)))
        return [
            f"[{h.leaf.id}] {h.leaf.at.isoformat()} {h.leaf.speaker or ''}: {h.leaf.text}".replace(
                " : ", ": "
            )
            for h in hits
        ]

    return [Tool.from_function(remember), Tool.from_function(recall)]


class EngineSummarizer:
    """A ``memory.Summarizer`` that asks an engine for a short summary of a node's texts.

    Inside a run (a tool or step summarizing a tree), each summary is an ordinary LLM call of that run:
    scheduled, charged to its token budget and recorded in its trace (role ``summarizer``).

    Args:
        engine: The engine (default: the engine of the run the summary is made in).
        max_tokens: Budget of each summary.
        max_input_chars: Texts beyond this many characters are left out of the prompt.
    """

    def __init__(
        self, engine: Engine | None = None, *, max_tokens: int = 96, max_input_chars: int = 6000
    ) -> None:
        self.engine = engine
        self.max_tokens = max_tokens
        self.max_input_chars = max_input_chars

    async def summarize(self, texts: Sequence[str]) -> str:
        """One or two sentences covering ``texts``."""
        joined, used = [], 0
        for t in texts:
            if used + len(t) > self.max_input_chars:
                break
            joined.append(f"- {t}")
            used += len(t)
        request = GenerationRequest(
            messages=(
                Message(
                    "system", "Summarize the notes in one or two sentences. Keep names, dates and numbers."
                ),
                Message("user", "\n".join(joined)),
            ),
            max_tokens=self.max_tokens,
        )
        return (await call_llm(request, engine=self.engine, role="summarizer")).text.strip()
