"""Compiling a checked plan into an ordinary ``Flow`` built from the DSL's combinators.

Each step becomes ``named(id, ...)`` around the flow of its kind, wrapped in ``timeout`` (per attempt) and
``retry`` when asked: an LLM step is ``generate`` (or ``infer_json`` with an ``output`` schema), a tool step a
``ToolCall``-recording call of the registry's tool, ``parallel`` runs its children as a dataflow in one ``par``
(each starts when the siblings it ``needs`` are done), ``map`` is ``par.map(..., limit=max_concurrency)``, ``branch`` is ``branch``, ``loop`` is ``loop``.

Plans keep no state in the State layer: a compiled step is a function of the *scope* (inputs, the results
of the steps that ran before it, and the names a map or loop binds) returning a flow that yields
``(value, results)``, where ``results`` maps the ids of the steps it ran to their results. A plan therefore
runs as a sub-workflow of any flow, whatever that flow's state.
"""

from __future__ import annotations

import graphlib
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import anyio
from pydantic import JsonValue

from agentflow.dsl import (
    AgentflowError,
    Flow,
    RuntimeFailure,
    StepScope,
    branch,
    fail,
    flow,
    from_async,
    leaf,
    loop,
    named,
    par,
    pure,
    retry,
    tell,
    timeout,
)
from agentflow.errors import PlanError
from agentflow.executors import JsonSchemaValidator, Tool, charge_step, limit_steps, tool_call_event
from agentflow.runtime import RunContext, generate

from ._infer_json import infer_json
from ._loader import LoadedPlan, referenced_steps, walk_steps
from ._schema import (
    BranchStep,
    Condition,
    LLMStep,
    LoopStep,
    MapStep,
    ParallelStep,
    SequenceStep,
    Step,
    ToolStep,
)
from ._templates import parse_template, render_value, to_text

__all__ = [
    "Scope",
    "call_tool",
    "compile_plan",
    "condition_holds",
    "sibling_needs",
]

StepResult = tuple[object, dict[str, object]]
Compiled = Callable[["Scope"], Flow[StepResult]]

_FALSE_WORDS = frozenset({"", "false", "no", "0", "none", "null"})


@dataclass(frozen=True)
class Scope:
    """What templates can see at one point of a run.

    Attributes:
        inputs: The plan's bound inputs.
        steps: Results of the steps that ran before, by id.
        names: Names bound by enclosing ``map`` (``item``) and ``loop`` (``loop``) steps.
    """

    inputs: Mapping[str, object]
    steps: Mapping[str, object] = field(default_factory=dict)
    names: Mapping[str, object] = field(default_factory=dict)

    def lookup(self) -> dict[str, object]:
        """Root name -> value, as templates resolve them."""
        return {**self.names, "inputs": self.inputs, "steps": self.steps}

    def with_results(self, results: Mapping[str, object]) -> Scope:
        """This scope plus more step results."""
        return Scope(self.inputs, {**self.steps, **results}, self.names) if results else self

    def with_name(self, name: str, value: object) -> Scope:
        """This scope with ``name`` bound to ``value``."""
        return Scope(self.inputs, self.steps, {**self.names, name: value})


def condition_holds(cond: Condition, lookup: Mapping[str, object]) -> bool:
    """Evaluate a condition. Strings compare after trimming, case-insensitively; without an operator,
    ``""``, ``"false"``, ``"no"``, ``"0"``, ``"none"`` and ``"null"`` (any case) are false.

    Raises:
        PlanError: A comparison needs a number and the value is not one.
    """
    value = parse_template(cond.value).render(lookup)
    used = cond.model_fields_set
    if "equals" in used:
        return _same(value, cond.equals)
    if "not_equals" in used:
        return not _same(value, cond.not_equals)
    if "contains" in used:
        needle = cond.contains
        if isinstance(value, str):
            return _norm(to_text(needle)) in _norm(value)
        if isinstance(value, list | tuple):
            return any(_same(item, needle) for item in value)
        if isinstance(value, Mapping):
            return to_text(needle) in value
        return False
    for op in ("gt", "ge", "lt", "le"):
        if op in used:
            bound = float(getattr(cond, op))
            number = _number(value, cond)
            return {"gt": number > bound, "ge": number >= bound, "lt": number < bound, "le": number <= bound}[
                op
            ]
    if isinstance(value, str):
        return _norm(value).rstrip(".!") not in _FALSE_WORDS
    return bool(value)


