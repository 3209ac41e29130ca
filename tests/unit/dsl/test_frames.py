"""Concurrency inside ``@flow`` bodies: a body's frame belongs to its own task.

Two child tasks of a user task group threading one frame used to lose a state update (last writer wins)
and number their steps in scheduling order. Awaiting a flow from another task is now a ``ConfigError``
that says to use ``par``; ``par`` gives each branch a snapshot and merges by the declared rules.
"""

from __future__ import annotations

from typing import Annotated

import anyio
import pytest
from pydantic import BaseModel

from agentflow.dsl import ConfigError, Err, Max, Ok, StepStarted, flow, par, step, update


class Counters(BaseModel):
    a: Annotated[int, Max] = 0
    b: Annotated[int, Max] = 0


@step
async def set_a() -> None:
    await update(a=1)


@step
async def set_b() -> None:
    await update(b=1)


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_awaiting_a_flow_from_a_task_group_child_is_a_config_error_naming_par(
    anyio_backend: str,
) -> None:
    @flow
    async def body() -> None:
        async def child(f: object) -> None:
            await f  # type: ignore[misc]

        async with anyio.create_task_group() as tg:
            tg.start_soon(child, set_a())
            tg.start_soon(child, set_b())

    out = await body().run(state=Counters())
    assert isinstance(out, Err)
    assert isinstance(out.error, ConfigError)
    assert "par(" in out.error.message and "task group" in out.error.message


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_par_keeps_both_state_updates_and_deterministic_step_paths(anyio_backend: str) -> None:
    @flow
    async def body() -> None:
        await par(set_a(), set_b())

    for _ in range(5):
        out = await body().run(state=Counters())
        assert isinstance(out, Ok)
        assert out.state == Counters(a=1, b=1)
        assert [e.path for e in out.trace if isinstance(e, StepStarted)] == ["[0]/set_a", "[1]/set_b"]


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_a_task_group_in_a_body_may_still_run_plain_coroutines(anyio_backend: str) -> None:
    seen: list[int] = []

    @flow
    async def body() -> int:
        async def plain(n: int) -> None:
            await anyio.sleep(0)
            seen.append(n)

        async with anyio.create_task_group() as tg:
            tg.start_soon(plain, 1)
            tg.start_soon(plain, 2)
        await set_a()  # the body's own task binds flows as usual
        return len(seen)

    out = await body().run(state=Counters())
    assert isinstance(out, Ok) and out.value == 2 and out.state == Counters(a=1)
