"""Behaviour of the DSL combinators: par cancellation, settle, race, retry, timeout, recover, loop..."""

from __future__ import annotations

import time
from typing import Annotated

import anyio
import pytest
from pydantic import BaseModel

from agentflow.dsl import (
    Append,
    Backoff,
    ConfigError,
    Context,
    Err,
    Log,
    LoopLimitError,
    Max,
    MergeConflict,
    Ok,
    RaceLostError,
    RateLimiter,
    Reducer,
    Replace,
    RetryScheduled,
    StepEnded,
    StepError,
    StepTimeout,
    ask,
    branch,
    current_path,
    deps,
    fail,
    flow,
    from_async,
    gather,
    get_state,
    loop,
    named,
    par,
    pure,
    race,
    rate_limit,
    recover,
    retry,
    step,
    tell,
    timeout,
    update,
    when,
)
from agentflow.dsl._errors import AgentflowError, StateTypeError

pytestmark = pytest.mark.anyio


async def test_failing_branch_cancels_sleeping_sibling_before_it_completes() -> None:
    completed: list[str] = []
    cancelled: list[str] = []

    @step
    async def sleeper() -> str:
        try:
            await anyio.sleep(30)
        except anyio.get_cancelled_exc_class():
            cancelled.append("sleeper")
            raise
        completed.append("sleeper")
        return "done"

    @step
    async def boom() -> str:
        await anyio.sleep(0.01)
        raise ValueError("broken tool")

    started = time.monotonic()
    out = await par(sleeper(), boom()).run()
    assert isinstance(out, Err)
    assert isinstance(out.error, StepError)
    assert isinstance(out.error.cause, ValueError)
    assert out.error.where == "[1]/boom"
    assert completed == []
    assert cancelled == ["sleeper"]
    assert time.monotonic() - started < 30  # it did not wait for the sibling


async def test_par_settle_returns_every_outcome_without_cancelling() -> None:
    out = await par(pure(1), fail(AgentflowError("x")), pure(3), settle=True).run()
    assert isinstance(out, Ok)
    kinds = [type(o).__name__ for o in out.value]
    assert kinds == ["Ok", "Err", "Ok"]


async def test_gather_is_par() -> None:
    assert gather is par
    out = await gather(pure(1), pure(2)).run()
    assert out.unwrap() == (1, 2)


async def test_par_map_limit_caps_concurrency_and_keeps_order() -> None:
    running = 0
    peak = 0

    @step
    async def work(x: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.005)
        running -= 1
        return x * 10

    out = await par.map(work, list(range(12)), limit=3).run()
    assert out.unwrap() == [x * 10 for x in range(12)]
    assert peak == 3
    paths = {e.path for e in out.trace if e.kind == "step.start"}
    assert paths == {f"[{i}]/work" for i in range(12)}


async def test_par_map_rejects_bad_limit() -> None:
    with pytest.raises(ConfigError):
        par.map(pure, [1], limit=0)


class Notes(BaseModel):
    seen: Annotated[list[str], Append] = []
    best: Annotated[int, Max] = 0
    last: Annotated[str, Replace] = ""
    total: Annotated[int, Reducer(lambda base, vs: base + sum(v - base for v in vs))] = 0  # type: ignore[operator]
    owner: str = ""


def writer(name: str, score: int) -> object:
    @flow
    async def body() -> None:
        s = await get_state(Notes)
        await update(seen=[*s.seen, name], best=max(s.best, score), last=name, total=s.total + score)

    return body()


async def test_merge_rules_join_parallel_state() -> None:
    out = await par(writer("a", 3), writer("b", 7), writer("c", 5)).run(state=Notes(total=1))  # type: ignore[arg-type]
    assert isinstance(out, Ok)
    assert out.state == Notes(seen=["a", "b", "c"], best=7, last="c", total=16)


async def test_unruled_field_written_by_two_branches_is_merge_conflict() -> None:
    out = await par(update(owner="alice"), update(owner="bob")).run(state=Notes())
    assert isinstance(out, Err)
    assert isinstance(out.error, MergeConflict)
    assert out.error.field == "owner"
    assert out.error.branches == (0, 1)
    assert "owner" in str(out.error)
    assert out.state == Notes()


async def test_unruled_field_written_by_one_branch_merges() -> None:
    out = await par(update(owner="alice"), pure(1)).run(state=Notes())
    assert out.state == Notes(owner="alice")


