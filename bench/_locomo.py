"""Read LoCoMo conversations and import them as temporal trees (one tree per conversation).

The format (snap-research/locomo, v2): one JSON object per conversation, either one per file or a list
of them in one file, with ``conversation`` holding ``speaker_a``, ``speaker_b``, ``session_N`` (a list of
turns ``{speaker, dia_id, text, blip_caption?}``) and ``session_N_date_time`` ("1:56 pm on 8 May, 2023"),
and ``qa`` holding questions with ``evidence`` turn ids. Files without the ``conversation`` wrapper
(the conversation fields at the top level) are read too.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, cast

from agentflow.errors import ConfigError
from agentflow.memory import NewLeaf

if TYPE_CHECKING:
    from agentflow.memory import MemoryStore

__all__ = [
    "LocomoConversation",
    "LocomoQuestion",
    "LocomoSession",
    "LocomoTurn",
    "import_locomo",
    "load_locomo",
]

_SESSION = re.compile(r"^session_(\d+)$")


@dataclass(frozen=True)
class LocomoTurn:
    """One turn: its id (``D3:12``), speaker and text (an image caption, if any, appended)."""

    dia_id: str
    speaker: str
    text: str


@dataclass(frozen=True)
class LocomoSession:
    """A numbered, dated session of turns."""

    number: int
    at: datetime
    turns: tuple[LocomoTurn, ...]

    @property
    def name(self) -> str:
        """The session name used in the tree (``D3`` for session 3, matching the turn ids)."""
        return f"D{self.number}"

    def leaves(self) -> list[NewLeaf]:
        """The turns as leaves, with the turn id as leaf id and the session date as their time."""
        return [
            NewLeaf(
                text=t.text,
                session=self.name,
                at=self.at,
                speaker=t.speaker,
                leaf_id=t.dia_id,
                session_at=self.at,
            )
            for t in self.turns
        ]


@dataclass(frozen=True)
class LocomoQuestion:
    """A QA item with its evidence turn ids and category (1-5)."""

    question: str
    evidence: tuple[str, ...]
    category: int


@dataclass(frozen=True)
class LocomoConversation:
    """One conversation: its id (the file stem or ``sample_id``), sessions and questions."""

    conv_id: str
    sessions: tuple[LocomoSession, ...]
    questions: tuple[LocomoQuestion, ...]

    def leaves(self) -> list[NewLeaf]:
        """The turns as leaves, session by session, with the turn id as leaf id."""
        return [leaf for s in self.sessions for leaf in s.leaves()]


def parse_locomo_date(value: str) -> datetime:
    """Parse ``"1:56 pm on 8 May, 2023"`` (read as UTC)."""
    text = " ".join(value.replace(",", " ").split())
    for fmt in ("%I:%M %p on %d %B %Y", "%H:%M on %d %B %Y", "%d %B %Y"):
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=UTC)
        except ValueError:
            continue
    raise ConfigError(
        f"LoCoMo session date {value!r} is not like '1:56 pm on 8 May, 2023'; fix the data file"
    )


def _conversation(obj: dict[str, object], fallback_id: str) -> LocomoConversation:
    conv = obj.get("conversation", obj)
    if not isinstance(conv, dict):
        raise ConfigError(f"LoCoMo conversation {fallback_id!r} has no 'conversation' object")
    conv = cast("dict[str, object]", conv)
    sessions: list[LocomoSession] = []
    for key, value in conv.items():
        match = _SESSION.match(key)
        if match is None or not isinstance(value, list):
            continue
        date = conv.get(f"{key}_date_time")
        if not isinstance(date, str):
            raise ConfigError(f"LoCoMo conversation {fallback_id!r} has {key} but no {key}_date_time")
        turns = []
        for raw in cast("list[dict[str, object]]", value):
            text = str(raw.get("text", ""))
            caption = raw.get("blip_caption")
            if caption:
                text = f"{text} [shares a photo: {caption}]"
            turns.append(LocomoTurn(dia_id=str(raw["dia_id"]), speaker=str(raw["speaker"]), text=text))
        sessions.append(
            LocomoSession(number=int(match.group(1)), at=parse_locomo_date(date), turns=tuple(turns))
        )
    sessions.sort(key=lambda s: s.number)
    questions = []
    for raw_q in cast("list[dict[str, object]]", obj.get("qa", [])):
        evidence = raw_q.get("evidence") or []
        questions.append(
            LocomoQuestion(
                question=str(raw_q["question"]),
                evidence=tuple(str(e) for e in cast("list[object]", evidence)),
                category=int(cast("int", raw_q.get("category", 0))),
            )
        )
    conv_id = str(obj.get("sample_id", fallback_id))
    return LocomoConversation(conv_id=conv_id, sessions=tuple(sessions), questions=tuple(questions))


def load_locomo(path: str | os.PathLike[str]) -> list[LocomoConversation]:
    """Load every conversation under ``path`` (a folder of ``*.json`` files, or one file).

    Raises:
        ConfigError: The path holds no JSON file or a file is not LoCoMo-shaped.
    """
    root = Path(path)
    files = sorted(root.glob("*.json")) if root.is_dir() else [root]
    if not files or not files[0].exists():
        raise ConfigError(f"no LoCoMo JSON files at {str(root)!r}; pass a folder of conversation .json files")
    out: list[LocomoConversation] = []
    for file in files:
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read LoCoMo file {str(file)!r}: {exc}") from exc
        items = data if isinstance(data, list) else [data]
        for i, item in enumerate(items):
            fallback = file.stem if len(items) == 1 else f"{file.stem}-{i}"
            out.append(_conversation(cast("dict[str, object]", item), fallback))
    return out


async def import_locomo(
    store: MemoryStore, path: str | os.PathLike[str], *, tree_prefix: str = "locomo-"
) -> dict[str, int]:
    """Import LoCoMo conversations into ``store``, one temporal tree per conversation.

    Each session is one transaction; re-importing is a no-op (leaves are deduplicated by content).

    Args:
        store: The store to write to.
        path: A LoCoMo folder or file.
        tree_prefix: Tree ids are ``tree_prefix + conversation id``.

    Returns:
        The number of leaves created per tree id.
    """
    conversations = await store.run(load_locomo, path)
    created: dict[str, int] = {}
    for conv in conversations:
        tree = store.temporal(f"{tree_prefix}{conv.conv_id}")
        count = 0
        for session in conv.sessions:
            results = await tree.insert_many(session.leaves())
            count += sum(r.created for r in results)
        created[tree.tree_id] = count
    return created
