"""Unit tests of RecordingEngine / ReplayEngine (recording a TestEngine, replaying without it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentflow.engines import (
    GenerationRequest,
    Message,
    RecordingEngine,
    ReplayEngine,
    RequestHints,
    TestEngine,
    request_key,
)
from agentflow.errors import ConfigError, EngineRequestError, EngineUnavailableError

pytestmark = pytest.mark.anyio


async def test_replay_returns_recorded_completions_without_inner_engine(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    recorder = RecordingEngine(TestEngine(), path)
    requests = [
        GenerationRequest(prompt="one"),
        GenerationRequest(messages=(Message("user", "two"),), max_tokens=8),
    ]
    recorded = [await recorder.generate(r) for r in requests]
    assert len(path.read_text().splitlines()) == 2

    replay = ReplayEngine(path)
    assert len(replay) == 2
    for request, original in zip(requests, recorded, strict=True):
        again = await replay.generate(request)
        assert again.text == original.text
        assert again.finish_reason == original.finish_reason
        assert again.usage.prompt_tokens == original.usage.prompt_tokens
        assert again.usage.completion_tokens == original.usage.completion_tokens


async def test_replay_ignores_scheduling_hints_in_request_key() -> None:
    plain = GenerationRequest(prompt="p")
    hinted = GenerationRequest(prompt="p", hints=RequestHints(workflow_id="w", agent="a", priority=3))
    assert request_key(plain) == request_key(hinted)
    assert request_key(plain) != request_key(GenerationRequest(prompt="p", temperature=0.5))
    biased = GenerationRequest(prompt="p", logit_bias={5: -100.0})
    assert request_key(biased) != request_key(plain)
    assert request_key(biased) == request_key(GenerationRequest(prompt="p", logit_bias={5: -100}))
    assert request_key(GenerationRequest(prompt="p", logit_bias={})) == request_key(plain)


async def test_replay_raises_request_error_for_unrecorded_request(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    await RecordingEngine(TestEngine(), path).generate(GenerationRequest(prompt="known"))
    replay = ReplayEngine(path)
    with pytest.raises(EngineRequestError, match="not in the recording"):
        await replay.generate(GenerationRequest(prompt="unknown"))


async def test_replay_serves_repeated_requests_in_recorded_order(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    answers = iter(["first", "second"])
    recorder = RecordingEngine(TestEngine(lambda r: next(answers)), path)
    request = GenerationRequest(prompt="same")
    await recorder.generate(request)
    await recorder.generate(request)
    replay = ReplayEngine(path)
    assert [(await replay.generate(request)).text for _ in range(3)] == ["first", "second", "second"]


async def test_recording_stream_records_assembled_completion(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    recorder = RecordingEngine(TestEngine(response="streamed words here"), path)
    request = GenerationRequest(prompt="s")
    async with recorder.stream(request) as stream:
        text = "".join([c.text async for c in stream])
    line = json.loads(path.read_text())
    assert line["completion"]["text"] == text == "streamed words here"
    async with ReplayEngine(path).stream(request) as stream:
        replayed = [c async for c in stream]
    assert "".join(c.text for c in replayed) == text
    assert replayed[-1].usage is not None


def test_replay_missing_file_raises_unavailable(tmp_path: Path) -> None:
    with pytest.raises(EngineUnavailableError, match="does not exist"):
        ReplayEngine(tmp_path / "nope.jsonl")


def test_replay_bad_line_raises_config_error_naming_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"key": "k"}\n')
    with pytest.raises(ConfigError, match=r"bad\.jsonl:1"):
        ReplayEngine(path)
