"""KVEventSubscriber against a real ZMQ publisher that sends vLLM's exact wire bytes (see ``_vllm_kv_wire``).

Every test runs on asyncio and on trio. Nothing sleeps to synchronize: tests wait, under a time limit, until
the subscriber's ``stats()`` show what was published.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager

import anyio
import msgspec
import pytest
from _vllm_kv_wire import LAYOUTS, Cleared, Layout, Removed, Stored, VllmPublisher, rank_publishers

from agentflow.engines import Capabilities, FunctionEngine, GenerationRequest
from agentflow.scheduler import BlockLRU, KVEventStats, KVEventSubscriber, Scheduler

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

BS = 4
PROMPT = tuple(range(100, 113))  # 13 tokens: three full blocks of 4 and one token to compute


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    backend: str = request.param
    return backend


@pytest.fixture
def publisher() -> Iterator[VllmPublisher]:
    pub = VllmPublisher("maps")
    yield pub
    pub.close()


@pytest.fixture(params=["maps", "v034"])
def replay_publisher(request: pytest.FixtureRequest) -> Iterator[VllmPublisher]:
    """Replies [b"", seq, payload] (before vLLM 0.34) or [b"", topic, seq, payload] (0.34)."""
    pub = VllmPublisher(request.param, replay=True)
    yield pub
    pub.close()


async def wait_until(sub: KVEventSubscriber, ready: Callable[[KVEventStats], bool]) -> KVEventStats:
    """Wait (at most 10 s) until the subscriber's stats satisfy ``ready``."""
    with anyio.fail_after(10):
        while not ready(stats := sub.stats()):
            await anyio.sleep(0.002)
    return stats


@asynccontextmanager
async def subscribed(pub: VllmPublisher, target: BlockLRU | Scheduler) -> AsyncIterator[KVEventSubscriber]:
    """A running subscriber that has joined the stream: ZMQ drops what a PUB sends before SUB has connected,
    so empty batches are published until one arrives."""
    async with KVEventSubscriber(
        target,
        pub.endpoint,
        topic=pub.topic,
        replay_endpoint=pub.replay_endpoint,
        poll_interval_s=0.02,
    ) as sub:
        with anyio.fail_after(10):
            while sub.stats().batches == 0:
                pub.publish()
                with anyio.move_on_after(0.05):
                    await wait_until(sub, lambda s: s.batches > 0)
        yield sub


def blocks(tokens: tuple[int, ...], salt: int = 0) -> list[int]:
    """Engine block hashes for the full blocks of ``tokens`` (any distinct ints will do)."""
    return [hash((salt, tokens[: i + BS])) & (2**64 - 1) for i in range(0, len(tokens) - BS + 1, BS)]


@pytest.mark.parametrize("layout", LAYOUTS)
async def test_model_follows_stored_removed_and_cleared_events_in_every_vllm_layout(layout: Layout) -> None:
    pub = VllmPublisher(layout)
    try:
        model = BlockLRU(block_size=BS)
        ints = blocks(PROMPT)
        hashes = ints if layout in ("legacy", "arrays") else [h.to_bytes(32, "big") for h in ints]
        async with subscribed(pub, model) as sub:
            pub.publish(Stored(hashes[:2], None, PROMPT[:8], BS))
            await wait_until(sub, lambda s: s.events == 1)
            assert model.match(PROMPT) == 8

            pub.publish(Stored(hashes[2:3], hashes[1], PROMPT[8:12], BS))
            await wait_until(sub, lambda s: s.events == 2)
            assert model.match(PROMPT) == 12

            pub.publish(Removed(hashes[2:3]), Removed(hashes[1:2]))
            await wait_until(sub, lambda s: s.events == 4)
            assert model.match(PROMPT) == 4

            pub.publish(Cleared())
            stats = await wait_until(sub, lambda s: s.events == 5)
            assert model.match(PROMPT) == 0
            assert (stats.gaps, stats.decode_errors, stats.skipped_events) == (0, 0, 0)
    finally:
        pub.close()


async def test_events_for_other_media_groups_and_adapters_are_skipped(publisher: VllmPublisher) -> None:
    model = BlockLRU(block_size=BS)
    h = blocks(PROMPT)
    async with subscribed(publisher, model) as sub:
        publisher.publish(
            Stored(h[:1], None, PROMPT[:4], BS, medium="CPU"),
            Stored(h[:1], None, PROMPT[:4], BS, group_idx=1),
            Stored(h[:1], None, PROMPT[:4], BS, lora_id=7, lora_name="sql"),
            Stored(h[:1], None, PROMPT[:4], BS, extra_keys=[(("mm-hash", 0),)]),  # (identifier, offset)
        )
        await wait_until(sub, lambda s: s.skipped_events == 4)
        assert model.match(PROMPT) == 0

        publisher.publish(Stored(h[:1], None, PROMPT[:4], BS, extra_keys=[None]))
        publisher.publish(Removed(h[:1], medium="CPU"))  # the CPU copy goes; the GPU block stays
        stats = await wait_until(sub, lambda s: s.skipped_events == 5)
        assert stats.events == 1
        assert model.match(PROMPT) == 4


