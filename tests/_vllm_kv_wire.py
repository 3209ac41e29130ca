"""vLLM's KV cache event wire format, rebuilt from vLLM's source for the subscriber's tests.

The structs below copy ``vllm/distributed/kv_events.py`` (vllm-project/vllm) and msgspec encodes them, as vLLM's
``ZmqEventPublisher`` does (``msgspec.msgpack.Encoder().encode(batch)``), so the bytes are vLLM's own:

* ``legacy``: the file at commit b4e69e0a (v0.9 era): ``array_like`` batch ``[ts, events]`` and events
  ``["BlockStored", block_hashes, parent_block_hash, token_ids, block_size, lora_id]``, int hashes.
* ``arrays``: the last ``array_like`` events (before vLLM PR #42892): ``medium``, ``lora_name``, ``extra_keys``,
  ``group_idx``, ``kv_cache_spec_*`` appended, ``data_parallel_rank`` on the batch, int or bytes hashes.
* ``maps``: after PR #42892: events are tagged maps ``{"type": "BlockStored", ...}``; the batch stays an array.
* ``map_batch``: the file at commit 0181ea31 as read, where ``EventBatch`` has no ``array_like`` either.

``VllmPublisher`` mirrors ``ZmqEventPublisher``: PUB frames ``[topic, seq (8 bytes big-endian), payload]``, a
buffer of ``(seq, payload)`` and a ROUTER replay socket that answers ``[id, b"", start_seq]`` with
``[id, b"", seq, payload]`` per buffered batch from ``start_seq`` on, then ``[id, b"", -1 (signed), b""]``.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

import msgspec
import zmq

Layout = Literal["legacy", "arrays", "maps", "map_batch"]
LAYOUTS: tuple[Layout, ...] = ("legacy", "arrays", "maps", "map_batch")
Hash = int | bytes


@dataclass(frozen=True)
class Stored:
    """A ``BlockStored`` event, before it is put in a layout's struct (``legacy`` drops the newer fields)."""

    block_hashes: Sequence[Hash]
    parent_block_hash: Hash | None
    token_ids: Sequence[int]
    block_size: int
    lora_id: int | None = None
    medium: str | None = "GPU"
    lora_name: str | None = None
    extra_keys: list[tuple[Any, ...] | None] | None = None
    group_idx: int | None = 0
    kv_cache_spec_kind: str | None = "full_attention"


@dataclass(frozen=True)
class Removed:
    """A ``BlockRemoved`` event."""

    block_hashes: Sequence[Hash]
    medium: str | None = "GPU"
    group_idx: int | None = 0


@dataclass(frozen=True)
class Cleared:
    """An ``AllBlocksCleared`` event."""


Event = Stored | Removed | Cleared


def _legacy() -> tuple[type, type, type, type]:
    # vllm/distributed/kv_events.py @ b4e69e0af33f4698e157a262cc787fe61983cd3d
    class EventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):  # type: ignore[call-arg]
        ts: float
        events: list[Any]

    class KVCacheEvent(msgspec.Struct, array_like=True, omit_defaults=True, gc=False, tag=True):  # type: ignore[call-arg]
        """Base class for all KV cache-related events"""

    class BlockStored(KVCacheEvent):
        block_hashes: list[int]
        parent_block_hash: Optional[int]  # noqa: UP045 - as in vLLM
        token_ids: list[int]
        block_size: int
        lora_id: Optional[int]  # noqa: UP045

    class BlockRemoved(KVCacheEvent):
        block_hashes: list[int]

    class AllBlocksCleared(KVCacheEvent):
        pass

    class KVEventBatch(EventBatch):
        events: list[Union[BlockStored, BlockRemoved, AllBlocksCleared]]  # noqa: UP007

    return KVEventBatch, BlockStored, BlockRemoved, AllBlocksCleared


def _current(*, array_events: bool, array_batch: bool) -> tuple[type, type, type, type]:
    # vllm/distributed/kv_events.py @ 0181ea3173e53eea8cf04a86891488e3dc89bb34 (fields); array_like as per layout
    class EventBatch(msgspec.Struct, array_like=array_batch, omit_defaults=True, gc=False):  # type: ignore[call-arg]
        ts: float
        events: list[Any]
        data_parallel_rank: int | None = None

    class KVCacheEvent(msgspec.Struct, array_like=array_events, omit_defaults=True, gc=False, tag=True):  # type: ignore[call-arg]
        """Base class for all KV cache-related events"""

    class BlockStored(KVCacheEvent):
        block_hashes: list[bytes | int]
        parent_block_hash: bytes | int | None
        token_ids: list[int]
        block_size: int
        lora_id: int | None
        medium: str | None
        lora_name: str | None
        extra_keys: list[tuple[Any, ...] | None] | None = None
        group_idx: int | None = None
        kv_cache_spec_kind: str | None = None
        kv_cache_spec_sliding_window: int | None = None

    class BlockRemoved(KVCacheEvent):
        block_hashes: list[bytes | int]
        medium: str | None
        group_idx: int | None = None

    class AllBlocksCleared(KVCacheEvent):
        pass

    class KVEventBatch(EventBatch):
        events: list[BlockStored | BlockRemoved | AllBlocksCleared]

    return KVEventBatch, BlockStored, BlockRemoved, AllBlocksCleared


