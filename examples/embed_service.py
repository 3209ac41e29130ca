"""Serve agentflow workflows over HTTP from a small Starlette app.

    pip install -e '.[examples]' --config-settings editable_mode=strict    (adds Starlette and uvicorn)
    python examples/embed_service.py [--engine llamacpp:default] [--host 127.0.0.1] [--port 8000]

    curl -s localhost:8000/runs/notes -d '{"topics": ["Mars", "Venus"]}'
    curl -s localhost:8000/runs/digest -d '{"topics": "Jupiter, Saturn"}'
    curl -sN localhost:8000/runs/notes/stream -d '{"topics": ["Mars", "Venus"]}'   # server-sent events
    curl -s localhost:8000/status

Run it from the repository root: the digest plan reads examples/data/planets.csv relative to the working
directory, and the notes flow reads the same table.

One engine behind one scheduler serves every request; each request runs with its own run id and its own
state model, so concurrent requests never see each other's data. When a client disconnects, its run is
cancelled (an LLM call stops between tokens) and nothing of it keeps running: ``/status`` counts it under
``cancelled`` and ``active`` drops back.

``/runs/notes/stream`` answers with server-sent events as the run goes (``agentflow.stream``): ``step``
events when steps start and end, ``token`` events with each piece of the model's answer, ``tool`` and
``llm`` events when calls finish, and a final ``result`` (or ``error``) event. Each event's data is JSON.
"""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import anyio
from pydantic import BaseModel, Field, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agentflow import Engine, Err, Ok, engine_from_spec, flow, generate, par, run, step, stream, usage_of
from agentflow.dsl import Append, Event, LLMCall, StepEnded, StepStarted, TokenDelta, ToolCall, update
from agentflow.errors import UserError
from agentflow.plans import LoadedPlan, load_plan
from agentflow.plans.builtin_tools import lookup
from agentflow.runtime import RunContext
from agentflow.scheduler import Scheduler

PLAN = Path(__file__).with_name("topic_digest.yaml")
TABLE = "examples/data/planets.csv"


class Notes(BaseModel):
    """Per-request state: each branch appends the facts it found (merged by the Append rule)."""

    facts: Annotated[list[str], Append] = Field(default_factory=list)


class NotesRequest(BaseModel):
    topics: list[str] = Field(min_length=1, max_length=20)
    max_tokens: int = Field(default=24, ge=1, le=256)


class DigestRequest(BaseModel):
    topics: str = Field(min_length=1, max_length=2000)


@step
async def look_up(topic: str) -> str:
    """The topic's row of the planets table as one line (an unknown planet fails the run, naming it)."""
    row = lookup(TABLE, topic)
    fact = ", ".join(f"{k}={v}" for k, v in row.items())
    await update(facts=[f"{topic}: {fact}"])
    return fact


@flow
async def notes(topics: list[str], max_tokens: int) -> str:
    """Look the topics up in parallel (each branch appends to the state), then summarize with the LLM."""
    facts = await par.map(look_up, topics)
    completion = await generate(
        "Facts:\n" + "\n".join(facts) + "\nSummarize these facts in one short sentence.",
        max_tokens=max_tokens,
    )
    return completion.text.strip()


@dataclass
class Stats:
    """Counters of this process's runs (the app's only mutable state, read by /status)."""

    active: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0


class Service:
    """The shared pieces: one scheduler over one engine, the loaded plan, and run counters."""

    def __init__(self, engine: Engine, plan: LoadedPlan) -> None:
        self.engine = engine
        self.plan = plan
        self.stats = Stats()

    async def run_until_disconnect(
        self, request: Request, workflow: object, inputs: dict[str, object], state: BaseModel | None
    ) -> Response:
        """Run a workflow for one request; a client disconnect cancels it."""
        run_id = uuid.uuid4().hex[:12]
        context = RunContext(run_id=run_id, engine=self.engine)
        outcome: object = None
        disconnected = False
        self.stats.active += 1
        try:
            async with anyio.create_task_group() as tg:

                async def watch() -> None:
                    nonlocal disconnected
                    while True:
                        message = await request.receive()
                        if message["type"] == "http.disconnect":
                            disconnected = True
                            tg.cancel_scope.cancel()
                            return

                tg.start_soon(watch)
                outcome = await run(workflow, inputs, context=context, state=state)  # type: ignore[arg-type]
                tg.cancel_scope.cancel()
        finally:
            self.stats.active -= 1
            if disconnected:
                self.stats.cancelled += 1
        if disconnected or outcome is None:
            return Response(status_code=499)
        if isinstance(outcome, Err):
            self.stats.failed += 1
            return JSONResponse({"run_id": run_id, "error": str(outcome.error)}, status_code=500)
        self.stats.completed += 1
        usage = usage_of(outcome.trace)
        body: dict[str, object] = {
            "run_id": run_id,
            "result": outcome.value,
            "usage": {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens},
        }
        if outcome.state is not None:
            body["state"] = outcome.state.model_dump(mode="json")
        return JSONResponse(body)


