"""Run retention and resumption from the command line, and the Python functions behind it.

``register(subparsers)`` adds to the ``agentflow`` CLI::

    agentflow runs list [--status S] [--limit N]
    agentflow runs show RUN_ID
    agentflow runs gc --older-than DURATION [--include-unfinished] [--dry-run]
    agentflow runs resolve RUN_ID PATH (--value JSON | --rerun)
    agentflow resume RUN_ID [--answer JSON] [--path PATH] [--workflow MODULE:ATTR] [--engine SPEC]
                            [--allow-workflow PATTERN ...] [--allow-tool PATTERN ...]

Every command takes ``--journal PATH`` (default: ``$AGENTFLOW_JOURNAL`` or ``.agentflow/journal.db``).
Each parser gets ``func``: a function of the parsed ``argparse.Namespace`` returning the exit code
(0 ok, 1 the run failed or is still waiting, 2 a usage error).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import anyio

from agentflow.dsl import AgentflowError, Err
from agentflow.errors import ConfigError

from ._durable import open_journal, resolve_step
from ._journal import Journal, RunRecord, RunStatus, StepRecord
from ._run import resume

__all__ = [
    "DEFAULT_JOURNAL",
    "RunDetail",
    "gc_runs",
    "list_runs",
    "parse_duration",
    "register",
    "show_run",
]

DEFAULT_JOURNAL = ".agentflow/journal.db"
"""The journal file the CLI uses when neither ``--journal`` nor ``$AGENTFLOW_JOURNAL`` is given."""

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``30s``, ``15m``, ``12h``, ``7d``, ``2w`` or ``1d12h``.

    >>> parse_duration("1d12h")
    129600.0

    Raises:
        ConfigError: the text is not a duration.
    """
    cleaned = text.strip().lower()
    pos, total = 0, 0.0
    for m in _DURATION.finditer(cleaned):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not cleaned or pos != len(cleaned):
        raise ConfigError(
            f"duration {text!r} is not understood; write a number with a unit s, m, h, d or w (e.g. 7d, 12h, 1d12h)"
        )
    return total


@dataclass(frozen=True)
class RunDetail:
    """A run and its steps, as ``runs show`` prints them."""

    run: RunRecord
    steps: tuple[StepRecord, ...]


async def list_runs(
    journal: Journal | str | os.PathLike[str], *, status: RunStatus | None = None, limit: int | None = None
) -> list[RunRecord]:
    """The runs in a journal, most recently updated first."""
    store, owned = open_journal(journal)
    try:
        return await store.list_runs(status=status, limit=limit)
    finally:
        if owned:
            await store.aclose()


async def show_run(run_id: str, journal: Journal | str | os.PathLike[str]) -> RunDetail:
    """One run with its steps.

    Raises:
        ConfigError: no such run.
    """
    store, owned = open_journal(journal)
    try:
        record = await store.get_run(run_id)
        if record is None:
            raise ConfigError(f"journal {store!r} has no run {run_id!r}; see `agentflow runs list`")
        return RunDetail(record, tuple(await store.get_steps(run_id)))
    finally:
        if owned:
            await store.aclose()


