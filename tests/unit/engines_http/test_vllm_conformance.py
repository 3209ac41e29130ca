"""vLLM 0.34 conformance of OpenAIEngine and the scheduler's block model, over httpx.MockTransport.

The fake server speaks vLLM's wire: ``/v1/models`` owned by ``vllm``, ``/tokenize``, ``/metrics`` in Prometheus
text with ``vllm:cache_config_info`` (a 0.34 exposition, ``vllm_metrics_v034.prom``: the CacheConfig's fields as
labels, 64-token blocks, two data-parallel engines), and completions whose ``usage`` carries
``prompt_tokens_details.cached_tokens`` only when the server runs with ``--enable-prompt-tokens-details``.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from agentflow.engines import DEFAULT_BLOCK_SIZE, GenerationRequest, Message, RequestHints
from agentflow.engines._metrics import VLLMCacheConfig, parse_prometheus_text
from agentflow.engines._openai import OpenAIEngine
from agentflow.engines._retry import RetryPolicy
from agentflow.scheduler import BlockLRU, Scheduler

pytestmark = pytest.mark.anyio

HERE = Path(__file__).parent
V034 = (HERE / "vllm_metrics_v034.prom").read_text()
V1 = (HERE / "vllm_metrics_v1.prom").read_text()
FAST = RetryPolicy(attempts=2, initial_delay=0.0, max_delay=0.0, jitter=0.0)
SCHEMA = {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}


@dataclass
class VllmServer:
    """A vLLM-shaped OpenAI server: word tokens, a prefix cache of whole ``block_size`` blocks per salt."""

    metrics: str | None = V034
    prompt_tokens_details: bool = True
    block_size: int = 64
    seen: list[httpx.Request] = field(default_factory=list)
    cached: set[tuple[str | None, tuple[int, ...]]] = field(default_factory=set)

    def bodies(self, path: str) -> list[dict[str, object]]:
        return [json.loads(r.content) for r in self.seen if r.url.path == path]

    @staticmethod
    def tokens(text: str) -> list[int]:
        return [zlib.crc32(w.encode()) % 50_000 for w in text.split()]

    def _prefill(self, tokens: list[int], salt: str | None) -> int:
        """vLLM's reuse: leading full blocks cached under the same salt (never the last token)."""
        bs = self.block_size
        hit = 0
        for end in range(bs, len(tokens), bs):
            if (salt, tuple(tokens[:end])) in self.cached:
                hit = end
        for end in range(bs, len(tokens) + 1, bs):
            self.cached.add((salt, tuple(tokens[:end])))
        return hit

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        path = request.url.path
        if path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "m", "owned_by": "vllm"}]})
        if path == "/metrics":
            if self.metrics is None:
                return httpx.Response(404, json={"detail": "Not Found"})
            return httpx.Response(200, text=self.metrics, headers={"content-type": "text/plain"})
        if path == "/tokenize":
            return httpx.Response(200, json={"tokens": self.tokens(json.loads(request.content)["prompt"])})
        if path == "/v1/completions":
            body = json.loads(request.content)
            tokens = self.tokens(body["prompt"])
            cached = self._prefill(tokens, body.get("cache_salt"))
            usage: dict[str, object] = {"prompt_tokens": len(tokens), "completion_tokens": 1}
            if self.prompt_tokens_details:
                usage["prompt_tokens_details"] = {"cached_tokens": cached}
            return httpx.Response(
                200,
                json={"model": "m", "choices": [{"text": " ok", "finish_reason": "stop"}], "usage": usage},
            )
        return httpx.Response(404, json={"detail": "Not Found"})

    def engine(self, **options: object) -> OpenAIEngine:
        return OpenAIEngine(
            "http://127.0.0.1:9",
            "m",
            transport=httpx.MockTransport(self),
            retry=FAST,
            **options,  # type: ignore[arg-type]
        )


def prompt(words: int, *, tenant: str | None = None, tail: str = "end") -> GenerationRequest:
    text = " ".join(f"w{i}" for i in range(words)) + f" {tail}"
    return GenerationRequest(prompt=text, max_tokens=1, hints=RequestHints(tenant=tenant))


def test_cache_config_info_of_vllm_034_gives_block_size_capacity_and_prefix_caching() -> None:
    config = VLLMCacheConfig.from_scrape(parse_prometheus_text(V034))
    assert config is not None
    assert (config.block_size, config.hash_block_size, config.prefix_match_unit) == (64, 64, None)
    assert config.enable_prefix_caching is True
    assert (config.engines, config.capacity_tokens) == (2, 2 * 262144)


def test_cache_config_info_before_034_gives_capacity_from_gpu_blocks() -> None:
    config = VLLMCacheConfig.from_scrape(parse_prometheus_text(V1))
    assert config is not None
    assert (config.block_size, config.capacity_tokens) == (16, 23831 * 16)


def test_cache_config_is_unknown_when_the_scrape_has_no_cache_config_info() -> None:
    assert VLLMCacheConfig.from_scrape(parse_prometheus_text("# TYPE x counter\nx_total 1\n")) is None


