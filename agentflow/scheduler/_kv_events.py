"""Drive a ``BlockLRU`` from a vLLM server's KV cache events (ZMQ PUB, msgpack ``KVEventBatch``).

Start vLLM with events on, then subscribe the scheduler's cache model for as long as it runs::

    vllm serve MODEL --kv-events-config '{"enable_kv_cache_events": true, "publisher": "zmq",
        "endpoint": "tcp://*:5557", "replay_endpoint": "tcp://*:5558", "topic": "kv-events"}'

    scheduler = Scheduler(engine_from_spec("openai:http://vllm-host:8000/v1#MODEL"))
    async with KVEventSubscriber(
        scheduler, "tcp://vllm-host:5557", topic="kv-events", replay_endpoint="tcp://vllm-host:5558"
    ):
        await agentflow.run(workflow, inputs, engine=scheduler)

From the first event on, the model stops guessing evictions and follows the engine (see ``_blocks``).

Wire format, as ``ZmqEventPublisher`` in vLLM's ``vllm/distributed/kv_events.py`` sends it (read at
commits b4e69e0a, v0.9-era, and 0181ea31, after vLLM PR #42892)::

    frames : [topic (utf-8), seq (8 bytes, big-endian unsigned), payload (msgpack)]
    batch  : [ts, [event, ...], data_parallel_rank?]        msgspec array_like; a map {"ts", "events", ...}
                                                            is accepted too
    event  : ["BlockStored", block_hashes, parent_block_hash, token_ids, block_size, lora_id,
              medium?, lora_name?, extra_keys?, group_idx?, kv_cache_spec_kind?, ...]
           | ["BlockRemoved", block_hashes, medium?, group_idx?, ...]
           | ["AllBlocksCleared"]                           tagged arrays (vLLM before #42892)
           | {"type": "BlockStored", "block_hashes": ..., ...}          tagged maps (vLLM after #42892)
    hash   : int (uint64), or bytes where vLLM leaves them bytes (VLLM_KV_EVENTS_USE_INT_BLOCK_HASHES=0)
    replay : DEALER -> ROUTER [b"", start_seq (8 bytes)]; the ROUTER answers [b"", seq, payload] for every
             buffered batch with seq >= start_seq, then [b"", -1 (8 bytes, signed), b""]

Fields are read by position or by name; trailing or unknown fields and unknown event types are ignored
(``omit_defaults`` drops trailing defaults, newer vLLM versions append fields). Bytes hashes become negative
ints (``block_hash_key``), so they are hashable like int hashes and never collide with them.

Which events apply: only GPU-tier (``medium`` ``None``/``"GPU"``) events of the first KV cache group
(``group_idx`` ``None``/``0``), and only stored blocks without a LoRA adapter or extra hash keys
(multimodal inputs, ``cache_salt``): the model chains plain token ids, so such blocks would be credited to
prompts that cannot reuse them. Removals are filtered by the same medium and group; those of skipped adapter
or extra-key blocks name hashes the model never learned and change nothing. Skipped events are counted in
``stats()``.

Threads: one task in the subscriber's task group loops ``await anyio.to_thread.run_sync(receive)``. Each
``receive`` call, in a worker thread, waits up to ``poll_interval_s`` for the SUB socket, drains what is
queued, tracks sequence numbers, fetches replays, decodes, and returns the batches; the task then applies
them to the ``BlockLRU`` on the event loop, the only thread that may touch it (its hooks call back into the
scheduler's policy). A socket is used by one thread at a time (each call ends before the next starts; the
sockets are closed after the last one returns), as ZMQ requires. This works alike under asyncio and trio
(``zmq.asyncio`` needs asyncio); stopping waits for the current ``receive`` call, at most
``poll_interval_s`` (plus ``replay_timeout_s`` during a replay).

Sequence numbers: a jump forward is a gap. A missed ``BlockStored`` makes the model under-estimate (blocks
stored after it are dropped too, their parent being unknown); a missed ``BlockRemoved`` makes it
over-estimate, as the model no longer evicts on its own. Clearing the model would trade that for a wholesale
under-estimate and forget the engine-to-model hash mapping, so a gap is not a resync: with
``replay_endpoint`` the missed batches are fetched from vLLM's replay buffer and applied in order; what
cannot be fetched is counted in ``stats().missed_batches``. The error heals as the engine works: the first
request that counts on a phantom prefix gets it recomputed, which re-stores its blocks, and their next
eviction removes them. A jump back means the publisher restarted with an empty cache: the model is cleared
and the new stream is expected from 0. Batches published before the subscriber joined are not a gap and are
not fetched: a history cut short by vLLM's replay buffer (``buffer_steps``) could hold blocks whose removal
it no longer has.
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
    """vLLM's ``BlockStored``: full blocks cached after ``parent_block_hash`` (``None``: at the start)."""

    block_hashes: tuple[int, ...]
    parent_block_hash: int | None
    token_ids: tuple[int, ...]
    block_size: int


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
    """The events of one ``KVEventBatch`` that apply to the model, and how many were skipped."""

    events: tuple[KVEvent, ...]
    skipped: int


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
    if fields.get("medium") not in (None, "GPU") or fields.get("group_idx") not in (None, 0):
        return None
    hashes = tuple(block_hash_key(h) for h in _list(fields, "block_hashes"))
    if tag == "BlockRemoved":
        return RemovedBlocks(hashes)
    extra_keys = fields.get("extra_keys")
    if (
        fields.get("lora_id") is not None
        or fields.get("lora_name") is not None
        or (isinstance(extra_keys, list) and any(k is not None for k in extra_keys))
    ):
        return None
    parent = fields.get("parent_block_hash")
    tokens = tuple(t for t in _list(fields, "token_ids") if isinstance(t, int))
    if len(tokens) != len(_list(fields, "token_ids")):
        raise _MalformedError("BlockStored token_ids must be ints")
    block_size = fields.get("block_size")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise _MalformedError(f"BlockStored block_size must be an int >= 1, got {block_size!r}")
    return StoredBlocks(hashes, None if parent is None else block_hash_key(parent), tokens, block_size)


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
        restarts: Times the sequence number went back (a restarted publisher; the model was cleared).
        decode_errors: Messages dropped because they were not a well-formed ``KVEventBatch``.
        last_seq: Sequence number of the last batch received (``None``: none yet).
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


