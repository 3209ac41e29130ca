"""Record real engine traffic to JSONL and replay it deterministically, without the engine.

``RecordingEngine(inner, path)`` forwards every request to ``inner`` and appends one line per completed
request: ``{"key": ..., "request": {...}, "completion": {...}}``. ``ReplayEngine(path)`` answers a request
with the recorded completion of the same key (a hash of the fields that decide the output: prompt or
messages, sampling parameters, stop strings, seed, schema; never the scheduling hints). When the same
request was recorded several times, the n-th replay gets the n-th recording and later ones repeat the last.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import defaultdict, deque
from collections.abc import AsyncGenerator, Sequence
from pathlib import Path

import anyio

from agentflow.errors import ConfigError, EngineRequestError, EngineUnavailableError

from ._text import render_messages, simple_tokenize, text_pieces
from ._tools import openai_tool, openai_tool_call, openai_tool_choice
from ._types import (
    Capabilities,
    Chunk,
    ChunkStream,
    Completion,
    Engine,
    FinishReason,
    GenerationRequest,
    Message,
    ToolCallRequest,
    Usage,
    closing_stream,
    open_stream,
)
from ._wrapper import WrapperEngine

__all__ = ["RecordingEngine", "ReplayEngine", "request_key"]


def _message_fields(message: Message) -> dict[str, object]:
    fields: dict[str, object] = {"role": message.role, "content": message.content}
    if message.tool_calls:  # only when set, so keys of recordings made before tool calls still match
        fields["tool_calls"] = [openai_tool_call(c) for c in message.tool_calls]
    if message.tool_call_id is not None:
        fields["tool_call_id"] = message.tool_call_id
    return fields


def _request_fields(request: GenerationRequest) -> dict[str, object]:
    fields: dict[str, object] = {
        "prompt": request.prompt,
        "messages": None if request.messages is None else [_message_fields(m) for m in request.messages],
        "max_tokens": request.max_tokens,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "stop": list(request.stop),
        "seed": request.seed,
        "json_schema": request.json_schema,
    }
    if request.logit_bias:  # only when set, so keys of recordings made before the field existed still match
        fields["logit_bias"] = sorted((int(token), float(bias)) for token, bias in request.logit_bias.items())
    if request.tools or request.tool_choice != "auto":
        fields["tools"] = [openai_tool(t) for t in request.tools]
        fields["tool_choice"] = openai_tool_choice(request.tool_choice)
        fields["parallel_tool_calls"] = request.parallel_tool_calls
    return fields


def request_key(request: GenerationRequest) -> str:
    """A stable hash of the request fields that decide the output (hints are ignored).

    >>> request_key(GenerationRequest(prompt="a")) == request_key(GenerationRequest(prompt="a"))
    True
    """
    canonical = json.dumps(_request_fields(request), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:32]


def _usage_dict(usage: Usage) -> dict[str, float | int | None]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "cached_tokens": usage.cached_tokens,
        "computed_tokens": usage.computed_tokens,
        "completion_tokens": usage.completion_tokens,
        "queue_s": usage.queue_s,
        "ttft_s": usage.ttft_s,
        "total_s": usage.total_s,
    }


class RecordingEngine(WrapperEngine):
    """Wraps an engine and appends each finished request and its completion to a JSONL file.

    A stream is recorded when its last chunk (the one with usage) arrives; one left earlier is not (its completion
    is partial).
    Everything else (tokenize, render, the optional protocols, ``aclose``) goes to the inner engine.

    Args:
        inner: The engine that really answers.
        path: The JSONL file (created if missing, appended to otherwise).
    """

    def __init__(self, inner: Engine, path: str | Path) -> None:
        super().__init__(inner)
        self._path = Path(path)
        self._lock = anyio.Lock()

    @property
    def name(self) -> str:
        """``record:<inner name>``."""
        return f"record:{self.wrapped.name}"

    @property
    def path(self) -> Path:
        """The recording file."""
        return self._path

    async def generate(self, request: GenerationRequest) -> Completion:
        """Forward to the inner engine and record the result."""
        completion = await self.wrapped.generate(request)
        await self._append(request, completion)
        return completion

    def stream(self, request: GenerationRequest) -> ChunkStream:
        """Forward the inner stream chunk by chunk; record the assembled completion at its end."""
        return closing_stream(self._chunks(request))

    async def _chunks(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        parts: list[str] = []
        calls: list[ToolCallRequest] = []
        async with open_stream(self.wrapped, request) as chunks:
            async for chunk in chunks:
                parts.append(chunk.text)
                calls.extend(chunk.tool_calls)
                if chunk.usage is not None:  # the last chunk: the completion is whole, record it first
                    finish: FinishReason = chunk.finish_reason or "stop"
                    completion = Completion(
                        "".join(parts), chunk.usage, finish, self.wrapped.name, tuple(calls)
                    )
                    await self._append(request, completion)
                yield chunk

    async def _append(self, request: GenerationRequest, completion: Completion) -> None:
        recorded: dict[str, object] = {
            "text": completion.text,
            "finish_reason": completion.finish_reason,
            "model": completion.model,
            "usage": _usage_dict(completion.usage),
        }
        if completion.tool_calls:
            recorded["tool_calls"] = [openai_tool_call(c) for c in completion.tool_calls]
        line = json.dumps(
            {"key": request_key(request), "request": _request_fields(request), "completion": recorded},
            default=str,
        )
        async with self._lock:
            await anyio.to_thread.run_sync(self._write_line, line)

    def _write_line(self, line: str) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        with self._path.open("a", encoding="utf-8") as f:
            f.write(line + "\n")


class ReplayEngine:
    """Answers requests from a recording made by ``RecordingEngine``; never calls a model.

    Tokenizing and rendering use the test engines' simple tokenizer and template (the recorded engine is
    not available); usage is the recorded usage.

    Args:
        path: The JSONL recording.
        tool_calling: Declare ``Capabilities.tool_calling``, as the recorded engine did (agents choose
            native tool calls by it, so a replay must declare what the recording run saw).

    Raises:
        EngineUnavailableError: The file is missing.
        ConfigError: A line is not a valid recording entry (names the line).
    """

    def __init__(self, path: str | Path, *, tool_calling: bool = False) -> None:
        self._path = Path(path)
        self._tool_calling = tool_calling
        if not self._path.is_file():
            raise EngineUnavailableError(
                f"replay recording {str(self._path)!r} does not exist; record one with "
                "RecordingEngine(inner, path) or pass the path of an existing .jsonl file"
            )
        # key -> recorded completions in file order; loaded once, never changed.
        self._recorded: dict[str, list[Completion]] = defaultdict(list)
        # key -> completions not replayed yet; consumed by requests.
        self._pending: dict[str, deque[Completion]] = {}
        with self._path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if line.strip():
                    key, completion = self._parse(line, lineno)
                    self._recorded[key].append(completion)
        self._pending = {k: deque(v) for k, v in self._recorded.items()}

    @property
    def name(self) -> str:
        """``replay:<file name>``."""
        return f"replay:{self._path.name}"

    @property
    def capabilities(self) -> Capabilities:
        """Structured output, streaming and (when declared) tool calls are replayed; no prefix cache."""
        return Capabilities(
            prefix_cache="none",
            slots=1,
            structured_output=True,
            streaming=True,
            tool_calling=self._tool_calling,
        )

    def __len__(self) -> int:
        return sum(len(v) for v in self._recorded.values())

    async def generate(self, request: GenerationRequest) -> Completion:
        """The recorded completion for this request.

        Raises:
            EngineRequestError: The request is not in the recording.
        """
        start = time.perf_counter()
        key = request_key(request)
        recorded = self._recorded.get(key)
        if not recorded:
            what = request.prompt if request.prompt is not None else render_messages(request)
            raise EngineRequestError(
                f"request {key} (prompt starting {what[:60]!r}) is not in the recording {str(self._path)!r}; "
                "re-record with RecordingEngine after changing prompts or sampling parameters"
            )
        pending = self._pending[key]
        completion = pending.popleft() if len(pending) > 1 else pending[0]
        elapsed = time.perf_counter() - start
        u = completion.usage
        return Completion(
            completion.text,
            Usage(
                u.prompt_tokens,
                u.cached_tokens,
                u.computed_tokens,
                u.completion_tokens,
                0.0,
                elapsed,
                elapsed,
            ),
            completion.finish_reason,
            completion.model,
            completion.tool_calls,
        )

    def stream(self, request: GenerationRequest) -> ChunkStream:
        """The recorded completion, split into word chunks (then its tool calls)."""
        return closing_stream(self._chunks(request))

    async def _chunks(self, request: GenerationRequest) -> AsyncGenerator[Chunk, None]:
        completion = await self.generate(request)
        for piece in text_pieces(completion.text):
            yield Chunk(piece)
            await anyio.lowlevel.checkpoint()
        if completion.tool_calls:
            yield Chunk("", tool_calls=completion.tool_calls)
        yield Chunk("", usage=completion.usage, finish_reason=completion.finish_reason)

    async def tokenize(self, text: str) -> Sequence[int]:
        """Simple tokenizer of the test engines."""
        return simple_tokenize(text)

    async def render(self, request: GenerationRequest) -> str:
        """Simple template of the test engines."""
        return render_messages(request)

    async def aclose(self) -> None:
        """Nothing to release."""

    def _parse(self, line: str, lineno: int) -> tuple[str, Completion]:
        where = f"{self._path}:{lineno}"
        try:
            raw = json.loads(line)
            key = raw["key"]
            c = raw["completion"]
            u = c["usage"]
            finish = c["finish_reason"]
            if finish not in ("stop", "length", "error", "tool_calls") or not isinstance(key, str):
                raise ValueError(f"bad finish_reason {finish!r} or key {key!r}")
            calls = tuple(
                ToolCallRequest(str(t["id"]), str(t["function"]["name"]), str(t["function"]["arguments"]))
                for t in c.get("tool_calls", ())
            )
            usage = Usage(
                int(u["prompt_tokens"]),
                None if u["cached_tokens"] is None else int(u["cached_tokens"]),
                int(u["computed_tokens"]),
                int(u["completion_tokens"]),
                float(u["queue_s"]),
                float(u["ttft_s"]),
                float(u["total_s"]),
            )
            return key, Completion(str(c["text"]), usage, finish, str(c.get("model", "")), calls)
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"not a RecordingEngine entry ({exc}); re-record the file", where=where
            ) from exc