async def test_in_place_mutation_in_a_branch_does_not_leak_into_siblings() -> None:
    @flow
    async def mutate() -> list[str]:
        s = await get_state(Notes)
        s.seen.append("m")
        return list(s.seen)

    @flow
    async def read() -> list[str]:
        await anyio.sleep(0.01)
        s = await get_state(Notes)
        return list(s.seen)

    out = await par(mutate(), read()).run(state=Notes())
    assert out.unwrap() == (["m"], [])
    assert out.state == Notes(seen=["m"])


async def test_race_first_ok_wins_and_cancels_rest() -> None:
    finished: list[int] = []

    @step
    async def slow() -> int:
        await anyio.sleep(30)
        finished.append(1)
        return 1

    out = await race(slow(), pure(2)).run()
    assert out.unwrap() == 2
    assert finished == []


async def test_race_all_failing_lists_each_error() -> None:
    out = await race(fail(AgentflowError("a")), fail(AgentflowError("b"))).run()
    assert isinstance(out, Err)
    assert isinstance(out.error, RaceLostError)
    assert [e.message for e in out.error.errors] == ["a", "b"]


async def test_retry_reruns_until_success_from_the_input_state() -> None:
    calls = 0

    @flow
    async def flaky() -> int:
        nonlocal calls
        calls += 1
        s = await get_state(Notes)
        await update(seen=[*s.seen, f"try{calls}"])
        if calls < 3:
            raise RuntimeError("transient")
        return calls

    out = await retry(flaky(), attempts=5, backoff=Backoff(initial=0.001, jitter=0.0)).run(state=Notes())
    assert out.unwrap() == 3
    assert out.state == Notes(seen=["try3"])
    assert [e.attempt for e in out.trace if isinstance(e, RetryScheduled)] == [1, 2]


async def test_retry_gives_up_after_attempts_and_returns_last_error() -> None:
    calls = 0

    @step(retry=3)
    async def always() -> int:
        nonlocal calls
        calls += 1
        raise RuntimeError(f"attempt {calls}")

    out = await always().run()
    assert isinstance(out, Err)
    assert calls == 3
    assert "attempt 3" in str(out.error)


async def test_retry_does_not_retry_user_errors_by_default() -> None:
    calls = 0

    @step(retry=3)
    async def wrong() -> int:
        nonlocal calls
        calls += 1
        raise ConfigError("bad option")

    out = await wrong().run()
    assert isinstance(out.error if isinstance(out, Err) else None, ConfigError)
    assert calls == 1


async def test_retry_on_predicate_selects_errors() -> None:
    calls = 0

    @flow
    async def f() -> int:
        nonlocal calls
        calls += 1
        raise RuntimeError("x")

    out = await retry(f(), attempts=4, on=lambda e: False).run()
    assert isinstance(out, Err)
    assert calls == 1


async def test_timeout_becomes_err_not_exception() -> None:
    @step(timeout=0.02)
    async def slow() -> int:
        await anyio.sleep(30)
        return 1

    out = await slow().run()
    assert isinstance(out, Err)
    assert isinstance(out.error, StepTimeout)
    assert out.error.seconds == 0.02
    assert out.error.where == "slow"


async def test_timeout_rejects_nonpositive_seconds() -> None:
    with pytest.raises(ConfigError):
        timeout(pure(1), 0)


async def test_recover_runs_handler_with_the_error() -> None:
    out = await recover(fail(AgentflowError("lost")), lambda e: pure(f"recovered {e.message}")).run()
    assert out.unwrap() == "recovered lost"


async def test_recover_with_on_filter_keeps_other_errors() -> None:
    out = await recover(fail(AgentflowError("x")), lambda e: pure(1), on=StepTimeout).run()
    assert isinstance(out, Err)


async def test_when_and_branch_choose() -> None:
    assert (await when(True, pure(1)).run()).unwrap() == 1
    assert (await when(pure(False), pure(1)).run()).unwrap() is None
    assert (await branch(True, pure("a"), pure("b")).run()).unwrap() == "a"


async def test_loop_iterates_until_and_limits() -> None:
    out = await loop(lambda x: pure(x + 1), 0, until=lambda x: x >= 5, max_iter=10).run()
    assert out.unwrap() == 5
    out2 = await loop(lambda x: pure(x + 1), 0, until=lambda x: x >= 50, max_iter=10).run()
    assert isinstance(out2, Err)
    assert isinstance(out2.error, LoopLimitError)
    assert out2.error.limit == 10


async def test_named_records_span_events_and_paths() -> None:
    out = await named("outer", named("inner", current_path())).run()
    assert out.unwrap() == "outer/inner"
    assert [(e.kind, e.path) for e in out.trace] == [
        ("step.start", "outer"),
        ("step.start", "outer/inner"),
        ("step.end", "outer/inner"),
        ("step.end", "outer"),
    ]
    assert all(e.ok for e in out.trace if isinstance(e, StepEnded))