async def test_scheduler_predicts_cached_tokens_from_the_engines_events(publisher: VllmPublisher) -> None:
    class BlockEngine(FunctionEngine):
        @property
        def capabilities(self) -> Capabilities:
            return Capabilities(prefix_cache="block", slots=2, block_size=BS)

    scheduler = Scheduler(BlockEngine(lambda request: "ok"))
    request = GenerationRequest(prompt="a prompt long enough for a few blocks", max_tokens=4)
    tokens = tuple(await scheduler.tokenize(await scheduler.render(request)))
    stored = 3 * BS
    assert len(tokens) > stored
    async with subscribed(publisher, scheduler) as sub:
        h = blocks(tokens)
        publisher.publish(Stored(h[:3], None, tokens[:stored], BS))
        await wait_until(sub, lambda s: s.events == 1)
        await scheduler.generate(request)
    assert scheduler.metrics().requests[0].predicted_cached_tokens == stored
    await scheduler.aclose()


async def test_gap_without_replay_is_counted_and_leaves_the_removed_blocks_until_the_engine_reuses_them(
    publisher: VllmPublisher,
) -> None:
    model = BlockLRU(block_size=BS)
    h = blocks(PROMPT)
    async with subscribed(publisher, model) as sub:
        publisher.publish(Stored(h[:2], None, PROMPT[:8], BS))
        publisher.publish(Removed(h[:2]), drop=True)
        publisher.publish(Stored(blocks(PROMPT, salt=1)[:1], None, (7, 7, 7, 7), BS))
        stats = await wait_until(sub, lambda s: s.events == 2)
        assert (stats.gaps, stats.missed_batches, stats.replayed_batches) == (1, 1, 0)
        assert model.match(PROMPT) == 8  # the missed removal: an over-estimate, not a reset

        # The engine recomputes the prefix (same hashes) and evicts it again: the model is right again.
        publisher.publish(Stored(h[:2], None, PROMPT[:8], BS))
        publisher.publish(Removed(h[:2]))
        stats = await wait_until(sub, lambda s: s.events == 4)
        assert model.match(PROMPT) == 0
        assert model.match((7, 7, 7, 7, 0)) == 4
        assert stats.gaps == 1


async def test_gap_is_filled_in_order_from_the_replay_endpoint(replay_publisher: VllmPublisher) -> None:
    publisher = replay_publisher
    model = BlockLRU(block_size=BS)
    h = blocks(PROMPT)
    async with subscribed(publisher, model) as sub:
        publisher.publish(Stored(h[:1], None, PROMPT[:4], BS), drop=True)
        publisher.publish(Stored(h[1:3], h[0], PROMPT[4:12], BS), drop=True)
        publisher.publish(Removed(h[2:3]), drop=True)
        last = publisher.publish(Stored(blocks(PROMPT, salt=1)[:1], None, (7, 7, 7, 7), BS))
        stats = await wait_until(sub, lambda s: s.last_seq == last and s.events == 4)
        assert (stats.gaps, stats.replayed_batches, stats.missed_batches) == (1, 3, 0)
        assert model.match(PROMPT) == 8
        assert model.match((7, 7, 7, 7, 0)) == 4


async def test_malformed_messages_are_counted_and_the_stream_goes_on(publisher: VllmPublisher) -> None:
    model = BlockLRU(block_size=BS)
    h = blocks(PROMPT)
    async with subscribed(publisher, model) as sub:
        topic = publisher.topic.encode()
        publisher.send_frames([topic, b"\x00" * 8])  # two frames
        publisher.send_frames([topic, b"\x00\x01", b"\x90"])  # a 2-byte sequence number
        publisher.publish_payload(b"\xc1")  # 0xc1 is never valid msgpack
        publisher.publish_payload(msgspec.msgpack.encode({"a": 1}))  # not a batch
        publisher.publish_payload(msgspec.msgpack.encode([1.0, [["BlockStored"]], 0]))  # no block hashes
        publisher.publish_payload(msgspec.msgpack.encode([1.0, [{"block_hashes": [1]}], 0]))  # no type tag
        publisher.publish(Stored(h[:1], None, PROMPT[:4], BS))
        stats = await wait_until(sub, lambda s: s.events == 1)
        assert stats.decode_errors == 6
        assert (stats.gaps, stats.restarts) == (0, 0)
        assert model.match(PROMPT) == 4


