"""The ``agentflow`` command line.

    agentflow run PLAN [--input k=v ...] [--engine SPEC] [--json]     run a plan (journaled)
    agentflow run --goal "..." [--dry-run]                            let the meta-agent write (and run) a plan
    agentflow resume RUN [--answer JSON]                              continue a run (Ctrl-C'd, crashed, failed, waiting)
    agentflow validate PLAN...                                        check plans
    agentflow graph PLAN [-o FILE.svg]                                picture of the step DAG (SVG)
    agentflow report RUN -o FILE.html                                 HTML report of a run
    agentflow schema                                                  JSON Schema of the plan format

Every run is journaled (``--journal``, else ``$AGENTFLOW_JOURNAL``, else ``.agentflow/journal.db``; ``--no-save``:
not at all): its steps, inputs and trace. ``resume``, ``report`` and ``runs list|show|export`` read it and
take the same run ids (``latest`` too). The engine is ``--engine``, else ``$AGENTFLOW_ENGINE``, else the
plan's ``engine.spec``, else ``llamacpp:default``. Exit codes: 0 ok, 1 the run failed, 2 bad input (plan,
option, engine spec, missing model file), 130 interrupted. Other features add
sub-commands through ``SUBCOMMANDS``: a static table of name, help and module; the module exposes
``register(subparsers) -> None`` and sets ``func`` (``args -> exit code``) on its parsers. A sub-command's
module is imported only when that sub-command is dispatched, so ``agentflow --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
from rich.console import Console

from agentflow.errors import AgentflowError, ConfigError, UserError

if TYPE_CHECKING:
    from agentflow._progress import RunProgress
    from agentflow.dsl import Err, Event, Ok
    from agentflow.mcp import MCPSource
    from agentflow.network import NetworkPolicy
    from agentflow.report import RunRecord as SavedRun
    from agentflow.runtime import RunRecord as JournaledRun
    from agentflow.telemetry import TracingConfig

__all__ = ["SUBCOMMANDS", "Subcommand", "build_parser", "main"]


@dataclass(frozen=True)
class Subcommand:
    """A sub-command defined outside this file.

    Attributes:
        name: The command (``agentflow NAME ...``).
        help: Its one-line help, listed by ``agentflow --help`` without importing ``module``.
        module: The module whose ``register(subparsers)`` adds the command; imported only on dispatch.
    """

    name: str
    help: str
    module: str


SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand(
        "evolve",
        "evolve a repository with a population of LLM coding agents (EvoGit)",
        "agentflow.agents.evogit._cli",
    ),
    Subcommand("memory", "import into, query and inspect the memory store", "agentflow.memory._cli"),
    Subcommand("runs", "list, inspect, export, settle and garbage-collect runs", "agentflow.runs._cli"),
    Subcommand("mcp", "MCP: serve plans as MCP tools, list an MCP server's tools", "agentflow.mcp._cli"),
)
"""Sub-commands whose modules load only when dispatched; each module's ``register`` uses the same help."""

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
  agentflow runs show latest --content
  agentflow resume latest
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
    journal_steps: bool = True,
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
        outcome: object = await run(
            workflow,  # type: ignore[arg-type]
            inputs,
            context=context,
            journal=journal,
            journal_steps=journal_steps,
        )
    finally:
        with anyio.CancelScope(shield=True):
            await engine.aclose()
    return outcome, _engine_label(engine)


def _cmd_run(args: argparse.Namespace) -> int:
    from agentflow.runs import LATEST

    if args.goal is None and args.plan is None:
        return _fail("give a PLAN file to run, or --goal TEXT for the meta-agent to write one")
    if args.goal is not None and args.plan is not None:
        return _fail("give either a PLAN file or --goal, not both")
    if args.run_id == LATEST:
        return _fail(
            f"--run-id {LATEST!r} is reserved: it names the run updated last (e.g. `agentflow resume "
            f"{LATEST}`); pick another id"
        )
    run_id = args.run_id or time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]
    return _start_run(args, run_id, None)


