"""The ``agentflow`` command line.

    agentflow run PLAN [--input k=v ...] [--engine SPEC] [--json]     run a plan
    agentflow run --goal "..." [--dry-run]                            let the meta-agent write (and run) a plan
    agentflow validate PLAN...                                        check plans
    agentflow graph PLAN -o FILE.svg|.png                             picture of the step DAG
    agentflow report RUN -o FILE.html                                 HTML report of a saved run
    agentflow schema                                                  JSON Schema of the plan format

The engine is ``--engine``, else ``$AGENTFLOW_ENGINE``, else the plan's ``engine.spec``, else
``llamacpp:default``. Exit codes: 0 ok, 1 the run failed, 2 bad input (plan, option, engine spec,
missing model file). Other features add
sub-commands without editing this file: each module in ``PROVIDERS`` exposes
``register(subparsers) -> None`` and sets ``func`` (``args -> exit code``) on its parsers.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from rich.console import Console

from agentflow.errors import AgentflowError, ConfigError, UserError

if TYPE_CHECKING:
    from agentflow._progress import RunProgress
    from agentflow.dsl import Event
    from agentflow.mcp import MCPSource
    from agentflow.network import NetworkPolicy
    from agentflow.telemetry import TracingConfig

__all__ = ["PROVIDERS", "build_parser", "main"]

PROVIDERS: tuple[str, ...] = (
    "agentflow.agents.evogit._cli",
    "agentflow.memory._cli",
    "agentflow.runtime._runs_cli",
    "agentflow.mcp._cli",
)
"""Modules that add sub-commands with ``register(subparsers)``; one that does not exist yet is skipped."""

DEFAULT_ENGINE = "llamacpp:default"
DEFAULT_MAX_STEPS = 1000
"""Steps (tool calls, LLM calls, map items) one `agentflow run` may take unless --max-steps or $AGENTFLOW_MAX_STEPS
says otherwise."""

ENGINE_ENV = "AGENTFLOW_ENGINE"
"""Environment variable naming the engine spec to use when ``--engine`` is not given."""

_ENGINE_HINT = (
    "pass --engine llamacpp:default (the bundled SmolLM2-135M-Instruct), "
    "--engine llamacpp:/path/to/model.gguf (an existing GGUF file) or --engine openai:<base_url>#<model> "
    "(an OpenAI-compatible server)"
)

_SMALL_MODEL_NOTE = (
    "note: the bundled SmolLM2-135M is tiny and rarely writes a useful plan; run the same goal on a "
    "real model with --engine openai:<base_url>#<model> (e.g. openai:http://127.0.0.1:8000/v1#Qwen/Qwen3-8B)"
)

_EXAMPLES = """examples:
  agentflow run examples/topic_digest.yaml --input topics="Mars, Venus"
  agentflow run examples/topic_digest.yaml --engine test: --json
  agentflow run --goal "Count the words in: the quick brown fox" --dry-run
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


def _fanout(*listeners: Callable[[Event], None]) -> Callable[[Event], None]:
    """One event listener that calls each of ``listeners`` in turn."""

    def feed(event: Event) -> None:
        for listener in listeners:
            listener(event)

    return feed


class _TokenPrinter:
    """``run --stream``: prints each LLM call's tokens as they arrive, one line per call, prefixed by its step."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._call: str | None = None  # the call whose tokens were printed last

    def __call__(self, event: Event) -> None:
        from agentflow.dsl import LLMCall, TokenDelta

        if isinstance(event, LLMCall) and event.call_id == self._call:
            self._console.file.write("\n")  # that call is complete
            self._call = None
        if not isinstance(event, TokenDelta):
            return
        if event.call_id != self._call:
            if self._call is not None:
                self._console.file.write("\n")
            self._console.print(f"[dim]{event.path or '<root>'}>[/] ", end="", markup=True)
            self._call = event.call_id
        self._console.file.write(event.text)
        self._console.file.flush()


def _engine_label(engine: object) -> str:
    return str(getattr(engine, "name", engine))


def _max_steps(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"--max-steps {text!r} is not a whole number >= 0 (0: no limit)")
    return value


def _engine_spec(args: argparse.Namespace, plan_spec: str | None = None) -> str:
    """``--engine``, else ``$AGENTFLOW_ENGINE``, else the plan's spec, else the default."""
    return args.engine or os.environ.get(ENGINE_ENV, "").strip() or plan_spec or DEFAULT_ENGINE


