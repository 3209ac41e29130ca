"""Drive a ``BlockLRU`` from a vLLM server's KV cache events (ZMQ PUB, msgpack ``KVEventBatch``).

Start vLLM with events on (and with ``--enable-prompt-tokens-details``, so that its usage reports
``cached_tokens``), then subscribe the scheduler's cache model for as long as it runs::

    vllm serve MODEL --enable-prompt-tokens-details --kv-events-config '{"enable_kv_cache_events": true,
        "publisher": "zmq", "endpoint": "tcp://*:5557", "replay_endpoint": "tcp://*:5558", "topic": "kv-events"}'

    scheduler = Scheduler(engine_from_spec("openai:http://vllm-host:8000/v1#MODEL"))
    async with KVEventSubscriber(
        scheduler, "tcp://vllm-host:5557", topic="kv-events", replay_endpoint="tcp://vllm-host:5558"
    ):
        await agentflow.run(workflow, inputs, engine=scheduler)

From the first event on, the model stops guessing evictions and follows the engine (see ``_blocks``). No
``--block-size`` is needed: the model takes the block size of the engine's events (``BlockLRU.rebase``) when it
differs from the one it assumed. With ``--data-parallel-size N`` every rank publishes on its own port
(``endpoint`` and ``replay_endpoint`` ports plus the rank, as vLLM's ``offset_endpoint_port`` does); pass
``data_parallel_size=N`` and the subscriber follows all of them, each with its own sequence numbers.

Wire format, as ``ZmqEventPublisher`` in vLLM's ``vllm/distributed/kv_events.py`` sends it (read at
commits b4e69e0a, v0.9-era, and 0181ea31, after vLLM PR #42892, and in vLLM 0.34)::

    frames : [topic (utf-8), seq (8 bytes, big-endian unsigned), payload (msgpack)]
    batch  : [ts, [event, ...], data_parallel_rank?]        msgspec array_like; a map {"ts", "events", ...}
                                                            is accepted too
    event  : ["BlockStored", block_hashes, parent_block_hash, token_ids, block_size, lora_id,
              medium?, lora_name?, extra_keys?, group_idx?, kv_cache_spec_kind?, ...]
           | ["BlockRemoved", block_hashes, medium?, group_idx?, ...]
           | ["AllBlocksCleared"]                           tagged arrays (vLLM before #42892)
           | {"type": "BlockStored", "block_hashes": ..., ...}          tagged maps (vLLM after #42892; 0.34
                                                            adds event_version, locality, ownership)
    extra  : extra_keys[i] is block i's tuple of keys: bare values before 0.34 (the cache salt is a str),
             typed maps in 0.34 ({"type": "cache_salt", "salt": ...}, "lora", "mm", "prompt_embeds", ...)
    hash   : int (uint64), or bytes where vLLM leaves them bytes (VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0)
    replay : DEALER -> ROUTER [b"", start_seq (8 bytes)]; for every buffered batch with seq >= start_seq the
             ROUTER answers [b"", topic, seq, payload] (0.34; [b"", seq, payload] before), then
             [b"", b"", -1 (8 bytes, signed), b""] (before: [b"", -1, b""])

Fields are read by position or by name; trailing or unknown fields and unknown event types are ignored
(``omit_defaults`` drops trailing defaults, newer vLLM versions append fields). Bytes hashes become negative
ints (``block_hash_key``), so they are hashable like int hashes and never collide with them.

Which events apply: only GPU-tier (``medium`` ``None``/``"GPU"``) events of the first KV cache group
(``group_idx`` ``None``/``0``) that are local to the publisher (``locality`` ``None``/``"LOCAL"``, no
``ownership`` tier), and only stored blocks without a LoRA adapter, multimodal input or prompt embeddings: the
model chains plain token ids, so such blocks would be credited to prompts that cannot reuse them. A cache salt
is the one extra key the model understands: salted blocks are keyed by their salt, as the scheduler keys
salted requests (``CacheSalting``), so a tenant's blocks only ever count for that tenant. Removals are
filtered by the same medium, group and locality; those of skipped blocks name hashes the model never learned
and change nothing. Skipped events are counted in ``stats()``.

Threads: one task in the subscriber's task group loops ``await anyio.to_thread.run_sync(receive)``. Each
``receive`` call, in a worker thread, waits up to ``poll_interval_s`` for the SUB sockets (one per rank),
drains what is queued, tracks sequence numbers, fetches replays, decodes, and returns the batches; the task
then applies them to the ``BlockLRU`` on the event loop, the only thread that may touch it (its hooks call
back into the scheduler's policy). A socket is used by one thread at a time (each call ends before the next
starts; the sockets are closed after the last one returns), as ZMQ requires. This works alike under asyncio
and trio (``zmq.asyncio`` needs asyncio); stopping waits for the current ``receive`` call, at most
``poll_interval_s`` (plus ``replay_timeout_s`` during a replay).

Sequence numbers (per rank): a jump forward is a gap. A missed ``BlockStored`` makes the model under-estimate
(blocks stored after it are dropped too, their parent being unknown); a missed ``BlockRemoved`` makes it
over-estimate, as the model no longer evicts on its own. Clearing the model would trade that for a wholesale
under-estimate and forget the engine-to-model hash mapping, so a gap is not a resync: with
``replay_endpoint`` the missed batches are fetched from vLLM's replay buffer and applied in order; what
cannot be fetched is counted in ``stats().missed_batches``. The error heals as the engine works: the first
request that counts on a phantom prefix gets it recomputed, which re-stores its blocks, and their next
eviction removes them. A jump back means the publisher restarted with an empty cache: that rank's blocks
are cleared and its new stream is expected from 0. Batches published before the subscriber joined are not a
gap and are not fetched: a history cut short by vLLM's replay buffer (``buffer_steps``) could hold blocks
whose removal it no longer has.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Self, assert_never

import anyio

from agentflow.errors import ConfigError, SchedulerError

from ._blocks import BlockLRU
from ._scheduler import Scheduler

if TYPE_CHECKING:
    import msgspec
    import zmq

__all__ = [
    "ClearedBlocks",
    "DecodedBatch",
    "KVEvent",
    "KVEventStats",
    "KVEventSubscriber",
    "RemovedBlocks",
    "StoredBlocks",
    "block_hash_key",
    "decode_batch",
    "rank_endpoint",
]

logger = logging.getLogger("agentflow.scheduler.kv_events")

_INSTALL_HINT = "pip install 'agentflow[vllm-events]'"
# Most messages one receive() call takes off the SUB socket, so the event loop gets them in bounded bites.
_MAX_DRAIN = 1024
# Positional field order of each event type, from vLLM's structs (fields are only ever appended).
_FIELDS: Mapping[str, tuple[str, ...]] = {
    "BlockStored": (
        "block_hashes",
        "parent_block_hash",
        "token_ids",
        "block_size",
        "lora_id",
        "medium",
        "lora_name",
        "extra_keys",
        "group_idx",
        "kv_cache_spec_kind",
        "kv_cache_spec_sliding_window",
    ),
    "BlockRemoved": ("block_hashes", "medium", "group_idx"),
    "AllBlocksCleared": (),
}


# ---------------------------------------------------------------------------------------------- decoding


@dataclass(frozen=True, slots=True)
class StoredBlocks:
    """vLLM's ``BlockStored``: full blocks cached after ``parent_block_hash`` (``None``: at the start).

    ``cache_salt`` is the salt of the prompt whose first block this event starts with (``None``: unsalted).
    """

    block_hashes: tuple[int, ...]
    parent_block_hash: int | None
    token_ids: tuple[int, ...]
    block_size: int
    cache_salt: str | None = None


@dataclass(frozen=True, slots=True)
class RemovedBlocks:
    """vLLM's ``BlockRemoved``: blocks evicted from the cache."""

    block_hashes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ClearedBlocks:
    """vLLM's ``AllBlocksCleared`` (also applied when the publisher restarts)."""


