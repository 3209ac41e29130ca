"""PrefixRouter over test-engine replicas: affinity, cold spreading, the load guard, baselines, the protocol."""

from __future__ import annotations

import subprocess
import sys

import anyio
import httpx
import pytest
from _engines import PinningEngine

from agentflow.engines import Engine, FunctionEngine, GenerationRequest, Message, TestEngine
from agentflow.errors import ConfigError, EngineRequestError
from agentflow.scheduler import PrefixRouter

DOCS = {
    "a": "Alpha document: " + " ".join(f"apple{i}" for i in range(40)),
    "b": "Beta document: " + " ".join(f"banana{i}" for i in range(40)),
    "c": "Gamma document: " + " ".join(f"cherry{i}" for i in range(40)),
}


def ask(doc: str, question: str) -> GenerationRequest:
    return GenerationRequest(messages=(Message("system", DOCS[doc]), Message("user", question)), max_tokens=4)


def replicas(n: int) -> list[TestEngine]:
    return [TestEngine(name=f"r{i}", prefix_cache=True) for i in range(n)]


def test_importing_scheduler_and_engines_does_not_import_ray() -> None:
    code = "import sys, agentflow.scheduler, agentflow.engines; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_router_is_an_engine_when_built_from_engines() -> None:
    router = PrefixRouter(replicas(2))
    assert isinstance(router, Engine)
    assert router.capabilities.slots == 2
    assert router.name == "router[affinity](r0, r1)"


@pytest.mark.anyio
async def test_requests_with_shared_prefix_go_to_one_replica_when_loads_are_equal() -> None:
    router = PrefixRouter(replicas(3))
    for q in ("one?", "two?", "three?", "four?"):
        await router.generate(ask("a", q))
    stats = router.stats()
    assert [s.requests for s in stats].count(4) == 1
    assert sum(s.reasons.get("affinity", 0) for s in stats) == 3


@pytest.mark.anyio
async def test_new_prefixes_spread_over_replicas_when_cold() -> None:
    router = PrefixRouter(replicas(3))
    decisions = [await router.route(ask(doc, "q?")) for doc in ("a", "b", "c")]
    assert sorted(d.replica for d in decisions) == [0, 1, 2]
    assert {d.reason for d in decisions} == {"cold"}


@pytest.mark.anyio
async def test_a_short_shared_header_is_not_worth_chasing_when_documents_differ() -> None:
    system = "You are a helpful assistant."
    router = PrefixRouter(replicas(3))
    decisions = []
    for doc in ("a", "b", "c"):
        request = GenerationRequest(
            messages=(Message("system", system), Message("user", DOCS[doc])), max_tokens=4
        )
        decisions.append(await router.route(request))
    assert decisions[1].matches[decisions[0].replica] > 0  # the header matches...
    assert sorted(d.replica for d in decisions) == [0, 1, 2]  # ...but each new document goes least-loaded
    assert {d.reason for d in decisions} == {"cold"}


@pytest.mark.anyio
async def test_load_guard_sends_to_least_loaded_when_preferred_replica_is_busy() -> None:
    router = PrefixRouter(replicas(2), max_imbalance=1)
    first = await router.route(ask("a", "q0?"))
    second = await router.route(ask("a", "q1?"))  # still outstanding: imbalance 1 is allowed
    third = await router.route(ask("a", "q2?"))  # preferred has 2 outstanding, the other 0
    assert second.replica == first.replica and second.reason == "affinity"
    assert third.replica != first.replica and third.reason == "balance"
    assert third.matches[first.replica] > third.matched_tokens
    for d in (first, second, third):
        router.done(d)
    assert [s.outstanding for s in router.stats()] == [0, 0]


@pytest.mark.anyio
async def test_slack_prefers_the_less_loaded_of_near_equal_matches() -> None:
    router = PrefixRouter(replicas(2), match_slack_tokens=1000, min_gain_tokens=1)
    a = await router.route(ask("a", "q0?"))
    b = await router.route(ask("b", "q0?"))  # cold on the other replica
    router.done(b)
    c = await router.route(ask("a", "q1?"))  # replica of "a" is busy; the other matches within the slack
    assert a.replica != b.replica
    assert c.replica == b.replica and c.reason == "affinity"


@pytest.mark.anyio
async def test_round_robin_cycles_over_replicas_regardless_of_prefix() -> None:
    router = PrefixRouter(replicas(3), policy="round_robin")
    chosen = [(await router.route(ask("a", f"q{i}?"))).replica for i in range(6)]
    assert chosen == [0, 1, 2, 0, 1, 2]


@pytest.mark.anyio
async def test_affinity_reuses_more_cached_tokens_than_round_robin_on_grouped_workload() -> None:
    order = [("a", "1"), ("a", "2"), ("b", "1"), ("b", "2"), ("a", "3"), ("b", "3")]

    async def cached(policy: str) -> tuple[int, int]:
        router = PrefixRouter(replicas(2), policy=policy)  # type: ignore[arg-type]
        for doc, q in order:
            await router.generate(ask(doc, q))
        stats = router.stats()
        return sum(s.usage.cached_tokens for s in stats), sum(s.usage.computed_tokens for s in stats)

    aff_cached, aff_computed = await cached("affinity")
    rr_cached, rr_computed = await cached("round_robin")
    assert aff_cached > rr_cached
    assert aff_computed < rr_computed
    assert aff_cached + aff_computed == rr_cached + rr_computed


