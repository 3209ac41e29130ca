"""``infer_json``: an LLM call whose answer is a JSON value matching a raw JSON Schema.

``agentflow.infer`` works from a pydantic model; plans declare their typed answers as JSON Schema, and
the meta-agent generates whole plans under the plan format's schema. Both come here: the schema
constrains decoding (llama.cpp grammar, ``response_format`` on OpenAI-compatible servers), the answer is
parsed and checked against the schema, then by an optional extra ``check`` (the plan loader, for the
meta-agent), and every problem is sent back to the model for a bounded number of repairs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable

from pydantic import JsonValue

from agentflow.dsl import Flow, ask, current_path, flow, from_async, tell
from agentflow.engines import Completion, Engine, GenerationRequest, Message, RequestHints
from agentflow.errors import ConfigError, InferenceError
from agentflow.runtime import RunContext
from agentflow.structured import OutputSpec, Violation

__all__ = ["JsonCheck", "infer_json"]

JsonCheck = Callable[[JsonValue], str | None]
"""An extra check of a schema-valid answer: ``None`` when fine, else what is wrong and how to fix it."""


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
) -> Flow[JsonValue]:
    """Ask the run's engine for a JSON value matching ``schema`` (and ``check``), repairing at most ``max_repairs`` times.

    Args:
        schema: The JSON Schema of the answer (also drives constrained decoding).
        prompt: The user prompt.
        system: System instructions (the schema is appended to them).
        check: An extra check of a schema-valid answer.
        max_repairs: Extra attempts after an invalid answer.
        max_tokens: Token budget per attempt; ``None`` derives one from the schema.
        temperature: Sampling temperature.
        seed: Sampling seed.
        label: Recorded as ``schema`` in each ``llm.call`` event.
        show_schema: State the schema in the system prompt (turn off for large schemas: decoding is
            constrained either way, and a long prompt costs prefill time).
        repair_temperature: Sampling temperature of repair attempts (default: ``temperature``); a
            greedy small model tends to repeat its mistake, so some randomness helps it out.

    Returns:
        A flow yielding the answer, or failing with ``InferenceError`` (carrying the last raw text).
    """
    if max_repairs < 0:
        raise ConfigError(f"infer_json max_repairs must be >= 0, got {max_repairs}")
    spec = OutputSpec(schema, where=f"the answer schema of {label}")
    budget = max_tokens if max_tokens is not None else spec.max_tokens
    instructions = "Answer with a single JSON value that matches the required JSON Schema, and nothing else."
    if show_schema:
        instructions += f"\nSchema: {json.dumps(schema, separators=(',', ':'))}"
    sys_text = f"{system}\n\n{instructions}" if system else instructions

    @flow
    async def body() -> JsonValue:
        ctx = await ask(RunContext)
        engine = ctx.engine
        if engine is None:
            raise ConfigError(
                "this step calls an LLM but the run has no engine; pass engine='llamacpp:default' "
                "(or --engine on the CLI)"
            )
        path = await current_path()
        hints = RequestHints(workflow_id=ctx.run_id or None, agent=path or None)
        messages = [Message("system", sys_text), Message("user", prompt)]
        raw = ""
        problem = ""
        for attempt in range(1, max_repairs + 2):
            request = GenerationRequest(
                messages=tuple(messages),
                max_tokens=budget,
                temperature=temperature if attempt == 1 or repair_temperature is None else repair_temperature,
                seed=seed if seed is None or attempt == 1 else seed + attempt,
                json_schema=spec.decode_schema,
                hints=hints,
            )
            started = time.time()
            completion = await from_async(_generate(engine, request))
            await tell("llm.call", **_usage(engine, completion, started), schema=label, attempt=attempt)
            raw = completion.text
            checked = spec.check(
                raw,
                cut_off_at=budget if completion.finish_reason == "length" else None,
                completion_tokens=completion.usage.completion_tokens,
            )
            if isinstance(checked, Violation):
                problem = str(checked)
            else:
                problem = (check(checked) or "") if check is not None else ""
                if not problem:
                    return checked
            messages.append(Message("assistant", raw))
            messages.append(
                Message(
                    "user", f"That answer is not valid: {problem}. Reply again with only the corrected JSON."
                )
            )
        raise InferenceError(
            f"no valid {label} after {max_repairs + 1} attempt(s): {problem}",
            raw=raw,
            attempts=max_repairs + 1,
        )

    return body()


def _generate(engine: Engine, request: GenerationRequest) -> Callable[[], Awaitable[Completion]]:
    async def call() -> Completion:
        return await engine.generate(request)

    return call


def _usage(engine: Engine, completion: Completion, started: float) -> dict[str, object]:
    u = completion.usage
    return {
        "engine": engine.name,
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
    }