def _norm(text: str) -> str:
    return text.strip().casefold()


def _same(a: object, b: object) -> bool:
    if isinstance(a, str) and isinstance(b, str):
        return _norm(a) == _norm(b)
    if isinstance(a, str) and isinstance(b, int | float) and not isinstance(b, bool):
        try:
            return float(a.strip()) == float(b)
        except ValueError:
            return False
    return a == b


def _number(value: object, cond: Condition) -> float:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                return number
    raise PlanError(
        f"condition on {cond.value!r} compares numbers, but the value is {to_text(value)[:60]!r}; "
        "make the step produce a number (e.g. a tool result or an LLM step with output type number)"
    )


def sibling_needs(step: ParallelStep) -> dict[str, frozenset[str]]:
    """For each child of a parallel block, the siblings whose results it needs (``needs:`` or a template
    reference to a step inside them), in declaration order.

    Raises:
        PlanError: The children need each other in a cycle.
    """
    owner: dict[str, str] = {}
    for child in step.parallel:
        for inner in walk_steps([child]):
            owner[inner.id] = child.id
    needs: dict[str, frozenset[str]] = {}
    for child in step.parallel:
        wanted = set(child.needs) | {owner[r] for r in referenced_steps(child) if r in owner}
        wanted.discard(child.id)
        needs[child.id] = frozenset(wanted)
    try:
        graphlib.TopologicalSorter(needs).prepare()
    except graphlib.CycleError as exc:
        raise PlanError(
            f"parallel block {step.id!r}: steps {exc.args[1]} need each other in a cycle"
        ) from None
    return needs