KVEvent = StoredBlocks | RemovedBlocks | ClearedBlocks


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """The events of one ``KVEventBatch`` that apply to the model, how many were skipped, and the
    data-parallel rank whose endpoint published it (set by the subscriber)."""

    events: tuple[KVEvent, ...]
    skipped: int
    rank: int = 0


class _MalformedError(ValueError):
    """A payload that is not a ``KVEventBatch``; counted and dropped, never raised to the application."""


def block_hash_key(value: object) -> int:
    """The model's key for an engine block hash: an int as is, bytes as a negative int.

    A leading ``0x01`` byte keeps bytes of different lengths apart; the sign keeps them apart from int hashes.

    Raises:
        ValueError: ``value`` is neither an int nor bytes.
    """
    if isinstance(value, bool) or not isinstance(value, int | bytes):
        raise _MalformedError(f"block hash must be int or bytes, got {type(value).__name__}")
    if isinstance(value, bytes):
        return -int.from_bytes(b"\x01" + value, "big")
    return value


def decode_batch(payload: bytes, decoder: msgspec.msgpack.Decoder[object] | None = None) -> DecodedBatch:
    """Decode one msgpack ``KVEventBatch`` payload (any vLLM version's layout, see the module docstring).

    Raises:
        ValueError: The payload is not a ``KVEventBatch``, or a known event lacks a required field.
    """
    if decoder is None:
        _require_extra()
        import msgspec

        decoder = msgspec.msgpack.Decoder()
    try:
        batch = decoder.decode(payload)
    except Exception as exc:  # msgspec.DecodeError, or a nesting/size error from the C decoder
        raise _MalformedError(f"not msgpack: {exc}") from exc
    if isinstance(batch, list):
        if len(batch) < 2:
            raise _MalformedError(f"batch array needs [ts, events, ...], got {len(batch)} fields")
        raw_events = batch[1]
    elif isinstance(batch, dict):
        raw_events = batch.get("events")
    else:
        raise _MalformedError(f"batch must be an array or a map, got {type(batch).__name__}")
    if not isinstance(raw_events, list):
        raise _MalformedError(f"batch events must be an array, got {type(raw_events).__name__}")
    events: list[KVEvent] = []
    skipped = 0
    for raw in raw_events:
        event = _decode_event(raw)
        if event is None:
            skipped += 1
        else:
            events.append(event)
    return DecodedBatch(tuple(events), skipped)


