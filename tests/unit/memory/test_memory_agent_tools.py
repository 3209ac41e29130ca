"""Memory as a Flow capability and as agents' remember/recall tools (real SQLite files)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentflow import Ok, flow, run
from agentflow.agents import EngineSummarizer, llm_compiler, memory_tools
from agentflow.dsl import ask
from agentflow.engines import FunctionEngine, GenerationRequest
from agentflow.executors import ToolRegistry
from agentflow.memory import MemoryStore
from agentflow.runtime import RunContext

pytestmark = pytest.mark.anyio


async def test_remember_then_recall_through_tools(tmp_path: Path) -> None:
    async with MemoryStore(tmp_path / "m.db") as store:
        tree = store.temporal("agent-notes")
        remember, recall = memory_tools(tree)
        assert (await remember.invoke({"text": "The deploy key rotates every Friday."})).startswith(
            "remembered"
        )
        assert (await remember.invoke({"text": "The deploy key rotates every Friday."})).startswith("already")
        await remember.invoke({"text": "Lunch is at noon."})
        hits = await recall.invoke({"query": "when does the deploy key rotate", "k": 1})
        assert isinstance(hits, list) and "Friday" in hits[0]


async def test_memory_is_a_run_capability(tmp_path: Path) -> None:
    @flow
    async def count_leaves() -> int:
        ctx = await ask(RunContext)
        assert ctx.memory is not None
        tree = ctx.memory.temporal("t")
        await tree.insert("a fact", session="s")
        return len(await tree.search("fact", 5))

    async with MemoryStore(tmp_path / "m.db") as store:
        out = await run(count_leaves(), memory=store)
    assert out.unwrap() == 1


async def test_compiler_agent_can_recall_from_memory(tmp_path: Path) -> None:
    async with MemoryStore(tmp_path / "m.db") as store:
        tree = store.temporal("kb")
        await tree.insert("Project Falcon launches on 12 March.", session="notes")
        tools = ToolRegistry(memory_tools(tree))

        def answer(req: GenerationRequest) -> str:
            if req.json_schema is not None and req.json_schema.get("type") == "array":
                return json.dumps([{"tool": "recall", "args": {"query": "Falcon launch", "k": 1}}])
            assert "12 March" in (req.messages or ())[-1].content
            return json.dumps({"action": "finish", "answer": "12 March"})

        out = await run(llm_compiler("When does Falcon launch?", tools), engine=FunctionEngine(answer))
    assert isinstance(out, Ok), out
    assert out.value.answer == "12 March"


async def test_engine_summarizer_feeds_tree_summaries(tmp_path: Path) -> None:
    seen: list[str] = []

    def answer(req: GenerationRequest) -> str:
        seen.append((req.messages or ())[-1].content)
        return "Summary: notes about tea."

    async with MemoryStore(tmp_path / "m.db") as store:
        tree = store.temporal("t", summarizer=EngineSummarizer(FunctionEngine(answer)))
        await tree.insert("Green tea is steeped at 80 C.", session="s1")
        await tree.refresh()
        hits = await tree.search("tea", 1)
    assert any("Green tea" in s for s in seen)
    assert any(node.summary == "Summary: notes about tea." for node in hits[0].path)


async def test_compiler_fills_the_task_memory_tree_as_it_runs(tmp_path: Path) -> None:
    registry = ToolRegistry()

    def double(x: int) -> int:
        """Double a number.

        Args:
            x: The number.
        """
        return 2 * x

    registry.register(double)

    def answer(req: GenerationRequest) -> str:
        if req.json_schema is not None and req.json_schema.get("type") == "array":
            return json.dumps([{"tool": "double", "args": {"x": 2}}, {"tool": "double", "args": {"x": "$1"}}])
        return json.dumps({"action": "finish", "answer": "8"})

    async with MemoryStore(tmp_path / "m.db") as store:
        tree = store.task_tree("tasks")
        out = await run(
            llm_compiler("Double 2 twice", registry, task_memory=tree),
            engine=FunctionEngine(answer),
            run_id="r7",
        )
        assert isinstance(out, Ok), out
        nodes = {n.id: n for n in await tree.nodes()}
        assert nodes["compiler:r7"].output == "8"
        assert nodes["compiler:r7/2"].output == "8" and nodes["compiler:r7/2"].deps == ("compiler:r7/1",)
        prompt = await tree.prompt_for("compiler:r7/2", 200)
        assert "Double 2 twice" in prompt