def _start_run(args: argparse.Namespace, run_id: str, stored_inputs: Mapping[str, object] | None) -> int:
    """Run (or, with ``stored_inputs`` from the journal, resume) the plan or goal ``args`` name."""
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
        # One scope for the run and what is done with its outcome (the journal is redacted with it).
        with secret_scope():
            return _run_command(args, run_id, telemetry, stored_inputs)
    finally:
        for config in telemetry:
            config.shutdown()


def _run_command(
    args: argparse.Namespace,
    run_id: str,
    telemetry: list[TracingConfig],
    stored_inputs: Mapping[str, object] | None,
) -> int:
    from agentflow._cli_options import default_journal, journal_option
    from agentflow._postgres import is_postgres_url
    from agentflow._progress import RunProgress, count_calls
    from agentflow.dsl import Err
    from agentflow.errors import EngineUnavailableError
    from agentflow.plans import PlanChoice, dump_plan, load_plan
    from agentflow.runtime import usage_of

    quiet = args.quiet or args.json or args.stream
    spec = DEFAULT_ENGINE
    journal: str | None = None if args.no_save else (args.journal or default_journal())
    hint = "" if journal is None else journal_option(journal)
    try:
        if journal is not None and not is_postgres_url(journal):
            Path(journal).parent.mkdir(parents=True, exist_ok=True)
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
            if stored_inputs is not None:  # a resume: the values the run started with
                given = dict(stored_inputs)
            else:
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
                # A meta-agent's plan is not a journalable value: a --goal run is recorded, not resumable.
                args.goal is None,
            )
        finished = time.time()
    except UserError as exc:
        return _fail(_error_text(exc))
    except EngineUnavailableError as exc:
        # Raised only while the engine is created (failures during the run are values): a set-up problem.
        return _fail(f"cannot start engine {_escape(spec)!r}: {_error_text(exc)}\nhint: {_ENGINE_HINT}")
    except AgentflowError as exc:
        return _fail(_error_text(exc), 1)
    except OSError as exc:  # the journal's directory cannot be made
        return _fail(f"cannot use journal {_escape(str(journal))!r}: {exc.strerror}; pass --journal PATH")
    except KeyboardInterrupt:
        if journal is None or args.goal is not None:
            return _fail("interrupted", 130)
        return _fail(
            f"interrupted; run {_escape(run_id)} is journaled with every step it finished: continue it "
            f"with `agentflow resume {_escape(run_id)}{_escape(hint)}` (it reuses the plan and inputs)",
            130,
        )

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
            "journal": journal,
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
            f"{calls.llm_calls} LLM calls, "
            f"{calls.tool_calls} tool calls · {usage.prompt_tokens} prompt tokens "
            f"({hit} cached), {usage.completion_tokens} completion tokens[/]",
            markup=True,
        )
        if journal is not None and ok:
            _err_console().print(
                f"[dim]run {_escape(run_id)}: agentflow runs show {_escape(run_id + hint)} · "
                f"agentflow report {_escape(run_id + hint)} -o report.html[/]",
                markup=True,
            )
    if not ok:
        failure = getattr(outcome, "error", None)
        _fail(_escape(error or "the run failed"), 1)
        if isinstance(failure, BaseException):
            _explain(failure, verbose=args.verbose)
        if journal is not None and args.goal is None:
            _err_console().print(
                f"[dim]run {_escape(run_id)} is journaled: see it with `agentflow runs show "
                f"{_escape(run_id + hint)}`; once the cause is fixed, `agentflow resume {_escape(run_id + hint)}` "
                "continues it without redoing finished steps[/]",
                markup=True,
            )
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
    from agentflow.plans import load_plan
    from agentflow.plans._loader import walk_steps

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


