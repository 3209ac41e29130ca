"""JSON Lines notes: parsing rules, file:line errors, and an import that a query finds."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from agentflow.errors import ConfigError
from agentflow.memory import MemoryStore, import_jsonl, load_jsonl

pytestmark = pytest.mark.anyio


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "notes.jsonl"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_jsonl_reads_fields_and_defaults_the_session_to_the_day(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '{"text": "Mia moved to Lisbon.", "time": "2024-03-02T10:15:00", "speaker": "Mia"}\n'
        "\n"
        '{"text": "The lease starts in April.", "time": "2024-03-05T09:00:00+01:00", "session": "s2", "id": "n2"}\n',
    )
    first, second = load_jsonl(path)
    assert (first.text, first.session, first.speaker) == ("Mia moved to Lisbon.", "2024-03-02", "Mia")
    assert first.at == datetime(2024, 3, 2, 10, 15, tzinfo=UTC)
    assert (second.session, second.leaf_id) == ("s2", "n2")


@pytest.mark.parametrize(
    ("line", "needle"),
    [
        ('{"time": "2024-03-02"}', "'text' must be a non-empty string"),
        ('{"text": "x"}', "'time' is missing"),
        ('{"text": "x", "time": "yesterday"}', "is not ISO 8601"),
        ('{"text": "x", "time": "2024-03-02", "topic": "y"}', "unknown field(s) ['topic']"),
        ("[1, 2]", "must be a JSON object"),
        ("{not json", "not a JSON object"),
    ],
)
def test_load_jsonl_names_file_and_line_when_a_note_is_invalid(
    tmp_path: Path, line: str, needle: str
) -> None:
    path = _write(tmp_path, '{"text": "ok", "time": "2024-03-02"}\n' + line + "\n")
    with pytest.raises(ConfigError) as info:
        load_jsonl(path)
    assert f"{path}:2" in str(info.value) and needle in str(info.value)


def test_load_jsonl_rejects_an_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="holds no notes"):
        load_jsonl(_write(tmp_path, "\n\n"))


async def test_import_jsonl_is_searchable_and_idempotent(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '{"text": "Mia moved to Lisbon in March.", "time": "2024-03-02T10:15:00Z", "session": "chat-1"}\n'
        '{"text": "Noah adopted a grey cat.", "time": "2024-04-11T18:00:00Z", "session": "chat-2"}\n',
    )
    async with MemoryStore(str(tmp_path / "m.db")) as store:
        assert await import_jsonl(store, path, tree="notes") == 2
        assert await import_jsonl(store, path, tree="notes") == 0
        hits = await store.temporal("notes").search("where did Mia move", 1)
    assert hits[0].leaf.text == "Mia moved to Lisbon in March."