def _decode_event(raw: object) -> KVEvent | None:
    """One event, or ``None`` for an unknown type or one this model must not apply."""
    fields: Mapping[object, object]
    if isinstance(raw, list):
        tag: object = raw[0] if raw else None
        fields = dict(zip(_FIELDS.get(tag, ()) if isinstance(tag, str) else (), raw[1:], strict=False))
    elif isinstance(raw, dict):
        tag, fields = raw.get("type"), raw
    else:
        raise _MalformedError(f"event must be an array or a map, got {type(raw).__name__}")
    if not isinstance(tag, str):
        raise _MalformedError(f"event must carry a string type tag, got {tag!r}")
    if tag not in _FIELDS:
        logger.debug("skipping KV event of unknown type %r", tag)
        return None
    if tag == "AllBlocksCleared":
        return ClearedBlocks()
    if (
        fields.get("medium") not in (None, "GPU")
        or fields.get("group_idx") not in (None, 0)
        or fields.get("locality") not in (None, "LOCAL")
        or fields.get("ownership") is not None
    ):
        return None
    hashes = tuple(block_hash_key(h) for h in _list(fields, "block_hashes"))
    if tag == "BlockRemoved":
        return RemovedBlocks(hashes)
    if fields.get("lora_id") is not None or fields.get("lora_name") is not None:
        return None
    parent = fields.get("parent_block_hash")
    salt = _cache_salt(fields.get("extra_keys"), first_block=parent is None)
    if salt is _UNMODELLED:
        return None
    tokens = tuple(t for t in _list(fields, "token_ids") if isinstance(t, int))
    if len(tokens) != len(_list(fields, "token_ids")):
        raise _MalformedError("BlockStored token_ids must be ints")
    block_size = fields.get("block_size")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise _MalformedError(f"BlockStored block_size must be an int >= 1, got {block_size!r}")
    return StoredBlocks(
        hashes,
        None if parent is None else block_hash_key(parent),
        tokens,
        block_size,
        salt if isinstance(salt, str) else None,
    )


class _Unmodelled:
    """Marks extra keys the model cannot chain (multimodal inputs, prompt embeddings, adapters)."""


_UNMODELLED = _Unmodelled()


