"""Summarizers for the temporal tree's inner nodes: the protocols and the default extractive one.

A node's summary is recomputed from its children's texts (a session from its turns, a period from its
sessions' summaries, the root from its periods' summaries) only when the node is dirty. An LLM summarizer
is any object with ``async def summarize(texts) -> str``; the lead adapts engines to it. Without an engine
the :class:`ExtractiveSummarizer` is used: it needs no model, is deterministic and fast enough to run on
every refresh.
"""

from __future__ import annotations

import heapq
import re
from collections import Counter
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from agentflow.errors import ConfigError
from agentflow.memory._text import tokenize

__all__ = ["ExtractiveSummarizer", "Summarizer", "SyncSummarizer"]

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


@runtime_checkable
class Summarizer(Protocol):
    """Summarizes the texts of a node's children (an LLM through an engine, typically)."""

    async def summarize(self, texts: Sequence[str]) -> str:
        """Return one summary of ``texts`` (in the order given, oldest first)."""
        ...


@runtime_checkable
class SyncSummarizer(Protocol):
    """A summarizer cheap enough to run inline in the store's worker thread."""

    def summarize_sync(self, texts: Sequence[str]) -> str:
        """Return one summary of ``texts`` without blocking on I/O."""
        ...


class ExtractiveSummarizer:
    """Pick the sentences that cover the most of the children's frequent terms, within a word budget.

    Greedy coverage: each round takes the sentence whose *not yet covered* terms weigh the most (a term
    weighs the number of sentences it occurs in, so recurring topics win), divided by the square root
    of its length; ties go to the earlier sentence. The chosen sentences are returned in their original
    order. Gains only shrink as terms get covered, so the greedy runs lazily over a heap.

    Args:
        max_words: Word budget of the summary (whitespace-separated words).
        max_sentence_words: Longer sentences are cut to this many words before selection.
    """

    def __init__(self, *, max_words: int = 120, max_sentence_words: int = 40) -> None:
        if max_words < 1 or max_sentence_words < 1:
            raise ConfigError(
                f"ExtractiveSummarizer budgets must be positive, got max_words={max_words}, "
                f"max_sentence_words={max_sentence_words}; pass values >= 1"
            )
        self.max_words = max_words
        self.max_sentence_words = max_sentence_words

    async def summarize(self, texts: Sequence[str]) -> str:
        """Async form of :meth:`summarize_sync` (it does not block: no I/O, linear time)."""
        return self.summarize_sync(texts)

    def summarize_sync(self, texts: Sequence[str]) -> str:
        """Summarize ``texts``; returns ``""`` for no text."""
        sentences: list[tuple[str, list[str]]] = []
        for text in texts:
            for raw in _SENTENCE.split(text.strip()):
                words = raw.split()
                if not words:
                    continue
                sentence = " ".join(words[: self.max_sentence_words])
                sentences.append((sentence, tokenize(sentence)))
        weight: Counter[str] = Counter()
        for _, terms in sentences:
            weight.update(set(terms))
        # Lazy greedy: coverage gains only shrink as terms get covered, so a sentence whose recomputed
        # gain still tops the heap is the best choice; ties go to the earlier sentence.
        heap: list[tuple[float, int]] = []
        term_sets = [frozenset(terms) for _, terms in sentences]
        lengths = [sentence.count(" ") + 1 for sentence, _ in sentences]
        for i, term_set in enumerate(term_sets):
            gain = sum(weight[t] for t in term_set) / lengths[i] ** 0.5
            if gain > 0:
                heap.append((-gain, i))
        heapq.heapify(heap)
        covered: set[str] = set()
        chosen: list[int] = []
        budget = self.max_words
        while heap and budget > 0:
            _, i = heapq.heappop(heap)
            if lengths[i] > budget:
                continue
            gain = sum(weight[t] for t in term_sets[i] - covered) / lengths[i] ** 0.5
            if gain <= 0:
                continue
            if heap and (-gain, i) > heap[0]:
                heapq.heappush(heap, (-gain, i))
                continue
            chosen.append(i)
            covered |= term_sets[i]
            budget -= lengths[i]
        return " ".join(sentences[i][0] for i in sorted(chosen))
