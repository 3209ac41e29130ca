"""Decoding vLLM KV event batches, and the subscriber's configuration errors (no sockets are connected)."""

from __future__ import annotations

import contextlib
import importlib.util
from typing import Any

import msgspec
import pytest
from _vllm_kv_wire import LAYOUTS, Cleared, Event, Layout, Removed, Stored, encode_batch
from hypothesis import given, settings
from hypothesis import strategies as st

from agentflow.engines import TestEngine
from agentflow.errors import ConfigError
from agentflow.scheduler import BlockLRU, KVEventSubscriber, Scheduler
from agentflow.scheduler._kv_events import (
    ClearedBlocks,
    KVEvent,
    RemovedBlocks,
    StoredBlocks,
    block_hash_key,
    decode_batch,
    rank_endpoint,
)

UINT64 = st.integers(0, 2**64 - 1)


def hashes(layout: Layout) -> st.SearchStrategy[int | bytes]:
    return UINT64 if layout == "legacy" else st.one_of(UINT64, st.binary(min_size=1, max_size=32))


@st.composite
def events(draw: st.DrawFn, layout: Layout) -> Event:
    kind = draw(st.sampled_from(["stored", "removed", "cleared"]))
    newer = layout != "legacy"  # the v0.9 layout has no medium, group or extra keys
    medium = draw(st.sampled_from([None, "GPU", "CPU"])) if newer else None
    group = draw(st.sampled_from([None, 0, 1])) if newer else None
    if kind == "cleared":
        return Cleared()
    block_hashes = draw(st.lists(hashes(layout), max_size=3))
    if kind == "removed":
        return Removed(block_hashes, medium=medium, group_idx=group)
    bs = draw(st.sampled_from([1, 4, 16, 64]))
    n = len(block_hashes)
    first_salted: list[tuple[Any, ...] | None] = [("salt",), *([None] * (n - 1))] if n else []
    extra = (
        draw(st.sampled_from([None, [None] * n, [("salt",)] * n, first_salted, [(("mm-hash", 0),)] * n]))
        if newer
        else None
    )
    return Stored(
        block_hashes,
        draw(st.none() | hashes(layout)),
        draw(st.lists(st.integers(0, 2**31), min_size=n * bs, max_size=n * bs)),
        bs,
        lora_id=draw(st.sampled_from([None, 3])),
        medium=medium,
        group_idx=group,
        extra_keys=extra,
        locality=draw(st.sampled_from([None, "LOCAL", "REMOTE"])) if layout == "v034" else None,
    )


def expected(event: Event) -> KVEvent | None:
    """What the model must apply: local GPU blocks of group 0 without adapters or extra keys other than a
    cache salt on a prompt's first block (module docstring)."""
    if isinstance(event, Cleared):
        return ClearedBlocks()
    if event.medium not in (None, "GPU") or event.group_idx not in (None, 0):
        return None
    keys = tuple(block_hash_key(h) for h in event.block_hashes)
    if isinstance(event, Removed):
        return RemovedBlocks(keys)
    if event.lora_id is not None or event.locality not in (None, "LOCAL"):
        return None
    salt = None
    for index, extra in enumerate(event.extra_keys or []):
        if extra is None:
            continue
        if index != 0 or event.parent_block_hash is not None or extra != ("salt",):
            return None
        salt = "salt"
    parent = None if event.parent_block_hash is None else block_hash_key(event.parent_block_hash)
    return StoredBlocks(keys, parent, tuple(event.token_ids), event.block_size, salt)


@settings(deadline=None)
@given(st.data())
def test_decode_reads_every_vllm_layout(data: st.DataObject) -> None:
    layout = data.draw(st.sampled_from(LAYOUTS))
    batch = data.draw(st.lists(events(layout), max_size=6))
    decoded = decode_batch(encode_batch(layout, batch))
    want = [expected(e) for e in batch]
    assert list(decoded.events) == [e for e in want if e is not None]
    assert decoded.skipped == want.count(None)


@given(st.one_of(UINT64, st.binary(max_size=40)), st.one_of(UINT64, st.binary(max_size=40)))
def test_block_hash_key_is_injective_over_ints_and_bytes(a: int | bytes, b: int | bytes) -> None:
    assert (block_hash_key(a) == block_hash_key(b)) == (a == b)
    hash(block_hash_key(a))


MSGPACK_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=12)
    | st.binary(max_size=12)
    | st.sampled_from(["BlockStored", "BlockRemoved", "AllBlocksCleared", "type", "events"]),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=30,
)


@given(st.one_of(st.binary(max_size=64), MSGPACK_VALUES.map(msgspec.msgpack.encode)))
def test_decode_of_anything_returns_a_batch_or_raises_value_error(payload: bytes) -> None:
    with contextlib.suppress(ValueError):
        decode_batch(payload)


