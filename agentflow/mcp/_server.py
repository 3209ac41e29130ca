"""Plans offered as MCP tools (``agentflow mcp serve``), with the ``mcp`` SDK's low-level ``Server``.

Each loaded plan is one MCP tool: its name is the plan's name, its input schema is built from the plan's
declared ``inputs:`` (required unless they have a default), its output schema from the declared ``outputs:``
(``{"result": ...}`` when there are none). A call checks the arguments against the declared inputs, runs the
plan on the server's engine and answers with the outputs as structured content (and as JSON text); a run
that fails answers ``isError`` with the error's message, which names the step, so the client's model can see
it. Runs are independent, at most ``max_runs`` at once, and share the engines (one KV-reuse-aware scheduler per
engine spec) for the server's lifetime.

``serve_stdio`` speaks over this process's stdin/stdout (the SDK diverts stray prints to stderr while it
serves); ``serve_http`` serves streamable HTTP on a loopback address only, since anyone who can reach it can run
the plans on this machine's engine.
"""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING

import anyio

from agentflow.engines import Engine
from agentflow.errors import AgentflowError, ConfigError
from agentflow.plans import LoadedPlan
from agentflow.secrets import redact

from ._source import require_sdk

if TYPE_CHECKING:
    import mcp_types
    from mcp.server import Server

__all__ = ["LOOPBACK_HOSTS", "PlanServer", "serve_http", "serve_stdio"]

DEFAULT_ENGINE = "llamacpp:default"
"""The engine of a plan that names none, when the server is given none."""

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
"""The only addresses ``serve_http`` binds to."""


class PlanServer:
    """Loaded plans as MCP tools; use as ``async with PlanServer(plans) as server`` (engines live inside).

    Args:
        plans: The plans to offer; their names must differ.
        engine: The engine for every plan: an ``Engine`` (shared, left open), an engine spec (one scheduler
            made for the server), or None for each plan's own ``engine.spec`` (``llamacpp:default`` if unset).
        name: The server's name, as MCP clients see it.
        max_runs: Most plan runs at once; further calls wait.

    Raises:
        ConfigError: No plans, two plans with one name, or a bad ``max_runs``.
    """

    def __init__(
        self,
        plans: Sequence[LoadedPlan],
        *,
        engine: Engine | str | None = None,
        name: str = "agentflow",
        max_runs: int = 4,
    ) -> None:
        if not plans:
            raise ConfigError("give at least one plan to serve")
        by_name: dict[str, LoadedPlan] = {}
        for loaded in plans:
            if loaded.name in by_name:
                raise ConfigError(
                    f"two plans are named {loaded.name!r} ({by_name[loaded.name].file or '<code>'} and "
                    f"{loaded.file or '<code>'}); MCP tool names must differ, so rename one ('name:')"
                )
            by_name[loaded.name] = loaded
        if not isinstance(max_runs, int) or max_runs < 1:
            raise ConfigError(f"max_runs={max_runs!r} must be an integer >= 1")
        self.plans: Mapping[str, LoadedPlan] = by_name
        self.name = name
        self._engine = engine
        self._max_runs = max_runs
        self._engines: dict[
            str, Engine
        ] = {}  # spec -> scheduler made for it; lives while the server is entered
        self._limiter: anyio.CapacityLimiter | None = None  # made on entry (it belongs to the running loop)
        self._entered = False

    async def __aenter__(self) -> PlanServer:
        from agentflow.engines import engine_from_spec
        from agentflow.scheduler import Scheduler

        specs: set[str] = set()
        if isinstance(self._engine, str):
            specs.add(self._engine)
        elif self._engine is None:
            specs |= {p.engine_spec or DEFAULT_ENGINE for p in self.plans.values()}
        try:
            for spec in sorted(specs):
                self._engines[spec] = Scheduler(engine_from_spec(spec))
        except BaseException:
            await self._close_engines()
            raise
        self._limiter = anyio.CapacityLimiter(self._max_runs)
        self._entered = True
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._entered = False
        await self._close_engines()

    async def _close_engines(self) -> None:
        with anyio.CancelScope(shield=True):
            for engine in self._engines.values():
                await engine.aclose()
        self._engines.clear()

    def _engine_for(self, loaded: LoadedPlan) -> Engine:
        if self._engine is not None and not isinstance(self._engine, str):
            return self._engine
        spec = self._engine if isinstance(self._engine, str) else (loaded.engine_spec or DEFAULT_ENGINE)
        return self._engines[spec]

    # -- what clients see ------------------------------------------------------------------------------------

    def tools(self) -> list[mcp_types.Tool]:
        """The plans as MCP tool definitions, sorted by name."""
        import mcp_types

        return [
            mcp_types.Tool(
                name=loaded.name,
                description=loaded.plan.description or f"Run the agentflow plan {loaded.name!r}.",
                input_schema=input_schema(loaded),
                output_schema=output_schema(loaded),
            )
            for loaded in sorted(self.plans.values(), key=lambda p: p.name)
        ]

    async def call(self, name: str, arguments: Mapping[str, object] | None) -> mcp_types.CallToolResult:
        """Run the plan ``name`` with ``arguments`` as its inputs; failures are ``isError`` results, never raised."""
        from agentflow.dsl import Err
        from agentflow.runtime import RunContext, run

        loaded = self.plans.get(name)
        if loaded is None:
            return _error(f"no plan named {name!r}; this server offers {', '.join(sorted(self.plans))}")
        if not self._entered or self._limiter is None:
            return _error("the plan server is not running (enter it with `async with PlanServer(...)`)")
        try:
            inputs = loaded.bind_inputs(dict(arguments or {}))
        except AgentflowError as exc:
            return _error(redact(exc.message))
        async with self._limiter:
            context = RunContext(run_id=f"mcp-{uuid.uuid4().hex[:12]}", engine=self._engine_for(loaded))
            try:
                outcome = await run(loaded.workflow, inputs, context=context)
            except AgentflowError as exc:
                return _error(redact(str(exc)))
        if isinstance(outcome, Err):
            return _error(f"plan {name!r} failed: {outcome.error}")
        outputs = json.loads(json.dumps(outcome.value, ensure_ascii=False, default=str))
        return _result(outputs)

    def lowlevel(self) -> Server:
        """The SDK ``Server`` answering ``tools/list`` and ``tools/call`` with this object's plans."""
        require_sdk()
        import mcp_types
        from mcp.server import Server

        from agentflow import __version__

        schemas = {t.name: t.input_schema for t in self.tools()}

        async def list_tools(
            ctx: object, params: mcp_types.PaginatedRequestParams | None
        ) -> mcp_types.ListToolsResult:
            return mcp_types.ListToolsResult(tools=self.tools())

        async def call_tool(ctx: object, params: mcp_types.CallToolRequestParams) -> mcp_types.CallToolResult:
            return await self.call(params.name, params.arguments)

        return Server(
            self.name,
            version=__version__,
            instructions="Each tool runs one agentflow plan; its arguments are the plan's inputs.",
            get_tool_input_schema=schemas.get,
            on_list_tools=list_tools,
            on_call_tool=call_tool,
        )


