"""Read notes from JSON Lines and import them as one temporal tree.

One JSON object per line::

    {"text": "Mia moved to Lisbon.", "time": "2024-03-02T10:15:00Z", "session": "chat-1", "speaker": "Mia"}

``text`` (a non-empty string) and ``time`` (ISO 8601; a time without a zone is read as UTC) are
required; ``session`` (default: the day of ``time``, ``2024-03-02``), ``speaker`` and ``id`` (a stable
leaf id; derived from the content when omitted) are optional. Blank lines are skipped. Every problem is
a ``ConfigError`` naming ``file:line`` and the fix; nothing is written unless the whole file is valid.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from agentflow.errors import ConfigError
from agentflow.memory._temporal import NewLeaf

if TYPE_CHECKING:
    from agentflow.memory._store import MemoryStore

__all__ = ["MAX_JSONL_BYTES", "import_jsonl", "load_jsonl"]

MAX_JSONL_BYTES = 64 * 1024 * 1024
"""Largest JSONL file ``load_jsonl`` reads (a bigger one is split by the user)."""

_FIELDS = frozenset({"text", "time", "session", "speaker", "id"})


def _parse_time(value: object, where: str) -> datetime:
    if not isinstance(value, str):
        raise ConfigError(f"{where}: 'time' must be an ISO 8601 string such as '2024-03-02T10:15:00Z'")
    try:
        at = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{where}: 'time' {value!r} is not ISO 8601; write e.g. '2024-03-02T10:15:00Z' or '2024-03-02'"
        ) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


def _optional_text(obj: dict[str, object], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: {key!r} must be a non-empty string, got {value!r}")
    return value.strip()


def _leaf(obj: object, where: str) -> NewLeaf:
    if not isinstance(obj, dict):
        raise ConfigError(f'{where}: each line must be a JSON object like {{"text": ..., "time": ...}}')
    unknown = sorted(set(obj) - _FIELDS)
    if unknown:
        raise ConfigError(f"{where}: unknown field(s) {unknown}; the fields are {sorted(_FIELDS)}")
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"{where}: 'text' must be a non-empty string")
    if "time" not in obj:
        raise ConfigError(f"{where}: 'time' is missing; give when it was said, e.g. '2024-03-02T10:15:00Z'")
    at = _parse_time(obj["time"], where)
    session = _optional_text(obj, "session", where) or at.date().isoformat()
    return NewLeaf(
        text=text.strip(),
        session=session,
        at=at,
        speaker=_optional_text(obj, "speaker", where),
        leaf_id=_optional_text(obj, "id", where),
    )


def load_jsonl(path: str | os.PathLike[str]) -> list[NewLeaf]:
    """The leaves of a JSON Lines file, in file order.

    Raises:
        ConfigError: The file is missing, larger than ``MAX_JSONL_BYTES``, or a line is not a valid note
            (the message names ``file:line``).
    """
    file = Path(path)
    try:
        size = file.stat().st_size
        if size > MAX_JSONL_BYTES:
            raise ConfigError(
                f"{str(file)!r} is {size} bytes, more than the {MAX_JSONL_BYTES} a JSONL import reads; split it"
            )
        lines = file.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read {str(file)!r}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{str(file)!r} is not UTF-8 text ({exc.reason}); save it as UTF-8") from None
    leaves: list[NewLeaf] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{file}:{number}"
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise ConfigError(f"{where}: not a JSON object ({exc}); write one object per line") from None
        leaves.append(_leaf(obj, where))
    if not leaves:
        raise ConfigError(f"{str(file)!r} holds no notes; write one JSON object per line")
    return leaves


async def import_jsonl(store: MemoryStore, path: str | os.PathLike[str], *, tree: str) -> int:
    """Import a JSON Lines file into the temporal tree ``tree`` in one transaction.

    Re-importing is a no-op (leaves are deduplicated by id, or by content when no id is given).

    Returns:
        The number of leaves created.
    """
    leaves = await store.run(load_jsonl, path)
    results = await store.temporal(tree).insert_many(leaves)
    return sum(r.created for r in results)
