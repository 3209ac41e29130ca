"""LLM calls as flows: ``generate`` (text) and ``infer`` (typed, validated by pydantic).

Both read the engine from the run's ``RunContext`` and record an ``llm.call`` trace event with the
completion's usage (never the prompt or output text unless the run opts in). ``infer`` turns a
pydantic model into JSON Schema, asks the engine for constrained output, validates it, and on
failure asks again with the validation error in the conversation (bounded by ``max_repairs``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from agentflow.dsl import Err, Event, Flow, Ok
from agentflow.dsl._flow import Env, Res
from agentflow.dsl._outcome import State
from agentflow.engines import Completion, Engine, GenerationRequest, Message, RequestHints
from agentflow.errors import AgentflowError, ConfigError, EngineError, InferenceError
from agentflow.structured import OutputSpec, Violation

from ._context import RunContext

M = TypeVar("M", bound=BaseModel)

Prompt = str | Sequence[Message]
"""A user prompt: plain text (one user message) or a list of chat messages."""


def _engine_of(env: Env) -> Engine:
    ctx = env.ctx
    engine = ctx.engine if isinstance(ctx, RunContext) else None
    if engine is None:
        raise ConfigError(
            "this step calls an LLM but the run has no engine; run it with "
            "agentflow.run(flow, engine='llamacpp:default') or RunContext(engine=...)",
            where=env.path or "<root>",
        )
    return engine


def _messages(prompt: Prompt, system: str | None) -> tuple[Message, ...]:
    msgs: list[Message] = []
    if system:
        msgs.append(Message("system", system))
    if isinstance(prompt, str):
        msgs.append(Message("user", prompt))
    else:
        msgs.extend(prompt)
    return tuple(msgs)


def _hints(env: Env, hints: RequestHints | None) -> RequestHints:
    if hints is not None:
        return hints
    return RequestHints(workflow_id=env.ctx.run_id or None, agent=env.path or None)


def llm_call_data(engine: str, completion: Completion, started: float, **extra: object) -> dict[str, object]:
    """The data of an ``llm.call`` trace event: the engine, the completion's usage and timings, ``extra``."""
    u = completion.usage
    return {
        "engine": engine,
        "model": completion.model,
        "prompt_tokens": u.prompt_tokens,
        "cached_tokens": u.cached_tokens,
        "computed_tokens": u.computed_tokens,
        "completion_tokens": u.completion_tokens,
        "queue_s": u.queue_s,
        "ttft_s": u.ttft_s,
        "total_s": u.total_s,
        "started": started,
        "finish_reason": completion.finish_reason,
        **extra,
    }


def _record(env: Env, engine: Engine, completion: Completion, t0: float, **extra: object) -> None:
    env.log.append(
        Event("llm.call", env.path, time.time(), llm_call_data(engine.name, completion, t0, **extra))
    )


async def _call(env: Env, engine: Engine, request: GenerationRequest, **extra: object) -> Completion:
    budget = env.ctx.budget if isinstance(env.ctx, RunContext) else None
    if budget is not None:
        budget.check(env.path)
    t0 = time.time()
    completion = await engine.generate(request)
    if budget is not None:
        budget.charge(completion.usage)
    _record(env, engine, completion, t0, **extra)
    return completion


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
) -> Flow[Completion]:
    """One LLM call through the run's engine; yields the ``Completion`` (text + usage).

    ``json_schema`` constrains the output (grammar / structured outputs) without validating it; use
    ``infer`` for validated, typed results. Engine failures become ``Err(EngineError)``; the call is
    recorded as an ``llm.call`` event.
    """

    async def leaf(env: Env, state: State) -> Res:
        try:
            engine = _engine_of(env)
            request = GenerationRequest(
                messages=_messages(prompt, system),
                max_tokens=max_tokens,
                temperature=temperature,
                stop=tuple(stop),
                seed=seed,
                json_schema=json_schema,
                hints=_hints(env, hints),
            )
            return Ok(await _call(env, engine, request), state)
        except Exception as exc:
            return Err(_engine_error(exc, env), state)

    return Flow(leaf)


def _engine_error(exc: Exception, env: Env) -> AgentflowError:
    if isinstance(exc, AgentflowError):
        return exc.at(env.path or "<root>")
    err = EngineError(f"engine call failed: {type(exc).__name__}: {exc}", where=env.path or "<root>")
    err.__cause__ = exc
    return err


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
    budget = max_tokens if max_tokens is not None else spec.max_tokens

    async def leaf(env: Env, state: State) -> Res:
        try:
            engine = _engine_of(env)
        except ConfigError as exc:
            return Err(exc, state)
        messages = list(_messages(prompt, sys_text))
        raw = ""
        problem = ""
        attempts = 0
        for attempt in range(1, max_repairs + 2):
            attempts = attempt
            request = GenerationRequest(
                messages=tuple(messages),
                max_tokens=budget,
                temperature=temperature,
                seed=seed,
                json_schema=spec.decode_schema,
                hints=_hints(env, hints),
            )
            try:
                completion = await _call(env, engine, request, schema=model.__name__, attempt=attempt)
            except Exception as exc:
                return Err(_engine_error(exc, env), state)
            raw = completion.text
            checked = spec.check(
                raw,
                cut_off_at=budget if completion.finish_reason == "length" else None,
                completion_tokens=completion.usage.completion_tokens,
            )
            if isinstance(checked, Violation):
                problem = str(checked)
            else:
                try:
                    return Ok(model.model_validate_json(raw), state)
                except ValidationError as exc:
                    problem = _short_errors(exc)
            messages.append(Message("assistant", raw))
            messages.append(
                Message(
                    "user",
                    f"That answer is not valid: {problem}. Reply again with only the corrected JSON object.",
                )
            )
        return Err(
            InferenceError(
                f"no valid {model.__name__} after {attempts} attempt(s): {problem}",
                raw=raw,
                attempts=attempts,
                where=env.path or "<root>",
            ),
            state,
        )

    return Flow(leaf)