def _cmd_graph(args: argparse.Namespace) -> int:
    from agentflow.plans import load_plan, plan_graph, render_svg

    wanted = Path(args.output) if args.output not in (None, "-") else None
    if wanted is not None and wanted.suffix.lower() != ".svg":
        svg_path = str(wanted.with_suffix(".svg")) if wanted.name else "dag.svg"
        return _fail(
            f"-o {args.output!r}: agentflow graph writes SVG only; write {svg_path!r} and convert it "
            f"if you need another format (e.g. rsvg-convert -o {args.output} {svg_path}, "
            "or open it in a browser)"
        )
    try:
        # Drawing sends nothing: the plan's engine and telemetry destinations are not used here.
        loaded = load_plan(
            args.plan,
            allow_tools=args.allow_tool,
            overridden=("engine", "telemetry"),
            allow_mcp=_allow_mcp(args),
        )
        svg = render_svg(plan_graph(loaded.plan), title=loaded.name)
        if wanted is None:
            print(svg, end="")
            return 0
        wanted.write_text(svg, encoding="utf-8")
    except UserError as exc:
        return _fail(_error_text(exc))
    except OSError as exc:
        return _fail(f"cannot write {args.output!r}: {exc.strerror}")
    _err_console().print(f"wrote {_escape(str(wanted))}", markup=True)
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
    from agentflow._cli_options import journal_of
    from agentflow.report import load_run, render_report
    from agentflow.runs import load_journaled_run

    try:
        record: SavedRun
        if args.run.endswith(".jsonl"):  # a run file: exported, or saved by an older agentflow
            if not Path(args.run).is_file():
                return _fail(
                    f"run file {_escape(args.run)!r} does not exist; pass a run id, 'latest' or a .jsonl file"
                )
            record = load_run(args.run)
        else:
            journal = journal_of(args)
            record = anyio.run(load_journaled_run, args.run, journal)
        html = render_report(record)
        Path(args.output).write_text(html, encoding="utf-8")
    except UserError as exc:
        return _fail(_error_text(exc))
    except AgentflowError as exc:  # the journal is unreachable or damaged
        return _fail(_error_text(exc), 1)
    except OSError as exc:
        return _fail(f"cannot write {args.output!r}: {exc.strerror}")
    _err_console().print(f"wrote {_escape(args.output)} (run {_escape(record.run_id)})", markup=True)
    return 0


# -- resume ------------------------------------------------------------------------------------------

_NO_ANSWER: object = object()


async def _find_and_answer(journal: str, ref: str, answer: object, path: str | None) -> JournaledRun:
    """The run ``ref`` names, after recording ``answer`` for its waiting interrupt (if one is given)."""
    from agentflow.runs import find_run
    from agentflow.runtime._durable import open_journal
    from agentflow.runtime._run import store_answer

    store, owned = open_journal(journal, create=False)
    try:
        record = await find_run(store, ref)
        if answer is not _NO_ANSWER:
            await store_answer(store, record.run_id, answer, path)
        return record
    finally:
        if owned:
            await store.aclose()


def _cmd_resume(args: argparse.Namespace) -> int:
    from agentflow._cli_options import journal_of, parse_json_option
    from agentflow.runtime._durable import PLAN_PREFIX

    journal = journal_of(args)
    try:
        answer = parse_json_option(args.answer, "--answer") if args.answer is not None else _NO_ANSWER
        record = anyio.run(_find_and_answer, journal, args.run_id, answer, args.path)
        if record.workflow is None or not record.workflow.startswith(PLAN_PREFIX) or args.workflow:
            return _resume_workflow(args, record, journal)
        inputs = json.loads(record.inputs or "{}")
    except AgentflowError as exc:
        return _fail(_error_text(exc))
    except ValueError as exc:
        return _fail(
            f"run {_escape(args.run_id)!r} has inputs that are not JSON ({exc}); the journal was damaged"
        )
    if not isinstance(inputs, dict):
        return _fail(
            f"run {_escape(record.run_id)!r} has inputs that are not a JSON object; the journal was damaged"
        )
    # A plan run: the plan file it recorded, with the inputs it started with, through `run`'s own path.
    args.plan, args.journal = record.workflow.removeprefix(PLAN_PREFIX), journal
    return _start_run(args, record.run_id, inputs)


