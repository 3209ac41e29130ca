"""Prompt layout: stable parts first, so agents share prefixes byte for byte.

A prefix cache only helps when prompts start with identical bytes. ``PromptLayout`` fixes the order, from
most to least widely shared::

    | preamble (every agent) | system (this agent) | tools (canonical JSON) | shared context | history ... |
    |<------------------------------- stable: cached once ---------------------------------->|<- grows ->|

Tool schemas are serialized canonically (sorted keys, fixed separators) so two agents given the same tools in
another dict order still share the prefix. History is append-only: a turn never rewrites earlier turns.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agentflow.engines._types import GenerationRequest, Message, RequestHints

__all__ = ["PromptLayout", "canonical_json"]


def canonical_json(value: object) -> str:
    """JSON with sorted keys and fixed separators (equal values give equal bytes).

    >>> canonical_json({"b": 1, "a": [1, 2]})
    '{"a":[1,2],"b":1}'
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class PromptLayout:
    """The stable head of an agent's prompts, rendered identically every time.

    Attributes:
        system: This agent's instructions.
        tools: Tool schemas (JSON-serializable), rendered with ``canonical_json`` in the given order.
        shared_context: Context shared with other steps (documents, the task), after the tools.
        preamble: Text shared by every agent of a workflow; it goes first so all agents share it.

    Examples:
        >>> layout = PromptLayout(system="You are a planner.", preamble="Workflow: trip.")
        >>> layout.header()
        'Workflow: trip.\\n\\nYou are a planner.'
        >>> [m.role for m in layout.messages([Message("user", "hi")])]
        ['system', 'user']
    """

    system: str
    tools: Sequence[Mapping[str, object]] = ()
    shared_context: str = ""
    preamble: str = ""

    def header(self) -> str:
        """The stable head as one text: preamble, system, tools, shared context (empty parts skipped)."""
        parts = [self.preamble, self.system]
        if self.tools:
            parts.append("Tools:\n" + "\n".join(canonical_json(t) for t in self.tools))
        if self.shared_context:
            parts.append("Context:\n" + self.shared_context)
        return "\n\n".join(p for p in parts if p)

    def messages(self, history: Sequence[Message] = ()) -> tuple[Message, ...]:
        """Chat messages: the header as the system message, then ``history`` unchanged."""
        return (Message("system", self.header()), *history)

    def prompt(self, history: Sequence[Message] = (), *, open_turn: str | None = "assistant") -> str:
        """A raw prompt (no chat template): header, then ``role: content`` turns, then an open turn.

        The text for ``history[:k]`` with ``open_turn=None`` is a byte-exact prefix of the text for any longer
        history, which is what ``Scheduler.prewarm`` needs.
        """
        text = self.header() + "\n\n"
        text += "".join(f"{m.role}: {m.content}\n" for m in history)
        if open_turn is not None:
            text += f"{open_turn}:"
        return text

    def request(
        self,
        history: Sequence[Message] = (),
        *,
        hints: RequestHints | None = None,
        max_tokens: int = 256,
        raw: bool = False,
    ) -> GenerationRequest:
        """A request with this layout: chat ``messages`` by default, a raw ``prompt`` with ``raw=True``."""
        h = RequestHints() if hints is None else hints
        if raw:
            return GenerationRequest(prompt=self.prompt(history), max_tokens=max_tokens, hints=h)
        return GenerationRequest(messages=self.messages(history), max_tokens=max_tokens, hints=h)

    def prefix_request(
        self, history: Sequence[Message] = (), *, hints: RequestHints | None = None
    ) -> GenerationRequest:
        """The raw-prompt request whose text prefixes every later ``request(..., raw=True)`` (for prewarm)."""
        h = RequestHints() if hints is None else hints
        return GenerationRequest(prompt=self.prompt(history, open_turn=None), max_tokens=1, hints=h)
