"""The scheduler's engine seam: optional protocols instead of probes, streams that release what they hold."""

from __future__ import annotations

import ast
import io
import tokenize
from dataclasses import replace
from pathlib import Path

import anyio
import pytest
from _engines import PinningEngine

import agentflow
from agentflow.engines import (
    Capabilities,
    FunctionEngine,
    GenerationRequest,
    Message,
    RecordingEngine,
    RequestHints,
    TestEngine,
    WrapperEngine,
)
from agentflow.scheduler import PrefixRouter, RadixTree, Scheduler

PACKAGE = Path(agentflow.__file__).parent
SEAM = {
    "scheduler/_scheduler.py": PACKAGE / "scheduler" / "_scheduler.py",
    "scheduler/_radix.py": PACKAGE / "scheduler" / "_radix.py",
    "scheduler/_blocks.py": PACKAGE / "scheduler" / "_blocks.py",
    "engines/_wrapper.py": PACKAGE / "engines" / "_wrapper.py",
    "scheduler/_router.py": PACKAGE / "scheduler" / "_router.py",
}
PROBES = {"getattr", "hasattr", "setattr"}


@pytest.mark.parametrize("module", list(SEAM))
def test_engine_seam_has_no_attribute_probes_and_no_type_ignores(module: str) -> None:
    source = SEAM[module].read_text(encoding="utf-8")
    probes = [
        f"{module}:{node.lineno}: {node.func.id}(...)"
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in PROBES
    ]
    assert probes == [], "use isinstance on the engine protocols (agentflow.engines) instead"
    ignores = [
        f"{module}:{tok.start[0]}: {tok.string}"
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT and "type: ignore" in tok.string
    ]
    assert ignores == []


def test_llm_call_primitive_does_not_probe_streams() -> None:
    source = (PACKAGE / "runtime" / "_llm.py").read_text(encoding="utf-8")
    calls = [
        node.func.id
        for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in PROBES
    ]
    assert calls == []


SYSTEM = "You are agent a. " + " ".join(f"rule{i}" for i in range(40))


def _request(question: str, *, agent: str = "a", max_tokens: int = 4) -> GenerationRequest:
    return GenerationRequest(
        messages=(Message("system", SYSTEM), Message("user", question)),
        max_tokens=max_tokens,
        hints=RequestHints(workflow_id="w", agent=agent),
    )


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_abandoned_stream_releases_its_slot_and_admission(anyio_backend: str) -> None:
    engine = TestEngine(response="one two three four five", prefix_cache=True)
    scheduler = Scheduler(engine, max_concurrency=1, tpm=100_000, cache_budget_tokens=10_000)
    async with scheduler.stream(_request("first", max_tokens=50)) as chunks:
        async for chunk in chunks:
            assert chunk.text == "one"
            assert scheduler.in_flight == 1 and scheduler.cache_model.locked_tokens > 0
            break
    # No checkpoint since the block exited: released there, not when the generator is collected.
    assert scheduler.in_flight == 0
    assert scheduler.cache_model.locked_tokens == 0
    assert scheduler.metrics().total.requests == 0  # abandoned: no usage, nothing recorded
    done = await scheduler.generate(_request("second"))
    assert done.usage.cached_tokens > 0  # the live context kept the abandoned request's prompt
    assert scheduler.metrics().total.requests == 1


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_abandoned_stream_dispatches_the_waiting_request_as_its_block_exits(anyio_backend: str) -> None:
    engine = TestEngine(response="one two three four five", prefix_cache=True)
    scheduler = Scheduler(engine, max_concurrency=1)
    answers: list[str] = []

    async def waiting() -> None:
        answers.append((await scheduler.generate(_request("waiting", agent="b", max_tokens=50))).text)

    async with anyio.create_task_group() as tg:
        async with scheduler.stream(_request("streamed", max_tokens=50)) as chunks:
            async for _ in chunks:
                tg.start_soon(waiting)
                await anyio.wait_all_tasks_blocked()
                assert (scheduler.in_flight, scheduler.queued) == (1, 1)
                break
        assert (scheduler.in_flight, scheduler.queued) == (1, 0)  # the slot went to the waiting request
    assert answers == ["one two three four five"]
    assert scheduler.in_flight == 0


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_cancelled_stream_releases_its_admission(anyio_backend: str) -> None:
    scheduler = Scheduler(TestEngine(response="one two three four five", prefix_cache=True))
    with anyio.CancelScope() as scope:
        async with scheduler.stream(_request("first", max_tokens=50)) as chunks:
            async for _ in chunks:
                scope.cancel()
                await anyio.lowlevel.checkpoint()
    assert scope.cancelled_caught
    assert scheduler.in_flight == 0 and scheduler.cache_model.locked_tokens == 0