async def _run_flow(
    workflow: object,
    inputs: Mapping[str, object],
    spec: str,
    run_id: str,
    progress: RunProgress,
    journal: str | None = None,
    telemetry: TracingConfig | None = None,
    capture_content: bool = True,
    live: bool = False,
    max_steps: int = 0,
) -> tuple[object, str]:
    from agentflow.engines import engine_from_spec
    from agentflow.executors import StepBudget
    from agentflow.runtime import RunContext, run
    from agentflow.scheduler import Scheduler

    engine = Scheduler(engine_from_spec(spec))
    progress.watch(engine)
    try:
        context = RunContext(
            run_id=run_id,
            engine=engine,
            telemetry=telemetry,
            capture_content=capture_content,
            on_event=progress.feed if not live else _fanout(progress.feed, _TokenPrinter(_err_console())),
            steps=StepBudget(max_steps) if max_steps else None,
        )
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
    telemetry: list[TracingConfig] = []  # the run's tracing setup, once made; shut down when the command ends
    if args.trace is not None:
        from agentflow.errors import ConfigError
        from agentflow.telemetry import configure_tracing

        headers = dict(h.split("=", 1) for h in args.trace_header if "=" in h)
        try:
            made = configure_tracing(
                args.trace, endpoint=args.trace_endpoint, headers=headers, capture_content=args.trace_content
            )
        except ConfigError as exc:
            return _fail(str(exc))
        telemetry += [made] if made is not None else []
    from agentflow.secrets import secret_scope

    try:
        # One scope for the run and what is done with its outcome (the saved run is redacted with it).
        with secret_scope():
            return _run_command(args, run_id, telemetry)
    finally:
        for config in telemetry:
            config.shutdown()


def _run_command(args: argparse.Namespace, run_id: str, telemetry: list[TracingConfig]) -> int:
    from agentflow._progress import RunProgress, count_calls
    from agentflow.dsl import Err
    from agentflow.errors import EngineUnavailableError
    from agentflow.plans import PlanChoice, dump_plan, load_plan
    from agentflow.report import RunRecord, save_run
    from agentflow.runtime import usage_of

    quiet = args.quiet or args.json or args.stream
    spec = DEFAULT_ENGINE
    journal = args.journal or (
        os.environ.get("AGENTFLOW_JOURNAL", ".agentflow/journal.db") if args.resume else None
    )
    if journal is not None and "://" not in journal:  # a file path, not a postgresql:// URL
        Path(journal).parent.mkdir(parents=True, exist_ok=True)
    try:
        if args.goal is not None:
            from agentflow.agents._meta import BUILTIN_TOOL_REFS, run_goal, write_plan

            refs = [*BUILTIN_TOOL_REFS, *(t for t in args.allow_tool if "*" not in t)]
            spec = _engine_spec(args)
            if spec == DEFAULT_ENGINE and not quiet:
                _err_console().print(f"[dim]{_SMALL_MODEL_NOTE}[/]", markup=True)
            workflow: object
            if args.dry_run:
                workflow = write_plan(args.goal, tools=refs, max_repairs=args.max_repairs)
            else:
                workflow = run_goal(
                    args.goal, inputs=_parse_inputs(args.input, {}), tools=refs, max_repairs=args.max_repairs
                )
            name, inputs = "meta-agent", {}
        else:
            overridden: list[PlanChoice] = []
            if args.engine or os.environ.get(ENGINE_ENV, "").strip():
                overridden.append("engine")
            if args.trace is not None:
                overridden.append("telemetry")
            loaded = load_plan(
                args.plan,
                allow_tools=args.allow_tool,
                network=_network_policy(args),
                overridden=overridden,
                allow_mcp=_allow_mcp(args),
            )
            given = _parse_inputs(args.input, loaded.plan.inputs)
            inputs = loaded.bind_inputs(given)  # the values the run uses, defaults included
            if args.dry_run:
                print(dump_plan(loaded.plan), end="")
                return 0
            spec = _engine_spec(args, loaded.engine_spec)
            workflow, name = loaded.workflow, loaded.name
            wanted = loaded.plan.telemetry
            if args.trace is None and wanted.exporter is not None:
                from agentflow.telemetry import configure_tracing

                made = configure_tracing(
                    wanted.exporter,
                    endpoint=wanted.endpoint,
                    service_name=wanted.service_name,
                    capture_content=wanted.capture_content,
                )
                telemetry += [made] if made is not None else []
        progress = RunProgress(name, quiet=quiet)
        started = time.time()
        with progress.show():
            outcome, engine_name = anyio.run(
                _run_flow,
                workflow,
                inputs,
                spec,
                run_id,
                progress,
                journal,
                telemetry[0] if telemetry else None,
                not args.no_content,
                args.stream,
                args.max_steps,
            )
        finished = time.time()
    except UserError as exc:
        return _fail(_error_text(exc))
    except EngineUnavailableError as exc:
        # Raised only while the engine is created (failures during the run are values): a set-up problem.
        return _fail(f"cannot start engine {_escape(spec)!r}: {_error_text(exc)}\nhint: {_ENGINE_HINT}")
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
    calls = count_calls(trace)
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
                "llm_calls": calls.llm_calls,
                "tool_calls": calls.tool_calls,
                "failed_tool_calls": calls.failed_tool_calls,
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
        hit = f"{100 * usage.cached_tokens / usage.prompt_tokens:.0f}%" if usage.prompt_tokens else "-"
        _err_console().print(
            f"[dim]{name} {'ok' if ok else 'FAILED'} in {finished - started:.2f}s · "
            f"{calls.llm_calls} LLM calls, "
            f"{calls.tool_calls} tool calls · {usage.prompt_tokens} prompt tokens "
            f"({hit} cached), {usage.completion_tokens} completion tokens[/]",
            markup=True,
        )
        if saved is not None:
            _err_console().print(
                f"[dim]saved run {run_id}: agentflow report {run_id} -o report.html[/]", markup=True
            )
    if not ok:
        failure = getattr(outcome, "error", None)
        _fail(_escape(error or "the run failed"), 1)
        if isinstance(failure, BaseException):
            _explain(failure, verbose=args.verbose)
        return 1
    return 0


