"""VLLMEngine without vLLM: the missing-extra error and the request -> vLLM mapping functions.

``make_sampling_params`` is exercised with small dataclasses that have the constructor shapes of
``vllm.SamplingParams`` / ``StructuredOutputsParams`` / ``GuidedDecodingParams``: what is under
test is which arguments agentflow passes, not vLLM.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

import pytest

from agentflow.engines._types import GenerationRequest
from agentflow.engines._vllm import (
    OutputKind,
    VLLMApi,
    VLLMEngine,
    finish_reason_from_vllm,
    make_sampling_params,
    require_vllm,
    sampling_spec,
    usage_from_output,
    vllm_prompt,
)
from agentflow.errors import EngineUnavailableError

SCHEMA: dict[str, object] = {"type": "object", "properties": {"answer": {"type": "integer"}}}

vllm_missing = pytest.mark.skipif(
    importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here"
)


@vllm_missing
def test_engine_raises_unavailable_naming_extra_when_vllm_is_missing() -> None:
    with pytest.raises(EngineUnavailableError, match=r"agentflow\[vllm\]"):
        VLLMEngine("HuggingFaceTB/SmolLM2-135M-Instruct")
    with pytest.raises(EngineUnavailableError, match="OpenAIEngine"):
        require_vllm()


def test_sampling_spec_copies_sampling_fields_when_request_sets_them() -> None:
    request = GenerationRequest(
        prompt="x", max_tokens=12, temperature=0.7, top_p=0.9, stop=("\n", "END"), seed=3
    )
    spec = sampling_spec(request, stream=True)
    assert dict(spec.kwargs) == {
        "n": 1,
        "max_tokens": 12,
        "temperature": 0.7,
        "top_p": 0.9,
        "stop": ["\n", "END"],
        "seed": 3,
    }
    assert spec.output_kind == "delta" and spec.json_schema is None


def test_sampling_spec_passes_logit_bias_with_int_token_ids() -> None:
    spec = sampling_spec(GenerationRequest(prompt="x", logit_bias={7: -100, 9: 2.5}), stream=False)
    assert spec.kwargs["logit_bias"] == {7: -100.0, 9: 2.5}


def test_sampling_spec_leaves_out_unset_fields_when_request_is_minimal() -> None:
    spec = sampling_spec(GenerationRequest(prompt="x", json_schema=SCHEMA), stream=False)
    assert "stop" not in spec.kwargs and "seed" not in spec.kwargs and "logit_bias" not in spec.kwargs
    assert spec.output_kind == "final_only" and spec.json_schema == SCHEMA


@dataclass
class _StructuredOutputsParams:
    json: dict[str, object] | None = None


@dataclass
class _GuidedDecodingParams:
    json: dict[str, object] | None = None


@dataclass
class _SamplingParams:
    n: int = 1
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] | None = None
    seed: int | None = None
    output_kind: str = "cumulative"
    structured_outputs: _StructuredOutputsParams | None = None
    guided_decoding: _GuidedDecodingParams | None = None


KINDS: dict[OutputKind, object] = {"delta": "DELTA", "final_only": "FINAL_ONLY"}


def test_make_sampling_params_uses_structured_outputs_when_vllm_is_recent() -> None:
    api = VLLMApi(_SamplingParams, KINDS, "structured_outputs", _StructuredOutputsParams)
    params = make_sampling_params(
        sampling_spec(GenerationRequest(prompt="x", json_schema=SCHEMA), stream=False), api
    )
    assert params == _SamplingParams(
        max_tokens=256,
        temperature=0.0,
        output_kind="FINAL_ONLY",
        structured_outputs=_StructuredOutputsParams(SCHEMA),
    )


def test_make_sampling_params_uses_guided_decoding_when_vllm_is_older() -> None:
    api = VLLMApi(_SamplingParams, KINDS, "guided_decoding", _GuidedDecodingParams)
    params = make_sampling_params(
        sampling_spec(GenerationRequest(prompt="x", json_schema=SCHEMA), stream=True), api
    )
    assert isinstance(params, _SamplingParams)
    assert params.guided_decoding == _GuidedDecodingParams(SCHEMA) and params.structured_outputs is None
    assert params.output_kind == "DELTA"


def test_make_sampling_params_sets_no_constraint_when_request_has_no_schema() -> None:
    api = VLLMApi(_SamplingParams, KINDS, "structured_outputs", _StructuredOutputsParams)
    params = make_sampling_params(sampling_spec(GenerationRequest(prompt="x"), stream=False), api)
    assert isinstance(params, _SamplingParams) and params.structured_outputs is None


def test_vllm_prompt_carries_cache_salt_when_tenant_is_salted() -> None:
    assert vllm_prompt("hello", None) == {"prompt": "hello"}
    assert vllm_prompt("hello", "s4lt") == {"prompt": "hello", "cache_salt": "s4lt"}


def test_vllm_prompt_passes_token_ids_when_chat_was_rendered_and_tokenized() -> None:
    assert vllm_prompt((1, 2, 3), None) == {"prompt_token_ids": [1, 2, 3]}
    assert vllm_prompt([7], "s") == {"prompt_token_ids": [7], "cache_salt": "s"}


def test_usage_from_output_splits_cached_tokens_when_vllm_reports_them() -> None:
    usage = usage_from_output(list(range(40)), 32, 5, queue_s=0.1, ttft_s=0.2, total_s=0.5)
    assert (usage.prompt_tokens, usage.cached_tokens, usage.computed_tokens, usage.completion_tokens) == (
        40,
        32,
        8,
        5,
    )
    assert (usage.queue_s, usage.ttft_s, usage.total_s) == (0.1, 0.2, 0.5)


def test_usage_from_output_reports_cached_tokens_unknown_when_vllm_gives_none() -> None:
    usage = usage_from_output([1, 2, 3], None, 0, queue_s=0.0, ttft_s=0.0, total_s=0.0)
    assert (usage.prompt_tokens, usage.cached_tokens, usage.computed_tokens) == (3, None, 3)
    clamped = usage_from_output([1, 2], 99, 1, queue_s=0.0, ttft_s=0.0, total_s=0.0)
    assert (clamped.cached_tokens, clamped.computed_tokens) == (2, 0)


@pytest.mark.parametrize(
    ("reason", "expected"), [("stop", "stop"), ("length", "length"), ("abort", "error"), (None, "stop")]
)
def test_finish_reason_maps_vllm_reasons_when_given(reason: str | None, expected: str) -> None:
    assert finish_reason_from_vllm(reason) == expected


def test_cache_facts_read_the_started_engines_block_size_and_capacity() -> None:
    from types import SimpleNamespace

    from agentflow.engines._vllm import cache_facts

    config = SimpleNamespace(
        cache_config=SimpleNamespace(
            block_size=64, num_gpu_blocks=100, enable_prefix_caching=True, prefix_match_unit=None
        )
    )
    facts = cache_facts(config)
    assert (facts.hash_block_size, facts.capacity_tokens, facts.enable_prefix_caching) == (64, 6400, True)
    finer = cache_facts(
        SimpleNamespace(
            cache_config=SimpleNamespace(block_size=1024, prefix_match_unit=32, num_gpu_blocks=None)
        )
    )
    assert (finer.hash_block_size, finer.capacity_tokens) == (32, None)
    assert cache_facts(None).block_size is None
