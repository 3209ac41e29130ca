"""Run files: one run as a JSON-lines file, to keep or share a run outside the journal.

``agentflow run`` keeps every run in the journal (``agentflow.runtime``), which ``agentflow report`` and
``agentflow runs`` read. A run file is its portable form: ``agentflow runs export RUN`` writes one
(``write_run``), ``agentflow report FILE.jsonl`` opens one (``load_run``), and so are the files older
agentflow versions saved under ``.agentflow/runs``. A file holds::

    {"type": "run", "format": 2, "run_id": ..., "plan": ..., "engine": ..., "started": ..., "inputs": {...}}
    {"type": "event", "kind": "step.start", "path": "...", "time": ..., <the event's fields>}  (one per event)
    {"type": "result", "ok": true, "finished": ..., "value": ...}  /  {"ok": false, "error": ...}

Events are the typed run events (``agentflow.dsl.Event``), written by ``event_to_json``. Files of format 1
(no ``format`` key; events as ``{"kind", "path", "time", "data"}``) are still read; a newer format is refused
with a message naming it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import JsonValue

from agentflow.dsl import EVENT_FORMAT, Event, EventFormatError, event_from_json, event_to_json
from agentflow.errors import ConfigError
from agentflow.secrets import redact

__all__ = ["DEFAULT_RUNS_DIR", "RunRecord", "list_runs", "load_run", "save_run", "write_run"]

DEFAULT_RUNS_DIR = Path(".agentflow") / "runs"
"""Where ``save_run`` puts run files unless told otherwise (and where older agentflow versions saved every
run), relative to the working directory."""


@dataclass(frozen=True)
class RunRecord:
    """One run, as a report reads it.

    Attributes:
        run_id: The run's id.
        plan: The plan (or workflow) name.
        engine: The engine spec or name.
        started: Wall-clock start (seconds since the epoch).
        finished: Wall-clock end.
        ok: Whether it succeeded.
        inputs: The inputs it ran with.
        value: The result (JSON-compatible rendering) when ok.
        error: The error message when not ok.
        trace: The run's trace events in order.
    """

    run_id: str
    plan: str
    engine: str
    started: float
    finished: float
    ok: bool
    inputs: Mapping[str, JsonValue] = field(default_factory=dict)
    value: JsonValue = None
    error: str | None = None
    trace: tuple[Event, ...] = ()


def _json_safe(value: object) -> JsonValue:
    """A JSON-compatible copy (unknown objects become their ``str``)."""
    result: JsonValue = json.loads(json.dumps(value, default=str))
    return result


def save_run(record: RunRecord, runs_dir: str | os.PathLike[str] = DEFAULT_RUNS_DIR) -> Path:
    """Write ``record`` to ``<runs_dir>/<run_id>.jsonl`` (atomically) and return the path.

    Raises:
        ConfigError: The run id is not a plain file name, or the directory cannot be written.
    """
    if not record.run_id or any(c in record.run_id for c in "/\\") or record.run_id.startswith("."):
        raise ConfigError(f"run id {record.run_id!r} cannot name a file; use letters, digits, '-' and '_'")
    return write_run(record, Path(runs_dir) / f"{record.run_id}.jsonl")


def write_run(record: RunRecord, path: str | os.PathLike[str]) -> Path:
    """Write ``record`` to the run file ``path`` (atomically; secrets revealed in this scope redacted) and
    return the path.

    Raises:
        ConfigError: The file cannot be written.
    """
    target = Path(path)
    lines = [
        {
            "type": "run",
            "format": EVENT_FORMAT,
            "run_id": record.run_id,
            "plan": record.plan,
            "engine": record.engine,
            "started": record.started,
            "inputs": _json_safe(dict(record.inputs)),
        }
    ]
    lines += [{"type": "event", **event_to_json(e)} for e in record.trace]
    result: dict[str, object] = {"type": "result", "ok": record.ok, "finished": record.finished}
    result.update({"value": _json_safe(record.value)} if record.ok else {"error": record.error})
    lines.append(result)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as fh:
            for line in lines:
                fh.write(redact(json.dumps(line, ensure_ascii=False, default=str)) + "\n")
        os.replace(tmp, target)
    except OSError as exc:
        raise ConfigError(
            f"cannot write the run file {str(target)!r}: {exc.strerror}; pass a writable path"
        ) from exc
    return target


def list_runs(runs_dir: str | os.PathLike[str] = DEFAULT_RUNS_DIR) -> list[Path]:
    """Saved run files, oldest first."""
    directory = Path(runs_dir)
    if not directory.is_dir():
        return []
    return sorted(directory.glob("*.jsonl"), key=lambda p: (p.stat().st_mtime, p.name))


def load_run(ref: str, runs_dir: str | os.PathLike[str] = DEFAULT_RUNS_DIR) -> RunRecord:
    """Read a saved run: ``ref`` is a run id, ``latest``, or the path of a ``.jsonl`` file.

    Raises:
        ConfigError: No such run, or the file is not a saved run.
    """
    path = Path(ref)
    if not (ref.endswith(".jsonl") and path.is_file()):
        if ref == "latest":
            runs = list_runs(runs_dir)
            if not runs:
                raise ConfigError(
                    f"no saved runs in {str(runs_dir)!r}; run a plan first (agentflow run PLAN)"
                )
            path = runs[-1]
        else:
            path = Path(runs_dir) / f"{ref}.jsonl"
    if not path.is_file():
        known = ", ".join(p.stem for p in list_runs(runs_dir)[-5:]) or "none"
        raise ConfigError(
            f"no saved run {ref!r} in {str(runs_dir)!r} (latest: {known}); pass a run id or a .jsonl path"
        )
    try:
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read run file {str(path)!r}: {exc}") from exc
    return _record(rows, path)


def _record(rows: Sequence[object], path: Path) -> RunRecord:
    head = rows[0] if rows else None
    if not isinstance(head, dict) or head.get("type") != "run":
        raise ConfigError(f"{str(path)!r} is not a saved run (its first line is not a 'run' header)")
    version = head.get("format", 1)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= EVENT_FORMAT:
        raise ConfigError(
            f"{str(path)!r} is a saved run of format {version!r}; this agentflow reads formats 1 to "
            f"{EVENT_FORMAT}: upgrade agentflow to open it"
        )
    events: list[Event] = []
    tail: dict[str, object] = {}
    for number, row in enumerate(rows[1:], start=2):
        if not isinstance(row, dict):
            continue
        if row.get("type") == "event":
            body = {k: v for k, v in row.items() if k != "type"}
            try:
                events.append(event_from_json(body, version=version))
            except EventFormatError as exc:
                raise ConfigError(f"{path!s}:{number}: not a valid event: {exc}") from None
        elif row.get("type") == "result":
            tail = row
    started = float(head.get("started", events[0].time if events else 0.0))
    finished_raw = tail.get("finished", events[-1].time if events else started)
    inputs = head.get("inputs")
    error = tail.get("error")
    return RunRecord(
        run_id=str(head.get("run_id", path.stem)),
        plan=str(head.get("plan", "")),
        engine=str(head.get("engine", "")),
        started=started,
        finished=float(finished_raw) if isinstance(finished_raw, int | float) else started,
        ok=bool(tail.get("ok", False)),
        inputs=inputs if isinstance(inputs, dict) else {},
        value=_json_safe(tail.get("value")),
        error=None if error is None else str(error),
        trace=tuple(events),
    )
