"""vLLM's KV cache event wire format, rebuilt from vLLM's source for the subscriber's tests.

The structs below copy ``vllm/distributed/kv_events.py`` (vllm-project/vllm) and msgspec encodes them, as vLLM's
``ZmqEventPublisher`` does (``msgspec.msgpack.Encoder().encode(batch)``), so the bytes are vLLM's own:

* ``legacy``: the file at commit b4e69e0a (v0.9 era): ``array_like`` batch ``[ts, events]`` and events
  ``["BlockStored", block_hashes, parent_block_hash, token_ids, block_size, lora_id]``, int hashes.
* ``arrays``: the last ``array_like`` events (before vLLM PR #42892): ``medium``, ``lora_name``, ``extra_keys``,
  ``group_idx``, ``kv_cache_spec_*`` appended, ``data_parallel_rank`` on the batch, int or bytes hashes.
* ``maps``: after PR #42892: events are tagged maps ``{"type": "BlockStored", ...}``; the batch stays an array.
* ``map_batch``: the file at commit 0181ea31 as read, where ``EventBatch`` has no ``array_like`` either.
* ``v034``: vLLM 0.34: an ``array_like`` batch of tagged-map events; ``BlockStored`` gains ``event_version``
  (between ``lora_name`` and ``extra_keys``), ``locality`` and ``ownership``; ``extra_keys`` entries are typed
  ``ExtraKey`` structs (``CacheSaltKey`` ``{"type": "cache_salt", "salt": ...}``, ``LegacyExtraKey``, ...).

``VllmPublisher`` mirrors ``ZmqEventPublisher``: PUB frames ``[topic, seq (8 bytes big-endian), payload]``, a
buffer of ``(seq, payload)`` and a ROUTER replay socket that answers ``[id, b"", start_seq]`` with, per buffered
batch from ``start_seq`` on, ``[id, b"", topic, seq, payload]`` and then ``[id, b"", b"", -1 (signed), b""]``
(vLLM 0.34, layout ``v034``), or ``[id, b"", seq, payload]`` and ``[id, b"", -1, b""]`` (the older layouts).
``VllmPublisher(rank=r, port=p)`` binds where data-parallel rank ``r`` of a server on port ``p - r`` publishes.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Optional, Union

import msgspec
import zmq

Layout = Literal["legacy", "arrays", "maps", "map_batch", "v034"]
LAYOUTS: tuple[Layout, ...] = ("legacy", "arrays", "maps", "map_batch", "v034")
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
    locality: str | None = None  # v034 only
    ownership: str | None = None  # v034 only


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


def _v034() -> tuple[type, type, type, type, type, type]:
    # vllm/distributed/kv_events.py as of vLLM 0.34 (EventBatch array_like; events tagged maps; typed extra keys)
    class EventBatch(msgspec.Struct, array_like=True, omit_defaults=True, gc=False):  # type: ignore[call-arg]
        ts: float
        events: list[Any]
        data_parallel_rank: int | None = None

    class KVCacheEvent(msgspec.Struct, omit_defaults=True, gc=False, tag=True):  # type: ignore[call-arg]
        """Base class for all KV cache-related events"""

    class ExtraKey(msgspec.Struct, gc=False, frozen=True, tag=True):  # type: ignore[call-arg]
        pass

    class CacheSaltKey(ExtraKey, frozen=True, tag="cache_salt"):  # type: ignore[call-arg]
        salt: str

    class LegacyExtraKey(ExtraKey, frozen=True, tag="legacy"):  # type: ignore[call-arg]
        value: Any

    class BlockStored(KVCacheEvent):
        block_hashes: list[bytes | int]
        parent_block_hash: bytes | int | None
        token_ids: list[int]
        block_size: int
        lora_id: int | None
        medium: str | None
        lora_name: str | None
        event_version: int = 1
        extra_keys: list[tuple[CacheSaltKey | LegacyExtraKey, ...] | None] | None = None
        group_idx: int | None = None
        kv_cache_spec_kind: str | None = None
        kv_cache_spec_sliding_window: int | None = None
        locality: str | None = None
        ownership: str | None = None

    class BlockRemoved(KVCacheEvent):
        block_hashes: list[bytes | int]
        medium: str | None
        group_idx: int | None = None
        locality: str | None = None
        ownership: str | None = None

    class AllBlocksCleared(KVCacheEvent):
        pass

    class KVEventBatch(EventBatch):
        events: list[BlockStored | BlockRemoved | AllBlocksCleared]

    return KVEventBatch, BlockStored, BlockRemoved, AllBlocksCleared, CacheSaltKey, LegacyExtraKey


_STRUCTS = {
    "legacy": _legacy(),
    "arrays": _current(array_events=True, array_batch=True),
    "maps": _current(array_events=False, array_batch=True),
    "map_batch": _current(array_events=False, array_batch=False),
}
_V034 = _v034()


def _typed_keys(extra_keys: list[tuple[Any, ...] | None] | None) -> list[tuple[Any, ...] | None] | None:
    """0.34's published form of bare extra keys: a str is the cache salt, anything else a legacy key."""
    if extra_keys is None:
        return None
    salt_key, legacy_key = _V034[4], _V034[5]
    return [
        None if keys is None else tuple(salt_key(k) if isinstance(k, str) else legacy_key(k) for k in keys)
        for keys in extra_keys
    ]


