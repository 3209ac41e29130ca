"""The one LLM-call primitive, and the flows built on it: ``generate`` (text), ``infer`` (a pydantic model)
and ``infer_json`` (a value matching a raw JSON Schema).

Every request any part of agentflow makes (these flows, plan steps, the LLMCompiler's planner and joiner,
ReAct, the meta-agent, memory summarizers, EvoGit's mutations) goes through ``call_llm``, which in one
place:

- takes the engine from the run (normally a ``Scheduler`` wrapping the real engine, so every request is
  scheduled for KV reuse),
- checks the run's token budget before the call and charges it after (``BudgetExceededError``),
- redacts every revealed secret from the prompt before it leaves for the engine,
- streams when someone reads the text as it comes (a planner feeding its parser, ``agentflow.stream``),
- checks a native tool-calling answer's calls against the offered tools' JSON Schemas (``ToolCallError``),
- records one ``LLMCall`` event per request, failed and aborted ones included, with usage, timings and
  (when the run captures content, the default) the prompt, the completion and its tool calls.

``infer`` and ``infer_json`` add validation and bounded repair: an invalid answer is sent back with what
is wrong, at most ``max_repairs`` more times, and the result is a valid value or ``Err(InferenceError)``.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import anyio
from pydantic import BaseModel, JsonValue, ValidationError

from agentflow.dsl import Flow, LLMCall, LLMStatus, StepScope, TokenDelta, current_scope, leaf
from agentflow.engines import (
    Completion,
    Engine,
    FinishReason,
    GenerationRequest,
    Message,
    RequestHints,
    ToolCallRequest,
    ToolChoice,
    ToolSpec,
    Usage,
)
from agentflow.engines._types import open_stream
from agentflow.errors import AgentflowError, ConfigError, EngineError, InferenceError
from agentflow.executors import current_step_budget
from agentflow.secrets import redact, redact_request
from agentflow.structured import OutputSpec, Violation

from ._context import RunContext
from ._tool_check import tool_call_error

M = TypeVar("M", bound=BaseModel)

Prompt = str | Sequence[Message]
"""A user prompt: plain text (one user message) or a list of chat messages."""

TextReader = Callable[[str], None]
"""Receives a streamed completion's text piece by piece; raising stops the call (recorded as aborted)."""

ToolCallReader = Callable[[ToolCallRequest], None]
"""Receives each native tool call of a streamed completion as soon as it is whole; raising stops the call
(recorded as aborted)."""

Judge = Callable[[Completion], str | None]
"""Says whether a completion is valid for its caller: ``None`` if so, else what is wrong (recorded)."""

JsonCheck = Callable[[JsonValue], str | None]
"""An extra check of a schema-valid answer: ``None`` when fine, else what is wrong and how to fix it."""

MAX_CAPTURED_CHARS = 100_000
"""Longest prompt or completion text recorded in an ``LLMCall`` event (the rest is cut, and says so)."""

_call_ids = itertools.count(1)


def _captured(text: str) -> str:
    text = redact(text)
    if len(text) <= MAX_CAPTURED_CHARS:
        return text
    return f"{text[:MAX_CAPTURED_CHARS]} [truncated {len(text) - MAX_CAPTURED_CHARS} chars]"


def _run_context(scope: StepScope | None) -> RunContext | None:
    ctx = scope.ctx if scope is not None else None
    return ctx if isinstance(ctx, RunContext) else None


