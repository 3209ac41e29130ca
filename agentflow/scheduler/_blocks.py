"""A shadow model of a block prefix cache (vLLM / SGLang automatic prefix caching).

A block cache keeps KV in fixed-size blocks of ``block_size`` tokens. A full block is identified by a hash
chained over every block before it, so a block can only be reused when the whole prefix up to it matches::

    prompt tokens : | block 0 | block 1 | block 2 | bl|
    chain hash    :   h0=H(-,b0) h1=H(h0,b1) h2=H(h1,b2)   (the partial tail block is never cached)
    cached        : |   hit   |   hit   |  miss   | ...  -> cached_tokens = 2 * block_size

Tenants: vLLM mixes a request's ``cache_salt`` into the hash of its first block, so every block of a salted
prompt differs from the same tokens under another salt (or none) and tenants never share cache. The model
does the same: every call takes the request's ``namespace`` (the salt the engine sends, ``None`` for none)
and seeds the chain with it, so a salted request never matches another tenant's blocks.

We cannot see inside a remote engine, so ``BlockLRU`` guesses: blocks of every dispatched prompt are
inserted, free blocks are evicted least recently used first once ``capacity_blocks`` is exceeded, and blocks
of in-flight requests (and pins) are never evicted. Two corrections keep the guess honest:

* Reported ``cached_tokens``: ``release(..., predicted=p, reported=r)`` compares the model's prediction with
  what the engine said it reused. ``r < p`` means the engine holds less than we assumed, so the capacity
  estimate shrinks by 10 % (never below ``min_capacity_blocks``); ``r > p`` means it holds more, so capacity
  grows by the surplus blocks (never above the configured capacity). Errors are counted in ``stats()``.
  ``reported=None`` (the server did not send ``cached_tokens``; vLLM sends it only with
  ``--enable-prompt-tokens-details``) is unknown, not a miss: it corrects nothing and is not counted.
* vLLM KV events (``--kv-events-config``, published over ZMQ as ``BlockStored`` / ``BlockRemoved`` /
  ``AllBlocksCleared``): ``KVEventSubscriber`` decodes them and calls ``on_block_stored`` / ``on_block_removed`` /
  ``on_all_blocks_cleared``. From the first event on, the model stops evicting on its own and follows the
  engine exactly; engine block hashes are mapped to this model's chain hashes through the token ids (and the
  cache salt) each ``BlockStored`` event carries. If the engine's blocks are not the size the model assumed
  (a server whose block size could not be read), ``rebase(block_size)`` re-keys the model to the engine's.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass

from agentflow.engines import DEFAULT_BLOCK_SIZE
from agentflow.errors import ConfigError

from ._pins import PinTable
from ._radix import MatchListener

__all__ = ["BlockLRU", "BlockStats"]


@dataclass(frozen=True, slots=True)
class BlockStats:
    """How well the shadow model predicts the engine.

    Attributes:
        predictions: Completed requests whose reported ``cached_tokens`` was checked.
        exact: Predictions equal to the reported value.
        abs_error_tokens: Sum of ``|predicted - reported|``.
        capacity_blocks: The current capacity estimate.
        events: Engine KV events applied.
    """

    predictions: int
    exact: int
    abs_error_tokens: int
    capacity_blocks: int | None
    events: int


class BlockLRU:
    """Shadow LRU model of a block prefix cache, with watched match lengths like ``RadixTree``.

    Called from the scheduler's event loop only: ``watch`` for queued requests, ``acquire`` at dispatch,
    ``release`` at completion (with the engine's reported cached tokens), ``pin``/``unpin`` for paused agents,
    and the ``on_block_*`` methods from a KV-event subscriber.

    Args:
        block_size: Tokens per block (``DEFAULT_BLOCK_SIZE``, vLLM 0.34's default, unless the engine says).
        capacity_blocks: Blocks the engine can keep (``None``: unbounded).
        min_capacity_blocks: Floor for the corrected capacity estimate.
        on_match_change: Told about every change of a watched match length.
        clock: Time source for pin expiry.
    """

    def __init__(
        self,
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
        capacity_blocks: int | None = None,
        min_capacity_blocks: int = 1,
        on_match_change: MatchListener | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if block_size < 1:
            raise ConfigError(f"BlockLRU block_size must be >= 1 token, got {block_size}")
        if capacity_blocks is not None and capacity_blocks < 1:
            raise ConfigError(f"BlockLRU capacity_blocks must be >= 1 or None, got {capacity_blocks}")
        self._bs = block_size
        self._max_capacity = capacity_blocks
        self._min_capacity = max(1, min_capacity_blocks)
        self._clock = clock
        self.on_match_change = on_match_change
        # Current capacity estimate; corrected at every release() that reports cached tokens.
        self._capacity = capacity_blocks
        # Cached block hash -> reference count (in-flight requests + pins); lives until evicted/removed.
        self._refs: dict[int, int] = {}
        # Cached blocks with no reference, least recently used first: the eviction order.
        self._free: OrderedDict[int, None] = OrderedDict()
        # Pinned (chain seed, *tokens) -> expiry; a pin references its chain's blocks until unpinned or expired.
        self._pins = PinTable(
            clock=clock,
            hold=lambda key: self._hold(self._chain(key[0], key[1:])),
            unhold=lambda key: self._unhold(self._chain(key[0], key[1:])),
        )
        # In-flight acquisitions, (chain seed, *tokens) -> count: what holds references until release().
        self._acquired: Counter[tuple[int, ...]] = Counter()
        # Watched key -> (chain hashes, matched blocks, (seed, *tokens)); index of keys by each hash they need.
        self._watches: dict[Hashable, tuple[list[int], int, tuple[int, ...]]] = {}
        self._watch_index: dict[int, set[Hashable]] = {}
        # Keys to re-match at the end of the current operation.
        self._dirty: set[Hashable] = set()
        # (data-parallel rank, engine block hash) -> our chain hash; filled by on_block_stored.
        self._engine_hashes: dict[tuple[int, int], int] = {}
        # Chain hash -> the ranks whose KV events say they hold it (event mode); emptied by their removals.
        self._holders: dict[int, set[int]] = {}
        self._events = 0
        self._predictions = 0
        self._exact = 0
        self._abs_error = 0

    # ------------------------------------------------------------------ queries

    @property
    def block_size(self) -> int:
        """Tokens per block."""
        return self._bs

    @property
    def budget_tokens(self) -> int | None:
        """The current capacity estimate in tokens."""
        return None if self._capacity is None else self._capacity * self._bs

    @property
    def total_tokens(self) -> int:
        """Tokens in cached blocks."""
        return len(self._refs) * self._bs

    @property
    def locked_tokens(self) -> int:
        """Tokens in blocks referenced by in-flight requests or pins."""
        return (len(self._refs) - len(self._free)) * self._bs

    def chain(self, tokens: Sequence[int], namespace: str | None = None) -> list[int]:
        """Chain hashes of the full blocks of ``tokens`` under ``namespace`` (a cache salt, or ``None``)."""
        return self._chain(_seed(namespace), tokens)

    def _chain(self, seed: int, tokens: Sequence[int]) -> list[int]:
        out: list[int] = []
        h = seed
        bs = self._bs
        seq = tuple(tokens)
        for i in range(0, len(seq) - bs + 1, bs):
            h = hash((h, seq[i : i + bs]))
            out.append(h)
        return out

    def match(self, tokens: Sequence[int], *, namespace: str | None = None) -> int:
        """Tokens the engine would reuse: leading cached full blocks, leaving at least one token to compute."""
        return self._cap(len(tokens), self._count(self.chain(tokens, namespace)))

    def pinned(self) -> dict[tuple[int, ...], float]:
        """Live pins: tokens -> expiry time."""
        return {key[1:]: expiry for key, expiry in self._pins.as_dict().items()}

    def stats(self) -> BlockStats:
        """Prediction accuracy and the current capacity estimate."""
        return BlockStats(self._predictions, self._exact, self._abs_error, self._capacity, self._events)

    # ------------------------------------------------------------------ scheduler calls

    def insert(self, tokens: Sequence[int], *, namespace: str | None = None) -> int:
        """Record that the engine holds the full blocks of ``tokens``; returns blocks added."""
        added = 0
        for h in self.chain(tokens, namespace):
            added += self._add(h)
        self._evict_to_capacity()
        self._flush()
        return added

    def acquire(self, tokens: Sequence[int], *, namespace: str | None = None) -> int:
        """Reference the prompt's blocks for an in-flight request; returns the predicted cached tokens."""
        self.expire_pins()
        key = (_seed(namespace), *tokens)
        chain = self._chain(key[0], key[1:])
        predicted = self._cap(len(tokens), self._count(chain))
        self._acquired[key] += 1
        self._hold(chain)
        self._evict_to_capacity()
        self._flush()
        return predicted

    def release(
        self,
        tokens: Sequence[int],
        *,
        predicted: int | None = None,
        reported: int | None = None,
        namespace: str | None = None,
    ) -> None:
        """Drop the references ``acquire`` took, and correct the model from the engine's reported reuse.

        ``reported=None`` means the engine did not say how much it reused: nothing is corrected or counted.
        """
        key = (_seed(namespace), *tokens)
        if self._acquired[key] > 0:
            self._acquired[key] -= 1
            if not self._acquired[key]:
                del self._acquired[key]
            self._unhold(self._chain(key[0], key[1:]))
        else:
            self._acquired.pop(key, None)
        self._correct(predicted, reported)
        self._evict_to_capacity()
        self._flush()

    def _correct(self, predicted: int | None, reported: int | None) -> None:
        if predicted is not None and reported is not None:
            self._predictions += 1
            self._abs_error += abs(predicted - reported)
            if predicted == reported:
                self._exact += 1
            elif self._capacity is not None and not self._events:
                if reported < predicted:
                    self._capacity = max(self._min_capacity, int(self._capacity * 0.9))
                else:
                    surplus = (reported - predicted) // self._bs
                    cap = self._capacity + max(1, surplus)
                    self._capacity = cap if self._max_capacity is None else min(self._max_capacity, cap)

    def pin(self, tokens: Sequence[int], ttl_s: float, *, namespace: str | None = None) -> None:
        """Keep the full blocks of ``tokens`` for ``ttl_s`` seconds (re-pinning extends the deadline)."""
        self.expire_pins()
        self._pins.pin((_seed(namespace), *tokens), ttl_s)
        self._evict_to_capacity()
        self._flush()

    def unpin(self, tokens: Sequence[int], *, namespace: str | None = None) -> bool:
        """Release a pin early; ``False`` if ``tokens`` was not pinned."""
        if not self._pins.unpin((_seed(namespace), *tokens)):
            return False
        self._evict_to_capacity()
        self._flush()
        return True

    def expire_pins(self) -> int:
        """Release pins whose TTL has passed; returns how many."""
        expired = self._pins.expire()
        if expired:
            self._evict_to_capacity()
            self._flush()
        return expired

    # ------------------------------------------------------------------ watches

    def watch(self, key: Hashable, tokens: Sequence[int], *, namespace: str | None = None) -> int:
        """Track the cached length of ``tokens`` under ``key``; changes go to ``on_match_change``."""
        self.unwatch(key)
        seeded = (_seed(namespace), *tokens)
        chain = self._chain(seeded[0], seeded[1:])
        blocks = self._count(chain)
        self._watches[key] = (chain, blocks, seeded)
        for h in chain[: blocks + 1]:
            self._watch_index.setdefault(h, set()).add(key)
        return blocks * self._bs

    def unwatch(self, key: Hashable) -> None:
        """Stop tracking ``key``."""
        entry = self._watches.pop(key, None)
        if entry is None:
            return
        chain, blocks, _ = entry
        for h in chain[: blocks + 1]:
            keys = self._watch_index.get(h)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._watch_index[h]
        self._dirty.discard(key)

    def watched(self, key: Hashable) -> int:
        """Current cached tokens of a watched key (whole blocks; the scheduler caps at ``len - 1``)."""
        return self._watches[key][1] * self._bs

    # ------------------------------------------------------------------ vLLM KV events

    def rebase(self, block_size: int) -> None:
        """Re-key the model to ``block_size``-token blocks (the engine's, learned from its KV events).

        In-flight requests, pins and watches are re-chained from their tokens; unreferenced blocks cannot
        be (their tokens are not kept) and are forgotten, as are engine hash mappings: the engine's events
        rebuild both.
        """
        if block_size < 1:
            raise ConfigError(f"BlockLRU block_size must be >= 1 token, got {block_size}")
        if block_size == self._bs:
            return
        self._bs = block_size
        self._refs.clear()
        self._free.clear()
        self._engine_hashes.clear()
        self._holders.clear()
        for key, count in self._acquired.items():
            for _ in range(count):
                self._hold(self._chain(key[0], key[1:]))
        for key in self._pins:
            self._hold(self._chain(key[0], key[1:]))
        watches = list(self._watches.items())
        self._watches.clear()
        self._watch_index.clear()
        for wkey, (_, old_blocks, seeded) in watches:
            chain = self._chain(seeded[0], seeded[1:])
            self._watches[wkey] = (chain, -1 if old_blocks else 0, seeded)
            self._dirty.add(wkey)
        self._flush()

    def on_block_stored(
        self,
        block_hashes: Sequence[int],
        parent_block_hash: int | None,
        token_ids: Sequence[int],
        *,
        namespace: str | None = None,
        rank: int = 0,
    ) -> None:
        """Apply a vLLM ``BlockStored`` event: the engine cached these blocks after ``parent_block_hash``.

        ``namespace`` is the event's cache salt; vLLM puts it on the first block of a prompt, whose
        ``parent_block_hash`` is ``None`` (later blocks inherit it through the chain). ``rank`` is the
        data-parallel rank that published it: each rank has its own cache, and a block counts as cached
        while any rank holds it (an upper bound: vLLM routes a request to one rank).
        """
        self._events += 1
        self._capacity = None
        parent = (
            _seed(namespace)
            if parent_block_hash is None
            else self._engine_hashes.get((rank, parent_block_hash))
        )
        if parent is None:
            return
        h = parent
        bs = self._bs
        for i, engine_hash in enumerate(block_hashes):
            block = tuple(token_ids[i * bs : (i + 1) * bs])
            if len(block) < bs:
                break
            h = hash((h, block))
            self._engine_hashes[(rank, engine_hash)] = h
            self._holders.setdefault(h, set()).add(rank)
            self._add(h)
        self._flush()

    def on_block_removed(self, block_hashes: Sequence[int], *, rank: int = 0) -> None:
        """Apply a vLLM ``BlockRemoved`` event of data-parallel rank ``rank``."""
        self._events += 1
        self._capacity = None
        for engine_hash in block_hashes:
            h = self._engine_hashes.pop((rank, engine_hash), None)
            if h is not None:
                self._unhold_rank(h, rank)
        self._flush()

    def on_all_blocks_cleared(self, *, rank: int | None = None) -> None:
        """Apply a vLLM ``AllBlocksCleared`` event of data-parallel rank ``rank`` (``None``: every rank)."""
        self._events += 1
        self._capacity = None
        for key in [k for k in self._engine_hashes if rank is None or k[0] == rank]:
            del self._engine_hashes[key]
        for h in list(self._free):
            holders = self._holders.get(h)
            if holders is not None and rank is not None:
                holders.discard(rank)
            if not holders or rank is None:
                self._drop(h)
        self._flush()

    def _unhold_rank(self, h: int, rank: int) -> None:
        holders = self._holders.get(h)
        if holders is not None:
            holders.discard(rank)
        if not holders and self._refs.get(h) == 0:
            self._drop(h)

    # ------------------------------------------------------------------ internals

    def _cap(self, n_tokens: int, blocks: int) -> int:
        return min(blocks * self._bs, max(0, (n_tokens - 1) // self._bs * self._bs))

    def _count(self, chain: list[int]) -> int:
        refs = self._refs
        for i, h in enumerate(chain):
            if h not in refs:
                return i
        return len(chain)

    def _add(self, h: int) -> int:
        if h in self._refs:
            if h in self._free:
                self._free.move_to_end(h)
            return 0
        self._refs[h] = 0
        self._free[h] = None
        self._dirty.update(self._watch_index.get(h, ()))
        return 1

    def _hold(self, chain: list[int]) -> None:
        for h in chain:
            self._add(h)
            self._ref(h, +1)

    def _unhold(self, chain: list[int]) -> None:
        for h in chain:
            if self._refs.get(h, 0) > 0:
                self._ref(h, -1)
                # Following events: a block no rank reported holding was only our prediction; once nothing
                # references it, it goes (if the engine stores it after all, its event adds it back).
                if self._events and not self._refs[h] and not self._holders.get(h):
                    self._drop(h)

    def _ref(self, h: int, delta: int) -> None:
        n = self._refs[h] + delta
        self._refs[h] = n
        if n == 0:
            self._free[h] = None
        elif delta > 0 and n == 1:
            self._free.pop(h, None)

    def _drop(self, h: int) -> None:
        del self._refs[h]
        self._free.pop(h, None)
        self._holders.pop(h, None)
        self._dirty.update(self._watch_index.get(h, ()))

    def _evict_to_capacity(self) -> None:
        if self._capacity is None:
            return
        while len(self._refs) > self._capacity and self._free:
            h, _ = self._free.popitem(last=False)
            del self._refs[h]
            self._dirty.update(self._watch_index.get(h, ()))

    def _flush(self) -> None:
        while self._dirty:
            key = self._dirty.pop()
            entry = self._watches.get(key)
            if entry is None:
                continue
            chain, old, seeded = entry
            new = self._count(chain)
            if new == old:
                continue
            for h in chain[: max(old, 0) + 1]:
                keys = self._watch_index.get(h)
                if keys is not None:
                    keys.discard(key)
            for h in chain[: new + 1]:
                self._watch_index.setdefault(h, set()).add(key)
            self._watches[key] = (chain, new, seeded)
            if self.on_match_change is not None:
                self.on_match_change(key, new * self._bs)


def _seed(namespace: str | None) -> int:
    """The chain hash before a prompt's first block: 0 unsalted, else derived from the salt (as vLLM does)."""
    return 0 if namespace is None else hash(("cache_salt", namespace))