class KVEventSubscriber:
    """Applies a vLLM server's KV cache events to a ``BlockLRU``, as an async context manager.

    ``async with KVEventSubscriber(scheduler, "tcp://host:5557", topic="kv-events") as sub:`` connects,
    receives and applies events until the block exits; ``sub.stats()`` reports progress. Malformed messages
    are counted and logged, never raised. If the subscriber itself fails (the engine's block size differs
    from the model's, or ZMQ fails), the body is cancelled and the error is raised from the ``async with``;
    the body's own exceptions propagate unchanged.

    Args:
        target: A ``Scheduler`` whose cache model is a ``BlockLRU`` (engines with ``prefix_cache="block"``:
            vLLM, OpenAI-compatible servers), or a ``BlockLRU``.
        endpoint: vLLM's ``endpoint`` with its host, e.g. ``tcp://vllm-host:5557``. With a ``*`` host
            (``tcp://*:5557``) the subscriber binds instead, for a vLLM configured to connect to it.
        topic: vLLM's ``topic`` (a prefix match, as ZMQ subscriptions are; ``""``: everything).
        replay_endpoint: vLLM's ``replay_endpoint`` with its host, to fetch missed batches (``None``: gaps are
            only counted).
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
        poll_interval_s: float = 0.1,
        replay_timeout_s: float = 1.0,
    ) -> None:
        _require_extra()
        import msgspec

        self._decoder: msgspec.msgpack.Decoder[object] = msgspec.msgpack.Decoder()
        self._model = _block_model(target)
        if poll_interval_s <= 0 or replay_timeout_s <= 0:
            raise ConfigError(
                f"KVEventSubscriber poll_interval_s and replay_timeout_s must be > 0 seconds, "
                f"got {poll_interval_s} and {replay_timeout_s}"
            )
        self._endpoint = endpoint
        self._topic = topic
        self._replay_endpoint = replay_endpoint
        self._poll_ms = max(1, round(poll_interval_s * 1000))
        self._replay_timeout_s = replay_timeout_s
        # ZMQ context and SUB socket: opened on entering, closed on exit after the last receive() returns.
        self._ctx: zmq.Context[zmq.Socket[bytes]] | None = None
        self._sub: zmq.Socket[bytes] | None = None
        # One worker thread at a time: receive() calls run one after another, never beside each other.
        self._limiter = anyio.CapacityLimiter(1)
        self._cm: AbstractAsyncContextManager[Self] | None = None
        # Sequence number of the last batch received; None until the first (and after a restart, its seq).
        self._last_seq: int | None = None
        # Counters, each written by one side only: the worker thread (receive) or the event loop (_apply).
        self._batches = 0
        self._skipped = 0
        self._gaps = 0
        self._replayed = 0
        self._missed = 0
        self._restarts = 0
        self._decode_errors = 0
        self._events = 0

    @property
    def model(self) -> BlockLRU:
        """The model the events are applied to."""
        return self._model

    def stats(self) -> KVEventStats:
        """Counts of batches, events, gaps and errors so far."""
        return KVEventStats(
            batches=self._batches,
            events=self._events,
            skipped_events=self._skipped,
            gaps=self._gaps,
            replayed_batches=self._replayed,
            missed_batches=self._missed,
            restarts=self._restarts,
            decode_errors=self._decode_errors,
            last_seq=self._last_seq,
        )

    async def __aenter__(self) -> Self:
        if self._cm is not None:
            raise SchedulerError(f"KVEventSubscriber for {self._endpoint!r} is already running")
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
        model = self._model
        for event in batch.events:
            match event:
                case StoredBlocks():
                    if event.block_size != model.block_size:
                        raise ConfigError(
                            f"vLLM at {self._endpoint!r} publishes KV events for block_size={event.block_size} "
                            f"tokens but the BlockLRU models block_size={model.block_size}; start vLLM with "
                            f"--block-size {model.block_size} or build the Scheduler with "
                            f"cache_model=BlockLRU(block_size={event.block_size})"
                        )
                    model.on_block_stored(event.block_hashes, event.parent_block_hash, event.token_ids)
                case RemovedBlocks():
                    model.on_block_removed(event.block_hashes)
                case ClearedBlocks():
                    model.on_all_blocks_cleared()
                case _:
                    assert_never(event)
            self._events += 1

    def _open(self) -> None:
        import zmq

        ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        sub = ctx.socket(zmq.SUB)
        sub.setsockopt(zmq.LINGER, 0)
        sub.setsockopt(zmq.RCVHWM, 100_000)
        sub.setsockopt(zmq.SUBSCRIBE, self._topic.encode())
        try:
            if "*" in self._endpoint:
                sub.bind(self._endpoint)
            else:
                sub.connect(self._endpoint)
        except zmq.ZMQError as exc:
            ctx.destroy(linger=0)
            raise ConfigError(
                f"KVEventSubscriber cannot use endpoint {self._endpoint!r}: {exc}; use the "
                f"endpoint of vLLM's --kv-events-config with the server's host, e.g. 'tcp://vllm-host:5557'"
            ) from exc
        self._ctx, self._sub = ctx, sub
        self._last_seq = None  # a new connection joins the stream afresh

    def _close(self) -> None:
        if self._ctx is not None:
            self._ctx.destroy(linger=0)
        self._ctx = self._sub = None

    # ------------------------------------------------------------------ worker thread side

    def _receive(self) -> list[DecodedBatch]:
        """Worker thread: wait for messages, drain them, track sequence numbers; decoded batches in order."""
        import zmq

        sub = self._sub
        assert sub is not None
        out: list[DecodedBatch] = []
        try:
            if not sub.poll(self._poll_ms, zmq.POLLIN):
                return out
            for _ in range(_MAX_DRAIN):
                try:
                    frames = sub.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                self._on_message(frames, out)
        except zmq.ZMQError as exc:
            raise SchedulerError(f"KV event subscriber for {self._endpoint!r} failed: {exc}") from exc
        return out

    def _on_message(self, frames: Sequence[bytes], out: list[DecodedBatch]) -> None:
        # Invariant: batches enter ``out`` in sequence order, replayed ones before the live one that revealed
        # the gap, and ``_last_seq`` only moves forward except when a restart is detected.
        if len(frames) != 3 or len(frames[1]) != 8:
            self._malformed(None, f"expected [topic, 8-byte seq, payload], got {len(frames)} frames")
            return
        seq = int.from_bytes(frames[1], "big")
        last = self._last_seq
        if last is None:
            expected = seq  # joining: what was published before is not a gap
        elif seq <= last:
            self._restarts += 1
            logger.warning(
                "KV event seq went back from %d to %d at %s: the publisher restarted, clearing the model",
                last,
                seq,
                self._endpoint,
            )
            out.append(DecodedBatch((ClearedBlocks(),), 0))
            expected = 0
        else:
            expected = last + 1
        if seq > expected:
            self._gaps += 1
            logger.warning(
                "KV events %d..%d missed at %s%s",
                expected,
                seq - 1,
                self._endpoint,
                "; requesting a replay" if self._replay_endpoint else " (no replay_endpoint)",
            )
            self._replay(expected, seq, out)
        self._last_seq = seq
        self._decode_into(seq, frames[2], out)

    def _decode_into(self, seq: int, payload: bytes, out: list[DecodedBatch]) -> None:
        try:
            batch = decode_batch(payload, self._decoder)
        except ValueError as exc:
            self._malformed(seq, str(exc))
            return
        self._batches += 1
        self._skipped += batch.skipped
        out.append(batch)

    def _malformed(self, seq: int | None, reason: str) -> None:
        self._decode_errors += 1
        n = self._decode_errors
        if n & (n - 1) == 0:  # the 1st, 2nd, 4th, 8th, ... so a broken stream cannot flood the log
            logger.warning(
                "dropped malformed KV event message (seq %s) from %s: %s (%d so far)",
                seq,
                self._endpoint,
                reason,
                n,
            )

    def _replay(self, start: int, stop: int, out: list[DecodedBatch]) -> None:
        """Fetch the missed batches ``start <= seq < stop`` from the replay endpoint and decode them in order."""
        got = {} if self._replay_endpoint is None else self._fetch_replay(self._replay_endpoint, start, stop)
        for seq in sorted(got):
            self._decode_into(seq, got[seq], out)
        self._replayed += len(got)
        self._missed += stop - start - len(got)

    def _fetch_replay(self, endpoint: str, start: int, stop: int) -> dict[int, bytes]:
        # A fresh DEALER per request: answers to an earlier request that timed out die with its socket.
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
                    break  # the end-of-replay marker: [b"", -1, b""]
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


def _block_model(target: BlockLRU | Scheduler) -> BlockLRU:
    if isinstance(target, BlockLRU):
        return target
    model = target.cache_model
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