async def call_llm(
    request: GenerationRequest,
    *,
    scope: StepScope | None = None,
    engine: Engine | None = None,
    role: str = "generate",
    schema: str | None = None,
    attempt: int = 1,
    on_text: TextReader | None = None,
    judge: Judge | None = None,
    on_tool_call: ToolCallReader | None = None,
    check_tool_calls: bool = True,
) -> Completion:
    """Send one request to the engine: the only place agentflow calls ``Engine.generate``/``stream``.

    Args:
        request: The request (its prompt is redacted of revealed secrets before it is sent).
        scope: The step it is made in (default: the innermost running ``@flow``/``@step`` body, if any).
            The trace event, the token budget and content capture come from the scope's run; without a
            scope nothing is recorded or charged.
        engine: The engine to use (default: the run's engine).
        role: Who asks (``generate``, ``infer``, ``planner``, ``summarizer``...), recorded in the event.
        schema: The name of the output's schema, recorded in the event.
        attempt: The attempt number of a repairing caller, recorded in the event.
        on_text: Called with each streamed piece of the completion; when it raises, generation stops, the
            call is recorded as ``aborted`` (and invalid) and the exception propagates.
        judge: Checks the completion before it is recorded: the event's ``valid`` and ``error`` say what
            it found (``infer`` records each attempt's validation problem this way).
        on_tool_call: Called with each native tool call as soon as it is whole (the call is streamed);
            when it raises, generation stops and the call is recorded as ``aborted``.
        check_tool_calls: Check the completion's tool calls against the request's tools (their names,
            JSON Schemas and ``tool_choice``); turn off only where the caller checks them itself.

    Raises:
        ConfigError: No engine.
        BudgetExceededError: The run's token budget is spent.
        StepBudgetExceededError: The run's step budget (``max_steps``) is spent.
        EngineError: The engine failed (other exceptions from the engine are wrapped in one).
        ToolCallError: A tool call does not fit the offered tools (recorded as invalid; the error holds
            the completion and each bad call's problem).
    """
    scope = scope if scope is not None else current_scope()
    ctx = _run_context(scope)
    chosen = engine if engine is not None else (ctx.engine if ctx is not None else None)
    where = (scope.path if scope is not None else "") or "<root>"
    if chosen is None:
        raise ConfigError(
            "this step calls an LLM but the run has no engine; run it with "
            "agentflow.run(flow, engine='llamacpp:default') or RunContext(engine=...)",
            where=where,
        )
    if ctx is not None and ctx.budget is not None:
        ctx.budget.check(where)
    steps = current_step_budget()
    if steps is not None:
        steps.charge("an LLM call", where)
    if request.hints == RequestHints() and scope is not None:
        request = replace(
            request, hints=RequestHints(workflow_id=scope.ctx.run_id or None, agent=scope.path or None)
        )
    request = redact_request(request)
    call_id = f"{ctx.run_id if ctx is not None else ''}#{next(_call_ids)}"
    streamed = (
        on_text is not None or on_tool_call is not None or (scope is not None and scope.sink is not None)
    )
    started = time.time()
    parts: list[str] = []
    stopped: list[BaseException] = []  # what stopped a stream early: the reader's exception or a cancellation
    try:
        if not streamed:
            completion = await chosen.generate(request)
        else:
            readers = _Readers(on_text, on_tool_call)
            completion = await _stream(chosen, request, parts, stopped, readers, call_id, scope)
    except BaseException as exc:
        aborted = bool(stopped) or isinstance(exc, anyio.get_cancelled_exc_class())
        if scope is not None:
            _record(
                scope,
                ctx,
                chosen,
                request,
                Completion("".join(parts), Usage(), "error"),
                started,
                call_id=call_id,
                role=role,
                schema=schema,
                attempt=attempt,
                status="aborted" if aborted else "error",
                error="cancelled" if aborted and not stopped else f"{type(exc).__name__}: {redact(str(exc))}",
                valid=False if stopped else None,
            )
        if aborted or isinstance(exc, AgentflowError) or not isinstance(exc, Exception):
            raise
        raise EngineError(
            f"engine call failed: {type(exc).__name__}: {redact(str(exc))}", where=where
        ) from exc
    if ctx is not None and ctx.budget is not None:
        ctx.budget.charge(completion.usage)
    problem = judge(completion) if judge is not None else None
    bad_calls = tool_call_error(request, completion, where=where) if check_tool_calls else None
    if bad_calls is not None and problem is None:
        problem = bad_calls.message
    if scope is not None:
        _record(
            scope,
            ctx,
            chosen,
            request,
            completion,
            started,
            call_id=call_id,
            role=role,
            schema=schema,
            attempt=attempt,
            status="ok",
            error=None if problem is None else redact(problem),
            valid=None if judge is None and bad_calls is None else problem is None,
        )
    if bad_calls is not None:
        raise bad_calls
    return completion


@dataclass(frozen=True, slots=True)
class _Readers:
    """Who reads a streamed completion as it comes: its text, its tool calls."""

    text: TextReader | None
    tool_call: ToolCallReader | None


async def _stream(
    engine: Engine,
    request: GenerationRequest,
    parts: list[str],
    stopped: list[BaseException],
    readers: _Readers,
    call_id: str,
    scope: StepScope | None,
) -> Completion:
    """Stream ``request``, collecting its text in ``parts``; a reader's exception is put in ``stopped``."""
    usage: Usage | None = None
    finish: FinishReason = "stop"
    calls: list[ToolCallRequest] = []
    sink = scope.sink if scope is not None else None
    on_text = readers.text
    async with open_stream(engine, request) as chunks:
        async for chunk in chunks:
            if chunk.usage is not None:
                usage = chunk.usage
            if chunk.finish_reason is not None:
                finish = chunk.finish_reason
            for call in chunk.tool_calls:
                calls.append(call)
                if readers.tool_call is not None:
                    try:
                        readers.tool_call(call)
                    except BaseException as exc:
                        stopped.append(exc)
                        raise
            if not chunk.text:
                continue
            parts.append(chunk.text)
            if sink is not None and scope is not None:
                sink(TokenDelta(path=scope.path, time=time.time(), call_id=call_id, text=redact(chunk.text)))
            if on_text is not None:
                try:
                    on_text(chunk.text)
                except BaseException as exc:
                    stopped.append(exc)
                    raise
    return Completion(
        "".join(parts), usage if usage is not None else Usage(), finish, tool_calls=tuple(calls)
    )