@pytest.mark.anyio
async def test_concurrent_requests_all_finish_and_leave_nothing_outstanding() -> None:
    router = PrefixRouter(replicas(3))
    async with anyio.create_task_group() as tg:
        for i in range(12):
            tg.start_soon(router.generate, ask("abc"[i % 3], f"q{i}?"))
    stats = router.stats()
    assert sum(s.requests for s in stats) == 12
    assert all(s.outstanding == 0 for s in stats)


@pytest.mark.anyio
async def test_stream_yields_replica_chunks_and_counts_usage() -> None:
    router = PrefixRouter(replicas(2))
    async with router.stream(ask("a", "hello")) as stream:
        chunks = [c async for c in stream]
    assert "".join(c.text for c in chunks) == "echo: hello"
    assert sum(s.usage.prompt_tokens for s in router.stats()) > 0
    assert all(s.outstanding == 0 for s in router.stats())


@pytest.mark.anyio
async def test_replica_error_propagates_and_releases_outstanding_when_generate_fails() -> None:
    def refuse(request: GenerationRequest) -> str:
        raise EngineRequestError("replica refused the request")

    router = PrefixRouter([FunctionEngine(refuse, name="bad")])
    with pytest.raises(EngineRequestError, match="refused"):
        await router.generate(ask("a", "q?"))
    assert router.stats()[0].outstanding == 0


@pytest.mark.anyio
async def test_aclose_closes_replicas_only_when_owned() -> None:
    kept = replicas(1)
    await PrefixRouter(kept, close_replicas=False).aclose()
    assert (await kept[0].generate(ask("a", "q?"))).text
    owned = replicas(1)
    await PrefixRouter(owned).aclose()
    with pytest.raises(Exception, match="closed"):
        await owned[0].generate(ask("a", "q?"))


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"policy": "random"}, "policy 'random' is unknown"),
        ({"match_slack_tokens": -1}, "match_slack_tokens must be >= 0"),
        ({"cache_tokens": 0}, "cache_tokens must be >= 1"),
    ],
)
def test_bad_options_raise_config_error_naming_the_option(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        PrefixRouter(replicas(1), **kwargs)  # type: ignore[arg-type]


def test_no_replicas_raise_config_error() -> None:
    with pytest.raises(ConfigError, match="at least one replica"):
        PrefixRouter([])


class _Endpoint:
    """An OpenAI-compatible server stand-in (httpx.MockTransport) without a tokenize endpoint."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.chats = 0

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/models":
            return httpx.Response(200, json={"object": "list", "data": [{"id": "m", "owned_by": "openai"}]})
        if request.url.path == "/v1/chat/completions":
            self.chats += 1
            body = {
                "model": "m",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": self.name},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
            }
            return httpx.Response(200, json=body)
        return httpx.Response(404, json={"detail": "Not Found"})


@pytest.mark.anyio
async def test_openai_endpoints_are_routed_by_text_pieces_when_they_cannot_tokenize() -> None:
    from agentflow.engines import OpenAIEngine

    servers = [_Endpoint("east"), _Endpoint("west")]
    engines = [
        OpenAIEngine(f"http://127.0.0.1:{9000 + i}", "m", transport=httpx.MockTransport(s))
        for i, s in enumerate(servers)
    ]
    router = PrefixRouter(engines)
    try:
        answers = {
            doc: [(await router.generate(ask(doc, f"q{i}?"))).text for i in range(3)] for doc in ("a", "b")
        }
    finally:
        await router.aclose()
    assert len(set(answers["a"])) == 1 and len(set(answers["b"])) == 1  # each document stays on one endpoint
    assert answers["a"][0] != answers["b"][0]
    assert [s.chats for s in servers] == [3, 3]


@pytest.mark.anyio
async def test_pins_go_to_the_replica_that_holds_the_prefix() -> None:
    engines = [PinningEngine(name="r0"), PinningEngine(name="r1")]
    router = PrefixRouter(engines)
    await router.generate(ask("a", "one?"))
    await router.generate(ask("b", "two?"))
    held = [i for i, s in enumerate(router.stats()) if s.reasons]
    tokens = tuple(await router.tokenize(await router.render(ask("b", "two?"))))
    owner = router.choose(tokens).replica
    assert router.pin_prefix(tokens, 9.0)
    assert [tokens in e.pins for e in engines] == [i == owner for i in range(2)]
    assert sorted(held) == [0, 1]
    assert router.unpin_prefix(tokens) and all(not e.pins for e in engines)
    assert not router.unpin_prefix(tokens)


@pytest.mark.anyio
async def test_router_prefills_on_a_routed_replica_and_reports_no_cache_events() -> None:
    engines = [PinningEngine(name="r0"), PinningEngine(name="r1")]
    router = PrefixRouter(engines)
    usage = await router.prefill(ask("a", "warm?"))
    assert usage.computed_tokens == len(await router.tokenize(await router.render(ask("a", "warm?"))))
    assert sum(len(e.prefilled) for e in engines) == 1
    assert all(s.outstanding == 0 for s in router.stats())
    assert router.subscribe_cache_events(lambda event: None) is None
    assert router.cache_salt("tenant") is None
    plain = PrefixRouter(replicas(2))
    assert not plain.pin_prefix((1, 2), 1.0)
    assert (await plain.prefill(ask("a", "warm?"))).completion_tokens == 1
