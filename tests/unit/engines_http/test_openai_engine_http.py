"""OpenAIEngine over httpx.MockTransport: payloads, usage, streaming, retries, secrets, vLLM extras."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow.engines._openai import OpenAIEngine, _SSEDecoder, cache_salt_for
from agentflow.engines._retry import RetryEvent, RetryPolicy
from agentflow.engines._types import Chunk, Engine, GenerationRequest, Message, RequestHints
from agentflow.errors import (
    ConfigError,
    EngineRequestError,
    EngineUnavailableError,
    UnsupportedFeatureError,
)

pytestmark = pytest.mark.anyio

BASE = "http://127.0.0.1:9"
FAST = RetryPolicy(attempts=3, initial_delay=0.0, max_delay=0.0, jitter=0.0)
SCHEMA = {
    "title": "Person",
    "type": "object",
    "properties": {"name": {"type": "string"}},
    "required": ["name"],
}

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


@dataclass
class FakeServer:
    """Answers by (method, path); records every request it sees."""

    owned_by: str = "vllm"
    routes: dict[tuple[str, str], Handler] = field(default_factory=dict)
    seen: list[httpx.Request] = field(default_factory=list)

    def bodies(self, path: str) -> list[dict[str, object]]:
        return [json.loads(r.content) for r in self.seen if r.url.path == path]

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        route = self.routes.get((request.method, request.url.path))
        if route is not None:
            return await route(request)
        if request.url.path == "/v1/models":
            return httpx.Response(
                200, json={"object": "list", "data": [{"id": "m", "owned_by": self.owned_by}]}
            )
        return httpx.Response(404, json={"detail": "Not Found"})

    def engine(self, **options: object) -> OpenAIEngine:
        options.setdefault("retry", FAST)
        return OpenAIEngine(BASE, "m", transport=httpx.MockTransport(self), **options)  # type: ignore[arg-type]


def completion_json(
    text: str = "hello", *, cached: int | None = None, finish: str = "stop"
) -> dict[str, object]:
    usage: dict[str, object] = {"prompt_tokens": 10, "completion_tokens": 2, "total_tokens": 12}
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    return {
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": usage,
    }


def reply(payload: Mapping[str, object], status: int = 200, headers: dict[str, str] | None = None) -> Handler:
    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=payload, headers=headers)

    return handler


def sequence(*handlers: Handler) -> Handler:
    """Answer the n-th call with the n-th handler (the last one repeats)."""
    calls = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return await handlers[min(calls, len(handlers)) - 1](request)

    return handler


def sse(*events: Mapping[str, object] | str) -> bytes:
    lines = [f"data: {e if isinstance(e, str) else json.dumps(e)}\n\n" for e in events]
    return "".join(lines).encode()


def delta(text: str, finish: str | None = None) -> dict[str, object]:
    return {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}


CHAT = GenerationRequest(messages=(Message("system", "Be brief."), Message("user", "Hi")), max_tokens=8)
PROMPT = GenerationRequest(prompt="Once upon", max_tokens=4, stop=("\n",), seed=7)


async def test_chat_request_goes_to_chat_endpoint_when_messages_given() -> None:
    server = FakeServer(routes={("POST", "/v1/chat/completions"): reply(completion_json("hey"))})
    async with server.engine() as engine:
        completion = await engine.generate(CHAT)
    assert completion.text == "hey"
    assert completion.finish_reason == "stop"
    (body,) = server.bodies("/v1/chat/completions")
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    assert body["model"] == "m" and body["max_tokens"] == 8 and body["stream"] is False
    assert "prompt" not in body and "priority" not in body and "cache_salt" not in body


async def test_prompt_request_goes_to_completions_endpoint_when_prompt_given() -> None:
    payload = {
        "model": "m",
        "choices": [{"text": " a time", "finish_reason": "length"}],
        "usage": {"prompt_tokens": 3},
    }
    server = FakeServer(routes={("POST", "/v1/completions"): reply(payload)})
    async with server.engine() as engine:
        completion = await engine.generate(PROMPT)
    assert completion.text == " a time"
    assert completion.finish_reason == "length"
    (body,) = server.bodies("/v1/completions")
    assert body["prompt"] == "Once upon" and body["stop"] == ["\n"] and body["seed"] == 7


async def test_usage_splits_cached_and_computed_when_server_reports_cached_tokens() -> None:
    server = FakeServer(routes={("POST", "/v1/chat/completions"): reply(completion_json(cached=6))})
    async with server.engine() as engine:
        usage = (await engine.generate(CHAT)).usage
    assert (usage.prompt_tokens, usage.cached_tokens, usage.computed_tokens) == (10, 6, 4)
    assert usage.completion_tokens == 2
    assert usage.ttft_s == usage.total_s and usage.total_s >= usage.queue_s >= 0


async def test_usage_reports_cached_tokens_unknown_when_server_omits_them() -> None:
    server = FakeServer(routes={("POST", "/v1/chat/completions"): reply(completion_json())})
    async with server.engine() as engine:
        usage = (await engine.generate(CHAT)).usage
    # vLLM without --enable-prompt-tokens-details: unknown, not 0; computed is then an upper bound.
    assert (usage.prompt_tokens, usage.cached_tokens, usage.computed_tokens) == (10, None, 10)


async def test_json_schema_becomes_strict_response_format_when_server_is_vllm() -> None:
    server = FakeServer(routes={("POST", "/v1/chat/completions"): reply(completion_json('{"name": "x"}'))})
    request = GenerationRequest(messages=(Message("user", "who?"),), json_schema=SCHEMA)
    async with server.engine() as engine:
        await engine.generate(request)
    (body,) = server.bodies("/v1/chat/completions")
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "Person", "schema": SCHEMA, "strict": True},
    }


async def test_json_schema_becomes_json_object_with_schema_when_server_is_llamacpp() -> None:
    server = FakeServer(owned_by="me", routes={("POST", "/v1/chat/completions"): reply(completion_json())})
    request = GenerationRequest(messages=(Message("user", "who?"),), json_schema=SCHEMA)
    async with server.engine() as engine:
        await engine.generate(request)
        assert engine.server_kind == "llamacpp"
    (body,) = server.bodies("/v1/chat/completions")
    assert body["response_format"] == {"type": "json_object", "schema": SCHEMA}


async def test_prompt_json_schema_becomes_gbnf_grammar_when_server_is_llamacpp() -> None:
    pytest.importorskip("llama_cpp.llama_grammar")
    payload = {"choices": [{"text": '{"name": "a"}', "finish_reason": "stop"}]}
    server = FakeServer(owned_by="me", routes={("POST", "/v1/completions"): reply(payload)})
    async with server.engine() as engine:
        await engine.generate(GenerationRequest(prompt="JSON:", json_schema=SCHEMA))
    (body,) = server.bodies("/v1/completions")
    assert "response_format" not in body
    assert isinstance(body["grammar"], str) and "root ::=" in body["grammar"]


async def test_logit_bias_is_sent_with_string_token_ids_when_set() -> None:
    server = FakeServer(routes={("POST", "/v1/chat/completions"): reply(completion_json())})
    async with server.engine() as engine:
        await engine.generate(GenerationRequest(messages=CHAT.messages, logit_bias={42: -100, 7: 3.5}))
        await engine.generate(CHAT)
    biased, plain = server.bodies("/v1/chat/completions")
    assert biased["logit_bias"] == {"42": -100.0, "7": 3.5}
    assert "logit_bias" not in plain


async def test_priority_and_cache_salt_are_sent_when_server_is_vllm() -> None:
    server = FakeServer(routes={("POST", "/v1/chat/completions"): reply(completion_json())})
    hinted = GenerationRequest(messages=CHAT.messages, hints=RequestHints(tenant="acme", priority=-3))
    async with server.engine(cache_salt_per_tenant=True) as engine:
        await engine.generate(hinted)
        await engine.generate(GenerationRequest(messages=CHAT.messages, hints=RequestHints(tenant="other")))
        await engine.generate(CHAT)
    first, second, third = server.bodies("/v1/chat/completions")
    assert first["priority"] == -3
    assert isinstance(first["cache_salt"], str) and len(first["cache_salt"]) == 43
    assert "acme" not in first["cache_salt"]
    assert second["cache_salt"] != first["cache_salt"] and "priority" not in second
    assert "cache_salt" not in third


async def test_vllm_fields_are_not_sent_when_server_is_not_vllm() -> None:
    server = FakeServer(
        owned_by="openai", routes={("POST", "/v1/chat/completions"): reply(completion_json())}
    )
    hinted = GenerationRequest(messages=CHAT.messages, hints=RequestHints(tenant="acme", priority=1))
    async with server.engine(cache_salt_per_tenant=True) as engine:
        await engine.generate(hinted)
        assert engine.server_kind == "openai"
        assert engine.capabilities.priority is False
    (body,) = server.bodies("/v1/chat/completions")
    assert "priority" not in body and "cache_salt" not in body


def test_cache_salt_is_stable_per_tenant_when_secret_is_shared() -> None:
    assert cache_salt_for(b"k", "acme") == cache_salt_for(b"k", "acme")
    assert cache_salt_for(b"k", "acme") != cache_salt_for(b"other", "acme")
    assert cache_salt_for(b"k", "acme") != cache_salt_for(b"k", "acme2")


async def test_server_kind_is_detected_from_version_when_model_list_is_missing() -> None:
    server = FakeServer(
        routes={
            ("GET", "/v1/models"): reply({"detail": "nope"}, status=404),
            ("GET", "/version"): reply({"version": "0.11.0"}),
        }
    )
    async with server.engine() as engine:
        assert await engine.probe() == "vllm"
        caps = engine.capabilities
        assert caps.prefix_cache == "block" and caps.block_size == 64 and not caps.priority


async def test_retry_after_is_honoured_when_server_answers_429() -> None:
    events: list[RetryEvent] = []
    limited = reply({"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "0.01"})
    server = FakeServer(
        routes={("POST", "/v1/chat/completions"): sequence(limited, reply(completion_json("ok")))}
    )
    async with server.engine(on_retry=events.append) as engine:
        completion = await engine.generate(CHAT)
    assert completion.text == "ok"
    assert len(server.bodies("/v1/chat/completions")) == 2
    (event,) = events
    assert event.reason == "HTTP 429" and event.retry_after == 0.01 and event.delay_s == 0.01
    assert event.url == f"{BASE}/v1/chat/completions" and event.attempt == 1


async def test_server_errors_are_retried_with_backoff_when_5xx_then_success() -> None:
    events: list[RetryEvent] = []
    policy = RetryPolicy(attempts=4, initial_delay=0.001, multiplier=2.0, max_delay=1.0, jitter=0.0)
    failing = [reply({"error": "busy"}, status=code) for code in (502, 503, 500)]
    server = FakeServer(
        routes={("POST", "/v1/chat/completions"): sequence(*failing, reply(completion_json("ok")))}
    )
    async with server.engine(on_retry=events.append, retry=policy) as engine:
        assert (await engine.generate(CHAT)).text == "ok"
    assert [e.reason for e in events] == ["HTTP 502", "HTTP 503", "HTTP 500"]
    assert [e.delay_s for e in events] == [0.001, 0.002, 0.004]


async def test_request_error_names_url_status_and_attempts_when_retries_are_exhausted() -> None:
    server = FakeServer(routes={("POST", "/v1/chat/completions"): reply({"error": "overloaded"}, status=503)})
    async with server.engine() as engine:
        with pytest.raises(EngineRequestError) as caught:
            await engine.generate(CHAT)
    message = str(caught.value)
    assert f"{BASE}/v1/chat/completions" in message
    assert "HTTP 503" in message and "3 attempts" in message and "overloaded" in message
    assert not isinstance(caught.value, EngineUnavailableError)
    assert len(server.bodies("/v1/chat/completions")) == 3


async def test_retry_stops_at_once_when_retry_after_exceeds_limit() -> None:
    limited = reply({}, status=429, headers={"Retry-After": "3600"})
    server = FakeServer(routes={("POST", "/v1/chat/completions"): limited})
    async with server.engine() as engine:
        with pytest.raises(EngineRequestError, match="retry after 3600 s"):
            await engine.generate(CHAT)
    assert len(server.bodies("/v1/chat/completions")) == 1


async def test_unavailable_error_names_url_and_attempts_when_server_cannot_be_reached() -> None:
    async def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    engine = OpenAIEngine(BASE, "m", server_kind="vllm", retry=FAST, transport=httpx.MockTransport(refuse))
    with pytest.raises(EngineUnavailableError) as caught:
        await engine.generate(CHAT)
    await engine.aclose()
    assert "3 attempts" in str(caught.value) and f"{BASE}/v1/chat/completions" in str(caught.value)
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_client_errors_are_not_retried_when_server_answers_400() -> None:
    server = FakeServer(routes={("POST", "/v1/chat/completions"): reply({"error": "bad field"}, status=400)})
    async with server.engine() as engine:
        with pytest.raises(EngineRequestError, match=r"HTTP 400.*bad field"):
            await engine.generate(CHAT)
    assert len(server.bodies("/v1/chat/completions")) == 1


async def test_stream_yields_chunks_then_usage_when_server_streams() -> None:
    body = sse(
        delta("Hel"),
        delta("lo"),
        delta("", finish="stop"),
        {
            "choices": [],
            "usage": {
                "prompt_tokens": 9,
                "completion_tokens": 2,
                "prompt_tokens_details": {"cached_tokens": 8},
            },
        },
        "[DONE]",
    )

    async def stream(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})

    server = FakeServer(routes={("POST", "/v1/chat/completions"): stream})
    async with server.engine() as engine, engine.stream(CHAT) as source:
        chunks = [chunk async for chunk in source]
    assert [c.text for c in chunks] == ["Hel", "lo", ""]
    final = chunks[-1]
    assert final.finish_reason == "stop" and final.usage is not None
    assert (final.usage.prompt_tokens, final.usage.cached_tokens, final.usage.computed_tokens) == (9, 8, 1)
    assert 0 <= final.usage.ttft_s <= final.usage.total_s
    (sent,) = server.bodies("/v1/chat/completions")
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


class _BreakingStream(httpx.AsyncByteStream):
    """Sends some SSE events, then fails like a server that died mid-answer."""

    def __init__(self, head: bytes) -> None:
        self.head = head

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield self.head
        raise httpx.ReadError("connection reset by peer")


async def test_stream_error_keeps_received_chunks_when_connection_breaks_mid_stream() -> None:
    async def breaking(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_BreakingStream(sse(delta("par"), delta("tial"))))

    server = FakeServer(routes={("POST", "/v1/chat/completions"): breaking})
    received: list[Chunk] = []
    async with server.engine() as engine:
        with pytest.raises(EngineRequestError, match="broke after 2 chunks"):
            async with engine.stream(CHAT) as source:
                async for chunk in source:
                    received.append(chunk)
    assert [c.text for c in received] == ["par", "tial"]
    assert len(server.bodies("/v1/chat/completions")) == 1


async def test_stream_is_retried_when_it_fails_before_the_first_chunk() -> None:
    async def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_BreakingStream(b": keep-alive\n\n"))

    async def good(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=sse(delta("ok", finish="stop"), "[DONE]"))

    server = FakeServer(routes={("POST", "/v1/chat/completions"): sequence(broken, good)})
    async with server.engine() as engine, engine.stream(CHAT) as source:
        chunks = [c async for c in source]
    assert [c.text for c in chunks] == ["ok", ""]
    assert len(server.bodies("/v1/chat/completions")) == 2


async def test_stream_raises_when_it_ends_without_finish_reason() -> None:
    async def cut(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=sse(delta("half"), "[DONE]"))

    server = FakeServer(owned_by="me", routes={("POST", "/v1/chat/completions"): cut})
    async with server.engine() as engine:
        with pytest.raises(EngineRequestError, match=r"without a finish reason.*max_concurrency=1"):
            async with engine.stream(CHAT) as source:
                _ = [c async for c in source]


async def test_stream_counts_tokens_when_server_sends_no_usage() -> None:
    async def no_usage(request: httpx.Request) -> httpx.Response:
        events = [{"choices": [{"text": t, "finish_reason": None}]} for t in ("a", "b", "c")]
        return httpx.Response(
            200, content=sse(*events, {"choices": [{"text": "", "finish_reason": "length"}]}, "[DONE]")
        )

    server = FakeServer(
        owned_by="me",
        routes={
            ("POST", "/v1/completions"): no_usage,
            ("POST", "/extras/tokenize"): reply({"tokens": [1, 2, 3, 4]}),
        },
    )
    async with server.engine() as engine, engine.stream(PROMPT) as source:
        chunks = [c async for c in source]
    usage = chunks[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (4, 3)
    assert chunks[-1].finish_reason == "length"


async def test_api_key_never_appears_in_repr_errors_or_logs_when_read_from_env(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-test-7f3a9c1d2e"
    monkeypatch.setenv("AGENTFLOW_TEST_KEY", secret)
    server = FakeServer(routes={("POST", "/v1/chat/completions"): reply({"error": "no"}, status=503)})
    caplog.set_level(logging.DEBUG)
    engine = server.engine(api_key_env="AGENTFLOW_TEST_KEY")
    with pytest.raises(EngineRequestError) as caught:
        await engine.generate(CHAT)
    await engine.aclose()
    assert server.seen[-1].headers["authorization"] == f"Bearer {secret}"
    assert secret not in repr(engine) and "AGENTFLOW_TEST_KEY" in repr(engine)
    assert secret not in str(caught.value) and secret not in repr(caught.value)
    assert secret not in caplog.text and caplog.records


async def test_rejected_key_error_names_env_variable_not_key_when_server_answers_401(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-hidden-123456")
    server = FakeServer(routes={("POST", "/v1/chat/completions"): reply({"error": "bad key"}, status=401)})
    async with server.engine() as engine:
        with pytest.raises(EngineRequestError) as caught:
            await engine.generate(CHAT)
    assert "OPENAI_API_KEY" in str(caught.value) and "sk-hidden" not in str(caught.value)


def test_api_key_env_raises_config_error_when_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTFLOW_MISSING_KEY", raising=False)
    with pytest.raises(ConfigError, match="AGENTFLOW_MISSING_KEY"):
        OpenAIEngine(BASE, "m", api_key_env="AGENTFLOW_MISSING_KEY")


class _Vault:
    def reveal(self) -> str:
        return "sk-from-vault-42"


async def test_secret_handle_supplies_key_when_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server = FakeServer(routes={("POST", "/v1/chat/completions"): reply(completion_json())})
    async with server.engine(api_key=_Vault()) as engine:
        await engine.generate(CHAT)
        assert "sk-from-vault" not in repr(engine)
    assert server.seen[-1].headers["authorization"] == "Bearer sk-from-vault-42"
    with pytest.raises(ConfigError, match="reveal"):
        OpenAIEngine(BASE, "m", api_key="sk-plain-string")  # type: ignore[arg-type]


async def test_no_key_is_sent_when_no_key_is_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    server = FakeServer(routes={("POST", "/v1/chat/completions"): reply(completion_json())})
    async with server.engine() as engine:
        await engine.generate(CHAT)
    assert "authorization" not in server.seen[-1].headers


async def test_tokenize_uses_extras_endpoint_when_server_is_llamacpp() -> None:
    server = FakeServer(owned_by="me", routes={("POST", "/extras/tokenize"): reply({"tokens": [5, 6]})})
    async with server.engine() as engine:
        assert list(await engine.tokenize("hi")) == [5, 6]
    assert server.bodies("/extras/tokenize") == [{"model": "m", "input": "hi"}]


async def test_tokenize_uses_vllm_shape_when_server_is_vllm() -> None:
    server = FakeServer(routes={("POST", "/tokenize"): reply({"tokens": [1, 2, 3], "count": 3})})
    async with server.engine() as engine:
        assert list(await engine.tokenize("abc")) == [1, 2, 3]
    assert server.bodies("/tokenize") == [{"model": "m", "prompt": "abc"}]


async def test_tokenize_raises_unsupported_feature_when_server_has_no_endpoint() -> None:
    server = FakeServer(owned_by="openai")
    async with server.engine() as engine:
        with pytest.raises(UnsupportedFeatureError, match="/tokenize"):
            await engine.tokenize("abc")


async def test_metrics_reads_vllm_counters_when_server_exports_them() -> None:
    text = (Path(__file__).with_name("vllm_metrics_v1.prom")).read_text()

    async def scrape(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text=text, headers={"content-type": "text/plain; version=0.0.4"})

    server = FakeServer(routes={("GET", "/metrics"): scrape})
    async with server.engine() as engine:
        metrics = await engine.metrics()
    assert metrics.prefix_cache_hits == 12000.0 and metrics.hit_rate == pytest.approx(0.75)


async def test_metrics_raise_unsupported_feature_when_server_has_no_metrics() -> None:
    async with FakeServer(owned_by="me").engine() as engine:
        with pytest.raises(UnsupportedFeatureError, match="/metrics"):
            await engine.metrics()


async def test_requests_in_flight_stay_within_max_concurrency_when_many_run_at_once() -> None:
    in_flight = 0
    peak = 0
    gate = anyio.Event()

    async def slow(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight == 2:
            gate.set()
        await gate.wait()
        await anyio.sleep(0)
        in_flight -= 1
        return httpx.Response(200, json=completion_json("ok"))

    server = FakeServer(routes={("POST", "/v1/chat/completions"): slow})
    results: list[str] = []
    async with server.engine(max_concurrency=2) as engine:

        async def one() -> None:
            results.append((await engine.generate(CHAT)).text)

        async with anyio.create_task_group() as group:
            for _ in range(6):
                group.start_soon(one)
    assert results == ["ok"] * 6
    assert peak == 2


async def test_render_returns_prompt_or_role_tagged_chat_when_asked() -> None:
    async with FakeServer().engine() as engine:
        assert await engine.render(PROMPT) == "Once upon"
        rendered = await engine.render(CHAT)
    assert rendered == "<|system|>\nBe brief.\n<|user|>\nHi\n<|assistant|>\n"


async def test_engine_satisfies_engine_protocol_when_constructed() -> None:
    async with FakeServer().engine() as engine:
        assert isinstance(engine, Engine)
        assert engine.name == f"openai:{BASE}#m"


@pytest.mark.parametrize("url", ["127.0.0.1:8000", "ftp://host", ""])
def test_constructor_raises_config_error_when_base_url_is_invalid(url: str) -> None:
    with pytest.raises(ConfigError, match="base_url"):
        OpenAIEngine(url, "m")


def test_base_url_drops_trailing_v1_when_given() -> None:
    engine = OpenAIEngine("http://127.0.0.1:8000/v1/", "m")
    assert engine.base_url == "http://127.0.0.1:8000"


def test_sse_decoder_joins_data_lines_and_skips_comments_when_reading_events() -> None:
    decoder = _SSEDecoder()
    lines = [": ping", "event: message", "data: first", "data:second\r", "", "id: 7", "data: {}", ""]
    events = [event for line in lines if (event := decoder.feed(line)) is not None]
    assert events == ["first\nsecond", "{}"]
    assert decoder.flush() is None


class _ChunkedStream(httpx.AsyncByteStream):
    def __init__(self, parts: list[bytes]) -> None:
        self.parts = parts

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for part in self.parts:
            yield part


@settings(max_examples=40, deadline=None)
@given(
    pieces=st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=6),
    cuts=st.lists(st.integers(min_value=1), max_size=8),
)
def test_stream_reassembles_pieces_when_bytes_arrive_split_anywhere(
    pieces: list[str], cuts: list[int]
) -> None:
    payload = sse(*[delta(p) for p in pieces], delta("", finish="stop"), "[DONE]")
    points = sorted({c % len(payload) for c in cuts} - {0})
    parts = [payload[a:b] for a, b in zip([0, *points], [*points, len(payload)], strict=True)]

    async def split(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=_ChunkedStream(parts))

    async def run() -> list[str]:
        server = FakeServer(routes={("POST", "/v1/chat/completions"): split})
        async with server.engine() as engine, engine.stream(CHAT) as source:
            return [c.text async for c in source if c.text]

    assert anyio.run(run) == pieces