def _resume_workflow(args: argparse.Namespace, record: JournaledRun, journal: str) -> int:
    """Resume a run of a Python workflow (imported again from the journal's record, if allowed)."""
    from agentflow.dsl import Err
    from agentflow.runtime import resume
    from agentflow.runtime._durable import import_ref

    try:
        workflow = import_ref(args.workflow) if args.workflow is not None else None
        out: Ok[object] | Err = anyio.run(
            lambda: resume(
                record.run_id,
                journal=journal,
                engine=args.engine,
                workflow=workflow,  # type: ignore[arg-type]
                allow_workflows=args.allow_workflow,
                allow_tools=args.allow_tool,
            )
        )
    except AgentflowError as exc:
        return _fail(_error_text(exc))
    if isinstance(out, Err):
        _fail(f"run {_escape(record.run_id)} did not complete: {_escape(str(out.error))}", 1)
        return 1
    from pydantic_core import to_jsonable_python

    try:
        print(json.dumps(to_jsonable_python(out.value)))
    except (TypeError, ValueError):
        print(repr(out.value))
    return 0


# -- parser ------------------------------------------------------------------------------------------


def _add_run_options(run: argparse.ArgumentParser) -> None:
    """The options ``run`` and ``resume`` share: engine, output, limits, journal, telemetry, allowlists."""
    from agentflow._cli_options import add_journal_arg

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
    run.add_argument(
        "--max-steps",
        type=_max_steps,
        default=os.environ.get("AGENTFLOW_MAX_STEPS", str(DEFAULT_MAX_STEPS)),
        metavar="N",
        help="most steps (tool calls, LLM calls, plan map items) the run may take; a plan's max_steps can only lower it "
        f"(default $AGENTFLOW_MAX_STEPS or {DEFAULT_MAX_STEPS}; 0: no limit)",
    )
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
        "recorded by default, redacted of secrets, in the journal's trace of the run)",
    )
    add_journal_arg(run)
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


class _Removed(argparse.Action):
    """An option that no longer exists: using it is a usage error that says what replaced it."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[object] | None,
        option_string: str | None = None,
    ) -> None:
        parser.error(str(self.const))


def _add_removed(parser: argparse.ArgumentParser, flag: str, message: str) -> None:
    parser.add_argument(flag, action=_Removed, const=message, nargs="?", help=argparse.SUPPRESS)


def _add_allow_tool(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--allow-tool",
        action="append",
        default=[],
        metavar="PATTERN",
        help="also allow plans to import tools matching 'module:attr' or 'module:*' (repeatable; "
        "agentflow.plans.builtin_tools:* is always allowed; modules in the current directory are found)",
    )
    from agentflow._cli_options import add_mcp_flags

    add_mcp_flags(parser)


def _allow_mcp(args: argparse.Namespace) -> list[str | MCPSource]:
    """The user's MCP sources and allowed targets from ``--mcp``/``--allow-mcp``/``--mcp-secret``."""
    from agentflow._cli_options import mcp_allow_from_args

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


def _add_subcommands(sub: argparse._SubParsersAction[argparse.ArgumentParser], command: str | None) -> None:
    """Register ``command``'s module if it is one of ``SUBCOMMANDS``; list the others by name and help only."""
    for entry in SUBCOMMANDS:
        if entry.name == command:
            importlib.import_module(entry.module).register(sub)
        else:
            sub.add_parser(entry.name, help=entry.help, add_help=False)


