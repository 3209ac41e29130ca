"""OpenAIEngine against a real ``python -m llama_cpp.server`` serving the bundled SmolLM2 GGUF.

One server (module scope) serves the request tests; the crash test starts its own server, kills it
with SIGKILL while a request is in flight, and restarts it on the same port.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import anyio
import httpx
import jsonschema  # type: ignore[import-untyped]
import pytest
from _servers import LlamaServer, bundled_gguf, running_llama_server

from agentflow.engines._openai import OpenAIEngine
from agentflow.engines._retry import RetryEvent, RetryPolicy
from agentflow.engines._types import Chunk, Completion, GenerationRequest, Message
from agentflow.errors import EngineError, EngineUnavailableError, UnsupportedFeatureError

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

PERSON = {
    "title": "Person",
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
    },
    "required": ["name", "age"],
}
PROMPTS = ("The capital of France is", "One, two, three,", "The sky is")


@pytest.fixture(scope="module")
def server() -> Iterator[LlamaServer]:
    with running_llama_server() as running:
        yield running


def greedy(prompt: str, max_tokens: int = 12) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, max_tokens=max_tokens, temperature=0.0)


async def test_generate_completes_prompt_with_usage_when_server_serves_bundled_model(
    server: LlamaServer,
) -> None:
    async with OpenAIEngine(server.base_url, server.model_id) as engine:
        completion = await engine.generate(greedy(PROMPTS[0]))
        assert engine.server_kind == "llamacpp"
        assert engine.capabilities.slots == 1
    assert completion.text.strip()
    assert completion.finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 12
    # llama-cpp-python's server sends no prompt_tokens_details: reuse is unknown, not 0.
    assert usage.cached_tokens is None and usage.computed_tokens == usage.prompt_tokens
    assert 0 <= usage.queue_s <= usage.ttft_s <= usage.total_s


async def test_chat_answers_when_messages_given(server: LlamaServer) -> None:
    request = GenerationRequest(
        messages=(Message("system", "You answer in one word."), Message("user", "What color is grass?")),
        max_tokens=8,
    )
    async with OpenAIEngine(server.base_url, server.model_id) as engine:
        completion = await engine.generate(request)
    assert completion.text.strip()
    assert completion.usage.prompt_tokens > 10


async def test_stream_joins_to_the_generated_text_when_decoding_greedily(server: LlamaServer) -> None:
    async with OpenAIEngine(server.base_url, server.model_id) as engine:
        whole = await engine.generate(greedy(PROMPTS[1]))
        async with engine.stream(greedy(PROMPTS[1])) as source:
            chunks = [chunk async for chunk in source]
    assert "".join(c.text for c in chunks) == whole.text
    assert all(c.usage is None for c in chunks[:-1])
    final = chunks[-1]
    assert final.finish_reason == whole.finish_reason and final.usage is not None
    # llama-cpp-python streams no usage: prompt tokens come from /extras/tokenize, completion
    # tokens from the streamed pieces (one per token).
    assert final.usage.prompt_tokens == whole.usage.prompt_tokens
    assert final.usage.completion_tokens == whole.usage.completion_tokens
    assert 0 < final.usage.ttft_s <= final.usage.total_s


async def test_tokenize_counts_the_prompt_tokens_the_server_reports(server: LlamaServer) -> None:
    async with OpenAIEngine(server.base_url, server.model_id) as engine:
        tokens = await engine.tokenize(PROMPTS[2])
        completion = await engine.generate(greedy(PROMPTS[2], max_tokens=2))
    assert all(isinstance(t, int) for t in tokens)
    assert len(tokens) == completion.usage.prompt_tokens


async def test_chat_output_matches_schema_when_json_schema_given(server: LlamaServer) -> None:
    request = GenerationRequest(
        messages=(Message("user", "Invent a person. Reply with JSON with a name and an age."),),
        max_tokens=32,
        json_schema=PERSON,
    )
    async with OpenAIEngine(server.base_url, server.model_id) as engine:
        completion = await engine.generate(request)
    jsonschema.validate(json.loads(completion.text), PERSON)


async def test_prompt_output_matches_schema_when_json_schema_given(server: LlamaServer) -> None:
    request = GenerationRequest(prompt="A person as JSON:", max_tokens=32, json_schema=PERSON)
    async with OpenAIEngine(server.base_url, server.model_id) as engine:
        completion = await engine.generate(request)
    jsonschema.validate(json.loads(completion.text), PERSON)


async def test_concurrent_requests_match_sequential_results_when_sent_at_once(server: LlamaServer) -> None:
    async with OpenAIEngine(server.base_url, server.model_id) as engine:
        sequential = [(await engine.generate(greedy(p))).text for p in PROMPTS]
        concurrent: dict[int, Completion] = {}
        streamed: dict[int, list[Chunk]] = {}

        async def complete(index: int) -> None:
            concurrent[index] = await engine.generate(greedy(PROMPTS[index]))

        async def stream(index: int) -> None:
            async with engine.stream(greedy(PROMPTS[index])) as source:
                streamed[index] = [c async for c in source]

        async with anyio.create_task_group() as group:
            for index in range(len(PROMPTS)):
                group.start_soon(complete, index)
                group.start_soon(stream, index)
    assert [concurrent[i].text for i in range(len(PROMPTS))] == sequential
    assert ["".join(c.text for c in streamed[i]) for i in range(len(PROMPTS))] == sequential
    assert all(streamed[i][-1].finish_reason is not None for i in range(len(PROMPTS)))


async def test_metrics_raise_unsupported_feature_when_server_is_llamacpp(server: LlamaServer) -> None:
    async with OpenAIEngine(server.base_url, server.model_id) as engine:
        with pytest.raises(UnsupportedFeatureError, match="/metrics"):
            await engine.metrics()


class _SignallingTransport(httpx.AsyncBaseTransport):
    """The real HTTP transport, plus an event set when a request is handed to it."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.handed_over = anyio.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.handed_over.set()
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


