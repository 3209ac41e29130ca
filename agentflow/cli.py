"""The ``agentflow`` command line.

    agentflow run PLAN [--input k=v ...] [--engine SPEC] [--json]     run a plan
    agentflow run --goal "..." [--dry-run]                            let the meta-agent write (and run) a plan
    agentflow validate PLAN...                                        check plans
    agentflow graph PLAN -o FILE.svg|.png                             picture of the step DAG
    agentflow report RUN -o FILE.html                                 HTML report of a saved run
    agentflow schema                                                  JSON Schema of the plan format

Exit codes: 0 ok, 1 the run failed, 2 bad input (plan, option, engine spec). Other features add
sub-commands without editing this file: each module in ``PROVIDERS`` exposes
``register(subparsers) -> None`` and sets ``func`` (``args -> exit code``) on its parsers.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import anyio
from rich.console import Console

from agentflow.errors import AgentflowError, ConfigError, UserError

__all__ = ["PROVIDERS", "build_parser", "main"]

PROVIDERS: tuple[str, ...] = (
    "agentflow.agents.evogit._cli",
    "agentflow.memory._cli",
    "agentflow.runtime._runs_cli",
)
"""Modules that add sub-commands with ``register(subparsers)``; one that does not exist yet is skipped."""

DEFAULT_ENGINE = "llamacpp:default"

_EXAMPLES = """examples:
  agentflow run examples/topic_digest.yaml --input topics="tea, moon"
  agentflow run examples/topic_digest.yaml --engine test: --json
  agentflow run --goal "Count the words in the fact about honey" --dry-run
  agentflow validate examples/*.yaml
  agentflow graph examples/topic_digest.yaml -o digest.svg
  agentflow report latest -o report.html
"""


def _version() -> str:
    from agentflow import __version__

    return __version__


# -- output helpers ---------------------------------------------------------------------------------


def _err_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _fail(message: str, code: int = 2) -> int:
    _err_console().print(f"[bold red]error:[/] {message}", markup=True)
    return code


def _error_text(exc: AgentflowError) -> str:
    from rich.markup import escape

    return escape(str(exc))


class _Progress:
    """Step progress: a rich live display on a terminal, plain lines otherwise (``--quiet``: nothing)."""

    def __init__(self, *, quiet: bool) -> None:
        from rich.progress import Progress, TaskID

        self.quiet = quiet
        self.console = _err_console()
        self.live = not quiet and self.console.is_terminal
        self.t0 = time.monotonic()
        self.done = 0  # steps finished so far
        self.failed = 0  # steps failed so far
        self._progress: Progress | None = None  # the live display while ``show`` is open
        self._task: TaskID | None = None

    @contextlib.contextmanager
    def show(self) -> Iterator[_Progress]:
        if not self.live:
            yield self
            return
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        with Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TextColumn("[dim]{task.completed:.0f} steps done"),
            TimeElapsedColumn(),
            console=self.console,
            transient=True,
        ) as progress:
            self._progress = progress
            self._task = progress.add_task("starting", total=None)
            yield self

    def __call__(self, event: str, path: str) -> None:
        if event == "end":
            self.done += 1
        elif event == "fail":
            self.failed += 1
        if self.quiet:
            return
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=f"{event:<5} {path}", completed=self.done)
            return
        elapsed = time.monotonic() - self.t0
        print(f"[{elapsed:7.2f}s] {event:<5} {path}", file=sys.stderr, flush=True)


# -- run ---------------------------------------------------------------------------------------------


def _parse_inputs(pairs: Sequence[str], declared: Mapping[str, object]) -> dict[str, object]:
    """``k=v`` pairs; a value is JSON when its declared type is not a string and it parses as JSON."""
    from agentflow.plans import SchemaSpec

    values: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--input {pair!r} is not key=value; write e.g. --input topic=tea")
        spec = declared.get(key)
        wants_text = isinstance(spec, SchemaSpec) and spec.type == "string"
        value: object = raw
        if not wants_text:
            try:
                value = json.loads(raw)
            except ValueError:
                value = raw
        values[key] = value
    return values


def _engine_label(engine: object) -> str:
    return str(getattr(engine, "name", engine))


async def _run_flow(
    workflow: object,
    inputs: Mapping[str, object],
    spec: str,
    run_id: str,
    progress: _Progress,
    journal: str | None = None,
) -> tuple[object, str]:
    from agentflow.engines import engine_from_spec
    from agentflow.plans import PROGRESS_SERVICE
    from agentflow.runtime import RunContext, run
    from agentflow.scheduler import Scheduler

    engine = Scheduler(engine_from_spec(spec))
    try:
        context = RunContext(run_id=run_id, engine=engine, services={PROGRESS_SERVICE: progress})
        outcome: object = await run(workflow, inputs, context=context, journal=journal)  # type: ignore[arg-type]
    finally:
        with anyio.CancelScope(shield=True):
            await engine.aclose()
    return outcome, _engine_label(engine)


def _cmd_run(args: argparse.Namespace) -> int:
    if args.goal is None and args.plan is None:
        return _fail("give a PLAN file to run, or --goal TEXT for the meta-agent to write one")
    if args.goal is not None and args.plan is not None:
        return _fail("give either a PLAN file or --goal, not both")
    if args.resume and args.run_id and args.resume != args.run_id:
        return _fail("give --resume RUN_ID or --run-id, not two different ids")
    run_id = args.resume or args.run_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    if args.trace is not None:
        from agentflow.errors import ConfigError
        from agentflow.telemetry import configure_tracing

        headers = dict(h.split("=", 1) for h in args.trace_header if "=" in h)
        try:
            configure_tracing(
                args.trace, endpoint=args.trace_endpoint, headers=headers, capture_content=args.trace_content
            )
        except ConfigError as exc:
            return _fail(str(exc))
    try:
        return _run_command(args, run_id)
    finally:
        if args.trace is not None:
            from agentflow.telemetry import shutdown_tracing

            shutdown_tracing()


def _run_command(args: argparse.Namespace, run_id: str) -> int:
    from agentflow.dsl import Err
    from agentflow.plans import dump_plan, load_plan
    from agentflow.report import RunRecord, save_run
    from agentflow.runtime import usage_of

    progress = _Progress(quiet=args.quiet or args.json)
    journal = args.journal or (
        os.environ.get("AGENTFLOW_JOURNAL", ".agentflow/journal.db") if args.resume else None
    )
    if journal is not None:
        Path(journal).parent.mkdir(parents=True, exist_ok=True)
    try:
        if args.goal is not None:
            from agentflow.agents._meta import BUILTIN_TOOL_REFS, run_goal, write_plan

            refs = [*BUILTIN_TOOL_REFS, *(t for t in args.allow_tool if "*" not in t)]
            spec = args.engine or DEFAULT_ENGINE
            workflow: object
            if args.dry_run:
                workflow = write_plan(args.goal, tools=refs, max_repairs=args.max_repairs)
            else:
                workflow = run_goal(
                    args.goal, inputs=_parse_inputs(args.input, {}), tools=refs, max_repairs=args.max_repairs
                )
            name, inputs = "meta-agent", {}
        else:
            loaded = load_plan(args.plan, allow_tools=args.allow_tool)
            inputs = _parse_inputs(args.input, loaded.plan.inputs)
            loaded.bind_inputs(inputs)
            if args.dry_run:
                print(dump_plan(loaded.plan), end="")
                return 0
            spec = args.engine or loaded.engine_spec or DEFAULT_ENGINE
            workflow, name = loaded.workflow, loaded.name
            telemetry = loaded.plan.telemetry
            if args.trace is None and telemetry.exporter is not None:
                from agentflow.telemetry import configure_tracing

                configure_tracing(
                    telemetry.exporter,
                    endpoint=telemetry.endpoint,
                    service_name=telemetry.service_name,
                    capture_content=telemetry.capture_content,
                )
                args.trace = telemetry.exporter  # so the run's end shuts tracing down
        started = time.time()
        with progress.show():
            outcome, engine_name = anyio.run(_run_flow, workflow, inputs, spec, run_id, progress, journal)
        finished = time.time()
    except UserError as exc:
        return _fail(_error_text(exc))
    except AgentflowError as exc:
        return _fail(_error_text(exc), 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)

    ok = not isinstance(outcome, Err)
    value: object = getattr(outcome, "value", None)
    if args.goal is not None and ok:
        from agentflow.agents._meta import GoalRun
        from agentflow.plans import LoadedPlan

        if isinstance(value, LoadedPlan):
            print(dump_plan(value.plan), end="")
            return 0
        assert isinstance(value, GoalRun)
        _err_console().print("[dim]generated plan:[/]", markup=True)
        print(dump_plan(value.plan.plan), end="", file=sys.stderr)
        value = value.outputs
    error = None if ok else str(getattr(outcome, "error", "failed"))
    trace = tuple(getattr(outcome, "trace", ()))
    saved: Path | None = None
    if not args.no_save:
        try:
            record = RunRecord(
                run_id=run_id,
                plan=name,
                engine=engine_name,
                started=started,
                finished=finished,
                ok=ok,
                inputs=json.loads(json.dumps(inputs, default=str)),
                value=json.loads(json.dumps(value, default=str)) if ok else None,
                error=error,
                trace=trace,
            )
            saved = save_run(record, args.runs_dir)
        except ConfigError as exc:
            _fail(_error_text(exc), 0)
    usage = usage_of(trace)
    if args.json:
        payload = {
            "run_id": run_id,
            "ok": ok,
            "plan": name,
            "engine": engine_name,
            "outputs": value if ok else None,
            "error": error,
            "seconds": round(finished - started, 3),
            "usage": {
                "llm_calls": sum(1 for e in trace if e.kind == "llm.call"),
                "tool_calls": sum(1 for e in trace if e.kind == "tool.call"),
                "prompt_tokens": usage.prompt_tokens,
                "cached_tokens": usage.cached_tokens,
                "completion_tokens": usage.completion_tokens,
            },
            "saved": None if saved is None else str(saved),
        }
        print(json.dumps(payload, indent=2, ensure_ascii=False, default=str))
    else:
        console = Console(highlight=False, soft_wrap=True)
        if ok:
            assert isinstance(value, dict)
            for key, item in value.items():
                shown = item if isinstance(item, str) else json.dumps(item, ensure_ascii=False, default=str)
                console.print(f"[bold]{key}[/]: {_escape(shown)}", markup=True)
        hit = (
            f"{100 * usage.cached_tokens / usage.prompt_tokens:.0f}%"
            if usage.prompt_tokens and usage.cached_tokens is not None
            else "-"
        )
        _err_console().print(
            f"[dim]{name} {'ok' if ok else 'FAILED'} in {finished - started:.2f}s · "
            f"{sum(1 for e in trace if e.kind == 'llm.call')} LLM calls, "
            f"{sum(1 for e in trace if e.kind == 'tool.call')} tool calls · {usage.prompt_tokens} prompt tokens "
            f"({hit} cached), {usage.completion_tokens} completion tokens[/]",
            markup=True,
        )
        if saved is not None:
            _err_console().print(
                f"[dim]saved run {run_id}: agentflow report {run_id} -o report.html[/]", markup=True
            )
    if not ok:
        return _fail(_escape(error or "the run failed"), 1)
    return 0


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


# -- validate / graph / schema / report --------------------------------------------------------------


def _cmd_validate(args: argparse.Namespace) -> int:
    from agentflow.errors import PlanError
    from agentflow.plans import load_plan, walk_steps

    failed = 0
    console = Console(highlight=False, soft_wrap=True)
    for path in args.plans:
        try:
            loaded = load_plan(path, allow_tools=args.allow_tool)
        except PlanError as exc:
            failed += 1
            console.print(f"[red]invalid[/] {_escape(str(exc))}", markup=True)
            continue
        steps = sum(1 for _ in walk_steps(loaded.plan.steps))
        tools = ", ".join(loaded.tools.names()) or "no tools"
        console.print(
            f"[green]ok[/] {_escape(path)}: plan {loaded.name!r}, {steps} steps, {tools}", markup=True
        )
    return 2 if failed else 0


def _find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        found = shutil.which(name)
        if found:
            return found
    return None


def _svg_to_png(svg: str, target: Path) -> None:
    """Screenshot the SVG with headless Chromium (no network, no downloads)."""
    import re

    browser = _find_chromium()
    if browser is None:
        raise ConfigError(
            "PNG output needs a headless Chromium on PATH (Debian: apt-get install chromium); "
            "write an .svg file instead"
        )
    size = re.search(r'width="(\d+)" height="(\d+)"', svg)
    width, height = (int(size.group(1)), int(size.group(2))) if size else (1200, 800)
    with tempfile.TemporaryDirectory() as tmp:
        page = Path(tmp) / "graph.html"
        page.write_text(
            f"<!DOCTYPE html><html><head><style>body{{margin:0}}</style></head><body>{svg}</body></html>",
            encoding="utf-8",
        )
        cmd = [
            browser,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={tmp}/profile",
            f"--screenshot={target.resolve()}",
            f"--window-size={width},{height}",
            page.as_uri(),
        ]
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=120)
        except (OSError, subprocess.SubprocessError) as exc:
            raise ConfigError(
                f"headless Chromium could not render the PNG ({exc}); write an .svg file instead"
            ) from exc
    if not target.is_file():
        raise ConfigError("headless Chromium wrote no PNG; write an .svg file instead")


def _cmd_graph(args: argparse.Namespace) -> int:
    from agentflow.plans import load_plan, plan_graph, render_svg

    try:
        loaded = load_plan(args.plan, allow_tools=args.allow_tool)
        svg = render_svg(plan_graph(loaded.plan), title=loaded.name)
        if args.output in (None, "-"):
            print(svg, end="")
            return 0
        target = Path(args.output)
        suffix = target.suffix.lower()
        if suffix == ".svg":
            target.write_text(svg, encoding="utf-8")
        elif suffix == ".png":
            _svg_to_png(svg, target)
        else:
            return _fail(f"-o {args.output!r}: the picture must be a .svg or .png file")
    except UserError as exc:
        return _fail(_error_text(exc))
    except OSError as exc:
        return _fail(f"cannot write {args.output!r}: {exc.strerror}")
    _err_console().print(f"wrote {_escape(str(target))}", markup=True)
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    from agentflow.plans import plan_json_schema

    text = json.dumps(plan_json_schema(), indent=2, ensure_ascii=False) + "\n"
    if args.output in (None, "-"):
        print(text, end="")
        return 0
    try:
        Path(args.output).write_text(text, encoding="utf-8")
    except OSError as exc:
        return _fail(f"cannot write {args.output!r}: {exc.strerror}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from agentflow.report import load_run, render_report

    try:
        record = load_run(args.run, args.runs_dir)
        html = render_report(record)
        Path(args.output).write_text(html, encoding="utf-8")
    except UserError as exc:
        return _fail(_error_text(exc))
    except OSError as exc:
        return _fail(f"cannot write {args.output!r}: {exc.strerror}")
    _err_console().print(f"wrote {_escape(args.output)} (run {_escape(record.run_id)})", markup=True)
    return 0


# -- parser ------------------------------------------------------------------------------------------


def _add_allow_tool(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-tool",
        action="append",
        default=[],
        metavar="PATTERN",
        help="also allow plans to import tools matching 'module:attr' or 'module:*' (repeatable; "
        "agentflow.plans.builtin_tools:* is always allowed)",
    )


def _load_providers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    for name in PROVIDERS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if missing == name or name.startswith(missing + "."):
                continue
            raise
        module.register(sub)


def build_parser() -> argparse.ArgumentParser:
    """The ``agentflow`` argument parser, with every provider's sub-commands registered."""
    parser = argparse.ArgumentParser(
        prog="agentflow",
        description="Typed, composable multi-agent LLM workflows: run, check, draw and report plans.",
        epilog=_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"agentflow {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="run a plan (or let the meta-agent write one with --goal)",
        description="Run a plan on an engine and print its outputs; the run is saved for `agentflow report`.",
        epilog="exit codes: 0 ok, 1 the run failed, 2 bad input",
    )
    run.add_argument("plan", nargs="?", help="the plan file (YAML)")
    run.add_argument(
        "-i", "--input", action="append", default=[], metavar="KEY=VALUE", help="a plan input (repeatable)"
    )
    run.add_argument("--engine", help=f"engine spec; overrides the plan's (default {DEFAULT_ENGINE})")
    run.add_argument("--json", action="store_true", help="print one JSON object (outputs, usage) to stdout")
    run.add_argument("--quiet", action="store_true", help="no progress display")
    run.add_argument("--goal", help="have the meta-agent write a plan for this goal, then run it")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (checked, or generated with --goal) without running it",
    )
    run.add_argument("--max-repairs", type=int, default=3, help="meta-agent repair attempts (default 3)")
    run.add_argument("--run-id", help="id of this run (default: time + random suffix)")
    run.add_argument(
        "--runs-dir",
        default=os.environ.get("AGENTFLOW_RUNS_DIR", ".agentflow/runs"),
        help="where runs are saved",
    )
    run.add_argument("--no-save", action="store_true", help="do not save the run")
    run.add_argument(
        "--journal",
        help="journal every step in this SQLite file so the run can be resumed (default with --resume: "
        "$AGENTFLOW_JOURNAL or .agentflow/journal.db)",
    )
    run.add_argument(
        "--resume",
        metavar="RUN_ID",
        help="resume a journaled run: finished steps are replayed, the rest runs (same plan and inputs)",
    )
    run.add_argument(
        "--trace",
        choices=["otlp", "console"],
        help="export OpenTelemetry spans of the run (nothing is sent anywhere without this)",
    )
    run.add_argument("--trace-endpoint", help="OTLP/HTTP endpoint, e.g. http://127.0.0.1:4318/v1/traces")
    run.add_argument(
        "--trace-header", action="append", default=[], metavar="K=V", help="OTLP header (repeatable)"
    )
    run.add_argument(
        "--trace-content", action="store_true", help="include prompt/output text in spans (secrets scrubbed)"
    )
    _add_allow_tool(run)
    run.set_defaults(func=_cmd_run)

    validate = sub.add_parser(
        "validate", help="check plan files", description="Check plans; exit 2 if any is invalid."
    )
    validate.add_argument("plans", nargs="+", metavar="PLAN")
    _add_allow_tool(validate)
    validate.set_defaults(func=_cmd_validate)

    graph = sub.add_parser(
        "graph", help="draw a plan's step DAG", description="Draw a plan's step DAG as SVG or PNG."
    )
    graph.add_argument("plan", metavar="PLAN")
    graph.add_argument("-o", "--output", help="FILE.svg or FILE.png (default: SVG on stdout)")
    _add_allow_tool(graph)
    graph.set_defaults(func=_cmd_graph)

    report = sub.add_parser(
        "report",
        help="write an HTML report of a saved run",
        description="Write a self-contained HTML report (timeline, LLM and tool calls, cache hit rates).",
    )
    report.add_argument("run", metavar="RUN", help="run id, 'latest', or a saved .jsonl file")
    report.add_argument("-o", "--output", required=True, help="the HTML file to write")
    report.add_argument("--runs-dir", default=os.environ.get("AGENTFLOW_RUNS_DIR", ".agentflow/runs"))
    report.set_defaults(func=_cmd_report)

    schema = sub.add_parser("schema", help="print the plan format's JSON Schema")
    schema.add_argument("-o", "--output", help="write to this file instead of stdout")
    schema.set_defaults(func=_cmd_schema)

    _load_providers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    code = func(args)
    return int(code) if isinstance(code, int) else 0