def _record(
    scope: StepScope,
    ctx: RunContext | None,
    engine: Engine,
    request: GenerationRequest,
    completion: Completion,
    started: float,
    *,
    call_id: str,
    role: str,
    schema: str | None,
    attempt: int,
    status: LLMStatus,
    error: str | None,
    valid: bool | None,
) -> None:
    capture = ctx.capture_content if ctx is not None else True
    u = completion.usage
    scope.emit(
        LLMCall(
            path=scope.path,
            time=time.time(),
            call_id=call_id,
            engine=engine.name,
            model=completion.model,
            role=role,
            schema=schema,
            attempt=attempt,
            started=started,
            status=status,
            error=error,
            valid=valid,
            finish_reason=completion.finish_reason,
            prompt_tokens=u.prompt_tokens,
            cached_tokens=u.cached_tokens,
            computed_tokens=u.computed_tokens,
            completion_tokens=u.completion_tokens,
            queue_s=u.queue_s,
            ttft_s=u.ttft_s,
            total_s=u.total_s,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            prompt=_captured(request.prompt) if capture and request.prompt is not None else None,
            messages=(
                tuple((m.role, _captured(_message_text(m))) for m in request.messages)
                if capture and request.messages is not None
                else None
            ),
            completion=_captured(completion.text) if capture else None,
            tool_calls=(
                tuple((c.id, c.name, _captured(c.arguments)) for c in completion.tool_calls)
                if capture and completion.tool_calls
                else None
            ),
        )
    )


def _message_text(message: Message) -> str:
    """A message as the trace shows it: its content, then one line per tool call it made or answers."""
    lines = [message.content] if message.content else []
    lines += [f"[tool call {c.id}] {c.name}({c.arguments})" for c in message.tool_calls]
    if message.tool_call_id is not None:
        lines.insert(0, f"[result of tool call {message.tool_call_id}]")
    return "\n".join(lines)


def llm_call(
    request: GenerationRequest,
    *,
    role: str = "generate",
    schema: str | None = None,
    attempt: int = 1,
    on_text: TextReader | None = None,
    judge: Judge | None = None,
    on_tool_call: ToolCallReader | None = None,
) -> Flow[Completion]:
    """``call_llm`` as a flow: one request through the run's engine, yielding its ``Completion``."""
    return leaf(
        lambda scope: call_llm(
            request,
            scope=scope,
            role=role,
            schema=schema,
            attempt=attempt,
            on_text=on_text,
            judge=judge,
            on_tool_call=on_tool_call,
        )
    )


def _messages(prompt: Prompt, system: str | None) -> tuple[Message, ...]:
    msgs: list[Message] = []
    if system:
        msgs.append(Message("system", system))
    if isinstance(prompt, str):
        msgs.append(Message("user", prompt))
    else:
        msgs.extend(prompt)
    return tuple(msgs)


def generate(
    prompt: Prompt,
    *,
    system: str | None = None,
    max_tokens: int = 256,
    temperature: float = 0.0,
    stop: Sequence[str] = (),
    seed: int | None = None,
    json_schema: Mapping[str, object] | None = None,
    hints: RequestHints | None = None,
    role: str = "generate",
    tools: Sequence[ToolSpec] = (),
    tool_choice: ToolChoice = "auto",
    parallel_tool_calls: bool = True,
) -> Flow[Completion]:
    """One LLM call through the run's engine; yields the ``Completion`` (text + usage).

    ``json_schema`` constrains the output (grammar / structured outputs) without validating it; use
    ``infer`` for validated, typed results. With ``tools`` the model may call them natively
    (``tool_choice`` says whether it may, must or must not); its calls, checked against the tools' JSON
    Schemas, are in ``Completion.tool_calls`` (bad ones fail with ``ToolCallError``). Engine failures
    become ``Err(EngineError)``; the call is recorded as an ``LLMCall`` event.
    """

    def request() -> GenerationRequest:
        return GenerationRequest(
            messages=_messages(prompt, system),
            max_tokens=max_tokens,
            temperature=temperature,
            stop=tuple(stop),
            seed=seed,
            json_schema=json_schema,
            tools=tuple(tools),
            tool_choice=tool_choice,
            parallel_tool_calls=parallel_tool_calls,
            hints=hints if hints is not None else RequestHints(),
        )

    return leaf(lambda scope: call_llm(request(), scope=scope, role=role))