async def test_named_rejects_slash() -> None:
    with pytest.raises(ConfigError):
        named("a/b", pure(1))


async def test_reader_ask_and_deps() -> None:
    ctx = Context(deps={"k": 1}, run_id="r1")
    out = await ask().map(lambda c: c.run_id).run(ctx)
    assert out.unwrap() == "r1"
    assert (await deps(dict).run(ctx)).unwrap() == {"k": 1}
    bad = await deps(list).run(ctx)
    assert isinstance(bad, Err)
    assert isinstance(bad.error, StateTypeError)


async def test_get_state_of_wrong_type_is_a_clear_error() -> None:
    out = await get_state(Notes).run()
    assert isinstance(out, Err)
    assert "Notes" in str(out.error)


async def test_update_unknown_field_is_a_clear_error() -> None:
    out = await update(nope=1).run(state=Notes())
    assert isinstance(out, Err)
    assert "nope" in str(out.error)


async def test_flow_values_are_rerunnable() -> None:
    calls = 0

    @step
    async def count() -> int:
        nonlocal calls
        calls += 1
        return calls

    f = count().map(lambda x: x * 10)
    assert (await f.run()).unwrap() == 10
    assert (await f.run()).unwrap() == 20


async def test_awaiting_a_flow_outside_a_flow_body_is_a_clear_error() -> None:
    with pytest.raises(AgentflowError, match="outside a @flow"):
        await pure(1)


async def test_do_notation_short_circuits_on_first_err() -> None:
    reached: list[str] = []

    @flow
    async def body() -> int:
        a = await pure(1)
        try:
            await fail(AgentflowError("stop"))
        except Exception:  # a user's broad except must not swallow the short-circuit
            reached.append("swallowed")
        reached.append("after")
        return a

    out = await body().run()
    assert isinstance(out, Err)
    assert out.error.message == "stop"
    assert reached == []


async def test_exceptions_in_continuations_become_step_errors() -> None:
    out = await pure(1).map(lambda x: x / 0).run()
    assert isinstance(out, Err)
    assert isinstance(out.error, StepError)
    assert isinstance(out.error.__cause__, ZeroDivisionError)


async def test_bind_continuation_returning_non_flow_is_an_error() -> None:
    out = await (pure(1) >> (lambda x: x)).run()  # type: ignore[arg-type,return-value]
    assert isinstance(out, Err)
    assert "must return a Flow" in str(out.error)


async def test_long_bind_chains_and_deep_recursion_do_not_overflow() -> None:
    f = pure(0)
    for _ in range(20_000):
        f = f >> (lambda x: pure(x + 1))
    assert (await f.run()).unwrap() == 20_000

    def countdown(n: int) -> object:
        return pure(n) if n == 0 else pure(n - 1) >> countdown  # type: ignore[operator]

    assert (await countdown(20_000).run()).unwrap() == 0  # type: ignore[attr-defined]


async def test_rate_limit_spaces_starts() -> None:
    limiter = RateLimiter(rate=1000, per=1.0, burst=2)
    stamps: list[float] = []

    @step
    async def stamp() -> None:
        stamps.append(time.monotonic())

    out = await par.map(lambda _: rate_limit(limiter, stamp()), range(5)).run()
    assert isinstance(out, Ok)
    assert len(stamps) == 5


async def test_tell_and_from_async_work() -> None:
    async def get() -> int:
        return 7

    out = await tell("note", a=1).then(from_async(get)).run()
    assert out.unwrap() == 7
    assert out.trace[0] == Log(path="", time=out.trace[0].time, name="note", data={"a": 1})


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_par_cancellation_works_on_trio_too(anyio_backend: str) -> None:
    completed: list[int] = []

    @step
    async def sleeper() -> int:
        await anyio.sleep(30)
        completed.append(1)
        return 1

    out = await par(sleeper(), fail(AgentflowError("x"))).run()
    assert isinstance(out, Err)
    assert completed == []


async def test_short_circuit_inside_a_task_group_in_a_flow_body_is_an_err() -> None:
    @flow
    async def body() -> int:
        async with anyio.create_task_group():
            await fail(AgentflowError("inner failure"))
        return 1

    out = await body().run()
    assert isinstance(out, Err)
    assert out.error.message == "inner failure"


async def test_exception_group_from_a_flow_body_becomes_step_error() -> None:
    async def boom() -> None:
        raise ValueError("child")

    @flow
    async def body() -> int:
        async with anyio.create_task_group() as tg:
            tg.start_soon(boom)
        return 1

    out = await body().run()
    assert isinstance(out, Err)
    assert isinstance(out.error, StepError)