async def test_inflight_request_fails_cleanly_and_engine_recovers_when_server_is_killed() -> None:
    server = LlamaServer(bundled_gguf())
    server.start()
    try:
        events: list[RetryEvent] = []
        policy = RetryPolicy(attempts=3, initial_delay=0.2, max_delay=0.5)
        async with OpenAIEngine(server.base_url, server.model_id, retry=policy) as warmup:
            done = [await warmup.generate(greedy(p)) for p in PROMPTS[:2]]
        snapshot = [(c.text, c.usage) for c in done]

        transport = _SignallingTransport()
        engine = OpenAIEngine(
            server.base_url,
            server.model_id,
            server_kind="llamacpp",
            retry=policy,
            on_retry=events.append,
            transport=transport,
        )
        failure: list[EngineError] = []

        async def in_flight() -> None:
            try:
                await engine.generate(greedy(PROMPTS[2], max_tokens=32))
            except EngineError as exc:
                failure.append(exc)

        server.freeze()  # accepts the connection, never answers: the request stays in flight
        with anyio.fail_after(120):  # a hang guard, not a timing assertion
            async with anyio.create_task_group() as group:
                group.start_soon(in_flight)
                await transport.handed_over.wait()
                await anyio.sleep(0.2)
                server.kill()
        (error,) = failure
        assert isinstance(error, EngineUnavailableError)
        assert f"{server.base_url}/v1/completions" in str(error) and "3 attempts" in str(error)
        assert [e.attempt for e in events] == [1, 2]
        assert [(c.text, c.usage) for c in done] == snapshot

        server.start()  # the same port
        recovered = await engine.generate(greedy(PROMPTS[0]))
        await engine.aclose()
        assert recovered.text == done[0].text
    finally:
        server.close()
