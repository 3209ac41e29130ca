"""Named steps: deterministic paths and the journal protocol (record, replay, refuse)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from agentflow.dsl import AgentflowError, Context, Err, Ok, State, StepJournal, par, pure, step
from agentflow.dsl._flow import named

pytestmark = pytest.mark.anyio


class MemoryJournal:
    """A dict-backed implementation of the StepJournal protocol (values kept as Python objects)."""

    def __init__(self) -> None:
        self.committed: dict[str, tuple[str, object, State]] = {}
        self.begun: list[str] = []
        self.refuse: set[str] = set()

    async def replay(self, path: str, identity: str, result_type: object, state: State) -> Ok[Any] | None:
        hit = self.committed.get(path)
        if hit is None:
            return None
        if hit[0] != identity:
            raise AgentflowError(f"journal has step {hit[0]!r} at {path}, code ran {identity!r}")
        return Ok(hit[1], hit[2])

    async def begin(self, path: str, identity: str, idempotent: bool) -> AgentflowError | None:
        self.begun.append(path)
        if path in self.refuse:
            return AgentflowError("refused")
        return None

    async def commit(
        self, path: str, identity: str, value: object, state: State, result_type: object
    ) -> None:
        self.committed[path] = (identity, value, state)


def test_memory_journal_satisfies_the_protocol() -> None:
    assert isinstance(MemoryJournal(), StepJournal)


async def test_repeated_step_names_get_numbered_paths() -> None:
    @step
    async def search(q: str) -> str:
        return q

    @step
    async def research() -> list[str]:
        a = await search("a")
        b = await search("b")
        c = await par(search("c"), search("d"))
        return [a, b, *c]

    out = await research().run()
    starts = [e.path for e in out.trace if e.kind == "step.start"]
    assert len(set(starts)) == len(starts)
    assert starts == [
        "research",
        "research/search",
        "research/search[1]",
        "research/[0]/search",
        "research/[1]/search",
    ]


async def test_journal_records_results_and_replays_them_without_rerunning() -> None:
    calls: list[int] = []

    @step
    async def side_effect(x: int) -> int:
        calls.append(x)
        return x * 2

    @step
    async def wf() -> int:
        a = await side_effect(1)
        b = await side_effect(2)
        return a + b

    journal = MemoryJournal()
    first = await wf().run(Context(journal=journal))
    assert first.unwrap() == 6
    assert calls == [1, 2]
    assert set(journal.committed) == {"wf", "wf/side_effect", "wf/side_effect[1]"}
    assert journal.committed["wf/side_effect"][1] == 2

    del journal.committed["wf"]  # as if the run crashed after the children committed
    second = await wf().run(Context(journal=journal))
    assert second.unwrap() == 6
    assert calls == [1, 2]  # replayed, not re-run
    assert [e.path for e in second.trace if e.kind == "step.replayed"] == [
        "wf/side_effect",
        "wf/side_effect[1]",
    ]


async def test_journal_replays_state_too() -> None:
    class S(BaseModel):
        n: int = 0

    journal = MemoryJournal()
    journal.committed["bump"] = ("bump", "done", S(n=5))
    out = await named("bump", pure("fresh")).run(Context(journal=journal), S())
    assert out.unwrap() == "done"
    assert out.state == S(n=5)


async def test_journal_refusal_becomes_err_naming_the_step() -> None:
    journal = MemoryJournal()
    journal.refuse.add("pay")
    out = await named("pay", pure(1), idempotent=False).run(Context(journal=journal))
    assert isinstance(out, Err)
    assert out.error.where == "pay"


async def test_retry_attempts_reuse_the_same_child_paths() -> None:
    tries = 0

    @step
    async def inner() -> int:
        return 1

    @step(retry=3)
    async def flaky() -> int:
        nonlocal tries
        await inner()
        tries += 1
        if tries < 2:
            raise RuntimeError("again")
        return tries

    out = await flaky().run()
    assert out.unwrap() == 2
    assert [e.path for e in out.trace if e.kind == "step.start"] == ["flaky", "flaky/inner", "flaky/inner"]


async def test_branch_paths_never_collide_with_repeated_step_paths() -> None:
    @step
    async def search(q: str) -> str:
        return q

    @step
    async def research(qs: tuple[str, ...]) -> list[str]:
        return list(await par(*[search(q) for q in qs]))

    @step
    async def wf() -> list[str]:
        a = await research(("a", "b"))
        b = await research(("c",))
        return [*a, *b]

    out = await wf().run(Context(journal=MemoryJournal()))
    assert out.unwrap() == ["a", "b", "c"]
    starts = [e.path for e in out.trace if e.kind == "step.start"]
    assert len(set(starts)) == len(starts), starts