def _cache_salt(extra_keys: object, *, first_block: bool) -> str | _Unmodelled | None:
    """The cache salt among a ``BlockStored``'s extra keys; ``_UNMODELLED`` if any other key is present.

    vLLM sends one entry per block; the salt is in the entry of a prompt's first block only. Before 0.34 the
    keys are bare values (the salt a str, since adapters are skipped before this); in 0.34 typed maps.
    """
    if extra_keys is None:
        return None
    if not isinstance(extra_keys, list):
        raise _MalformedError(f"BlockStored extra_keys must be an array, got {type(extra_keys).__name__}")
    salt: str | None = None
    for index, keys in enumerate(extra_keys):
        if keys is None:
            continue
        if not isinstance(keys, list):
            raise _MalformedError(f"BlockStored extra_keys[{index}] must be an array or null")
        for key in keys:
            value = key.get("salt") if isinstance(key, dict) and key.get("type") == "cache_salt" else key
            if not isinstance(value, str) or index != 0 or not first_block:
                return _UNMODELLED
            salt = value
    return salt


def _list(fields: Mapping[object, object], name: str) -> list[object]:
    value = fields.get(name)
    if not isinstance(value, list):
        raise _MalformedError(f"event field {name!r} must be an array, got {type(value).__name__}")
    return value


# ---------------------------------------------------------------------------------------------- subscriber


@dataclass(frozen=True, slots=True)
class KVEventStats:
    """What a ``KVEventSubscriber`` has received and applied.

    Attributes:
        batches: Batches decoded (live and replayed).
        events: Events applied to the model.
        skipped_events: Events not applied: another medium, KV cache group or LoRA adapter, extra hash keys,
            or an unknown event type.
        gaps: Times the sequence number jumped forward.
        replayed_batches: Missed batches fetched from the replay endpoint.
        missed_batches: Batches of a gap that could not be fetched; the model may be off until it heals.
        restarts: Times a sequence number went back (a restarted publisher; its blocks were cleared).
        decode_errors: Messages dropped because they were not a well-formed ``KVEventBatch``.
        last_seq: The highest last sequence number over the ranks (``None``: no batch yet).
        last_seq_by_rank: Per data-parallel rank, the sequence number of its last batch.
    """

    batches: int
    events: int
    skipped_events: int
    gaps: int
    replayed_batches: int
    missed_batches: int
    restarts: int
    decode_errors: int
    last_seq: int | None
    last_seq_by_rank: tuple[int | None, ...] = ()


