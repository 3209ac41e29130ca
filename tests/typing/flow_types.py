"""Static type checks for the DSL (run by mypy --strict; see tests/unit/test_typing.py).

Nothing here runs: every line is an ``assert_type`` that mypy verifies.
"""

from __future__ import annotations

from typing import assert_type

from pydantic import BaseModel

from agentflow.dsl import Err, Flow, Ok, flow, get_state, par, pure, race, retry, step, timeout


class Profile(BaseModel):
    name: str = ""


@step
async def fetch(url: str) -> bytes:
    return url.encode()


@flow
async def pipeline(url: str) -> int:
    data = await fetch(url)
    assert_type(data, bytes)
    n = await pure(3)
    assert_type(n, int)
    pair = await par(pure("a"), fetch(url))
    assert_type(pair, tuple[str, bytes])
    many = await par.map(fetch, ["x", "y"])
    assert_type(many, list[bytes])
    profile = await get_state(Profile)
    assert_type(profile, Profile)
    first = await race(pure(1), pure(2))
    assert_type(first, int)
    return len(data) + n


assert_type(fetch("u"), Flow[bytes])
assert_type(pipeline("u"), Flow[int])
assert_type(pure(1).map(str), Flow[str])
assert_type(pure(1) >> (lambda x: pure(x * 2.0)), Flow[float])
assert_type(retry(fetch("u"), attempts=2), Flow[bytes])
assert_type(timeout(fetch("u"), 1.0), Flow[bytes])
assert_type(par(pure(1), pure("s"), pure(b"b")), Flow[tuple[int, str, bytes]])
assert_type(par(pure(1), pure(2), settle=True), Flow[tuple[Ok[int] | Err, ...]])


async def outcome_types() -> None:
    out = await pipeline("u").run()
    if isinstance(out, Ok):
        assert_type(out.value, int)
    else:
        assert_type(out, Err)