_STRUCTS = {
    "legacy": _legacy(),
    "arrays": _current(array_events=True, array_batch=True),
    "maps": _current(array_events=False, array_batch=True),
    "map_batch": _current(array_events=False, array_batch=False),
}
_ENCODER = msgspec.msgpack.Encoder()


def encode_batch(layout: Layout, events: Sequence[Event], ts: float = 1.0) -> bytes:
    """The msgpack payload vLLM publishes for ``events`` in ``layout``."""
    batch_cls, stored_cls, removed_cls, cleared_cls = _STRUCTS[layout]
    structs: list[Any] = []
    for event in events:
        if isinstance(event, Stored):
            common = (
                list(event.block_hashes),
                event.parent_block_hash,
                list(event.token_ids),
                event.block_size,
            )
            if layout == "legacy":
                structs.append(stored_cls(*common, event.lora_id))
            else:
                structs.append(
                    stored_cls(
                        *common,
                        event.lora_id,
                        event.medium,
                        event.lora_name,
                        extra_keys=event.extra_keys,
                        group_idx=event.group_idx,
                        kv_cache_spec_kind=event.kv_cache_spec_kind,
                    )
                )
        elif isinstance(event, Removed):
            if layout == "legacy":
                structs.append(removed_cls(list(event.block_hashes)))
            else:
                structs.append(removed_cls(list(event.block_hashes), event.medium, group_idx=event.group_idx))
        else:
            structs.append(cleared_cls())
    batch = batch_cls(ts, structs) if layout == "legacy" else batch_cls(ts, structs, data_parallel_rank=0)
    payload: bytes = _ENCODER.encode(batch)
    return payload


@dataclass
class VllmPublisher:
    """vLLM's ``ZmqEventPublisher`` on 127.0.0.1 (random ports), publishing from the caller's thread.

    ``publish(..., drop=True)`` takes a sequence number and buffers the batch for replay without sending it,
    as a PUB socket silently drops past its high-water mark. ``restart()`` starts the sequence again at 0, as a
    restarted vLLM does.
    """

    layout: Layout
    topic: str = "kv-events"
    replay: bool = False
    endpoint: str = field(init=False)
    replay_endpoint: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._pub = self._ctx.socket(zmq.PUB)
        self._pub.setsockopt(zmq.LINGER, 0)
        self._pub.bind("tcp://127.0.0.1:*")
        self.endpoint = self._pub.getsockopt_string(zmq.LAST_ENDPOINT)
        self._seq = itertools.count()
        self._buffer: list[tuple[int, bytes]] = []
        self._lock = threading.Lock()
        self._running = True
        self._thread: threading.Thread | None = None
        if self.replay:
            router = self._ctx.socket(zmq.ROUTER)
            router.setsockopt(zmq.LINGER, 0)
            router.bind("tcp://127.0.0.1:*")
            self.replay_endpoint = router.getsockopt_string(zmq.LAST_ENDPOINT)
            self._thread = threading.Thread(target=self._serve_replay, args=(router,), daemon=True)
            self._thread.start()

    def publish(self, *events: Event, drop: bool = False) -> int:
        """Encode and send one batch; returns its sequence number."""
        seq = next(self._seq)
        payload = encode_batch(self.layout, events)
        if not drop:
            self._pub.send_multipart((self.topic.encode(), seq.to_bytes(8, "big"), payload))
        with self._lock:
            self._buffer.append((seq, payload))
        return seq

    def publish_payload(self, payload: bytes) -> int:
        """Send any payload under the next sequence number (a malformed batch); returns the number."""
        seq = next(self._seq)
        self._pub.send_multipart((self.topic.encode(), seq.to_bytes(8, "big"), payload))
        return seq

    def send_frames(self, frames: Sequence[bytes]) -> None:
        """Send raw frames (a malformed message)."""
        self._pub.send_multipart(list(frames))

    def restart(self) -> None:
        """Forget everything and number batches from 0 again."""
        self._seq = itertools.count()
        with self._lock:
            self._buffer.clear()

    def close(self) -> None:
        self._running = False
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._ctx.destroy(linger=0)

    def _serve_replay(self, router: zmq.Socket[bytes]) -> None:
        # ZmqEventPublisher._service_replay, in its own thread (vLLM polls it from its publisher thread).
        while self._running:
            if not router.poll(20):
                continue
            frames = router.recv_multipart()
            if len(frames) != 3:
                continue
            client_id, _, start_seq_bytes = frames
            start_seq = int.from_bytes(start_seq_bytes, "big")
            with self._lock:
                buffered = list(self._buffer)
            for seq, payload in buffered:
                if seq >= start_seq:
                    router.send_multipart((client_id, b"", seq.to_bytes(8, "big"), payload))
            router.send_multipart((client_id, b"", (-1).to_bytes(8, "big", signed=True), b""))