_ENCODER = msgspec.msgpack.Encoder()


def encode_batch(layout: Layout, events: Sequence[Event], ts: float = 1.0) -> bytes:
    """The msgpack payload vLLM publishes for ``events`` in ``layout``."""
    if layout == "v034":
        return _encode_v034(events, ts)
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


def _encode_v034(events: Sequence[Event], ts: float) -> bytes:
    batch_cls, stored_cls, removed_cls, cleared_cls, _, _ = _V034
    structs: list[Any] = []
    for event in events:
        if isinstance(event, Stored):
            structs.append(
                stored_cls(
                    list(event.block_hashes),
                    event.parent_block_hash,
                    list(event.token_ids),
                    event.block_size,
                    event.lora_id,
                    event.medium,
                    event.lora_name,
                    extra_keys=_typed_keys(event.extra_keys),
                    group_idx=event.group_idx,
                    kv_cache_spec_kind=event.kv_cache_spec_kind,
                    locality=event.locality,
                    ownership=event.ownership,
                )
            )
        elif isinstance(event, Removed):
            structs.append(removed_cls(list(event.block_hashes), event.medium, group_idx=event.group_idx))
        else:
            structs.append(cleared_cls())
    payload: bytes = _ENCODER.encode(batch_cls(ts, structs, data_parallel_rank=0))
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
    port: int | None = None
    endpoint: str = field(init=False)
    replay_endpoint: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._pub = self._ctx.socket(zmq.PUB)
        self._pub.setsockopt(zmq.LINGER, 0)
        try:
            self._pub.bind(f"tcp://127.0.0.1:{'*' if self.port is None else self.port}")
        except zmq.ZMQError:
            self._ctx.destroy(linger=0)
            raise
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
            end = (-1).to_bytes(8, "big", signed=True)
            topic = self.topic.encode()
            for seq, payload in buffered:
                if seq >= start_seq:
                    if self.layout == "v034":
                        router.send_multipart((client_id, b"", topic, seq.to_bytes(8, "big"), payload))
                    else:
                        router.send_multipart((client_id, b"", seq.to_bytes(8, "big"), payload))
            if self.layout == "v034":
                router.send_multipart((client_id, b"", b"", end, b""))
            else:
                router.send_multipart((client_id, b"", end, b""))


def rank_publishers(layout: Layout, ranks: int, *, attempts: int = 20) -> list[VllmPublisher]:
    """Publishers on consecutive ports, as the ``ranks`` data-parallel ranks of one vLLM server bind them."""
    for _ in range(attempts):
        first = VllmPublisher(layout)
        port = int(first.endpoint.rsplit(":", 1)[1])
        pubs = [first]
        try:
            for rank in range(1, ranks):
                pubs.append(VllmPublisher(layout, port=port + rank))
        except zmq.ZMQError:  # a neighbouring port is taken: try elsewhere
            for pub in pubs:
                pub.close()
            continue
        return pubs
    raise RuntimeError(f"found no {ranks} free consecutive ports on 127.0.0.1")
