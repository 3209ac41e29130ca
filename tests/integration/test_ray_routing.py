"""Engine replicas as Ray actors (each holding a real LlamaCppEngine) behind the prefix-affinity router."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import anyio
import pytest

from agentflow import Ok, generate, par, run
from agentflow.dsl import LLMCall
from agentflow.engines import GenerationRequest, LlamaCppEngine, LlamaCppStats, Message, RayEngine
from agentflow.errors import EngineRequestError
from agentflow.scheduler import PrefixRouter

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'agentflow[ray]')")

DOCS = {
    "bakery": "You answer questions about a small bakery in one word. The bakery opens at seven, sells rye "
    "bread, croissants and plum cake, closes on Mondays and takes orders for birthday cakes by phone.",
    "garage": "You answer questions about a bicycle garage in one word. The garage repairs brakes, chains and "
    "gears, sells second-hand city bikes, and lends tools to members every Saturday morning.",
}


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> Iterator[None]:
    root = str(Path(__file__).parents[2])
    path = os.pathsep.join([root, *(p for p in sys.path if p)])
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def router() -> AsyncIterator[PrefixRouter]:
    factory = functools.partial(LlamaCppEngine, n_ctx=512, n_threads=1, seed=0)
    replicas = [await RayEngine.start(factory, options={"num_cpus": 1}, name=f"replica{i}") for i in range(2)]
    router = PrefixRouter(replicas, min_gain_tokens=8)
    try:
        yield router
    finally:
        await router.aclose()


def ask(doc: str, question: str, max_tokens: int = 2) -> GenerationRequest:
    return GenerationRequest(
        messages=(Message("system", DOCS[doc]), Message("user", question)), max_tokens=max_tokens
    )


async def test_replicas_run_in_actor_processes_and_report_engine_stats(router: PrefixRouter) -> None:
    replica = router.replicas[0]
    assert isinstance(replica, RayEngine)
    assert replica.name == "replica0"
    assert replica.capabilities.prefix_cache == "exact" and replica.capabilities.streaming is False
    tokens = await router.tokenize("Hello there")
    assert tokens and all(isinstance(t, int) for t in tokens)
    completion = await replica.generate(GenerationRequest(prompt="Hello", max_tokens=1))
    assert completion.usage.prompt_tokens > 0
    stats = await replica.engine_stats()
    assert isinstance(stats, LlamaCppStats) and stats.requests >= 1


async def test_requests_sharing_a_prefix_reuse_the_replica_cache(router: PrefixRouter) -> None:
    before = [s.requests for s in router.stats()]
    first = {}
    for (
        doc
    ) in DOCS:  # route() + run on the chosen replica + done(): what generate() does, keeping the decision
        first[doc] = decision = await router.route(ask(doc, "When?"))
        await router.replicas[decision.replica].generate(ask(doc, "When?"))
        router.done(decision)
    assert first["bakery"].replica != first["garage"].replica  # new prefixes spread
    completions = []
    for doc in DOCS:
        for question in ("What is sold?", "Which day is special?"):
            completions.append((doc, await router.generate(ask(doc, question))))
    after = router.stats()
    assert sum(s.requests for s in after) - sum(before) == 6
    assert [s.outstanding for s in after] == [0, 0]
    for doc, completion in completions:
        assert completion.usage.cached_tokens > 0, doc  # the replica's engine reused the prefix
    for doc, decision in first.items():
        assert after[decision.replica].reasons.get("affinity", 0) >= 2, doc


async def test_router_serves_a_parallel_workflow_on_ray_replicas(router: PrefixRouter) -> None:
    flows = [
        generate(list(ask(doc, q).messages or ()), max_tokens=2) for doc in DOCS for q in ("Why?", "Who?")
    ]
    out = await run(par(*flows), engine=router)
    assert isinstance(out, Ok), out
    assert len(out.value) == 4
    calls = [e for e in out.trace if isinstance(e, LLMCall)]
    assert len(calls) == 4 and all(e.prompt_tokens for e in calls)


async def test_actor_error_keeps_its_type_when_the_request_is_invalid(router: PrefixRouter) -> None:
    too_long = GenerationRequest(prompt="word " * 600, max_tokens=4)  # exceeds n_ctx=512
    with pytest.raises(EngineRequestError):
        await router.replicas[1].generate(too_long)


async def test_cancelled_request_cancels_the_actor_task_and_the_replica_keeps_serving(
    router: PrefixRouter,
) -> None:
    replica = router.replicas[0]
    assert isinstance(replica, RayEngine)
    before = await replica.engine_stats()
    assert isinstance(before, LlamaCppStats)
    with anyio.move_on_after(1.0) as scope:
        await replica.generate(GenerationRequest(prompt="1, 2, 3, 4, 5, 6, 7, 8,", max_tokens=400))
    assert scope.cancelled_caught
    completion = await replica.generate(GenerationRequest(prompt="Hi", max_tokens=1))
    assert completion.usage.prompt_tokens > 0
    after = await replica.engine_stats()
    assert isinstance(after, LlamaCppStats)
    # A request that ran to completion would be counted; the cancelled one was stopped inside the actor.
    assert after.requests - before.requests == 1
    assert after.completion_tokens - before.completion_tokens == completion.usage.completion_tokens
