"""A reader of Prometheus text exposition (``/metrics``) and vLLM's prefix-cache counters.

``parse_prometheus_text`` reads the text format 0.0.4 that ``prometheus_client`` writes (and vLLM
serves) with ``prometheus_client``'s own parser, and hands out its families as typed values:
``name_total`` samples belong to counter ``name``; ``name_bucket``/``name_sum``/``name_count`` to
histogram or summary ``name``. A malformed line is an ``EngineRequestError`` naming it.

``VLLMMetrics.from_text`` picks vLLM's engine-side cache numbers out of a scrape, summing over
label sets (several engines, several models); ``VLLMMetrics.delta(before, after)`` turns two
scrapes into what happened in between, which is how benchmarks report engine-side hit rates.

vLLM metric names read (v1 engine, ``vllm/v1/metrics/loggers.py``):

    vllm:prefix_cache_queries_total        counter  prompt tokens looked up in the prefix cache
    vllm:prefix_cache_hits_total           counter  of those, tokens found cached
    vllm:gpu_prefix_cache_queries_total    counter  the same before vLLM 0.9 (deprecated names)
    vllm:gpu_prefix_cache_hits_total       counter
    vllm:prompt_tokens_total               counter  prompt tokens of finished prefills
    vllm:prompt_tokens_cached_total        counter  of those, served from a cache (newer vLLM)
    vllm:prompt_tokens_by_source_total     counter  split by source=local_compute|local_cache_hit|
                                                    external_kv_transfer (newer vLLM)
    vllm:generation_tokens_total           counter
    vllm:num_preemptions_total             counter
    vllm:num_requests_running              gauge
    vllm:num_requests_waiting              gauge
    vllm:kv_cache_usage_perc               gauge    (older: vllm:gpu_cache_usage_perc)
    vllm:cache_config_info                 gauge    1, its labels are the CacheConfig's fields as strings
                                                    (block_size, num_gpu_blocks, enable_prefix_caching,
                                                    prefix_match_unit and kv_cache_size_tokens in 0.34),
                                                    one sample per engine (data-parallel rank)

``VLLMCacheConfig.from_scrape`` reads the last one: the block size the server's prefix cache hashes by, its
capacity, and whether prefix caching is on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Literal, TextIO, cast

from agentflow.errors import EngineRequestError

__all__ = [
    "MetricFamily",
    "MetricType",
    "PrometheusText",
    "Sample",
    "VLLMCacheConfig",
    "VLLMMetrics",
    "VLLMMetricsDelta",
    "parse_prometheus_text",
]

MetricType = Literal["counter", "gauge", "histogram", "summary", "untyped"]

_TYPES: Mapping[str, MetricType] = {
    "counter": "counter",
    "gauge": "gauge",
    "histogram": "histogram",
    "summary": "summary",
}
"""prometheus_client's family types as ours; the rest (``unknown``, OpenMetrics-only kinds) read as ``untyped``."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One sample line: ``name{labels} value [timestamp]``."""

    name: str
    labels: Mapping[str, str]
    value: float
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class MetricFamily:
    """The samples of one metric, with its declared type and help text."""

    name: str
    type: MetricType
    help: str
    samples: tuple[Sample, ...]


@dataclass(frozen=True, slots=True)
class PrometheusText:
    """A parsed scrape: metric families by name, in the order they appeared."""

    families: Mapping[str, MetricFamily]

    def samples(self, sample_name: str) -> tuple[Sample, ...]:
        """Every sample named exactly ``sample_name`` (e.g. ``vllm:prompt_tokens_total``)."""
        return tuple(s for family in self.families.values() for s in family.samples if s.name == sample_name)

    def total(self, sample_name: str, **labels: str) -> float | None:
        """Sum of the samples named ``sample_name`` whose labels include ``labels``.

        Returns ``None`` when no sample matches, so an absent metric is not mistaken for zero.
        """
        matching = [
            s.value
            for s in self.samples(sample_name)
            if all(s.labels.get(key) == value for key, value in labels.items())
        ]
        return math.fsum(matching) if matching else None


class _NumberedLines:
    """The lines of a scrape, split at ``\\n`` only (label values may hold other line breaks), counted as read."""

    def __init__(self, text: str) -> None:
        self._lines = text.split("\n")
        self.lineno = 0  # lifetime: one parse; the 1-based line the parser read last (0: none yet)

    def __iter__(self) -> Iterator[str]:
        for line in self._lines:
            self.lineno += 1  # read by the caller when the parser raises
            yield line

    def last(self) -> str:
        """The line read last (the bad one when the parser raised)."""
        return self._lines[self.lineno - 1] if self.lineno else ""