async def gc_runs(
    journal: Journal | str | os.PathLike[str],
    *,
    older_than: float | timedelta | str,
    include_unfinished: bool = False,
    dry_run: bool = False,
    now: float | None = None,
) -> list[str]:
    """Delete runs last updated more than ``older_than`` ago, with their steps and unreferenced states.

    Args:
        journal: The journal.
        older_than: Seconds, a ``timedelta``, or a duration such as ``"7d"``.
        include_unfinished: Also delete runs that are suspended or crashed while running (by default
            only completed and failed runs are deleted: the others can still be resumed).
        dry_run: Only report what would be deleted.
        now: The current Unix time (default: ``time.time()``).

    Returns:
        The ids of the deleted (or, with ``dry_run``, deletable) runs.
    """
    if isinstance(older_than, str):
        seconds = parse_duration(older_than)
    elif isinstance(older_than, timedelta):
        seconds = older_than.total_seconds()
    else:
        seconds = float(older_than)
    if seconds < 0:
        raise ConfigError(f"older_than must not be negative, got {older_than!r}")
    cutoff = (time.time() if now is None else now) - seconds
    statuses: tuple[RunStatus, ...] = ("completed", "failed")
    if include_unfinished:
        statuses += ("suspended", "running")
    store, owned = open_journal(journal)
    try:
        if dry_run:
            return [
                r.run_id for r in await store.list_runs() if r.updated_at < cutoff and r.status in statuses
            ]
        return await store.delete_runs(updated_before=cutoff, statuses=statuses)
    finally:
        if owned:
            await store.aclose()


# -- argparse -------------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``runs`` and ``resume`` commands to the ``agentflow`` CLI's subparsers."""
    runs = subparsers.add_parser("runs", help="list, inspect, settle and garbage-collect journaled runs")
    runs_sub = runs.add_subparsers(dest="runs_command", required=True)

    p = runs_sub.add_parser("list", help="list runs, most recently updated first")
    _journal_arg(p)
    p.add_argument("--status", choices=["running", "suspended", "completed", "failed"])
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=_cmd_list)

    p = runs_sub.add_parser("show", help="show a run and its steps")
    _journal_arg(p)
    p.add_argument("run_id")
    p.set_defaults(func=_cmd_show)

    p = runs_sub.add_parser("gc", help="delete old finished runs")
    _journal_arg(p)
    p.add_argument("--older-than", required=True, help="a duration: 30m, 12h, 7d, 2w ...")
    p.add_argument("--include-unfinished", action="store_true", help="also delete suspended and crashed runs")
    p.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    p.set_defaults(func=_cmd_gc)

    p = runs_sub.add_parser("resolve", help="settle a non-idempotent step that began but did not finish")
    _journal_arg(p)
    p.add_argument("run_id")
    p.add_argument("path", help="the step path named by the resume error")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--value", help="JSON result the step had (it took effect)")
    how.add_argument("--rerun", action="store_true", help="it did not take effect: allow one more attempt")
    p.set_defaults(func=_cmd_resolve)

    p = subparsers.add_parser("resume", help="continue a journaled run (answer its interrupt)")
    _journal_arg(p)
    p.add_argument("run_id")
    p.add_argument("--answer", help="JSON answer for the waiting interrupt")
    p.add_argument("--path", help="which interrupt to answer when several wait")
    p.add_argument("--workflow", help="module:attr of the workflow (default: the one the run recorded)")
    p.add_argument("--engine", help="engine spec, e.g. llamacpp:default or test:")
    p.add_argument(
        "--allow-workflow",
        action="append",
        default=[],
        metavar="PATTERN",
        help="let the resume import a recorded Python workflow matching this fnmatch pattern "
        "(module:qualname or /abs/file.py:qualname, e.g. 'myapp.flows:*'; repeatable; also "
        "$AGENTFLOW_RESUME_ALLOW, comma-separated). Plans recorded by path need none",
    )
    p.add_argument(
        "--allow-tool",
        action="append",
        default=[],
        metavar="PATTERN",
        help="extra module:attr tool pattern a recorded plan may import (as for `agentflow run`)",
    )
    p.set_defaults(func=_cmd_resume)


def _journal_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--journal",
        default=os.environ.get("AGENTFLOW_JOURNAL", DEFAULT_JOURNAL),
        help=f"journal file or postgresql:// URL (default: $AGENTFLOW_JOURNAL or {DEFAULT_JOURNAL})",
    )


