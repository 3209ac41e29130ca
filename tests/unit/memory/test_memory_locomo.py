"""The benchmarks' LoCoMo loader (bench/_locomo.py) and its import into temporal trees, on a small LoCoMo file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _bench import bench_module

from agentflow.errors import ConfigError
from agentflow.memory import MemoryStore

_locomo = bench_module("_locomo")
load_locomo = _locomo.load_locomo
import_locomo = _locomo.import_locomo

SAMPLE = {
    "speaker_a": "Ann",
    "speaker_b": "Bob",
    "session_1_date_time": "1:56 pm on 8 May, 2023",
    "session_1": [
        {"speaker": "Ann", "dia_id": "D1:1", "text": "I adopted a cat."},
        {"speaker": "Bob", "dia_id": "D1:2", "text": "Look!", "blip_caption": "a photo of a red bike"},
    ],
    "session_2_date_time": "10:02 am on 9 June, 2023",
    "session_2": [{"speaker": "Ann", "dia_id": "D2:1", "text": "The cat is called Misty."}],
    "qa": [
        {"question": "What is the cat called?", "answer": "Misty", "evidence": ["D2:1"], "category": 1},
        {"question": "Adversarial?", "evidence": [], "category": 5},
    ],
}


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "locomo"
    folder.mkdir()
    (folder / "7.json").write_text(json.dumps(SAMPLE))
    (folder / "wrapped.json").write_text(
        json.dumps([{"sample_id": "conv-9", "conversation": SAMPLE, "qa": SAMPLE["qa"]}])
    )
    return folder


def test_load_reads_flat_and_wrapped_files(tmp_path: Path) -> None:
    conversations = load_locomo(_folder(tmp_path))
    assert [c.conv_id for c in conversations] == ["7", "conv-9"]
    conv = conversations[0]
    assert [s.name for s in conv.sessions] == ["D1", "D2"]
    assert conv.sessions[1].at.isoformat() == "2023-06-09T10:02:00+00:00"
    assert conv.sessions[0].turns[1].text == "Look! [shares a photo: a photo of a red bike]"
    assert conv.questions[0].evidence == ("D2:1",)


def test_load_refuses_folder_without_json(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no LoCoMo JSON files"):
        load_locomo(tmp_path)


@pytest.mark.anyio
async def test_import_builds_one_tree_per_conversation_and_is_idempotent(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    async with MemoryStore(tmp_path / "m.db") as store:
        assert await import_locomo(store, folder) == {"locomo-7": 3, "locomo-conv-9": 3}
        assert await import_locomo(store, folder) == {"locomo-7": 0, "locomo-conv-9": 0}
        tree = store.temporal("locomo-7")
        hits = await tree.search("What is the cat called?", k=1)
        assert hits[0].leaf.id == "D2:1"
        assert [p.key for p in hits[0].path] == ["root", "2023-06", "D2"]
