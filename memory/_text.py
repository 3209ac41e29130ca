"""Text helpers shared by the memory trees: the BM25 tokenizer and a cheap token counter.

The tokenizer is deliberately simple and deterministic (lower-case ASCII words and numbers, English
stop words removed, a light suffix stemmer) so that the tree and any flat baseline built from the same
function see exactly the same terms.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["STOP_WORDS", "TokenCounter", "approx_token_count", "tokenize"]

TokenCounter = Callable[[str], int]
"""Counts the tokens of a text; ``prompt_for`` takes one so an engine's tokenizer can be plugged in."""

_WORD = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_APPROX = re.compile(r"\w+|[^\w\s]")

_STOP_WORDS_TEXT = """
    a about above after again against all am an and any are aren't as at be because been before being below
    between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during each
    few for from further had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers herself
    him himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself let's me more most
    mustn't my myself no nor not of off on once only or other ought our ours ourselves out over own same shan't
    she she'd she'll she's should shouldn't so some such than that that's the their theirs them themselves then
    there there's these they they'd they'll they're they've this those through to too under until up very was
    wasn't we we'd we'll we're we've were weren't what what's when when's where where's which while who who's
    whom why why's with won't would wouldn't you you'd you'll you're you've your yours yourself yourselves
    also just really yeah yes oh hey hi wow thanks thank ok okay s t d ll m re ve
"""

STOP_WORDS: frozenset[str] = frozenset(_STOP_WORDS_TEXT.split())


def _stem(word: str) -> str:
    """Strip a few common English suffixes (a light, deterministic S-stemmer plus -ing/-ed)."""
    if len(word) <= 3 or word.isdigit():
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("sses"):
        return word[:-2]
    if word.endswith("s") and not word.endswith(("ss", "us", "is")):
        word = word[:-1]
    if word.endswith("ing") and len(word) > 5:
        word = word[:-3]
    elif word.endswith("ed") and len(word) > 4:
        word = word[:-2]
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "lsz":
        word = word[:-1]
    return word


_STEM_CACHE: dict[str, str] = {}


def tokenize(text: str) -> list[str]:
    """Split ``text`` into BM25 terms.

    Args:
        text: Any text.

    Returns:
        Lower-cased, stemmed words and numbers in order, stop words removed; repeated terms are kept.

    Example:
        >>> tokenize("Caroline went to the LGBTQ support groups yesterday!")
        ['caroline', 'went', 'lgbtq', 'support', 'group', 'yesterday']
    """
    out: list[str] = []
    cache = _STEM_CACHE
    for word in _WORD.findall(text.lower()):
        if word in STOP_WORDS:
            continue
        stem = cache.get(word)
        if stem is None:
            base = word.split("'", 1)[0]
            stem = "" if base in STOP_WORDS else _stem(base)
            if len(cache) < 500_000:
                cache[word] = stem
        if stem:
            out.append(stem)
    return out


def approx_token_count(text: str) -> int:
    """Estimate LLM tokens without a tokenizer: words and punctuation marks, long words counted twice.

    Args:
        text: Any text.

    Returns:
        An estimate that is within a small factor of BPE tokenizers on English text.
    """
    return sum(1 + len(piece) // 8 for piece in _APPROX.findall(text))
