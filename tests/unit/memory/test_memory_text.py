"""Tokenizer, token counter and extractive summarizer."""

from __future__ import annotations

import pytest

from agentflow.errors import ConfigError
from agentflow.memory import ExtractiveSummarizer, approx_token_count, tokenize


def test_tokenize_drops_stop_words_and_stems_plurals() -> None:
    assert tokenize("The groups were meeting on Mondays!") == ["group", "meet", "monday"]


def test_tokenize_keeps_numbers_and_repeats() -> None:
    assert tokenize("2023 2023 cats") == ["2023", "2023", "cat"]


def test_approx_token_count_grows_with_text() -> None:
    assert approx_token_count("") == 0
    assert approx_token_count("one two") < approx_token_count("one two three four, five")


def test_extractive_summary_respects_word_budget_and_order() -> None:
    texts = [
        "Alice adopted a cat. The cat is grey.",
        "Bob talked about football.",
        "Alice said the cat sleeps all day. Weather was fine.",
    ]
    summary = ExtractiveSummarizer(max_words=12).summarize_sync(texts)
    assert 0 < len(summary.split()) <= 12
    assert "cat" in summary
    picked = [
        s
        for s in ("Alice adopted a cat.", "The cat is grey.", "Alice said the cat sleeps all day.")
        if s in summary
    ]
    assert picked == sorted(picked, key=" ".join(texts).index)


def test_extractive_summary_is_deterministic_and_empty_for_no_text() -> None:
    summarizer = ExtractiveSummarizer(max_words=20)
    texts = ["b c d. a b.", "c d e. e f g."]
    assert summarizer.summarize_sync(texts) == summarizer.summarize_sync(list(texts))
    assert summarizer.summarize_sync([]) == ""


def test_extractive_summarizer_refuses_zero_budget() -> None:
    with pytest.raises(ConfigError, match="max_words=0"):
        ExtractiveSummarizer(max_words=0)