class _Compiler:
    def __init__(self, loaded: LoadedPlan) -> None:
        self.loaded = loaded
        self.plan = loaded.plan

    def sequence(self, steps: list[Step]) -> Compiled:
        compiled = [self.step(s) for s in steps]

        def make(scope: Scope) -> Flow[StepResult]:
            @flow
            async def body() -> StepResult:
                results: dict[str, object] = {}
                value: object = None
                current = scope
                for c in compiled:
                    value, made = await c(current)
                    results.update(made)
                    current = current.with_results(made)
                return value, results

            return body()

        return make

    def step(self, s: Step) -> Compiled:
        inner = self._kind(s)
        step_id = s.id

        def make(scope: Scope) -> Flow[StepResult]:
            # Build the step's flow when it runs, so template errors become an Err at the step's path.
            f: Flow[StepResult] = pure(None).bind(lambda _: inner(scope))
            if s.timeout is not None:
                f = timeout(f, s.timeout)
            if s.retry is not None:
                f = retry(f, attempts=s.retry.attempts, backoff=s.retry.backoff)
            own = f.map(lambda vr: (vr[0], {**vr[1], step_id: vr[0]}))
            return named(step_id, own)

        return make

    def _kind(self, s: Step) -> Compiled:
        if isinstance(s, LLMStep):
            return self._llm(s)
        if isinstance(s, ToolStep):
            return self._tool(s)
        if isinstance(s, SequenceStep):
            return self.sequence(s.steps)
        if isinstance(s, ParallelStep):
            return self._parallel(s)
        if isinstance(s, MapStep):
            return self._map(s)
        if isinstance(s, BranchStep):
            return self._branch(s)
        if isinstance(s, LoopStep):
            return self._loop(s)
        raise AssertionError(f"unknown step kind {type(s).__name__}")

    def _llm(self, s: LLMStep) -> Compiled:
        plan = self.plan
        agent = plan.agents.get(s.agent) if s.agent is not None else None
        prompt_t = parse_template(s.prompt)
        system_text = s.system if s.system is not None else (agent.system if agent is not None else None)
        system_t = parse_template(system_text) if system_text is not None else None
        max_tokens = (
            s.max_tokens or (agent.max_tokens if agent is not None else None) or plan.engine.max_tokens
        )
        temperature = s.temperature
        if temperature is None and agent is not None:
            temperature = agent.temperature
        if temperature is None:
            temperature = plan.engine.temperature
        seed = plan.engine.seed
        schema = s.output.to_json_schema() if s.output is not None else None

        def make(scope: Scope) -> Flow[StepResult]:
            lookup = scope.lookup()
            prompt = to_text(prompt_t.render(lookup))
            system = to_text(system_t.render(lookup)) if system_t is not None else None
            if schema is None:
                return generate(
                    prompt, system=system, max_tokens=max_tokens, temperature=temperature, seed=seed
                ).map(lambda c: (c.text.strip(), {}))
            return infer_json(
                schema,
                prompt,
                system=system,
                max_tokens=max_tokens,
                temperature=temperature,
                seed=seed,
                label=f"{s.id}.output",
            ).map(lambda v: (v, {}))

        return make

    def _tool(self, s: ToolStep) -> Compiled:
        tool = self.loaded.tools.get(s.tool)

        def make(scope: Scope) -> Flow[StepResult]:
            arguments = render_value(s.args, scope.lookup())
            assert isinstance(arguments, dict)
            return call_tool(tool, arguments).map(lambda v: (v, {}))

        return make

    def _parallel(self, s: ParallelStep) -> Compiled:
        """Every child starts the moment the siblings it needs have finished (a dataflow, like the tool-call
        executor), not level by level: one slow chain holds up only what depends on it. The children run
        as one ``par`` (branch ``[i]`` is the i-th child as declared), so the first failure cancels the rest."""
        needs = sibling_needs(s)
        children = [(child.id, self.step(child)) for child in s.parallel]
        ids = [child.id for child in s.parallel]

        def make(scope: Scope) -> Flow[StepResult]:
            @flow
            async def body() -> StepResult:
                results: dict[str, object] = {}  # every finished child's results, as they finish
                done = {cid: anyio.Event() for cid in ids}

                def branch(cid: str, compiled: Compiled) -> Flow[StepResult]:
                    @flow
                    async def child() -> StepResult:
                        for need in sorted(needs[cid]):
                            await from_async(done[need].wait)
                        value, made = await compiled(scope.with_results(dict(results)))
                        results.update(made)
                        done[cid].set()
                        return value, made

                    return child()

                await par(*[branch(cid, compiled) for cid, compiled in children])
                return {i: results[i] for i in ids}, results

            return body()

        return make

    def _map(self, s: MapStep) -> Compiled:
        over = parse_template(s.map)
        body = self.sequence(s.do)
        name = s.as_

        def make(scope: Scope) -> Flow[StepResult]:
            items = over.render(scope.lookup())
            if not isinstance(items, list | tuple):
                raise PlanError(
                    f"map over {s.map!r} needs a list, but it is a {type(items).__name__} "
                    f"({to_text(items)[:60]!r}); make that step return a list (e.g. the split tool)"
                )

            def one(item: object) -> Flow[object]:
                # Each item is a step of the run's budget, charged before it starts: nested maps stop
                # spawning branches once the budget is gone.
                return (
                    charge_step("a map item")
                    .bind(lambda _: body(scope.with_name(name, item)))
                    .map(lambda vr: vr[0])
                )

            return par.map(one, list(items), limit=s.max_concurrency).map(lambda values: (values, {}))

        return make

    def _branch(self, s: BranchStep) -> Compiled:
        then_c = self.sequence(s.then)
        else_c = self.sequence(s.else_) if s.else_ else None

        def make(scope: Scope) -> Flow[StepResult]:
            holds = condition_holds(s.branch, scope.lookup())
            otherwise: Flow[StepResult] = else_c(scope) if else_c is not None else pure((None, {}))
            return branch(holds, then_c(scope), otherwise).map(lambda vr: (vr[0], {}))

        return make

    def _loop(self, s: LoopStep) -> Compiled:
        body = self.sequence(s.do)
        until_cond = s.loop.until

        def make(scope: Scope) -> Flow[StepResult]:
            LoopState = tuple[int, object, dict[str, object]]

            def iterate(state: LoopState | None) -> Flow[LoopState | None]:
                index = 0 if state is None else state[0] + 1
                before: dict[str, object] = {} if state is None else state[2]
                current = scope.with_results(before).with_name("loop", {"index": index})
                return body(current).map(lambda vr: (index, vr[0], {**before, **vr[1]}))

            def done(state: LoopState | None) -> bool:
                if state is None:
                    return False
                current = scope.with_results(state[2]).with_name("loop", {"index": state[0]})
                return condition_holds(until_cond, current.lookup())

            def finish(state: LoopState | None) -> StepResult:
                assert state is not None
                return state[1], state[2]

            return loop(iterate, None, until=done, max_iter=s.loop.max_iter).map(finish)

        return make