async def test_block_size_is_read_from_metrics_when_server_is_vllm_034() -> None:
    server = VllmServer()
    async with server.engine() as engine:
        assert await engine.probe() == "vllm"
        caps = engine.capabilities
    assert (caps.prefix_cache, caps.block_size, caps.cache_tokens) == ("block", 64, 2 * 262144)


async def test_block_size_follows_the_server_when_it_reports_16() -> None:
    async with VllmServer(metrics=V1).engine(server_kind="vllm") as engine:
        await engine.generate(prompt(3))
        assert engine.capabilities.block_size == 16


async def test_block_size_defaults_to_64_when_the_server_has_no_metrics() -> None:
    async with VllmServer(metrics=None).engine() as engine:
        await engine.probe()
        assert engine.capabilities.block_size == DEFAULT_BLOCK_SIZE == 64


async def test_prefix_cache_is_none_when_the_server_runs_without_prefix_caching() -> None:
    server = VllmServer(metrics=V034.replace('enable_prefix_caching="True"', 'enable_prefix_caching="False"'))
    async with server.engine() as engine:
        await engine.probe()
        assert engine.capabilities.prefix_cache == "none"


async def test_scheduler_models_64_token_blocks_of_a_default_vllm_server() -> None:
    server = VllmServer()
    scheduler = Scheduler(server.engine())
    await scheduler.generate(prompt(150))
    model = scheduler.cache_model
    assert isinstance(model, BlockLRU) and model.block_size == 64
    await scheduler.generate(prompt(150, tail="other"))
    second = scheduler.metrics().requests[1]
    assert second.predicted_cached_tokens == second.cached_tokens == 128
    await scheduler.aclose()


async def test_structured_outputs_is_sent_on_completions_when_server_is_vllm() -> None:
    server = VllmServer()
    async with server.engine() as engine:
        await engine.generate(GenerationRequest(prompt="JSON:", json_schema=SCHEMA))
    (body,) = server.bodies("/v1/completions")
    assert body["structured_outputs"] == {"json": SCHEMA}
    assert "response_format" not in body


async def test_chat_keeps_response_format_when_server_is_vllm() -> None:
    server = VllmServer()

    async def chat(request: httpx.Request) -> httpx.Response:
        server.seen.append(request)
        return httpx.Response(
            200, json={"choices": [{"message": {"content": "{}"}, "finish_reason": "stop"}]}
        )

    engine = OpenAIEngine(
        "http://127.0.0.1:9",
        "m",
        server_kind="vllm",
        retry=FAST,
        transport=httpx.MockTransport(
            lambda r: chat(r) if r.url.path.endswith("chat/completions") else server(r)
        ),
    )
    async with engine:
        await engine.generate(GenerationRequest(messages=(Message("user", "who?"),), json_schema=SCHEMA))
    (body,) = server.bodies("/v1/chat/completions")
    assert body["response_format"]["type"] == "json_schema"  # type: ignore[index]
    assert "structured_outputs" not in body


async def test_priority_capability_is_declared_only_for_priority_scheduling_servers() -> None:
    hinted = GenerationRequest(prompt="a b c", max_tokens=1, hints=RequestHints(priority=-2))
    for declared in (False, True):
        server = VllmServer()
        async with server.engine(priority_scheduling=declared) as engine:
            await engine.generate(hinted)
            assert engine.capabilities.priority is declared
        # Sent either way: vLLM ignores it under FCFS, honours it under --scheduling-policy priority.
        assert server.bodies("/v1/completions")[0]["priority"] == -2


async def test_missing_cached_tokens_is_unknown_and_never_shrinks_the_block_model() -> None:
    server = VllmServer(prompt_tokens_details=False)
    scheduler = Scheduler(server.engine(), cache_budget_tokens=64 * 10)
    for tail in ("a", "b", "c", "d"):
        completion = await scheduler.generate(prompt(150, tail=tail))
        assert completion.usage.cached_tokens is None
    model = scheduler.cache_model
    assert isinstance(model, BlockLRU)
    stats = model.stats()
    assert (stats.capacity_blocks, stats.predictions, stats.abs_error_tokens) == (10, 0, 0)
    total = scheduler.metrics().total
    assert total.cache_unreported == 4 and total.hit_rate == 0.0
    await scheduler.aclose()


async def test_tenant_salted_requests_never_count_as_hits_of_another_tenant() -> None:
    server = VllmServer()
    scheduler = Scheduler(server.engine(cache_salt_per_tenant=True))
    await scheduler.generate(prompt(150, tenant="acme", tail="x"))
    await scheduler.generate(prompt(150, tenant="globex", tail="y"))  # same prefix, other tenant
    await scheduler.generate(prompt(150, tenant="acme", tail="z"))  # same prefix, same tenant
    await scheduler.generate(prompt(150, tail="u"))  # same prefix, no tenant (unsalted)
    rows = scheduler.metrics().requests
    assert [r.predicted_cached_tokens for r in rows] == [0, 0, 128, 0]
    assert [r.cached_tokens for r in rows] == [0, 0, 128, 0]  # the server agrees
    salts = [b.get("cache_salt") for b in server.bodies("/v1/completions")]
    assert salts[0] == salts[2] and salts[1] not in (salts[0], None) and salts[3] is None
    await scheduler.aclose()