def parse_prometheus_text(text: str) -> PrometheusText:
    """Parse Prometheus text exposition format 0.0.4 into metric families (with ``prometheus_client.parser``).

    Args:
        text: The body of a ``/metrics`` response.

    Returns:
        The families by name, in the order they first appeared. Names follow ``prometheus_client``: a
        counter's family drops the ``_total`` of its samples (``vllm:prompt_tokens`` holds the samples named
        ``vllm:prompt_tokens_total``); a sample outside any declared family forms an ``untyped`` one.

    Raises:
        EngineRequestError: A line is not valid exposition text (the message names the line).
    """
    from prometheus_client.parser import text_fd_to_metric_families  # only where metrics are read

    lines = _NumberedLines(text)
    order: list[str] = []
    types: dict[str, MetricType] = {}
    helps: dict[str, str] = {}
    samples: dict[str, list[Sample]] = {}
    try:
        # The parser only iterates its file argument, so it reads the counted lines directly.
        for metric in text_fd_to_metric_families(cast(TextIO, lines)):
            if metric.name not in samples:
                order.append(metric.name)
                samples[metric.name] = []
                types[metric.name] = _TYPES.get(metric.type, "untyped")
                helps[metric.name] = metric.documentation
            samples[metric.name].extend(
                Sample(
                    s.name,
                    s.labels,
                    float(s.value),
                    None if s.timestamp is None else round(float(s.timestamp) * 1000),
                )
                for s in metric.samples
            )
    except (ValueError, IndexError, TypeError) as exc:
        # prometheus_client reports a bad line as ValueError (with or without a message); the line is ours.
        bad = lines.last()
        detail = f": {exc}" if str(exc) else ""
        raise EngineRequestError(
            f"cannot parse Prometheus metrics line {lines.lineno} ({bad[:200]!r}){detail}; "
            "is the URL a Prometheus text endpoint such as <server>/metrics?"
        ) from exc
    families = {name: MetricFamily(name, types[name], helps[name], tuple(samples[name])) for name in order}
    return PrometheusText(families)


def _first(scrape: PrometheusText, names: Iterable[str]) -> float | None:
    for name in names:
        value = scrape.total(name)
        if value is not None:
            return value
    return None


@dataclass(frozen=True, slots=True)
class VLLMMetricsDelta:
    """What a vLLM server did between two scrapes (counters subtracted).

    Attributes:
        prefix_cache_queries: Prompt tokens looked up in the prefix cache.
        prefix_cache_hits: Of those, tokens found cached.
        prompt_tokens: Prompt tokens prefilled or reused.
        cached_prompt_tokens: Prompt tokens served from a cache, when the server reports them.
        generation_tokens: Generated tokens.
        preemptions: Requests preempted (evicted and recomputed later).
    """

    prefix_cache_queries: float
    prefix_cache_hits: float
    prompt_tokens: float
    cached_prompt_tokens: float | None
    generation_tokens: float
    preemptions: float

    @property
    def hit_rate(self) -> float | None:
        """``prefix_cache_hits / prefix_cache_queries``, or ``None`` when nothing was queried."""
        return self.prefix_cache_hits / self.prefix_cache_queries if self.prefix_cache_queries else None

    @property
    def cached_fraction(self) -> float | None:
        """``cached_prompt_tokens / prompt_tokens``, or ``None`` when unknown or no prompts ran."""
        if self.cached_prompt_tokens is None or not self.prompt_tokens:
            return None
        return self.cached_prompt_tokens / self.prompt_tokens


def _counter_delta(before: float, after: float) -> float:
    # A counter that went down means the server restarted: the new value is all that happened since.
    return after - before if after >= before else after


