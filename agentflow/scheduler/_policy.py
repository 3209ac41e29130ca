"""Ready-queue policies: which queued request the scheduler dispatches next.

A policy is a small queue class. The scheduler calls, from its event loop only:

* ``push(item)`` when a request arrives (``item.cached`` already holds the cache model's match);
* ``update(item)`` when the cache model reports a new ``item.cached`` for a queued request;
* ``peek(now)`` to see the request it would dispatch now (admission may still hold it back);
* ``take(item)`` right after ``peek`` returned ``item`` and admission let it through;
* ``remove(item)`` when a queued request is cancelled;
* ``cache_pressure(evicting)`` before each decision: whether the engine is evicting cached prefixes lately.

``make_policy(name, **options)`` builds one by name: ``fifo`` (arrival order), ``lpm`` (longest cached prefix
first, SGLang's cache-aware order, no aging) and ``ours`` (``CacheAwarePolicy``).
"""

from __future__ import annotations

import heapq
import math
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from agentflow.errors import ConfigError

__all__ = [
    "CacheAwarePolicy",
    "FifoPolicy",
    "Policy",
    "QueuedRequest",
    "make_policy",
    "policy_names",
]


class QueuedRequest:
    """What a policy knows about one queued request.

    Attributes:
        seq: Arrival sequence number (unique, increasing).
        arrival: Arrival time (scheduler clock).
        n_tokens: Prompt length in tokens.
        cached: Expected cached-prefix length (kept current by the cache model while queued).
        steps: DAG steps until the result is needed (``RequestHints.steps_to_execution``).
        deadline: Absolute deadline on the scheduler clock, or ``None``.
        group: Fan-out group id, or ``None``.
        ahead: Requests queued ahead of it when it arrived: how many FIFO would dispatch before it (``None``:
            unknown, no bound relative to FIFO).
        queued: ``True`` while in the queue (policies delete lazily by checking it).
        version: Bumped on every ``update``; heap entries of older versions are stale.
    """

    __slots__ = (
        "ahead",
        "arrival",
        "cached",
        "deadline",
        "group",
        "n_tokens",
        "queued",
        "seq",
        "steps",
        "version",
    )

    def __init__(
        self,
        seq: int,
        arrival: float,
        n_tokens: int,
        cached: int = 0,
        *,
        steps: int = 0,
        deadline: float | None = None,
        group: str | None = None,
        ahead: int | None = None,
    ) -> None:
        self.seq = seq
        self.arrival = arrival
        self.n_tokens = n_tokens
        self.cached = cached
        self.steps = steps
        self.deadline = deadline
        self.group = group
        self.ahead = ahead
        self.queued = False
        self.version = 0

    def __repr__(self) -> str:
        return f"QueuedRequest(seq={self.seq}, cached={self.cached}/{self.n_tokens}, group={self.group!r})"


class Policy(ABC):
    """A ready queue ordered by some rule. See the module docstring for who calls what and when."""

    name: str = ""

    @abstractmethod
    def push(self, item: QueuedRequest) -> None:
        """Add an arriving request."""

    @abstractmethod
    def update(self, item: QueuedRequest) -> None:
        """Re-rank a queued request whose ``cached`` changed."""

    @abstractmethod
    def peek(self, now: float) -> QueuedRequest | None:
        """The request to dispatch next at time ``now``, or ``None`` if the queue is empty."""

    @abstractmethod
    def take(self, item: QueuedRequest) -> None:
        """Remove ``item`` (just returned by ``peek``) because it is being dispatched."""

    @abstractmethod
    def remove(self, item: QueuedRequest) -> None:
        """Remove a cancelled request."""

    @abstractmethod
    def __len__(self) -> int:
        """Queued requests."""

    def cache_pressure(self, evicting: bool) -> None:
        """Learn whether the engine has been evicting cached prefixes lately (ignored unless the policy uses it)."""
        return None