def call_tool(tool: Tool, arguments: dict[str, object]) -> Flow[object]:
    """Call ``tool`` and record a ``ToolCall`` event (status, start, duration, error; arguments and result
    when the run captures content)."""

    async def body(scope: StepScope) -> object:
        ctx = scope.ctx
        capture = ctx.capture_content if isinstance(ctx, RunContext) else True
        started = time.time()
        clock = time.perf_counter()
        value: object = None
        error: AgentflowError | None = None
        try:
            value = await tool.invoke(arguments)
        except AgentflowError as exc:
            error = exc
        scope.emit(
            tool_call_event(
                scope.path,
                tool.name,
                status="error" if error is not None else "ok",
                started=started,
                seconds=time.perf_counter() - clock,
                error=None if error is None else str(error),
                args=_json_args(arguments),
                result=None if error is not None else to_text(value),
                capture=capture,
            )
        )
        if error is not None:
            raise error
        return value

    return leaf(body)


def _json_args(arguments: Mapping[str, object]) -> JsonValue:
    return {
        k: v if isinstance(v, str | int | float | bool | None) else to_text(v) for k, v in arguments.items()
    }


def compile_plan(loaded: LoadedPlan, inputs: Mapping[str, object]) -> Flow[dict[str, object]]:
    """The plan as one flow (``named(plan.name, ...)``) yielding its outputs by name.

    Without declared outputs the result is ``{"result": <the last step's result>}``. A plan that takes tools
    from MCP servers connects to them when the flow starts (recording an ``mcp.connect`` event: source,
    transport, tools) and closes them when it ends, however it ends.
    """
    if loaded.mcp_sources:
        return _with_mcp(loaded, inputs)
    return _compile_checked(loaded, inputs)


def _with_mcp(loaded: LoadedPlan, inputs: Mapping[str, object]) -> Flow[dict[str, object]]:
    @flow
    async def body() -> dict[str, object]:
        from agentflow.mcp import mcp_tools

        async with mcp_tools(*loaded.mcp_sources, base=loaded.tools) as registry:
            for source in loaded.mcp_sources:
                prefix = source.name + "."
                await tell(
                    "mcp.connect",
                    source=source.name,
                    transport=source.transport,
                    tools=[n for n in registry.names() if n.startswith(prefix)],
                )
            connected = loaded.with_tools(registry)
            return await _compile_checked(connected, inputs)

    return body()


def _compile_checked(loaded: LoadedPlan, inputs: Mapping[str, object]) -> Flow[dict[str, object]]:
    plan = loaded.plan
    body = _Compiler(loaded).sequence(plan.steps)
    validators = {
        name: JsonSchemaValidator(out.to_json_schema(), where=f"outputs.{name}")
        for name, out in plan.outputs.items()
    }
    scope = Scope(dict(inputs))

    def outputs(vr: StepResult) -> Flow[dict[str, object]]:
        value, results = vr
        if not plan.outputs:
            return pure({"result": value})
        lookup = scope.with_results(results).lookup()
        out: dict[str, object] = {}
        for name, spec in plan.outputs.items():
            rendered = parse_template(spec.value).render(lookup)
            problems = validators[name].errors(rendered)
            if problems:
                return fail(
                    RuntimeFailure(
                        f"output {name!r} = {to_text(rendered)[:80]!r} does not match its schema: "
                        f"{'; '.join(problems)}; fix the step that produces it or loosen the schema",
                        where=plan.name,
                    )
                )
            out[name] = rendered
        return pure(out)

    whole = named(plan.name, body(scope))
    if plan.max_steps is not None:
        whole = limit_steps(whole, plan.max_steps)
    return whole.bind(outputs)