def schema_instructions(model: type[BaseModel]) -> str:
    """The system instructions ``infer`` uses: answer with JSON matching the model's schema."""
    schema = json.dumps(model.model_json_schema(), separators=(",", ":"))
    return (
        f"Answer with a single JSON object that matches this JSON Schema, and nothing else.\nSchema: {schema}"
    )


def _short_errors(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors()[:5]:
        loc = ".".join(str(p) for p in e["loc"]) or "<root>"
        parts.append(f"{loc}: {e['msg']}")
    return "; ".join(parts)


Checked = tuple[bool, object, str]
"""What a structured caller's check says of a raw answer: (valid, value, problem)."""


async def _structured(
    scope: StepScope,
    messages: list[Message],
    *,
    spec: OutputSpec,
    label: str,
    accept: Callable[[object, str], Checked],
    max_repairs: int,
    max_tokens: int | None,
    temperature: float,
    seed: int | None,
    hints: RequestHints | None,
    role: str,
    repair_temperature: float | None = None,
) -> object:
    """The repair loop shared by ``infer`` and ``infer_json``: decode under ``spec``'s schema, check the answer
    strictly against the whole schema (``OutputSpec.check``: what the grammar could not enforce included),
    then with ``accept(value, raw)``, and send the unmet constraint back, at most ``max_repairs`` times."""
    raw = ""
    problem = ""
    budget = max_tokens if max_tokens is not None else spec.max_tokens
    verdicts: list[Checked] = []  # each attempt's check, made once (the judge records it in the trace)

    def judge(completion: Completion) -> str | None:
        checked = spec.check(
            completion.text,
            cut_off_at=budget if completion.finish_reason == "length" else None,
            completion_tokens=completion.usage.completion_tokens,
        )
        verdicts.append(
            (False, None, str(checked))
            if isinstance(checked, Violation)
            else accept(checked, completion.text)
        )
        return None if verdicts[-1][0] else verdicts[-1][2]

    for attempt in range(1, max_repairs + 2):
        request = GenerationRequest(
            messages=tuple(messages),
            max_tokens=budget,
            temperature=temperature if attempt == 1 or repair_temperature is None else repair_temperature,
            seed=seed if seed is None or attempt == 1 or repair_temperature is None else seed + attempt,
            json_schema=spec.decode_schema,
            hints=hints if hints is not None else RequestHints(),
        )
        completion = await call_llm(
            request, scope=scope, role=role, schema=label, attempt=attempt, judge=judge
        )
        raw = completion.text
        ok, value, problem = verdicts[-1]
        if ok:
            return value
        messages.append(Message("assistant", raw))
        messages.append(
            Message("user", f"That answer is not valid: {problem}. Reply again with only the corrected JSON.")
        )
    raise InferenceError(
        f"no valid {label} after {max_repairs + 1} attempt(s): {problem}",
        raw=redact(raw),
        attempts=max_repairs + 1,
        where=scope.path or "<root>",
    )


def infer(
    model: type[M],
    prompt: Prompt,
    *,
    system: str | None = None,
    max_repairs: int = 2,
    max_tokens: int | None = None,
    temperature: float = 0.0,
    seed: int | None = None,
    hints: RequestHints | None = None,
    schema_in_system: bool = True,
    role: str = "infer",
) -> Flow[M]:
    """Ask the engine for a ``model`` instance.

    The model's JSON Schema constrains decoding in declaration order (an llguidance token mask on the
    embedded engine, ``response_format`` on OpenAI-compatible servers, vLLM structured outputs) and is
    stated in the system prompt. Every answer is checked as strict JSON against the whole schema
    (``agentflow.structured.OutputSpec.check``: bounds, patterns, formats, and whatever the grammar could
    not enforce), then validated with pydantic; an invalid answer is sent back naming the unmet
    constraint and its path, and the engine tries again, at most ``max_repairs`` more times.

    Args:
        model: The pydantic model to produce.
        prompt: The user prompt (text or messages).
        system: Extra system instructions, placed before the schema instructions.
        max_repairs: Additional attempts after an invalid answer.
        max_tokens: Token budget per attempt; ``None`` derives one from the schema
            (``OutputSpec.max_tokens``). An answer cut off by the budget is reported as such.
        temperature: Sampling temperature.
        seed: Sampling seed.
        hints: Scheduling hints (defaults to the run id and step path).
        schema_in_system: State the schema in a system message placed before ``prompt``. Pass False
            to send ``prompt`` unchanged (decoding is still constrained to the schema), e.g. to continue
            an earlier conversation so that the engine reuses its cached prefix; ``system`` must then be
            None.
        role: Recorded in each ``LLMCall`` event (``infer``, ``joiner``...).

    Returns:
        A flow yielding the validated instance, or failing with ``InferenceError`` carrying the raw
        text of the last attempt.
    """
    if max_repairs < 0:
        raise ConfigError(f"infer max_repairs must be >= 0, got {max_repairs}")
    if not schema_in_system and system is not None:
        raise ConfigError("infer: system= needs schema_in_system=True (put the system message in prompt)")
    instructions = schema_instructions(model)
    sys_text: str | None = f"{system}\n\n{instructions}" if system else instructions
    if not schema_in_system:
        sys_text = None
    spec = OutputSpec(model.model_json_schema(), where=f"the JSON Schema of {model.__name__}")

    def accept(value: object, raw: str) -> Checked:
        # The schema check passed; pydantic builds the instance (and applies what JSON Schema cannot say).
        try:
            return True, model.model_validate_json(raw), ""
        except ValidationError as exc:
            return False, None, _short_errors(exc)

    async def body(scope: StepScope) -> M:
        value = await _structured(
            scope,
            list(_messages(prompt, sys_text)),
            spec=spec,
            label=model.__name__,
            accept=accept,
            max_repairs=max_repairs,
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
            hints=hints,
            role=role,
        )
        assert isinstance(value, model)
        return value

    return leaf(body)


def infer_json(
    schema: dict[str, JsonValue],
    prompt: str,
    *,
    system: str | None = None,
    check: JsonCheck | None = None,
    max_repairs: int = 2,
    max_tokens: int | None = None,
    temperature: float = 0.0,
    seed: int | None = None,
    label: str = "json",
    show_schema: bool = True,
    repair_temperature: float | None = None,
    role: str = "infer",
) -> Flow[JsonValue]:
    """Ask the run's engine for a JSON value matching ``schema`` (and ``check``), repairing at most
    ``max_repairs`` times.

    Plans declare their typed answers as JSON Schema, and the meta-agent generates whole plans under the
    plan format's schema; both come here.

    Args:
        schema: The JSON Schema of the answer (also drives constrained decoding).
        prompt: The user prompt.
        system: System instructions (the schema is appended to them).
        check: An extra check of a schema-valid answer.
        max_repairs: Extra attempts after an invalid answer.
        max_tokens: Token budget per attempt; ``None`` derives one from the schema.
        temperature: Sampling temperature.
        seed: Sampling seed.
        label: Recorded as ``schema`` in each ``LLMCall`` event and named in errors.
        show_schema: State the schema in the system prompt (turn off for large schemas: decoding is
            constrained either way, and a long prompt costs prefill time).
        repair_temperature: Sampling temperature of repair attempts (default: ``temperature``); a
            greedy small model tends to repeat its mistake, so some randomness helps it out.
        role: Recorded in each ``LLMCall`` event.

    Returns:
        A flow yielding the answer, or failing with ``InferenceError`` (carrying the last raw text).
    """
    if max_repairs < 0:
        raise ConfigError(f"infer_json max_repairs must be >= 0, got {max_repairs}")
    spec = OutputSpec(schema, where=f"the answer schema of {label}")
    instructions = "Answer with a single JSON value that matches the required JSON Schema, and nothing else."
    if show_schema:
        instructions += f"\nSchema: {json.dumps(schema, separators=(',', ':'))}"
    sys_text = f"{system}\n\n{instructions}" if system else instructions

    def accept(value: object, raw: str) -> Checked:
        # The schema check passed (strict JSON, the whole schema); then the caller's own check.
        extra = check(value) if check is not None else None  # type: ignore[arg-type]  # a JSON value
        return (False, None, extra) if extra else (True, value, "")

    async def body(scope: StepScope) -> JsonValue:
        value = await _structured(
            scope,
            [Message("system", sys_text), Message("user", prompt)],
            spec=spec,
            label=label,
            accept=accept,
            max_repairs=max_repairs,
            max_tokens=max_tokens,
            temperature=temperature,
            seed=seed,
            hints=None,
            role=role,
            repair_temperature=repair_temperature,
        )
        return value  # type: ignore[return-value]  # OutputSpec.check yields only JSON values

    return leaf(body)
