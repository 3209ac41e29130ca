"""``examples/embed_service.py`` served on 127.0.0.1 with the embedded engine, driven with httpx.

Concurrent requests share one engine but get their own results and state; a client that disconnects
gets its run cancelled, and the service is left with no run in progress and still serving.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def service() -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "examples" / "embed_service.py"), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**os.environ},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise AssertionError(
                    f"the service exited early:\n{proc.stdout.read() if proc.stdout else ''}"
                )
            try:
                if httpx.get(f"{base}/status", timeout=5).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("the service did not start listening")
            time.sleep(0.5)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def _status(base: str) -> dict[str, int]:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        response = await client.get("/status")
    response.raise_for_status()
    data = response.json()
    return {k: v for k, v in data.items() if isinstance(v, int)}


@pytest.mark.anyio
async def test_concurrent_requests_get_their_own_results_and_state(service: str) -> None:
    requests = {
        "a": ["Mars", "Venus"],
        "b": ["Earth"],
        "c": ["Jupiter", "Saturn", "Uranus"],
        "d": ["Venus"],
    }
    results: dict[str, httpx.Response] = {}
    async with httpx.AsyncClient(base_url=service, timeout=600) as client:

        async def one(key: str) -> None:
            results[key] = await client.post("/runs/notes", json={"topics": requests[key], "max_tokens": 12})

        async with anyio.create_task_group() as tg:
            for key in requests:
                tg.start_soon(one, key)
    run_ids = set()
    for key, topics in requests.items():
        response = results[key]
        assert response.status_code == 200, response.text
        body = response.json()
        facts = body["state"]["facts"]
        assert sorted(f.split(":")[0] for f in facts) == sorted(topics)
        assert isinstance(body["result"], str) and body["result"]
        assert body["usage"]["completion_tokens"] >= 1
        run_ids.add(body["run_id"])
    assert len(run_ids) == len(requests)
    status = await _status(service)
    assert status["active"] == 0 and status["completed"] >= len(requests)


@pytest.mark.anyio
async def test_invalid_request_is_rejected_without_running(service: str) -> None:
    async with httpx.AsyncClient(base_url=service, timeout=60) as client:
        response = await client.post("/runs/notes", json={"topics": []})
    assert response.status_code == 422
    assert "topics" in response.json()["error"]


@pytest.mark.anyio
async def test_client_disconnect_cancels_its_run_and_leaves_nothing_running(service: str) -> None:
    before = await _status(service)
    topics = ", ".join(["Mercury", "Venus", "Earth", "Mars", "Jupiter", "Saturn"] * 3)
    async with httpx.AsyncClient(base_url=service, timeout=600) as client:
        with anyio.move_on_after(600):
            async with anyio.create_task_group() as tg:

                async def doomed() -> None:
                    await client.post("/runs/digest", json={"topics": topics})

                tg.start_soon(doomed)
                while (await _status(service))["active"] == 0:
                    await anyio.sleep(0.2)
                await anyio.sleep(1.0)
                tg.cancel_scope.cancel()
    deadline = time.monotonic() + 120
    status = await _status(service)
    while (
        status["active"] != 0 or status["cancelled"] == before["cancelled"]
    ) and time.monotonic() < deadline:
        await anyio.sleep(0.2)
        status = await _status(service)
    assert status["active"] == 0, status
    assert status["cancelled"] == before["cancelled"] + 1
    assert status["completed"] == before["completed"]
    async with httpx.AsyncClient(base_url=service, timeout=600) as client:
        response = await client.post("/runs/notes", json={"topics": ["Neptune"], "max_tokens": 8})
    assert response.status_code == 200, response.text
    assert (await _status(service))["active"] == 0


def _parse_sse(text: str) -> list[tuple[str, dict[str, object]]]:
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append((lines["event"], json.loads(lines["data"])))
    return events


@pytest.mark.anyio
async def test_stream_endpoint_sends_tokens_as_server_sent_events_before_the_result(service: str) -> None:
    received: list[str] = []
    async with (
        httpx.AsyncClient(base_url=service, timeout=600) as client,
        client.stream(
            "POST", "/runs/notes/stream", json={"topics": ["Mars", "Venus"], "max_tokens": 16}
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for chunk in response.aiter_text():
            received.append(chunk)
    events = _parse_sse("".join(received))
    kinds = [k for k, _ in events]
    assert kinds[-1] == "result" and kinds.count("result") == 1
    tokens = [d for k, d in events if k == "token"]
    assert tokens and kinds.index("token") < kinds.index("result")
    assert len([d for k, d in events if k == "llm"]) == 1
    assert kinds.index("llm") > max(i for i, k in enumerate(kinds) if k == "token")
    result = events[-1][1]["result"]
    assert isinstance(result, str) and result == "".join(str(t["text"]) for t in tokens).strip()
    assert {d["step"] for k, d in events if k == "step"} >= {"[0]/look_up", "[1]/look_up"}
    assert len(received) > 1  # it arrived in pieces, not as one body


@pytest.mark.anyio
async def test_disconnecting_from_a_stream_cancels_the_run(service: str) -> None:
    before = await _status(service)
    async with (
        httpx.AsyncClient(base_url=service, timeout=600) as client,
        client.stream(
            "POST", "/runs/notes/stream", json={"topics": ["Mars", "Venus", "Earth"], "max_tokens": 200}
        ) as response,
    ):
        async for chunk in response.aiter_text():
            if "event: token" in chunk:
                break  # leave after the first token: the connection closes
    deadline = time.monotonic() + 120
    status = await _status(service)
    while (
        status["active"] != 0 or status["cancelled"] == before["cancelled"]
    ) and time.monotonic() < deadline:
        await anyio.sleep(0.2)
        status = await _status(service)
    assert status["active"] == 0 and status["cancelled"] == before["cancelled"] + 1
    assert status["completed"] == before["completed"]


@pytest.mark.anyio
async def test_unknown_topic_fails_the_run_naming_it(service: str) -> None:
    async with httpx.AsyncClient(base_url=service, timeout=600) as client:
        response = await client.post("/runs/notes", json={"topics": ["Mars", "Pluto"], "max_tokens": 8})
    assert response.status_code == 500
    assert "no row 'Pluto' in table 'examples/data/planets.csv'" in response.json()["error"]