async def test_publisher_restart_clears_the_model(publisher: VllmPublisher) -> None:
    model = BlockLRU(block_size=BS)
    h = blocks(PROMPT)
    async with subscribed(publisher, model) as sub:
        publisher.publish(Stored(h[:2], None, PROMPT[:8], BS))
        await wait_until(sub, lambda s: s.events == 1)
        publisher.restart()
        publisher.publish(Stored(blocks(PROMPT, salt=1)[:1], None, (7, 7, 7, 7), BS))
        stats = await wait_until(sub, lambda s: s.restarts == 1 and s.events == 3)
        assert (stats.last_seq, stats.gaps) == (0, 0)
        assert model.match(PROMPT) == 0
        assert model.match((7, 7, 7, 7, 0)) == 4


async def test_first_event_of_a_default_server_rebases_the_model_instead_of_failing(
    publisher: VllmPublisher,
) -> None:
    model = BlockLRU(block_size=16)  # assumed; the server publishes 4-token blocks
    model.acquire(PROMPT)  # an in-flight request, re-keyed with the model
    async with subscribed(publisher, model) as sub:
        publisher.publish(Stored(blocks(PROMPT)[:2], None, PROMPT[:8], BS))
        await wait_until(sub, lambda s: s.events == 1)
        assert model.block_size == BS
        assert model.match(PROMPT) == 12  # the request's own blocks (in flight) and the stored ones
        model.release(PROMPT)
        assert model.match(PROMPT) == 8  # the engine reported two blocks; the rest was only a prediction


async def test_default_64_token_blocks_are_followed_without_configuration() -> None:
    pub = VllmPublisher("v034")
    try:
        model = BlockLRU()
        assert model.block_size == 64
        prompt = tuple(range(1000, 1200))
        h = [hash((0, prompt[: i + 64])) & (2**64 - 1) for i in range(0, 192, 64)]
        async with subscribed(pub, model) as sub:
            pub.publish(Stored(h, None, prompt[:192], 64))
            await wait_until(sub, lambda s: s.events == 1)
            assert model.match(prompt) == 192
    finally:
        pub.close()


async def test_salted_blocks_count_only_for_their_tenant(publisher: VllmPublisher) -> None:
    pub = VllmPublisher("v034")
    try:
        model = BlockLRU(block_size=BS)
        h = blocks(PROMPT, salt=9)
        async with subscribed(pub, model) as sub:
            pub.publish(Stored(h[:2], None, PROMPT[:8], BS, extra_keys=[("salt-a",), None]))
            pub.publish(Stored(h[2:3], h[1], PROMPT[8:12], BS))
            await wait_until(sub, lambda s: s.events == 2)
            assert model.match(PROMPT, namespace="salt-a") == 12
            assert model.match(PROMPT, namespace="salt-b") == 0
            assert model.match(PROMPT) == 0
    finally:
        pub.close()


async def test_subscriber_follows_two_data_parallel_ranks() -> None:
    rank0, rank1 = rank_publishers("v034", 2)
    try:
        model = BlockLRU(block_size=BS)
        other = (7, 7, 7, 7, 8, 8, 8, 8, 9)
        async with KVEventSubscriber(
            model, rank0.endpoint, topic=rank0.topic, data_parallel_size=2, poll_interval_s=0.02
        ) as sub:
            with anyio.fail_after(10):  # join both streams (ZMQ drops what is sent before SUB connects)
                while None in sub.stats().last_seq_by_rank:
                    for pub in (rank0, rank1):
                        pub.publish()
                    await anyio.sleep(0.02)
            rank0.publish(Stored(blocks(PROMPT)[:2], None, PROMPT[:8], BS))
            rank1.publish(Stored(blocks(other)[:2], None, other[:8], BS))
            await wait_until(sub, lambda s: s.events == 2)
            assert (model.match(PROMPT), model.match(other)) == (8, 8)
            # Rank 1 caches PROMPT's first block too; rank 0 evicts it: rank 1 still holds it.
            rank1.publish(Stored(blocks(PROMPT)[:1], None, PROMPT[:4], BS))
            rank0.publish(Removed(blocks(PROMPT)[:2]))
            stats = await wait_until(sub, lambda s: s.events == 4)
            assert (model.match(PROMPT), model.match(other)) == (4, 8)
            rank1.publish(Cleared())
            await wait_until(sub, lambda s: s.events == 5)
            assert (model.match(PROMPT), model.match(other)) == (0, 0)
            assert stats.gaps == 0 and len(stats.last_seq_by_rank) == 2
    finally:
        rank0.close()
        rank1.close()


async def test_exceptions_of_the_body_propagate_unchanged(publisher: VllmPublisher) -> None:
    with pytest.raises(KeyError, match="from the body"):
        async with subscribed(publisher, BlockLRU(block_size=BS)):
            raise KeyError("from the body")