@pytest.mark.anyio
async def test_scheduler_reaches_the_engine_protocols_through_wrappers(tmp_path: Path) -> None:
    engine = PinningEngine()
    scheduler = Scheduler(RecordingEngine(WrapperEngine(engine), tmp_path / "rec.jsonl"), pin_ttl_s=60)
    request = _request("tool call please")
    await scheduler.generate(request)
    assert isinstance(scheduler.cache_model, RadixTree)
    assert engine.cache_subscribers == 1  # the mirror follows the engine's events through both wrappers
    assert scheduler.metrics().prediction_abs_error_tokens == 0
    tokens = await scheduler.pin(request)
    assert engine.pins == {tokens: 60}
    assert scheduler.metrics().pinned_prefixes == 1
    assert await scheduler.prewarm(_request("next step", agent="c"))
    assert len(engine.prefilled) == 1
    assert await scheduler.unpin(tokens) and engine.pins == {}
    await scheduler.aclose()
    assert engine.cache_subscribers == 0


@pytest.mark.anyio
async def test_scheduler_models_its_own_cache_when_the_engine_reports_no_events() -> None:
    engine = TestEngine(prefix_cache=True)
    scheduler = Scheduler(PrefixRouter([engine]))  # a router reports no events: its replicas are several
    request = _request("tool call please")
    await scheduler.generate(request)
    assert engine.cache_subscribers == 0
    tokens = await scheduler.pin(request)
    assert scheduler.metrics().pinned_prefixes == 1  # not mirrored: the model's own pin keeps it
    assert scheduler.cache_model.match(tokens) == len(tokens)


@pytest.mark.anyio
async def test_scheduler_implements_the_protocols_through_its_admission() -> None:
    engine = PinningEngine()
    scheduler = Scheduler(engine, pin_ttl_s=60)
    request = _request("tool call please")
    await scheduler.generate(request)
    tokens = tuple(await engine.tokenize(await engine.render(request)))
    assert scheduler.pin_prefix(tokens, 5.0) is True and engine.pins == {tokens: 5.0}
    assert scheduler.cache_model.locked_tokens == len(tokens)
    assert scheduler.unpin_prefix(tokens) is True and engine.pins == {}
    usage = await scheduler.prefill(replace(_request("warm"), max_tokens=8))
    assert len(engine.prefilled) == 1 and usage.completion_tokens == 0
    assert [r.kind for r in scheduler.metrics().requests] == ["request", "request"]
    assert scheduler.cache_salt("tenant") is None


class SaltingBlockEngine(FunctionEngine):
    """A block-cache engine (like vLLM) that salts its cache per tenant (``CacheSalting``)."""

    def __init__(self) -> None:
        super().__init__(lambda request: "ok")

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(prefix_cache="block", slots=1, block_size=4)

    def cache_salt(self, tenant: str | None) -> str | None:
        return None if tenant is None else f"salt-{tenant}"


@pytest.mark.anyio
async def test_tenant_salted_requests_never_count_as_hits_of_another_tenant(tmp_path: Path) -> None:
    scheduler = Scheduler(RecordingEngine(SaltingBlockEngine(), tmp_path / "rec.jsonl"))
    assert scheduler.cache_salt("a") == "salt-a"  # the salt passes through the wrapper
    for tenant in ("a", "a", "b", None):
        request = _request("the same question")
        await scheduler.generate(replace(request, hints=replace(request.hints, tenant=tenant)))
    predicted = [r.predicted_cached_tokens for r in scheduler.metrics().requests]
    assert predicted[0] == 0 and predicted[1] > 0  # tenant a's second request hits its own blocks
    assert predicted[2:] == [0, 0]  # neither tenant b nor an unsalted request hits tenant a's blocks