def _explain(error: BaseException, *, verbose: bool) -> None:
    """With ``--verbose`` the error's traceback (its causes included); otherwise a hint when there is one."""
    import traceback

    if verbose:
        print("".join(traceback.format_exception(error)), end="", file=sys.stderr)
    elif error.__cause__ is not None or not isinstance(error, AgentflowError):
        _err_console().print("[dim]run again with --verbose for the traceback[/]", markup=True)


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


# -- validate / graph / schema / report --------------------------------------------------------------


def _cmd_validate(args: argparse.Namespace) -> int:
    from agentflow.errors import PlanError
    from agentflow.plans import load_plan, walk_steps

    failed = 0
    console = Console(highlight=False, soft_wrap=True)
    try:
        network = _network_policy(args)
        allow_mcp = _allow_mcp(args)
    except ConfigError as exc:
        return _fail(_error_text(exc))
    for path in args.plans:
        try:
            loaded = load_plan(path, allow_tools=args.allow_tool, network=network, allow_mcp=allow_mcp)
        except PlanError as exc:
            failed += 1
            console.print(f"[red]invalid[/] {_escape(str(exc))}", markup=True)
            continue
        steps = sum(1 for _ in walk_steps(loaded.plan.steps))
        tools = (
            ", ".join(
                [*loaded.tools.names(), *(f"{m.name}.* (MCP {m.transport})" for m in loaded.mcp_sources)]
            )
            or "no tools"
        )
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
        # Drawing sends nothing: the plan's engine and telemetry destinations are not used here.
        loaded = load_plan(
            args.plan,
            allow_tools=args.allow_tool,
            overridden=("engine", "telemetry"),
            allow_mcp=_allow_mcp(args),
        )
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
        "agentflow.plans.builtin_tools:* is always allowed; modules in the current directory are found)",
    )
    from agentflow.mcp._cli import add_mcp_flags

    add_mcp_flags(parser)


def _allow_mcp(args: argparse.Namespace) -> list[str | MCPSource]:
    """The user's MCP sources and allowed targets from ``--mcp``/``--allow-mcp``/``--mcp-secret``."""
    from agentflow.mcp._cli import mcp_allow_from_args

    return mcp_allow_from_args(args)


