"""Prompt text and token pieces without a model: the fixed chat template and the word-level tokenizer.

``render_messages`` turns a request into the prompt text an engine without its own chat template uses (the
test doubles, an OpenAI-compatible server's ``/completions`` fallback, the replay engine's keys);
``simple_tokenize`` gives stable token ids per word, punctuation mark or whitespace run, so equal text gives equal
tokens and a shared text prefix a shared token prefix (the router's and test engines' model of a prompt).
"""

from __future__ import annotations

import re
import zlib

from ._types import GenerationRequest

__all__ = ["render_messages", "simple_tokenize", "text_pieces"]

_TOKEN_RE = re.compile(r"\s+|\w+|[^\w\s]", re.UNICODE)
_VOCAB = 50_000


def simple_tokenize(text: str) -> list[int]:
    """Token ids of ``text`` without a model: one token per word, punctuation mark or whitespace run.

    Ids are a stable hash of the piece, so equal text always gives equal tokens and a shared text prefix
    (ending at a piece boundary) gives a shared token prefix.

    >>> simple_tokenize("a b") == simple_tokenize("a b")
    True
    >>> len(simple_tokenize("Hello, world!"))
    5
    """
    return [zlib.crc32(piece.encode("utf-8")) % _VOCAB for piece in _TOKEN_RE.findall(text)]


def text_pieces(text: str) -> list[str]:
    """The pieces ``simple_tokenize`` gives one token each (words, punctuation marks, whitespace runs)."""
    return _TOKEN_RE.findall(text)


def render_messages(request: GenerationRequest) -> str:
    """The prompt text of a request without a model's own template: the raw prompt, or messages in a fixed template.

    >>> from agentflow.engines import Message
    >>> render_messages(GenerationRequest(messages=(Message("user", "hi"),)))
    '<|user|>\\nhi\\n<|assistant|>\\n'
    """
    if request.prompt is not None:
        return request.prompt
    assert request.messages is not None
    parts = [f"<|tools|>\n{' '.join(t.name for t in request.tools)}\n"] if request.tools else []
    for m in request.messages:
        parts.append(f"<|{m.role}|>\n{m.content}\n")
        parts += [f"<|call {c.id}|>\n{c.name} {c.arguments}\n" for c in m.tool_calls]
        if m.tool_call_id is not None:
            parts.append(f"<|result of {m.tool_call_id}|>\n")
    return "".join(parts) + "<|assistant|>\n"
