"""Public names, prompt layout, token buckets and PTE."""

from __future__ import annotations

import math

import pytest

import agentflow.scheduler as scheduler_pkg
from agentflow.dsl import TokenBucket
from agentflow.engines import Message, RequestHints
from agentflow.errors import ConfigError
from agentflow.scheduler import PromptLayout, canonical_json, gamma_from_shape, pte


def test_all_matches_public_names_and_is_sorted() -> None:
    public = {n for n in vars(scheduler_pkg) if not n.startswith("_")} - {"annotations"}
    assert set(scheduler_pkg.__all__) == public
    assert sorted(scheduler_pkg.__all__, key=lambda n: (not n.isupper(), n)) == scheduler_pkg.__all__


def test_layout_puts_stable_parts_first_and_shares_prefix_across_histories() -> None:
    tools = [{"name": "search", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}]
    a = PromptLayout(system="You research.", tools=tools, shared_context="Task: X.", preamble="Team 1.")
    reordered = PromptLayout(
        system="You research.",
        tools=[{"parameters": {"properties": {"q": {"type": "string"}}, "type": "object"}, "name": "search"}],
        shared_context="Task: X.",
        preamble="Team 1.",
    )
    assert a.header() == reordered.header()
    header = a.header()
    assert (
        header.index("Team 1.")
        < header.index("You research.")
        < header.index("Tools:")
        < header.index("Task: X.")
    )
    turn1 = [Message("user", "find it")]
    turn2 = [*turn1, Message("assistant", "search(q)"), Message("tool", "found")]
    assert a.prompt(turn2).startswith(a.prompt(turn1, open_turn=None))
    assert a.prompt(turn2).startswith(a.prefix_request(turn1).prompt or "")
    messages = a.messages(turn2)
    assert messages[0] == Message("system", header) and messages[1:] == tuple(turn2)


def test_layout_request_carries_hints_and_chooses_raw_or_chat() -> None:
    layout = PromptLayout(system="s")
    hints = RequestHints(workflow_id="w")
    assert layout.request([Message("user", "q")], hints=hints).messages is not None
    raw = layout.request([Message("user", "q")], hints=hints, raw=True, max_tokens=5)
    assert raw.prompt == "s\n\nuser: q\nassistant:" and raw.hints == hints and raw.max_tokens == 5


def test_canonical_json_is_order_independent() -> None:
    assert canonical_json({"b": [1, {"d": 1, "c": 2}], "a": "é"}) == '{"a":"é","b":[1,{"c":2,"d":1}]}'


def test_token_bucket_returns_wait_instead_of_raising_when_empty() -> None:
    now = [0.0]
    bucket = TokenBucket(120, per=60.0, burst=2, clock=lambda: now[0])  # 2 tokens per second
    assert bucket.try_take(2) == 0.0
    assert bucket.try_take(1) == pytest.approx(0.5)
    now[0] = 0.5
    assert bucket.try_take(1) == 0.0
    assert bucket.try_take(3) == math.inf  # larger than the bucket: never
    bucket.give_back(5)
    assert bucket.level() == 2


def test_token_bucket_rejects_bad_rates() -> None:
    with pytest.raises(ConfigError, match="positive, finite rate"):
        TokenBucket(0)


def test_pte_adds_decode_cost_from_model_shape() -> None:
    gamma = gamma_from_shape(n_params=135e6, n_layers=30, n_kv_heads=3, head_dim=64)
    assert gamma == pytest.approx(2 * 30 * 3 * 64 * 2 * 10 / (2 * 135e6))
    assert pte(100, 400, 0, gamma) == 100
    assert pte(100, 400, 10, 0.5) == pytest.approx(100 + 0.5 * 405 * 10)