def _add_allow_network(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST",
        help="let plans send requests to HOST, HOST:PORT or *.DOMAIN (their engine server, model hub or "
        "OTLP endpoint; repeatable; also $AGENTFLOW_ALLOW_HOSTS and the config file). Hosts you give "
        "yourself with --engine or --trace-endpoint need no allowing",
    )
    parser.add_argument(
        "--allow-trace-content",
        action="store_true",
        help="let a plan's telemetry.capture_content put prompts and outputs into the spans it exports",
    )


def _network_policy(args: argparse.Namespace) -> NetworkPolicy:
    from agentflow.network import NetworkPolicy

    return NetworkPolicy.from_user(args.allow_host, trace_content=args.allow_trace_content)


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
    run.add_argument(
        "--engine",
        help=f"engine spec; overrides ${ENGINE_ENV} and the plan's (default {DEFAULT_ENGINE}), "
        "e.g. openai:http://127.0.0.1:8000/v1#Qwen/Qwen3-8B",
    )
    run.add_argument("--json", action="store_true", help="print one JSON object (outputs, usage) to stdout")
    run.add_argument(
        "--quiet", action="store_true", help="no progress (default: a live display on a terminal, else lines)"
    )
    run.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="on failure, print the traceback (of a tool's exception...)",
    )
    run.add_argument("--goal", help="have the meta-agent write a plan for this goal, then run it")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (checked, or generated with --goal) without running it",
    )
    run.add_argument("--max-repairs", type=int, default=3, help="meta-agent repair attempts (default 3)")
    run.add_argument(
        "--max-steps",
        type=_max_steps,
        default=os.environ.get("AGENTFLOW_MAX_STEPS", str(DEFAULT_MAX_STEPS)),
        metavar="N",
        help="most steps (tool calls, LLM calls, plan map items) the run may take; a plan's max_steps can only lower it "
        f"(default $AGENTFLOW_MAX_STEPS or {DEFAULT_MAX_STEPS}; 0: no limit)",
    )
    run.add_argument("--run-id", help="id of this run (default: time + random suffix)")
    run.add_argument(
        "--runs-dir",
        default=os.environ.get("AGENTFLOW_RUNS_DIR", ".agentflow/runs"),
        help="where runs are saved",
    )
    run.add_argument("--no-save", action="store_true", help="do not save the run")
    run.add_argument(
        "--stream",
        action="store_true",
        help="show the model's tokens live as they are generated (on stderr, one line per LLM call; stdout "
        "keeps the result)",
    )
    run.add_argument(
        "--no-content",
        action="store_true",
        help="record only usage and timings, not prompts, completions, tool arguments and results (they are "
        "recorded by default, redacted of secrets, in the saved run and its report)",
    )
    run.add_argument(
        "--journal",
        help="journal every step in this SQLite file (or postgresql:// URL) so the run can be resumed "
        "(default with --resume: "
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
        "--trace-content",
        action="store_true",
        help="also export prompts, completions, tool arguments and results in the spans (OpenTelemetry GenAI "
        "content attributes, secrets scrubbed); without it spans carry usage and timings only",
    )
    _add_allow_tool(run)
    _add_allow_network(run)
    run.set_defaults(func=_cmd_run)

    validate = sub.add_parser(
        "validate", help="check plan files", description="Check plans; exit 2 if any is invalid."
    )
    validate.add_argument("plans", nargs="+", metavar="PLAN")
    _add_allow_tool(validate)
    _add_allow_network(validate)
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

    schema = sub.add_parser(
        "schema",
        help="print the plan format's JSON Schema",
        description="Print the JSON Schema of the agentflow/v1 plan format, for editors and validators "
        "(e.g. a YAML language server's `# yaml-language-server: $schema=plan.schema.json`).",
    )
    schema.add_argument("-o", "--output", help="write to this file instead of stdout (e.g. plan.schema.json)")
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
    if getattr(args, "allow_tool", None):
        _add_working_directory_to_path()
    code = func(args)
    return int(code) if isinstance(code, int) else 0


def _add_working_directory_to_path() -> None:
    """Let ``--allow-tool mytools:*`` import ``./mytools.py`` (as ``python -m`` would, but last in the
    search path, so a local file never shadows an installed module)."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
