"""The Prometheus text parser and vLLM's prefix-cache metrics, against a vLLM v1 scrape sample."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agentflow.engines._metrics import VLLMMetrics, parse_prometheus_text
from agentflow.errors import EngineRequestError

SAMPLE = Path(__file__).with_name("vllm_metrics_v1.prom")

OLD_NAMES = """\
# HELP vllm:gpu_prefix_cache_queries_total GPU prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:gpu_prefix_cache_queries_total counter
vllm:gpu_prefix_cache_queries_total{engine="0",model_name="m"} 300.0
# HELP vllm:gpu_prefix_cache_hits_total GPU prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:gpu_prefix_cache_hits_total counter
vllm:gpu_prefix_cache_hits_total{engine="0",model_name="m"} 100.0
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:gpu_cache_usage_perc gauge
vllm:gpu_cache_usage_perc{engine="0",model_name="m"} 0.5
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine="0",model_name="m"} 300.0
"""


def test_families_group_counter_and_histogram_samples_when_parsing_vllm_sample() -> None:
    scrape = parse_prometheus_text(SAMPLE.read_text())
    hits = scrape.families["vllm:prefix_cache_hits"]  # a counter family is named without _total
    assert hits.type == "counter"
    assert hits.help == "Prefix cache hits, in terms of number of cached tokens."
    assert [s.value for s in hits.samples] == [9216.0, 2784.0]
    ttft = scrape.families["vllm:time_to_first_token_seconds"]
    assert ttft.type == "histogram"
    assert {s.name for s in ttft.samples} == {
        "vllm:time_to_first_token_seconds_sum",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:time_to_first_token_seconds_count",
    }
    inf_bucket = [s for s in ttft.samples if s.labels.get("le") == "+Inf"]
    assert inf_bucket[0].value == 64.0
    assert scrape.families["vllm:prefix_cache_queries_created"].type == "gauge"
    info = scrape.samples("vllm:cache_config_info")[0]
    assert info.labels["num_gpu_blocks"] == "23831"
    assert scrape.samples("vllm:lora_requests_info")[0].labels["running_lora_adapters"] == ""


def test_total_sums_label_sets_and_filters_when_labels_given() -> None:
    scrape = parse_prometheus_text(SAMPLE.read_text())
    assert scrape.total("vllm:prompt_tokens_total") == 16000.0
    assert scrape.total("vllm:prompt_tokens_total", engine="1") == 4000.0
    assert scrape.total("vllm:prompt_tokens_by_source_total", source="local_compute") == 4000.0
    assert scrape.total("vllm:not_exported_total") is None


def test_vllm_metrics_reads_v1_names_when_given_sample() -> None:
    metrics = VLLMMetrics.from_text(SAMPLE.read_text())
    assert metrics.prefix_cache_queries == 16000.0
    assert metrics.prefix_cache_hits == 12000.0
    assert metrics.hit_rate == pytest.approx(0.75)
    assert metrics.prompt_tokens == 16000.0
    assert metrics.cached_prompt_tokens == 12000.0
    assert metrics.generation_tokens == 3072.0
    assert metrics.preemptions == 3.0
    assert metrics.requests_running == 5.0
    assert metrics.requests_waiting == 4.0
    assert metrics.kv_cache_usage == pytest.approx(0.375)


def test_vllm_metrics_reads_pre_0_9_names_when_new_ones_absent() -> None:
    metrics = VLLMMetrics.from_text(OLD_NAMES)
    assert metrics.prefix_cache_queries == 300.0
    assert metrics.prefix_cache_hits == 100.0
    assert metrics.kv_cache_usage == 0.5
    assert metrics.cached_prompt_tokens is None
    assert metrics.hit_rate == pytest.approx(1 / 3)


def test_cached_prompt_tokens_come_from_by_source_when_cached_counter_absent() -> None:
    text = "\n".join(
        line for line in SAMPLE.read_text().splitlines() if not line.startswith("vllm:prompt_tokens_cached")
    )
    assert VLLMMetrics.from_text(text).cached_prompt_tokens == 12000.0


def test_delta_reports_hit_rate_between_scrapes_when_counters_grow() -> None:
    before = VLLMMetrics.from_text(OLD_NAMES)
    after = VLLMMetrics(
        prefix_cache_queries=500.0,
        prefix_cache_hits=250.0,
        prompt_tokens=500.0,
        cached_prompt_tokens=150.0,
        generation_tokens=40.0,
        preemptions=1.0,
    )
    delta = VLLMMetrics.delta(before, after)
    assert delta.prefix_cache_queries == 200.0
    assert delta.prefix_cache_hits == 150.0
    assert delta.hit_rate == pytest.approx(0.75)
    assert delta.cached_prompt_tokens == 150.0
    assert delta.cached_fraction == pytest.approx(0.75)
    assert delta.generation_tokens == 40.0
    assert delta.preemptions == 1.0


def test_delta_counts_from_zero_when_server_restarted() -> None:
    before = VLLMMetrics(prefix_cache_queries=1000.0, prefix_cache_hits=900.0, prompt_tokens=1000.0)
    after = VLLMMetrics(prefix_cache_queries=40.0, prefix_cache_hits=10.0, prompt_tokens=40.0)
    delta = VLLMMetrics.delta(before, after)
    assert (delta.prefix_cache_queries, delta.prefix_cache_hits) == (40.0, 10.0)
    assert delta.hit_rate == pytest.approx(0.25)


def test_delta_hit_rate_is_none_when_nothing_was_queried() -> None:
    same = VLLMMetrics(prefix_cache_queries=10.0)
    assert VLLMMetrics.delta(same, same).hit_rate is None
    assert VLLMMetrics.delta(same, same).cached_fraction is None


def test_parser_handles_escapes_special_values_and_timestamps_when_present() -> None:
    text = (
        "# HELP weird A help with a \\\\ backslash\\nand newline\n"
        "# TYPE weird gauge\n"
        'weird{path="C:\\\\dir",quote="say \\"hi\\"",nl="a\\nb"} +Inf 1700000000000\n'
        'weird{path="x"} -Inf\n'
        'weird{path="y",} NaN\n'
        "untyped_metric 42\n"
    )
    scrape = parse_prometheus_text(text)
    family = scrape.families["weird"]
    assert family.help == "A help with a \\ backslash\nand newline"
    first, second, third = family.samples
    assert first.labels == {"path": "C:\\dir", "quote": 'say "hi"', "nl": "a\nb"}
    assert first.value == math.inf and first.timestamp_ms == 1700000000000
    assert second.value == -math.inf
    assert math.isnan(third.value)
    assert scrape.families["untyped_metric"].type == "untyped"


@pytest.mark.parametrize(
    "line",
    ['bad{label="unterminated} 1', "name_only", 'm{l="v"} notanumber', 'm{="v"} 1', "m 1 notatime"],
)
def test_parser_raises_engine_request_error_naming_line_when_malformed(line: str) -> None:
    with pytest.raises(EngineRequestError, match="line 2"):
        parse_prometheus_text(f"ok_metric 1\n{line}\n")


@given(text=st.text(alphabet=st.sampled_from('abm_:{}="\\, #\n\t01.+-eINTYPEHLfa'), max_size=80))
def test_parser_returns_families_or_engine_request_error_when_text_is_arbitrary(text: str) -> None:
    # A server's /metrics body is untrusted: whatever it holds, the caller gets families or our error.
    try:
        scrape = parse_prometheus_text(text)
    except EngineRequestError as exc:
        assert "cannot parse Prometheus metrics line" in str(exc)
    else:
        assert all(isinstance(s.value, float) for f in scrape.families.values() for s in f.samples)


_names = st.from_regex(r"[a-z_:][a-z0-9_:]{0,15}", fullmatch=True)
# Label names starting with "__" are reserved for Prometheus itself (the parser refuses them).
_label_names = st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True).filter(lambda n: not n.startswith("__"))
_label_values = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


@given(
    name=_names,
    labels=st.dictionaries(_label_names, _label_values, max_size=4),
    value=st.floats(allow_nan=False, width=64),
)
def test_parser_round_trips_any_sample_when_written_in_exposition_format(
    name: str, labels: dict[str, str], value: float
) -> None:
    rendered = ",".join(f'{key}="{_escape(val)}"' for key, val in labels.items())
    text = f"# TYPE {name} gauge\n{name}{{{rendered}}} {value!r}\n"
    (sample,) = parse_prometheus_text(text).families[name].samples
    assert sample.name == name
    assert dict(sample.labels) == labels
    assert sample.value == value
