"""The ``agentflow runs`` commands: argument parsing over the run store's library (``agentflow.runs``).

Every run ``agentflow run`` makes is journaled (see ``agentflow.runtime._journal``): its steps, its
inputs and, per attempt, its trace. ``register(subparsers)`` adds to the ``agentflow`` CLI::

    agentflow runs list [--status S] [--limit N]
    agentflow runs show RUN [--content] [--json]
    agentflow runs export RUN [-o FILE.jsonl]
    agentflow runs gc --older-than DURATION [--include-unfinished] [--dry-run]
    agentflow runs resolve RUN PATH (--value JSON | --rerun)

(``agentflow resume RUN`` and ``agentflow report RUN`` are in ``agentflow.cli``.) ``RUN`` is a run id or
``latest`` (the run updated last). Every command takes ``--journal PATH`` (default: ``$AGENTFLOW_JOURNAL``
or ``.agentflow/journal.db``). Each parser gets ``func``: a function of the parsed
``argparse.Namespace`` returning the exit code (0 ok, 2 a usage error).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, assert_never

import anyio
from pydantic import JsonValue

from agentflow._cli_options import add_journal_arg, journal_of, journal_option, parse_json_option
from agentflow.dsl import AgentflowError, LLMCall, StepReplayed, ToolCall, event_to_json
from agentflow.runtime._durable import resolve_step

from ._store import (
    RunAttempt,
    RunDetail,
    gc_runs,
    list_runs,
    load_journaled_run,
    show_run,
)

__all__ = ["register"]


# -- argparse -------------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``runs`` command to the ``agentflow`` CLI's subparsers."""
    runs = subparsers.add_parser(
        "runs",
        help="list, inspect, export, settle and garbage-collect runs",
        description="Every `agentflow run` is journaled; these commands read and manage the journal. RUN is a "
        "run id or 'latest'.",
    )
    runs_sub = runs.add_subparsers(dest="runs_command", required=True)

    p = runs_sub.add_parser("list", help="list runs, most recently updated first")
    add_journal_arg(p)
    p.add_argument("--status", choices=["running", "suspended", "completed", "failed"])
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=_cmd_list)

    p = runs_sub.add_parser(
        "show",
        help="show a run: its steps, LLM calls and tool calls",
        description="Show a run's steps and, per attempt, its LLM calls and tool calls (start time, "
        "duration, status, error).",
    )
    add_journal_arg(p)
    p.add_argument("run_id", metavar="RUN", help="a run id or 'latest'")
    p.add_argument(
        "-v",
        "--content",
        action="store_true",
        help="also show prompts, completions, tool arguments and results (as recorded: redacted of secrets)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_cmd_show)

    p = runs_sub.add_parser(
        "export",
        help="write a run to a .jsonl file (that `agentflow report FILE.jsonl` opens anywhere)",
    )
    add_journal_arg(p)
    p.add_argument("run_id", metavar="RUN", help="a run id or 'latest'")
    p.add_argument("-o", "--output", help="the file to write (default: RUN_ID.jsonl)")
    p.set_defaults(func=_cmd_export)

    p = runs_sub.add_parser("gc", help="delete old finished runs")
    add_journal_arg(p)
    p.add_argument("--older-than", required=True, help="a duration: 30m, 12h, 7d, 2w ...")
    p.add_argument("--include-unfinished", action="store_true", help="also delete suspended and crashed runs")
    p.add_argument("--dry-run", action="store_true", help="only list what would be deleted")
    p.set_defaults(func=_cmd_gc)

    p = runs_sub.add_parser("resolve", help="settle a non-idempotent step that began but did not finish")
    add_journal_arg(p)
    p.add_argument("run_id")
    p.add_argument("path", help="the step path named by the resume error")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--value", help="JSON result the step had (it took effect)")
    how.add_argument("--rerun", action="store_true", help="it did not take effect: allow one more attempt")
    p.set_defaults(func=_cmd_resolve)


def _fmt_time(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def _fmt_clock(t: float) -> str:
    """``HH:MM:SS.mmm`` (UTC)."""
    return time.strftime("%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}"


def _cmd_list(args: argparse.Namespace) -> int:
    try:
        runs = anyio.run(lambda: list_runs(journal_of(args), status=args.status, limit=args.limit))
    except AgentflowError as exc:
        return _fail(exc)
    print(f"{'RUN':<24} {'STATUS':<10} {'TRIES':>5}  {'UPDATED (UTC)':<20} WORKFLOW")
    for r in runs:
        print(
            f"{r.run_id:<24} {r.status:<10} {r.attempts:>5}  {_fmt_time(r.updated_at):<20} {r.workflow or '-'}"
        )
    return 0


def _cmd_show(args: argparse.Namespace) -> int:
    try:
        detail = anyio.run(lambda: show_run(args.run_id, journal_of(args)))
    except AgentflowError as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps(_show_json(detail, content=args.content), indent=2, ensure_ascii=False))
        return 0
    r = detail.run
    print(f"run       {r.run_id}")
    print(f"status    {r.status}")
    print(f"workflow  {r.workflow or '-'}")
    print(f"inputs    {r.inputs or '-'}")
    print(f"started   {_fmt_time(r.created_at)} UTC")
    print(f"updated   {_fmt_time(r.updated_at)} UTC")
    print(f"attempts  {r.attempts}")
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
    if not detail.attempts:
        print()
        print("(no trace stored: the run was recorded by an older agentflow, or its process was killed)")
    for attempt in detail.attempts:
        _print_attempt(attempt, content=args.content)
    return 0


def _print_attempt(attempt: RunAttempt, *, content: bool) -> None:
    t = attempt.trace
    replayed = sum(1 for e in attempt.events if isinstance(e, StepReplayed))
    print()
    print(
        f"attempt {t.attempt}: {t.status}, started {_fmt_time(t.started)} UTC, {t.finished - t.started:.2f}s, "
        f"{t.count} events" + (f", {replayed} steps replayed from the journal" if replayed else "")
    )
    if t.dropped:
        print(
            f"  ({t.dropped} events in the middle were left out: the trace was over the journal's byte cap)"
        )
    calls = attempt.calls()
    if not calls:
        print("  no LLM or tool calls")
        return
    print(f"  {'START (UTC)':<12} {'SECONDS':>8}  {'STATUS':<9} {'CALL':<32} PATH")
    for call in calls:
        seconds = call.total_s if isinstance(call, LLMCall) else call.seconds
        print(
            f"  {_fmt_clock(call.started):<12} {seconds:>8.3f}  {call.status:<9} {_call_name(call):<32} "
            f"{call.path or '<root>'}"
        )
        if call.error:
            print(f"      error: {call.error}")
        if content:
            for label, text in _call_content(call):
                _print_block(label, text)


def _call_name(call: LLMCall | ToolCall) -> str:
    match call:
        case LLMCall():
            tokens = f"{call.prompt_tokens}+{call.completion_tokens} tok"
            return f"llm {call.role} ({tokens})"
        case ToolCall():
            return f"tool {call.tool}" + (f" #{call.task}" if call.task is not None else "")
        case _:
            assert_never(call)


def _call_content(call: LLMCall | ToolCall) -> list[tuple[str, str]]:
    """What the call was given and what it gave, as (label, text) pairs; empty when not recorded."""
    match call:
        case LLMCall():
            out: list[tuple[str, str]] = []
            if call.prompt is not None:
                out.append(("prompt", call.prompt))
            for role, text in call.messages or ():
                out.append((role, text))
            if call.completion is not None:
                out.append(("completion", call.completion))
            for call_id, name, arguments in call.tool_calls or ():
                out.append((f"tool call {call_id}", f"{name}({arguments})"))
            if not out:
                out.append(("content", "(not recorded: the run did not capture content)"))
            return out
        case ToolCall():
            if call.args is None and call.result is None:
                return [("content", "(not recorded: the run did not capture content)")]
            pairs = [("args", json.dumps(call.args, ensure_ascii=False))]
            if call.result is not None:
                pairs.append(("result", call.result))
            return pairs
        case _:
            assert_never(call)


def _print_block(label: str, text: str) -> None:
    lines = text.splitlines() or [""]
    print(f"      {label}: {lines[0]}")
    for line in lines[1:]:
        print(f"      {'':<{len(label)}}  {line}")


_CONTENT_FIELDS = ("prompt", "messages", "completion", "tool_calls", "args", "result")
"""Event fields that hold content (shown with ``--content`` only)."""


def _show_json(detail: RunDetail, *, content: bool) -> dict[str, Any]:
    calls: list[dict[str, JsonValue]] = []
    for attempt in detail.attempts:
        for call in attempt.calls():
            row = event_to_json(call)
            if not content:
                row = {k: v for k, v in row.items() if k not in _CONTENT_FIELDS}
            calls.append({"attempt": attempt.trace.attempt, **row})
    return {
        "run": detail.run.model_dump(),
        "steps": [s.model_dump() for s in detail.steps],
        "attempts": [a.trace.model_dump(exclude={"events", "run_id"}) for a in detail.attempts],
        "calls": calls,
    }


def _cmd_export(args: argparse.Namespace) -> int:
    from agentflow.report import write_run

    try:
        record = anyio.run(lambda: load_journaled_run(args.run_id, journal_of(args)))
        target = write_run(record, args.output or f"{record.run_id}.jsonl")
    except AgentflowError as exc:
        return _fail(exc)
    print(f"wrote {target} (run {record.run_id}; open it with `agentflow report {target} -o report.html`)")
    return 0


def _cmd_gc(args: argparse.Namespace) -> int:
    try:
        deleted = anyio.run(
            lambda: gc_runs(
                journal_of(args),
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
    journal = journal_of(args)
    try:
        kwargs: dict[str, Any] = (
            {"rerun": True} if args.rerun else {"value": parse_json_option(args.value, "--value")}
        )
        anyio.run(lambda: resolve_step(args.run_id, args.path, journal=journal, **kwargs))
    except AgentflowError as exc:
        return _fail(exc)
    print(
        f"resolved {args.path} of run {args.run_id}; resume it with "
        f"`agentflow resume {args.run_id}{journal_option(journal)}`"
    )
    return 0


def _fail(exc: AgentflowError) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 2