class KVEventSubscriber:
    """Applies a vLLM server's KV cache events to a ``BlockLRU``, as an async context manager.

    ``async with KVEventSubscriber(scheduler, "tcp://host:5557", topic="kv-events") as sub:`` connects,
    receives and applies events until the block exits; ``sub.stats()`` reports progress. Malformed messages
    are counted and logged, never raised. If the subscriber itself fails (ZMQ fails), the body is cancelled
    and the error is raised from the ``async with``; the body's own exceptions propagate unchanged.

    Args:
        target: A ``Scheduler`` whose cache model is a ``BlockLRU`` (engines with ``prefix_cache="block"``:
            vLLM, OpenAI-compatible servers), or a ``BlockLRU``. A scheduler is prepared on entering
            (``Scheduler.prepare``: the engine probes the server), so its model is the block model.
        endpoint: vLLM's ``endpoint`` with its host, e.g. ``tcp://vllm-host:5557``. With a ``*`` host
            (``tcp://*:5557``) the subscriber binds instead, for a vLLM configured to connect to it.
        topic: vLLM's ``topic`` (a prefix match, as ZMQ subscriptions are; ``""``: everything).
        replay_endpoint: vLLM's ``replay_endpoint`` with its host, to fetch missed batches (``None``: gaps are
            only counted).
        data_parallel_size: vLLM's ``--data-parallel-size``: rank ``r`` publishes on the endpoints' ports
            plus ``r`` (``inproc://`` endpoints get ``_dp<r>``), and the subscriber follows every rank.
        poll_interval_s: Longest a receive call waits, which bounds how long stopping takes.
        replay_timeout_s: Longest one replay request may take.
    """

    def __init__(
        self,
        target: BlockLRU | Scheduler,
        endpoint: str,
        *,
        topic: str = "",
        replay_endpoint: str | None = None,
        data_parallel_size: int = 1,
        poll_interval_s: float = 0.1,
        replay_timeout_s: float = 1.0,
    ) -> None:
        _require_extra()
        import msgspec

        self._decoder: msgspec.msgpack.Decoder[object] = msgspec.msgpack.Decoder()
        self._target = target
        # The model events are applied to: the target itself, or its scheduler's model once prepared.
        self._model: BlockLRU | None = target if isinstance(target, BlockLRU) else None
        if poll_interval_s <= 0 or replay_timeout_s <= 0:
            raise ConfigError(
                f"KVEventSubscriber poll_interval_s and replay_timeout_s must be > 0 seconds, "
                f"got {poll_interval_s} and {replay_timeout_s}"
            )
        if data_parallel_size < 1:
            raise ConfigError(
                f"KVEventSubscriber data_parallel_size must be >= 1 (vLLM's --data-parallel-size), "
                f"got {data_parallel_size}"
            )
        self._endpoint = endpoint
        self._topic = topic
        self._replay_endpoint = replay_endpoint
        # Per rank: the endpoint it publishes on and its replay endpoint (vLLM offsets ports by the rank).
        self._endpoints = [rank_endpoint(endpoint, r) for r in range(data_parallel_size)]
        self._replay_endpoints = [
            None if replay_endpoint is None else rank_endpoint(replay_endpoint, r)
            for r in range(data_parallel_size)
        ]
        self._poll_ms = max(1, round(poll_interval_s * 1000))
        self._replay_timeout_s = replay_timeout_s
        # ZMQ context and one SUB socket per rank: opened on entering, closed after the last receive() returns.
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._subs: list[zmq.Socket[bytes]] = []
        # One worker thread at a time: receive() calls run one after another, never beside each other.
        self._limiter = anyio.CapacityLimiter(1)
        self._cm: AbstractAsyncContextManager[Self] | None = None
        # Per rank, the sequence number of its last batch; None until its first (and after a restart, its seq).
        self._last_seq: list[int | None] = [None] * data_parallel_size
        # Counters, each written by one side only: the worker thread (receive) or the event loop (_apply).
        self._batches = 0
        self._skipped = 0
        self._gaps = 0
        self._replayed = 0
        self._missed = 0
        self._restarts = 0
        self._decode_errors = 0
        self._events = 0
        self._rebased = False

    @property
    def model(self) -> BlockLRU:
        """The model the events are applied to (a scheduler's is known once the subscriber has started)."""
        if self._model is None:
            raise SchedulerError(
                f"KVEventSubscriber for {self._endpoint!r} has not started: its scheduler's cache model is "
                "chosen on entering `async with`"
            )
        return self._model

    def stats(self) -> KVEventStats:
        """Counts of batches, events, gaps and errors so far (over all ranks)."""
        known = [seq for seq in self._last_seq if seq is not None]
        return KVEventStats(
            batches=self._batches,
            events=self._events,
            skipped_events=self._skipped,
            gaps=self._gaps,
            replayed_batches=self._replayed,
            missed_batches=self._missed,
            restarts=self._restarts,
            decode_errors=self._decode_errors,
            last_seq=max(known) if known else None,
            last_seq_by_rank=tuple(self._last_seq),
        )

    async def __aenter__(self) -> Self:
        if self._cm is not None:
            raise SchedulerError(f"KVEventSubscriber for {self._endpoint!r} is already running")
        if self._model is None:
            assert not isinstance(self._target, BlockLRU)
            self._model = _block_model(self._target, await self._target.prepare())
        cm = self._running()
        result = await cm.__aenter__()
        self._cm = cm
        return result

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None:
        cm, self._cm = self._cm, None
        assert cm is not None
        return await cm.__aexit__(exc_type, exc, tb)

    # ------------------------------------------------------------------ event loop side

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[Self]:
        self._open()
        try:
            body_error: Exception | None = None
            own_error: list[Exception] = []
            async with anyio.create_task_group() as tg:

                async def run() -> None:
                    try:
                        await self._run()
                    except Exception as exc:  # re-raised below as itself, not wrapped in an ExceptionGroup
                        own_error.append(exc)
                        tg.cancel_scope.cancel()

                tg.start_soon(run)
                try:
                    yield self
                except Exception as exc:
                    body_error = exc
                finally:
                    tg.cancel_scope.cancel()
            if body_error is not None:
                raise body_error
            if own_error:
                raise own_error[0]
        finally:
            self._close()

    async def _run(self) -> None:
        while True:
            batches = await anyio.to_thread.run_sync(self._receive, limiter=self._limiter)
            for batch in batches:
                self._apply(batch)

    def _apply(self, batch: DecodedBatch) -> None:
        model = self.model
        rank = batch.rank
        for event in batch.events:
            match event:
                case StoredBlocks():
                    if event.block_size != model.block_size:
                        self._adopt_block_size(model, event.block_size)
                    model.on_block_stored(
                        event.block_hashes,
                        event.parent_block_hash,
                        event.token_ids,
                        namespace=event.cache_salt,
                        rank=rank,
                    )
                case RemovedBlocks():
                    model.on_block_removed(event.block_hashes, rank=rank)
                case ClearedBlocks():
                    model.on_all_blocks_cleared(rank=rank)
                case _:
                    assert_never(event)
            self._events += 1

    def _adopt_block_size(self, model: BlockLRU, block_size: int) -> None:
        """The engine's blocks are not the size the model assumed: re-key the model to the engine's."""
        level = logging.WARNING if self._rebased else logging.INFO
        logger.log(
            level,
            "vLLM at %s publishes KV events for %d-token blocks; the model assumed %d: re-keying it to %d "
            "(tell the scheduler with capabilities.block_size, or let OpenAIEngine read it from /metrics)",
            self._endpoint,
            block_size,
            model.block_size,
            block_size,
        )
        model.rebase(block_size)
        self._rebased = True

    def _open(self) -> None:
        import zmq

        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        subs: list[zmq.Socket[bytes]] = []
        for endpoint in self._endpoints:
            sub = ctx.socket(zmq.SUB)
            sub.setsockopt(zmq.LINGER, 0)
            sub.setsockopt(zmq.RCVHWM, 100_000)
            sub.setsockopt(zmq.SUBSCRIBE, self._topic.encode())
            try:
                if "*" in endpoint:
                    sub.bind(endpoint)
                else:
                    sub.connect(endpoint)
            except zmq.ZMQError as exc:
                ctx.destroy(linger=0)
                raise ConfigError(
                    f"KVEventSubscriber cannot use endpoint {endpoint!r}: {exc}; use the endpoint of vLLM's "
                    f"--kv-events-config with the server's host, e.g. 'tcp://vllm-host:5557'"
                ) from exc
            subs.append(sub)
        self._ctx, self._subs = ctx, subs
        self._last_seq = [None] * len(subs)  # a new connection joins each stream afresh

    def _close(self) -> None:
        if self._ctx is not None:
            self._ctx.destroy(linger=0)
        self._ctx = None
        self._subs = []

    # ------------------------------------------------------------------ worker thread side

    def _receive(self) -> list[DecodedBatch]:
        """Worker thread: wait for messages, drain them, track sequence numbers; decoded batches in order."""
        import zmq

        assert self._subs
        out: list[DecodedBatch] = []
        try:
            poller = zmq.Poller()
            for sub in self._subs:
                poller.register(sub, zmq.POLLIN)
            ready = dict(poller.poll(self._poll_ms))
            for rank, sub in enumerate(self._subs):
                if sub not in ready:
                    continue
                for _ in range(_MAX_DRAIN):
                    try:
                        frames = sub.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._on_message(rank, frames, out)
        except zmq.ZMQError as exc:
            raise SchedulerError(f"KV event subscriber for {self._endpoint!r} failed: {exc}") from exc
        return out

    def _on_message(self, rank: int, frames: Sequence[bytes], out: list[DecodedBatch]) -> None:
        # Invariant: a rank's batches enter ``out`` in its sequence order, replayed ones before the live one
        # that revealed the gap, and its ``_last_seq`` only moves forward except when a restart is detected.
        if len(frames) != 3 or len(frames[1]) != 8:
            self._malformed(rank, None, f"expected [topic, 8-byte seq, payload], got {len(frames)} frames")
            return
        seq = int.from_bytes(frames[1], "big")
        last = self._last_seq[rank]
        if last is None:
            expected = seq  # joining: what was published before is not a gap
        elif seq <= last:
            self._restarts += 1
            logger.warning(
                "KV event seq went back from %d to %d at %s: the publisher restarted, clearing its blocks",
                last,
                seq,
                self._endpoints[rank],
            )
            out.append(DecodedBatch((ClearedBlocks(),), 0, rank))
            expected = 0
        else:
            expected = last + 1
        if seq > expected:
            self._gaps += 1
            logger.warning(
                "KV events %d..%d missed at %s%s",
                expected,
                seq - 1,
                self._endpoints[rank],
                "; requesting a replay" if self._replay_endpoints[rank] else " (no replay_endpoint)",
            )
            self._replay(rank, expected, seq, out)
        self._last_seq[rank] = seq
        self._decode_into(rank, seq, frames[2], out)

    def _decode_into(self, rank: int, seq: int, payload: bytes, out: list[DecodedBatch]) -> None:
        try:
            batch = decode_batch(payload, self._decoder)
        except ValueError as exc:
            self._malformed(rank, seq, str(exc))
            return
        self._batches += 1
        self._skipped += batch.skipped
        out.append(DecodedBatch(batch.events, batch.skipped, rank))

    def _malformed(self, rank: int, seq: int | None, reason: str) -> None:
        self._decode_errors += 1
        n = self._decode_errors
        if n & (n - 1) == 0:  # the 1st, 2nd, 4th, 8th, ... so a broken stream cannot flood the log
            logger.warning(
                "dropped malformed KV event message (seq %s) from %s: %s (%d so far)",
                seq,
                self._endpoints[rank],
                reason,
                n,
            )

    def _replay(self, rank: int, start: int, stop: int, out: list[DecodedBatch]) -> None:
        """Fetch a rank's missed batches ``start <= seq < stop`` from its replay endpoint, decode them in order."""
        endpoint = self._replay_endpoints[rank]
        got = {} if endpoint is None else self._fetch_replay(endpoint, start, stop)
        for seq in sorted(got):
            self._decode_into(rank, seq, got[seq], out)
        self._replayed += len(got)
        self._missed += stop - start - len(got)

    def _fetch_replay(self, endpoint: str, start: int, stop: int) -> dict[int, bytes]:
        # A fresh DEALER per request: answers to an earlier request that timed out die with its socket.
        # Replies are [b"", topic, seq, payload] (vLLM 0.34) or [b"", seq, payload] (before): seq and payload
        # are the last two frames either way; the end marker's payload frame is empty.
        import zmq

        assert self._ctx is not None
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        got: dict[int, bytes] = {}
        try:
            sock.connect(endpoint)
            sock.send_multipart([b"", start.to_bytes(8, "big")])
            deadline = time.monotonic() + self._replay_timeout_s
            while len(got) < stop - start:
                left_ms = round((deadline - time.monotonic()) * 1000)
                if left_ms <= 0 or not sock.poll(left_ms, zmq.POLLIN):
                    logger.warning(
                        "KV event replay from %s timed out at %d/%d", endpoint, len(got), stop - start
                    )
                    break
                frames = sock.recv_multipart()
                if len(frames) < 2 or not frames[-1]:
                    break  # the end-of-replay marker
                seq_bytes, payload = frames[-2], frames[-1]
                if len(seq_bytes) != 8:
                    continue
                seq = int.from_bytes(seq_bytes, "big")
                if seq >= stop:
                    break
                if seq >= start:
                    got[seq] = payload
        finally:
            sock.close(linger=0)
        return got


