"""Agents killed in real processes: an LLMCompiler and a ReAct run are SIGKILLed at chosen points and resumed
by a fresh process from their SQLite journal.

The child kills itself (deterministic, however fast the machine is) either inside the model, when it is
asked its n-th request of the attempt, or inside a tool, before the tool does anything. Every finished
tool call writes a line to ``effects.log`` and every LLM request the engine finished a line to
``answered.log`` (both ``O_APPEND``, surviving the kill): over both attempts each line must appear exactly
once, the same lines an uninterrupted run writes, and the resumed run must give the uninterrupted run's
answer and results.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

CHILD = textwrap.dedent(
    '''
    """One attempt of an agent run: run or resume run RUN_ID of JOURNAL; KILL_AT says where to die."""
    import hashlib, json, os, re, signal, sqlite3, sys
    from pathlib import Path

    import anyio
    from pydantic import BaseModel

    from agentflow import Ok, run
    from agentflow.agents import llm_compiler, react
    from agentflow.engines import FunctionEngine, GenerationRequest, closing_stream, render_messages
    from agentflow.executors import ToolRegistry

    EFFECTS = Path(os.environ["EFFECTS"])
    JOURNAL = sys.argv[2]
    KILL_AT = os.environ.get("KILL_AT", "")
    KILL_AFTER = os.environ.get("KILL_AFTER", "")  # a step that must be journaled before the kill
    POPULATION = {"paris": 2_100_000, "rome": 2_800_000, "oslo": 700_000}


    def log(name: str, line: str) -> None:
        fd = os.open(EFFECTS / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + "\\n").encode())
        finally:
            os.close(fd)


    def die_at(point: str) -> None:
        if point == KILL_AT:
            os.kill(os.getpid(), signal.SIGKILL)


    def journaled(path: str) -> bool:
        with sqlite3.connect(JOURNAL) as conn:
            row = conn.execute("SELECT status FROM steps WHERE path = ?", (path,)).fetchone()
        return row is not None and row[0] == "committed"


    async def die_in_tool(point: str) -> None:
        """Die at ``point``, once KILL_AFTER is journaled (the planner's answer commits while its first
        tasks run: waiting makes the point the same in every run)."""
        if point == KILL_AT:
            while KILL_AFTER and not journaled(KILL_AFTER):
                await anyio.sleep(0.005)
            die_at(point)


    class Population(BaseModel):
        city: str
        people: int


    async def population(city: str) -> Population:
        """Population of a city.

        Args:
            city: The city name.
        """
        await die_in_tool(f"tool:population({city})")
        log("effects.log", f"population({city})")
        return Population(city=city, people=POPULATION[city])


    async def add(a: int, b: int) -> int:
        """Add two integers.

        Args:
            a: First.
            b: Second.
        """
        await die_in_tool(f"tool:add({a},{b})")
        log("effects.log", f"add({a},{b})")
        return a + b


    def compiler_model(request: GenerationRequest) -> str:
        user = request.messages[1].content
        if request.json_schema is not None and request.json_schema.get("type") == "array":
            if "Previous plan" not in user:
                return json.dumps([
                    {"tool": "population", "args": {"city": "paris"}},
                    {"tool": "population", "args": {"city": "rome"}},
                    {"tool": "add", "args": {"a": "$1.people", "b": "$2.people"}},
                ])
            return json.dumps([
                {"tool": "population", "args": {"city": "oslo"}},
                {"tool": "add", "args": {"a": "$3", "b": "$4.people"}},
            ])
        results = request.messages[-1].content
        if '<result id="5"' not in results:
            return json.dumps({"action": "replan", "feedback": "add Oslo"})
        total = re.search(r'<result id="5"[^>]*>\\n(\\d+)', results).group(1)
        return json.dumps({"action": "finish", "answer": f"{total} people"})


    def react_model(request: GenerationRequest) -> str:
        seen = "\\n".join(m.content for m in request.messages if m.role == "user")
        turn = sum(1 for m in request.messages if m.role == "assistant")
        if turn < 2:
            city = ("paris", "rome")[turn]
            return json.dumps({"thought": "look up", "action": {"tool": "population", "args": {"city": city}}})
        if turn == 2:
            a, b = [int(n) for n in re.findall(r'"people": (\\d+)', seen)]
            return json.dumps({"thought": "sum", "action": {"tool": "add", "args": {"a": a, "b": b}}})
        total = request.messages[-1].content.split("\\n")[2]
        return json.dumps({"thought": "done", "action": {"final_answer": f"{total} people"}})


    class LoggingEngine(FunctionEngine):
        """Dies when asked its n-th request of this attempt; logs every request it finished."""

        started = 0

        def _start(self, request):
            self.started += 1
            die_at(f"request:{self.started}")
            return hashlib.sha256(render_messages(request).encode()).hexdigest()[:16]

        async def generate(self, request):
            key = self._start(request)
            completion = await super().generate(request)
            log("answered.log", key)
            return completion

        def stream(self, request):
            return closing_stream(self._logged_chunks(request))

        async def _logged_chunks(self, request):
            key = self._start(request)
            async with super().stream(request) as chunks:
                async for chunk in chunks:
                    yield chunk
            log("answered.log", key)


    async def main(agent: str, journal: str, run_id: str) -> None:
        tools = ToolRegistry([population, add])
        if agent == "compiler":
            flow, model = llm_compiler("People in Paris, Rome and Oslo?", tools), compiler_model
        else:
            flow, model = react("People in Paris and Rome?", tools, max_steps=6), react_model
        out = await run(flow, engine=LoggingEngine(model), run_id=run_id, journal=journal)
        assert isinstance(out, Ok), out
        results = {
            str(i): [r.status.value, r.value.model_dump() if isinstance(r.value, BaseModel) else r.value]
            for i, r in out.value.results.items()
        }
        typed = all(isinstance(r.value, Population) for r in out.value.results.values() if r.task.tool == "population")
        print(json.dumps({"answer": out.value.answer, "results": results, "typed": typed}), flush=True)


    anyio.run(main, *sys.argv[1:4])
    '''
)


def _attempt(
    script: Path, effects: Path, agent: str, run_id: str, kill_at: tuple[str, str] = ("", "")
) -> dict[str, Any] | None:
    """One attempt in a fresh process; ``None`` when it was killed where ``kill_at`` says (a point, and a step
    that must be journaled before it)."""
    env = {**os.environ, "EFFECTS": str(effects), "KILL_AT": kill_at[0], "KILL_AFTER": kill_at[1]}
    cmd = [sys.executable, str(script), agent, str(effects / "journal.db"), run_id]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    if kill_at[0]:
        assert proc.returncode == -9, (kill_at, proc.returncode, proc.stdout, proc.stderr)
        return None
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def _lines(effects: Path, name: str) -> Counter[str]:
    file = effects / name
    return Counter(file.read_text().splitlines() if file.exists() else [])


KILL_POINTS: dict[str, list[tuple[str, str]]] = {
    "compiler": [
        ("request:1", ""),  # the first plan: nothing finished yet
        ("request:2", ""),  # the first join: round 1's plan and tools are journaled
        # Inside round 1, its plan and lookups journaled, the round itself not yet.
        ("tool:add(2100000,2800000)", "compiler/plan/planner"),
        ("request:3", ""),  # the replan: round 1 and its join replay, round 2 is planned anew
        ("tool:population(oslo)", "compiler/plan[1]/planner"),  # inside round 2, before its first call
        ("request:4", ""),  # the last join
    ],
    "react": [("request:2", ""), ("tool:population(rome)", ""), ("request:4", "")],
}


@pytest.mark.parametrize("agent", list(KILL_POINTS))
def test_sigkilled_agent_resumes_with_every_call_and_request_exactly_once(agent: str, tmp_path: Path) -> None:
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    ref = tmp_path / "reference"
    ref.mkdir()
    reference = _attempt(script, ref, agent, "ref")
    assert reference is not None and reference["typed"], reference
    effects_once, answered_once = _lines(ref, "effects.log"), _lines(ref, "answered.log")
    assert set(effects_once.values()) == {1} and set(answered_once.values()) == {1}

    for n, point in enumerate(KILL_POINTS[agent]):
        effects = tmp_path / f"kill{n}"
        effects.mkdir()
        assert _attempt(script, effects, agent, "r", kill_at=point) is None
        resumed = _attempt(script, effects, agent, "r")
        assert resumed == reference, point
        assert _lines(effects, "effects.log") == effects_once, point
        assert _lines(effects, "answered.log") == answered_once, point
