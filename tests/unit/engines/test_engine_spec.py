"""Unit tests of engine spec parsing (no model is loaded: llamacpp specs are checked for errors only)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentflow.engines import ENGINE_SPEC_FORMS, RecordingEngine, ReplayEngine, TestEngine, engine_from_spec
from agentflow.errors import ConfigError, EngineUnavailableError


def test_test_spec_builds_test_engine() -> None:
    assert isinstance(engine_from_spec("test:"), TestEngine)
    assert isinstance(engine_from_spec(" TEST: "), TestEngine)


def test_replay_spec_builds_replay_engine(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    import anyio

    from agentflow.engines import GenerationRequest

    anyio.run(RecordingEngine(TestEngine(), path).generate, GenerationRequest(prompt="x"))
    engine = engine_from_spec(f"replay:{path}")
    assert isinstance(engine, ReplayEngine)
    assert len(engine) == 1


@pytest.mark.parametrize(
    "spec", ["nope:x", "gpt4", "", "replay:", "openai:http://h/v1", "openai:#m", "vllm:"]
)
def test_bad_spec_raises_config_error_listing_valid_forms(spec: str) -> None:
    with pytest.raises(ConfigError) as info:
        engine_from_spec(spec)
    for form in ENGINE_SPEC_FORMS:
        assert form in str(info.value)


def test_test_spec_with_argument_raises_config_error() -> None:
    with pytest.raises(ConfigError, match="takes no argument"):
        engine_from_spec("test:extra")


def test_llamacpp_spec_with_missing_file_raises_unavailable_naming_path(tmp_path: Path) -> None:
    missing = tmp_path / "missing.gguf"
    with pytest.raises(EngineUnavailableError, match=r"missing\.gguf"):
        engine_from_spec(f"llamacpp:{missing}")