@dataclass(frozen=True, slots=True)
class VLLMMetrics:
    """vLLM's engine-side cache and queue numbers from one ``/metrics`` scrape.

    Counters are cumulative since the server started and summed over every label set (engines,
    models). Missing counters read as 0, except ``cached_prompt_tokens`` and ``kv_cache_usage``,
    which stay ``None`` on vLLM versions that do not export them.

    Attributes:
        prefix_cache_queries: Prompt tokens looked up in the prefix cache.
        prefix_cache_hits: Of those, tokens found cached.
        prompt_tokens: Prompt tokens of all requests.
        cached_prompt_tokens: Prompt tokens served from a cache (local hits plus KV transfers).
        generation_tokens: Generated tokens.
        preemptions: Requests preempted so far.
        requests_running: Requests in the running batch now.
        requests_waiting: Requests queued now.
        kv_cache_usage: Fraction of KV-cache blocks in use now (0..1).
    """

    prefix_cache_queries: float = 0.0
    prefix_cache_hits: float = 0.0
    prompt_tokens: float = 0.0
    cached_prompt_tokens: float | None = None
    generation_tokens: float = 0.0
    preemptions: float = 0.0
    requests_running: float = 0.0
    requests_waiting: float = 0.0
    kv_cache_usage: float | None = None

    @property
    def hit_rate(self) -> float | None:
        """Cumulative prefix-cache hit rate in tokens, or ``None`` before any query."""
        return self.prefix_cache_hits / self.prefix_cache_queries if self.prefix_cache_queries else None

    @classmethod
    def from_scrape(cls, scrape: PrometheusText) -> VLLMMetrics:
        """Pick vLLM's numbers out of a parsed scrape (both current and pre-0.9 metric names)."""
        cached = scrape.total("vllm:prompt_tokens_cached_total")
        if cached is None:
            local = scrape.total("vllm:prompt_tokens_by_source_total", source="local_cache_hit")
            external = scrape.total("vllm:prompt_tokens_by_source_total", source="external_kv_transfer")
            if local is not None or external is not None:
                cached = (local or 0.0) + (external or 0.0)
        return cls(
            prefix_cache_queries=_first(
                scrape, ("vllm:prefix_cache_queries_total", "vllm:gpu_prefix_cache_queries_total")
            )
            or 0.0,
            prefix_cache_hits=_first(
                scrape, ("vllm:prefix_cache_hits_total", "vllm:gpu_prefix_cache_hits_total")
            )
            or 0.0,
            prompt_tokens=scrape.total("vllm:prompt_tokens_total") or 0.0,
            cached_prompt_tokens=cached,
            generation_tokens=scrape.total("vllm:generation_tokens_total") or 0.0,
            preemptions=scrape.total("vllm:num_preemptions_total") or 0.0,
            requests_running=scrape.total("vllm:num_requests_running") or 0.0,
            requests_waiting=scrape.total("vllm:num_requests_waiting") or 0.0,
            kv_cache_usage=_first(scrape, ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")),
        )

    @classmethod
    def from_text(cls, text: str) -> VLLMMetrics:
        """Parse a ``/metrics`` body and pick vLLM's numbers out of it."""
        return cls.from_scrape(parse_prometheus_text(text))

    @staticmethod
    def delta(before: VLLMMetrics, after: VLLMMetrics) -> VLLMMetricsDelta:
        """What happened between two scrapes.

        A counter lower in ``after`` than in ``before`` means the server restarted in between; the
        delta is then ``after``'s value (everything counted since the restart).
        """
        cached: float | None = None
        if after.cached_prompt_tokens is not None:
            cached = _counter_delta(before.cached_prompt_tokens or 0.0, after.cached_prompt_tokens)
        return VLLMMetricsDelta(
            prefix_cache_queries=_counter_delta(before.prefix_cache_queries, after.prefix_cache_queries),
            prefix_cache_hits=_counter_delta(before.prefix_cache_hits, after.prefix_cache_hits),
            prompt_tokens=_counter_delta(before.prompt_tokens, after.prompt_tokens),
            cached_prompt_tokens=cached,
            generation_tokens=_counter_delta(before.generation_tokens, after.generation_tokens),
            preemptions=_counter_delta(before.preemptions, after.preemptions),
        )


def _int_label(labels: Mapping[str, str], name: str) -> int | None:
    """A label holding a positive int (``str(value)`` of a CacheConfig field), else ``None`` ("None", junk)."""
    raw = labels.get(name, "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else None


@dataclass(frozen=True, slots=True)
class VLLMCacheConfig:
    """A vLLM server's KV cache configuration, from its ``vllm:cache_config_info`` gauge.

    Attributes:
        block_size: Tokens per KV block.
        prefix_match_unit: The finest token boundary a prefix-cache hit can land on, when set finer than the
            block size (vLLM 0.34's ``--prefix-match-unit``; ``None`` otherwise).
        enable_prefix_caching: Whether prefix caching is on (``None``: not reported).
        capacity_tokens: KV tokens the cache holds over all engines: ``kv_cache_size_tokens`` (0.34) or
            ``num_gpu_blocks * block_size``; ``None`` when not reported.
        engines: How many engines (data-parallel ranks) reported.
    """

    block_size: int | None
    prefix_match_unit: int | None
    enable_prefix_caching: bool | None
    capacity_tokens: int | None
    engines: int

    @property
    def hash_block_size(self) -> int | None:
        """Tokens per prefix-cache hash block: the granularity of hits, KV events and ``cached_tokens``."""
        return self.prefix_match_unit or self.block_size

    @classmethod
    def from_scrape(cls, scrape: PrometheusText) -> VLLMCacheConfig | None:
        """The cache configuration in a scrape, or ``None`` when it has no ``vllm:cache_config_info``."""
        samples = scrape.samples("vllm:cache_config_info")
        if not samples:
            return None
        first = samples[0].labels
        block = _int_label(first, "block_size")
        capacity = 0
        for sample in samples:
            tokens = _int_label(sample.labels, "kv_cache_size_tokens")
            blocks = _int_label(sample.labels, "num_gpu_blocks")
            size = _int_label(sample.labels, "block_size")
            if tokens is None and blocks is not None and size is not None:
                tokens = blocks * size
            if tokens is None:
                capacity = -1
                break
            capacity += tokens
        caching = first.get("enable_prefix_caching")
        return cls(
            block_size=block,
            prefix_match_unit=_int_label(first, "prefix_match_unit"),
            enable_prefix_caching=None if caching not in ("True", "False") else caching == "True",
            capacity_tokens=capacity if capacity > 0 else None,
            engines=len(samples),
        )