def _sse(kind: str, data: dict[str, object]) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data, ensure_ascii=False, default=str)}\n\n".encode()


def _sse_of(item: Event | Ok[object] | Err) -> bytes | None:
    """One server-sent event for the events a client shows; ``None`` for the rest."""
    if isinstance(item, TokenDelta):
        return _sse("token", {"step": item.path, "call": item.call_id, "text": item.text})
    if isinstance(item, StepStarted):
        return _sse("step", {"step": item.path, "state": "started"})
    if isinstance(item, StepEnded):
        return _sse(
            "step", {"step": item.path, "state": "ok" if item.ok else "failed", "seconds": item.seconds}
        )
    if isinstance(item, ToolCall):
        return _sse(
            "tool", {"step": item.path, "tool": item.tool, "status": item.status, "seconds": item.seconds}
        )
    if isinstance(item, LLMCall):
        return _sse("llm", {"step": item.path, "call": item.call_id, "tokens": item.completion_tokens})
    if isinstance(item, Ok):
        return _sse("result", {"result": item.value})
    if isinstance(item, Err):
        return _sse("error", {"error": str(item.error)})
    return None


def build_app(engine_spec: str = "llamacpp:default") -> Starlette:
    """The ASGI app; the engine is created at startup and closed at shutdown."""
    holder: dict[str, Service] = {}

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        scheduler = Scheduler(engine_from_spec(engine_spec))
        holder["service"] = Service(scheduler, load_plan(PLAN))
        try:
            yield
        finally:
            with anyio.CancelScope(shield=True):
                await scheduler.aclose()

    async def bad_request(exc: Exception) -> Response:
        return JSONResponse({"error": str(exc)}, status_code=422)

    async def run_notes(request: Request) -> Response:
        try:
            body = NotesRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            return await bad_request(exc)
        service = holder["service"]
        inputs: dict[str, object] = {"topics": body.topics, "max_tokens": body.max_tokens}
        return await service.run_until_disconnect(request, notes, inputs, Notes())

    async def stream_notes(request: Request) -> Response:
        try:
            body = NotesRequest.model_validate_json(await request.body())
        except ValidationError as exc:
            return await bad_request(exc)
        service = holder["service"]

        async def events() -> AsyncIterator[bytes]:
            # Starlette cancels this generator when the client disconnects; leaving ``stream`` then cancels
            # the run (an LLM call stops between tokens).
            service.stats.active += 1
            finished = False
            try:
                async with stream(
                    notes,
                    {"topics": body.topics, "max_tokens": body.max_tokens},
                    engine=service.engine,
                    state=Notes(),
                ) as items:
                    async for item in items:
                        chunk = _sse_of(item)
                        if chunk is not None:
                            yield chunk
                finished = True
                outcome = items.outcome
                if isinstance(outcome, Ok):
                    service.stats.completed += 1
                else:
                    service.stats.failed += 1
            finally:
                service.stats.active -= 1
                if not finished:
                    service.stats.cancelled += 1

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={"Cache-Control": "no-store"}
        )

    async def run_digest(request: Request) -> Response:
        try:
            body = DigestRequest.model_validate_json(await request.body())
            service = holder["service"]
            service.plan.bind_inputs({"topics": body.topics})
        except (ValidationError, UserError) as exc:
            return await bad_request(exc)
        return await service.run_until_disconnect(
            request, service.plan.workflow, {"topics": body.topics}, None
        )

    async def status(request: Request) -> Response:
        service = holder["service"]
        s = service.stats
        return JSONResponse(
            {
                "engine": service.engine.name,
                "active": s.active,
                "completed": s.completed,
                "failed": s.failed,
                "cancelled": s.cancelled,
            }
        )

    return Starlette(
        routes=[
            Route("/runs/notes", run_notes, methods=["POST"]),
            Route("/runs/notes/stream", stream_notes, methods=["POST"]),
            Route("/runs/digest", run_digest, methods=["POST"]),
            Route("/status", status, methods=["GET"]),
        ],
        lifespan=lifespan,
    )


def main() -> int:
    import uvicorn

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--engine", default="llamacpp:default", help="engine spec (default: llamacpp:default)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    uvicorn.run(build_app(args.engine), host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