def input_schema(loaded: LoadedPlan) -> dict[str, object]:
    """The MCP input schema of a plan: an object of its declared inputs."""
    declared = loaded.plan.inputs
    return {
        "type": "object",
        "properties": {n: spec.to_json_schema() for n, spec in declared.items()},
        "required": [n for n, spec in declared.items() if "default" not in spec.model_fields_set],
        "additionalProperties": False,
    }


def output_schema(loaded: LoadedPlan) -> dict[str, object]:
    """The MCP output schema of a plan: an object of its declared outputs (``result`` when none are)."""
    outputs = loaded.plan.outputs
    if not outputs:
        return {"type": "object", "properties": {"result": {}}, "required": ["result"]}
    return {
        "type": "object",
        "properties": {n: out.to_json_schema() for n, out in outputs.items()},
        "required": list(outputs),
    }


def _error(message: str) -> mcp_types.CallToolResult:
    import mcp_types

    return mcp_types.CallToolResult(content=[mcp_types.TextContent(text=message)], is_error=True)


def _result(outputs: object) -> mcp_types.CallToolResult:
    import mcp_types

    text = json.dumps(outputs, ensure_ascii=False)
    return mcp_types.CallToolResult(content=[mcp_types.TextContent(text=text)], structured_content=outputs)


async def serve_stdio(
    plans: Sequence[LoadedPlan], *, engine: Engine | str | None = None, name: str = "agentflow"
) -> None:
    """Serve plans as MCP tools over this process's stdin/stdout until the client closes stdin.

    Raises:
        ConfigError: See :class:`PlanServer`.
    """
    from mcp.server.stdio import stdio_server

    async with PlanServer(plans, engine=engine, name=name) as plan_server:
        server = plan_server.lowlevel()
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())


async def serve_http(
    plans: Sequence[LoadedPlan],
    *,
    engine: Engine | str | None = None,
    name: str = "agentflow",
    host: str = "127.0.0.1",
    port: int = 8000,
    path: str = "/mcp",
    ready: Callable[[str], None] | None = None,
) -> None:
    """Serve plans as MCP tools over streamable HTTP on a loopback address until interrupted (asyncio only).

    Args:
        plans: The plans to offer.
        engine: See :class:`PlanServer`.
        name: The server's name.
        host: ``127.0.0.1``, ``localhost`` or ``::1``.
        port: The TCP port (0: any free port).
        path: The endpoint's path.
        ready: Called with the endpoint's URL once the socket listens.

    Raises:
        ConfigError: A non-loopback host, a port in use, a bad path, or an event loop other than asyncio.
    """
    import sniffio

    if host not in LOOPBACK_HOSTS:
        raise ConfigError(
            f"--host {host!r}: plans are served on loopback addresses only ({', '.join(LOOPBACK_HOSTS)}), "
            "since anyone who reaches the server can run them; put an authenticating proxy in front to share it"
        )
    if not path.startswith("/"):
        raise ConfigError(f"--path {path!r} must start with '/', e.g. /mcp")
    if sniffio.current_async_library() != "asyncio":
        raise ConfigError("serving MCP over HTTP needs the asyncio event loop (uvicorn); use stdio on trio")
    import uvicorn

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}; choose another --port") from None
    with sock:
        sock.listen(128)
        bound_port = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        async with PlanServer(plans, engine=engine, name=name) as plan_server:
            app = plan_server.lowlevel().streamable_http_app(streamable_http_path=path, host=host)
            config = uvicorn.Config(app, log_level="warning", lifespan="on")
            server = uvicorn.Server(config)
            if ready is not None:
                ready(f"http://{shown}:{bound_port}{path}")
            await server.serve(sockets=[sock])