def test_decode_ignores_trailing_fields_unknown_keys_and_unknown_event_types() -> None:
    batch: list[Any] = [
        2.0,
        [
            [
                "BlockStored",
                [1],
                None,
                [5, 6],
                2,
                None,
                "GPU",
                None,
                None,
                0,
                "full_attention",
                None,
                "new",
                9,
            ],
            {
                "type": "BlockRemoved",
                "block_hashes": [b"\x07"],
                "medium": "GPU",
                "remaining_copy_counts": [0],
            },
            ["BlockMoved", [1], "CPU"],
            {"type": "AllBlocksCleared", "locality": "local"},
        ],
        0,
        "trailing",
    ]
    decoded = decode_batch(msgspec.msgpack.encode(batch))
    assert decoded.events == (
        StoredBlocks((1,), None, (5, 6), 2),
        RemovedBlocks((block_hash_key(b"\x07"),)),
        ClearedBlocks(),
    )
    assert decoded.skipped == 1


@pytest.mark.parametrize(
    "batch",
    [
        [1.0],  # no events
        [1.0, {"BlockStored": 1}],  # events not an array
        [1.0, [["BlockStored", [1], None, [1, 2], 0]]],  # block_size 0
        [1.0, [["BlockStored", [1.5], None, [1, 2], 2]]],  # a float hash
        [1.0, [{"type": "BlockStored", "block_hashes": [1], "token_ids": ["a"], "block_size": 1}]],
        [1.0, [[7, [1]]]],  # a non-string tag
    ],
)
def test_decode_rejects_batches_that_break_the_schema(batch: Any) -> None:
    with pytest.raises(ValueError):
        decode_batch(msgspec.msgpack.encode(batch))


@pytest.mark.anyio
async def test_subscriber_rejects_a_scheduler_without_a_block_cache_model() -> None:
    scheduler = Scheduler(TestEngine(prefix_cache=True))
    subscriber = KVEventSubscriber(scheduler, "tcp://127.0.0.1:5557")
    with pytest.raises(ConfigError, match=r"needs a BlockLRU.*RadixTree"):
        async with subscriber:
            pass


def test_subscriber_names_the_extra_to_install_when_pyzmq_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "zmq" else real(name, *a)
    )
    with pytest.raises(ConfigError, match=r"pyzmq.*pip install 'agentflow\[vllm-events\]'"):
        KVEventSubscriber(BlockLRU(), "tcp://127.0.0.1:5557")


def test_subscriber_rejects_non_positive_intervals() -> None:
    with pytest.raises(ConfigError, match="poll_interval_s"):
        KVEventSubscriber(BlockLRU(), "tcp://127.0.0.1:5557", poll_interval_s=0)


@pytest.mark.anyio
async def test_subscriber_rejects_an_endpoint_zmq_cannot_use() -> None:
    with pytest.raises(ConfigError, match=r"'tcp://vllm-host': .*'tcp://vllm-host:5557'"):
        async with KVEventSubscriber(BlockLRU(), "tcp://vllm-host"):
            pass


def test_decode_keys_a_vllm_034_salted_prompt_by_its_salt() -> None:
    salted = Stored([1, 2], None, [5, 6, 7, 8], 2, extra_keys=[("tenant-salt",), None])
    later = Stored([3], 2, [9, 10], 2, extra_keys=[None])
    multimodal = Stored([4], None, [1, 1], 2, extra_keys=[(("img", 0),)])
    decoded = decode_batch(encode_batch("v034", [salted, later, multimodal]))
    assert decoded.events == (
        StoredBlocks((1, 2), None, (5, 6, 7, 8), 2, "tenant-salt"),
        StoredBlocks((3,), 2, (9, 10), 2, None),
    )
    assert decoded.skipped == 1


def test_decode_skips_blocks_that_are_remote_to_the_publisher() -> None:
    remote = Stored([1], None, [5, 6], 2, locality="REMOTE")
    local = Stored([1], None, [5, 6], 2, locality="LOCAL")
    decoded = decode_batch(encode_batch("v034", [remote, local]))
    assert decoded.events == (StoredBlocks((1,), None, (5, 6), 2),)
    assert decoded.skipped == 1


def test_rank_endpoint_adds_the_rank_to_the_port_as_vllm_does() -> None:
    assert rank_endpoint("tcp://vllm-host:5557", 0) == "tcp://vllm-host:5557"
    assert rank_endpoint("tcp://vllm-host:5557", 3) == "tcp://vllm-host:5560"
    assert rank_endpoint("tcp://*:5557", 1) == "tcp://*:5558"
    assert rank_endpoint("inproc://kv", 2) == "inproc://kv_dp2"
    with pytest.raises(ConfigError, match="tcp://host:port"):
        rank_endpoint("tcp://vllm-host", 1)


def test_subscriber_rejects_a_data_parallel_size_below_one() -> None:
    with pytest.raises(ConfigError, match="data_parallel_size"):
        KVEventSubscriber(BlockLRU(), "tcp://127.0.0.1:5557", data_parallel_size=0)