def rank_endpoint(endpoint: str, rank: int) -> str:
    """The endpoint data-parallel rank ``rank`` publishes on, as vLLM's ``offset_endpoint_port`` derives it.

    >>> rank_endpoint("tcp://vllm-host:5557", 1)
    'tcp://vllm-host:5558'
    >>> rank_endpoint("inproc://kv", 2)
    'inproc://kv_dp2'
    """
    if rank == 0:
        return endpoint
    if endpoint.startswith("inproc://"):
        return f"{endpoint}_dp{rank}"
    head, sep, port = endpoint.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(
            f"KVEventSubscriber cannot derive data-parallel rank {rank}'s endpoint from {endpoint!r}: "
            "vLLM adds the rank to the port, so give a tcp://host:port endpoint"
        )
    return f"{head}:{int(port) + rank}"


def _block_model(target: Scheduler, model: object) -> BlockLRU:
    if not isinstance(model, BlockLRU):
        raise ConfigError(
            f"KVEventSubscriber needs a BlockLRU, but the scheduler for engine {target.name!r} models its "
            f"{target.capabilities.prefix_cache!r} prefix cache with {type(model).__name__}; vLLM KV events "
            f"apply to block caches (prefix_cache='block': vLLM, OpenAI-compatible servers)"
        )
    return model


def _require_extra() -> None:
    """Raise ``ConfigError`` naming the extra to install when pyzmq or msgspec is missing."""
    for module, package in (("zmq", "pyzmq"), ("msgspec", "msgspec")):
        if importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"vLLM KV events need the package {package!r}; install the extra: {_INSTALL_HINT}"
            )