def _command_of(argv: Sequence[str]) -> str | None:
    """The sub-command ``argv`` names: its first word that is not an option (top-level options take no value)."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``agentflow`` argument parser.

    Args:
        command: The sub-command about to be dispatched: if it is one of ``SUBCOMMANDS``, its module is imported
            and registers its full parser; the other ``SUBCOMMANDS`` are listed by name and help only.
    """
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
        description="Run a plan on an engine and print its outputs. The run is journaled (its steps, inputs and "
        "trace): `agentflow resume RUN` continues it after Ctrl-C, a crash or a failure, `agentflow runs show "
        "RUN` and `agentflow report RUN` show it.",
        epilog="exit codes: 0 ok, 1 the run failed, 2 bad input, 130 interrupted",
    )
    run.add_argument("plan", nargs="?", help="the plan file (YAML)")
    run.add_argument(
        "-i", "--input", action="append", default=[], metavar="KEY=VALUE", help="a plan input (repeatable)"
    )
    run.add_argument("--goal", help="have the meta-agent write a plan for this goal, then run it")
    run.add_argument(
        "--dry-run",
        action="store_true",
        help="print the plan (checked, or generated with --goal) without running it",
    )
    run.add_argument("--max-repairs", type=int, default=3, help="meta-agent repair attempts (default 3)")
    run.add_argument("--run-id", help="id of this run (default: time + random suffix)")
    run.add_argument(
        "--no-save", action="store_true", help="do not journal the run (it cannot be resumed or reported)"
    )
    _add_removed(
        run,
        "--resume",
        "`run --resume` was removed: continue a run with `agentflow resume RUN` (it reuses the plan and the "
        "inputs the run started with)",
    )
    _add_removed(
        run,
        "--runs-dir",
        "--runs-dir was removed: every run is kept in the journal (--journal, $AGENTFLOW_JOURNAL, default "
        ".agentflow/journal.db); `agentflow runs export RUN` writes one to a .jsonl file",
    )
    _add_run_options(run)
    run.set_defaults(func=_cmd_run)

    resume = sub.add_parser(
        "resume",
        help="continue a run: Ctrl-C'd, crashed, failed, or waiting for an answer",
        description="Continue a journaled run with the plan (or workflow) and inputs it started with: steps "
        "it finished, LLM calls included, are replayed from the journal, the rest runs. RUN is a run id or "
        "'latest'.",
        epilog="exit codes: 0 ok, 1 the run failed (or waits again), 2 bad input, 130 interrupted",
    )
    resume.add_argument("run_id", metavar="RUN", help="a run id or 'latest'")
    resume.add_argument("--answer", help="JSON answer for the waiting interrupt")
    resume.add_argument("--path", help="which interrupt to answer when several wait")
    resume.add_argument("--workflow", help="module:attr of the workflow (default: the one the run recorded)")
    resume.add_argument(
        "--allow-workflow",
        action="append",
        default=[],
        metavar="PATTERN",
        help="let the resume import a recorded Python workflow matching this fnmatch pattern "
        "(module:qualname or /abs/file.py:qualname, e.g. 'myapp.flows:*'; repeatable; also "
        "$AGENTFLOW_RESUME_ALLOW, comma-separated). Plans recorded by path need none",
    )
    _add_run_options(resume)
    resume.set_defaults(
        func=_cmd_resume, plan=None, input=[], goal=None, dry_run=False, max_repairs=3, no_save=False
    )

    validate = sub.add_parser(
        "validate", help="check plan files", description="Check plans; exit 2 if any is invalid."
    )
    validate.add_argument("plans", nargs="+", metavar="PLAN")
    _add_allow_tool(validate)
    _add_allow_network(validate)
    validate.set_defaults(func=_cmd_validate)

    graph = sub.add_parser(
        "graph", help="draw a plan's step DAG", description="Draw a plan's step DAG as SVG."
    )
    graph.add_argument("plan", metavar="PLAN")
    graph.add_argument("-o", "--output", help="FILE.svg (default: SVG on stdout)")
    _add_allow_tool(graph)
    graph.set_defaults(func=_cmd_graph)

    report = sub.add_parser(
        "report",
        help="write an HTML report of a run",
        description="Write a self-contained HTML report (timeline, LLM and tool calls, cache hit rates).",
    )
    report.add_argument("run", metavar="RUN", help="a run id, 'latest', or a run file (.jsonl)")
    report.add_argument("-o", "--output", required=True, help="the HTML file to write")
    from agentflow._cli_options import add_journal_arg

    add_journal_arg(report)
    _add_removed(
        report,
        "--runs-dir",
        "--runs-dir was removed: runs are read from the journal (--journal, $AGENTFLOW_JOURNAL, default "
        ".agentflow/journal.db); pass the path of a .jsonl run file to open one saved by an older agentflow",
    )
    report.set_defaults(func=_cmd_report)

    schema = sub.add_parser(
        "schema",
        help="print the plan format's JSON Schema",
        description="Print the JSON Schema of the agentflow/v1 plan format, for editors and validators "
        "(e.g. a YAML language server's `# yaml-language-server: $schema=plan.schema.json`).",
    )
    schema.add_argument("-o", "--output", help="write to this file instead of stdout (e.g. plan.schema.json)")
    schema.set_defaults(func=_cmd_schema)

    _add_subcommands(sub, command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_command_of(arguments))
    args = parser.parse_args(arguments)
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