class FifoPolicy(Policy):
    """First come, first served (the baseline)."""

    name = "fifo"

    def __init__(self) -> None:
        # Requests in arrival order; removed ones stay until they reach the head (lazy deletion).
        self._queue: deque[QueuedRequest] = deque()
        self._live = 0

    def push(self, item: QueuedRequest) -> None:
        item.queued = True
        self._queue.append(item)
        self._live += 1

    def update(self, item: QueuedRequest) -> None:
        return None

    def peek(self, now: float) -> QueuedRequest | None:
        q = self._queue
        while q and not q[0].queued:
            q.popleft()
        return q[0] if q else None

    def take(self, item: QueuedRequest) -> None:
        self.remove(item)

    def remove(self, item: QueuedRequest) -> None:
        if item.queued:
            item.queued = False
            self._live -= 1

    def __len__(self) -> int:
        return self._live


_HeapEntry = tuple[float, int, int, QueuedRequest]


class CacheAwarePolicy(Policy):
    """Cache-aware, workflow-aware order with bounded waiting.

    Each queued request ``r`` has a score in token units (higher runs first)::

        score(r, now) = cached(r)                                  expected reused prefix
                      - urgency_tokens_per_step * steps(r)          DAG distance to being needed
                      + age_tokens_per_s * (now - arrival(r))       aging

    The aging term grows at the same rate for everyone, so ranking by ``score`` equals ranking by the
    time-free key ``cached - urgency * steps - age * arrival``; a heap keeps that order and only re-ranks a
    request when its ``cached`` changes. ``peek`` then applies, in order:

    1. **Bounded wait.** A request that has waited ``max_wait_s`` is *overdue*: the oldest overdue request
       runs first. Bound: once overdue, no request that arrived after it is dispatched before it, so it
       waits at most ``max_wait_s`` plus the dispatch of the requests that arrived before it.
    2. **Bounded slowdown against FIFO.** Under FIFO a request that finds ``ahead`` requests queued is
       dispatched after exactly ``ahead`` others, so FIFO's longest wait is ``L`` dispatches, ``L`` the
       longest queue position (``ahead``) of the requests queued together. A request falls *due* once
       ``ceil(max_slowdown * L)`` requests have been dispatched since its arrival (``L`` taken over the
       requests queued when it arrives, itself included), and due requests run next, the earliest due
       first. Bound: at most that many dispatches, plus those of requests that fell due before it, precede
       it; counted in dispatches, no wait exceeds ``max_slowdown`` times FIFO's longest, and in seconds
       neither, as long as cache-aware dispatches are no slower than FIFO's (they reuse more). No clock and
       no estimate are involved, and no request starves, whatever arrives later. The bound is on the
       longest wait, not on each request's own FIFO position: a per-request bound forces the order back
       towards FIFO's whenever a request finds a short queue, and with a small cache that interleaving
       evicts the prefixes cache-aware order exists to keep (on ``bench/kv_scheduler.py --quick`` at 16 MB
       it pushed prefill from about 1.1x to 1.5x the lower bound). The soft aging term below only reorders
       requests within these bounds; it is weak on purpose: on a saturated engine every reused prefix
       shortens the wait of everything queued behind it, so trading reuse for order early lengthens waits
       rather than shortening them. For the same reason the bound is suspended under cache pressure (the
       scheduler reports that the engine evicted a cached prefix within its last few decisions): there,
       order decides which prefixes survive, recomputing them lengthens every wait, and only
       ``max_wait_s`` holds. Without pressure every prefix stays cached whatever the order, reordering
       buys no reuse, and FIFO's longest wait bounds ours. (On ``bench/kv_scheduler.py --quick``: with the
       bound always on, prefill at 16 MB was 1.6x the lower bound instead of 1.3x; with it always off, the
       longest wait at 512 MB was 1.8x FIFO's.)
    3. **Deadlines.** The earliest deadline whose slack is below ``deadline_slack_s`` runs next.
    4. **Fan-out siblings back to back.** After a request of fan-out group ``g`` is dispatched, the best
       queued request of ``g`` runs next while any is queued (their shared prefix is hot).
    5. Otherwise the highest score.

    Args:
        age_tokens_per_s: How many cached tokens one second of waiting is worth (0 disables soft aging).
        max_wait_s: The hard wait bound (``math.inf`` disables it; then starvation is possible).
        max_slowdown: A request is due after this many times the longest FIFO queue position among the
            requests queued with it, in dispatches (``math.inf`` disables the bound relative to FIFO).
        urgency_tokens_per_step: Score lost per DAG step until the result is needed.
        deadline_slack_s: Serve a request by deadline once its slack is this small.
        fanout: Run fan-out siblings back to back.
    """

    name = "ours"

    def __init__(
        self,
        *,
        age_tokens_per_s: float = 10.0,
        max_wait_s: float = 60.0,
        max_slowdown: float = 1.5,
        urgency_tokens_per_step: float = 32.0,
        deadline_slack_s: float = 1.0,
        fanout: bool = True,
    ) -> None:
        if (
            age_tokens_per_s < 0
            or max_wait_s <= 0
            or not max_slowdown >= 1
            or urgency_tokens_per_step < 0
            or deadline_slack_s < 0
        ):
            raise ConfigError(
                "CacheAwarePolicy needs age_tokens_per_s >= 0, max_wait_s > 0, max_slowdown >= 1, "
                f"urgency_tokens_per_step >= 0 and deadline_slack_s >= 0; got {age_tokens_per_s}, {max_wait_s}, "
                f"{max_slowdown}, {urgency_tokens_per_step}, {deadline_slack_s}"
            )
        self._age = age_tokens_per_s
        self._max_wait = max_wait_s
        self._max_slowdown = max_slowdown
        self._urgency = urgency_tokens_per_step
        self._slack = deadline_slack_s
        self._fanout = fanout
        # Score heap over all queued requests: (-key, seq, version, item); stale entries skipped lazily.
        self._heap: list[_HeapEntry] = []
        # Arrival-order heap for the overdue lane: (arrival, seq, item).
        self._arrivals: list[tuple[float, int, QueuedRequest]] = []
        # Due heap for the slowdown bound: (dispatch count at which it falls due, seq, item).
        self._due: list[tuple[int, int, QueuedRequest]] = []
        # Requests dispatched (taken) so far: the clock the slowdown bound counts in.
        self._dispatched = 0
        # Queue positions at arrival of the queued requests: (-ahead, seq, item), stale entries popped lazily.
        self._positions: list[tuple[int, int, QueuedRequest]] = []
        # Whether the engine is evicting lately (set by the scheduler before each decision): suspends the bound.
        self._evicting = False
        # Deadline heap: (deadline, seq, item) for requests that have one.
        self._deadlines: list[tuple[float, int, QueuedRequest]] = []
        # Per fan-out group score heaps; a group's heap is dropped when it runs empty.
        self._groups: dict[str, list[_HeapEntry]] = {}
        # Fan-out group whose siblings run next; set by take(), cleared when the group has none queued.
        self._sticky: str | None = None
        self._live = 0

    def _key(self, item: QueuedRequest) -> float:
        return -(item.cached - self._urgency * item.steps - self._age * item.arrival)

    def push(self, item: QueuedRequest) -> None:
        item.queued = True
        self._live += 1
        entry = (self._key(item), item.seq, item.version, item)
        heapq.heappush(self._heap, entry)
        heapq.heappush(self._arrivals, (item.arrival, item.seq, item))
        if item.ahead is not None and math.isfinite(self._max_slowdown):
            heapq.heappush(self._positions, (-item.ahead, item.seq, item))
            positions = self._positions
            while not positions[0][2].queued:
                heapq.heappop(positions)
            longest = -positions[0][0]
            due = self._dispatched + math.ceil(self._max_slowdown * longest)
            heapq.heappush(self._due, (due, item.seq, item))
        if item.deadline is not None:
            heapq.heappush(self._deadlines, (item.deadline, item.seq, item))
        if self._fanout and item.group is not None:
            heapq.heappush(self._groups.setdefault(item.group, []), entry)

    def update(self, item: QueuedRequest) -> None:
        if not item.queued:
            return
        item.version += 1
        entry = (self._key(item), item.seq, item.version, item)
        heapq.heappush(self._heap, entry)
        if self._fanout and item.group is not None:
            heapq.heappush(self._groups.setdefault(item.group, []), entry)
        if len(self._heap) > 4 * self._live + 64:
            self._compact()

    def peek(self, now: float) -> QueuedRequest | None:
        if not self._live:
            return None
        arrivals = self._arrivals
        while arrivals and not arrivals[0][2].queued:
            heapq.heappop(arrivals)
        if arrivals and now - arrivals[0][0] >= self._max_wait:
            return arrivals[0][2]
        due = self._due
        while due and not due[0][2].queued:
            heapq.heappop(due)
        if due and due[0][0] <= self._dispatched and not self._evicting:
            return due[0][2]
        deadlines = self._deadlines
        while deadlines and not deadlines[0][2].queued:
            heapq.heappop(deadlines)
        if deadlines and deadlines[0][0] - now <= self._slack:
            return deadlines[0][2]
        if self._sticky is not None:
            group = self._groups.get(self._sticky)
            best = _top(group) if group is not None else None
            if best is not None:
                return best
            self._groups.pop(self._sticky, None)
            self._sticky = None
        return _top(self._heap)

    def take(self, item: QueuedRequest) -> None:
        self.remove(item)
        self._dispatched += 1
        if item.group is not None and self._fanout:
            self._sticky = item.group
        elif self._sticky is not None and _top(self._groups.get(self._sticky, [])) is None:
            self._groups.pop(self._sticky, None)
            self._sticky = None

    def remove(self, item: QueuedRequest) -> None:
        if item.queued:
            item.queued = False
            self._live -= 1

    def __len__(self) -> int:
        return self._live

    def cache_pressure(self, evicting: bool) -> None:
        """Suspend the slowdown bound while the engine is evicting cached prefixes (see the class docstring)."""
        self._evicting = evicting

    def _compact(self) -> None:
        self._heap = [e for e in self._heap if e[3].queued and e[2] == e[3].version]
        heapq.heapify(self._heap)
        self._due = [e for e in self._due if e[2].queued]
        heapq.heapify(self._due)
        self._arrivals = [e for e in self._arrivals if e[2].queued]
        heapq.heapify(self._arrivals)
        self._positions = [e for e in self._positions if e[2].queued]
        heapq.heapify(self._positions)
        for name, group in list(self._groups.items()):
            kept = [e for e in group if e[3].queued and e[2] == e[3].version]
            if kept:
                heapq.heapify(kept)
                self._groups[name] = kept
            else:
                del self._groups[name]