def _fmt_time(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def _cmd_list(args: argparse.Namespace) -> int:
    try:
        runs = anyio.run(lambda: list_runs(args.journal, status=args.status, limit=args.limit))
    except AgentflowError as exc:
        return _fail(exc)
    print(f"{'RUN':<24} {'STATUS':<10} {'UPDATED (UTC)':<20} WORKFLOW")
    for r in runs:
        print(f"{r.run_id:<24} {r.status:<10} {_fmt_time(r.updated_at):<20} {r.workflow or '-'}")
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    try:
        detail = anyio.run(lambda: show_run(args.run_id, args.journal))
    except AgentflowError as exc:
        return _fail(exc)
    r = detail.run
    print(f"run       {r.run_id}")
    print(f"status    {r.status}")
    print(f"workflow  {r.workflow or '-'}")
    print(f"inputs    {r.inputs or '-'}")
    print(f"started   {_fmt_time(r.created_at)} UTC")
    print(f"updated   {_fmt_time(r.updated_at)} UTC")
    if r.result is not None:
        print(f"result    {r.result}")
    if r.error is not None:
        print(f"error     {r.error}")
    print()
    print(f"{'STEP':<40} {'STATUS':<10} {'TRIES':>5}  VALUE")
    for s in detail.steps:
        value = s.value if s.value is not None else "-"
        if len(value) > 60:
            value = value[:57] + "..."
        flag = "" if s.idempotent else " (not idempotent)"
        print(f"{s.path:<40} {s.status:<10} {s.attempts:>5}  {value}{flag}")
        if s.status == "waiting":
            print(f"{'':<40} prompt: {s.prompt}")
            print(f"{'':<40} schema: {s.answer_schema}")
    return 0


def _cmd_gc(args: argparse.Namespace) -> int:
    try:
        deleted = anyio.run(
            lambda: gc_runs(
                args.journal,
                older_than=args.older_than,
                include_unfinished=args.include_unfinished,
                dry_run=args.dry_run,
            )
        )
    except AgentflowError as exc:
        return _fail(exc)
    verb = "would delete" if args.dry_run else "deleted"
    print(f"{verb} {len(deleted)} run(s)" + (": " + ", ".join(deleted) if deleted else ""))
    return 0


def _cmd_resolve(args: argparse.Namespace) -> int:
    try:
        kwargs: dict[str, Any] = (
            {"rerun": True} if args.rerun else {"value": _parse_json(args.value, "--value")}
        )
        anyio.run(lambda: resolve_step(args.run_id, args.path, journal=args.journal, **kwargs))
    except AgentflowError as exc:
        return _fail(exc)
    print(
        f"resolved {args.path} of run {args.run_id}; resume it with "
        f"`agentflow resume {args.run_id} --journal {args.journal}`"
    )
    return 0


def _cmd_resume(args: argparse.Namespace) -> int:
    kwargs: dict[str, Any] = {}
    try:
        if args.answer is not None:
            kwargs["answer"] = _parse_json(args.answer, "--answer")
        if args.path is not None:
            kwargs["path"] = args.path
        if args.workflow is not None:
            from ._durable import import_ref

            kwargs["workflow"] = import_ref(args.workflow)
        out = anyio.run(
            lambda: resume(
                args.run_id,
                journal=args.journal,
                engine=args.engine,
                allow_workflows=args.allow_workflow,
                allow_tools=args.allow_tool,
                **kwargs,
            )
        )
    except AgentflowError as exc:
        return _fail(exc)
    if isinstance(out, Err):
        print(f"run {args.run_id} did not complete: {out.error}", file=sys.stderr)
        return 1
    try:
        print(json.dumps(_jsonable(out.value)))
    except (TypeError, ValueError):
        print(repr(out.value))
    return 0


def _jsonable(value: object) -> object:
    from pydantic_core import to_jsonable_python

    return to_jsonable_python(value)


def _parse_json(text: str, option: str) -> object:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{option} must be JSON (e.g. '{{\"approve\": true}}' or '\"yes\"'), got {text!r}: {exc}"
        ) from exc


def _fail(exc: AgentflowError) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2