def _top(heap: list[_HeapEntry]) -> QueuedRequest | None:
    """The best live entry of a lazily-deleted heap (stale entries are popped)."""
    while heap:
        _, _, version, item = heap[0]
        if item.queued and version == item.version:
            return item
        heapq.heappop(heap)
    return None


@dataclass(frozen=True, slots=True)
class _PolicySpec:
    factory: Callable[..., Policy]
    doc: str


def _lpm(**options: float | bool) -> Policy:
    opts: dict[str, float | bool] = {
        "age_tokens_per_s": 0.0,
        "max_wait_s": math.inf,
        "max_slowdown": math.inf,
        "urgency_tokens_per_step": 0.0,
        "fanout": False,
    }
    opts.update(options)
    policy = CacheAwarePolicy(**opts)  # type: ignore[arg-type]
    policy.name = "lpm"
    return policy


_POLICIES: dict[str, _PolicySpec] = {
    "fifo": _PolicySpec(lambda: FifoPolicy(), "first come, first served"),
    "lpm": _PolicySpec(_lpm, "longest cached prefix first, no aging (SGLang-style)"),
    "ours": _PolicySpec(CacheAwarePolicy, "cache-aware + fan-out + DAG urgency + deadlines + bounded wait"),
}


def policy_names() -> list[str]:
    """Names ``make_policy`` accepts."""
    return sorted(_POLICIES)


def make_policy(name: str, **options: float | bool) -> Policy:
    """Build a policy by name (``fifo``, ``lpm``, ``ours``) with keyword options for its constructor.

    >>> make_policy("fifo").name
    'fifo'
    """
    spec = _POLICIES.get(name)
    if spec is None:
        raise ConfigError(f"unknown scheduler policy {name!r}; choose one of {policy_names()}")
    try:
        return spec.factory(**options)
    except TypeError as exc:
        raise ConfigError(f"bad options {options!r} for scheduler policy {name!r}: {exc}") from exc
