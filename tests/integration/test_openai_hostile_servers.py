"""``OpenAIEngine`` against real misbehaving HTTP servers on 127.0.0.1 (issue 18, item 5).

Each server is a raw TCP socket speaking just enough HTTP/1.1 to misbehave the way the attacks did:
dripping headers or body one byte at a time, dripping SSE comments, an endless body, an endless SSE
line, tokens streamed past ``max_tokens``, and a 401 that echoes the ``Authorization`` header. The
engine must end each with an ``EngineRequestError``/``EngineUnavailableError`` that names the bound
(the total deadline, a byte cap, ``max_tokens``), hold memory near its caps, and never quote the API
key. Without the bounds these tests would hang (pytest-timeout) or exhaust memory.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator

import pytest

from agentflow.engines import GenerationRequest, OpenAIEngine, RetryPolicy
from agentflow.errors import EngineError, EngineRequestError
from agentflow.secrets import REDACTED

pytestmark = [pytest.mark.integration, pytest.mark.anyio]

API_KEY = "sk-hostile-echo-key-0123456789abcdef"
ONCE = RetryPolicy(attempts=1)
Behaviour = Callable[[socket.socket, str, threading.Event], None]
"""Answers one request: (connection, request head, the server's stop event)."""
_DRIP_S = 0.05


class HostileServer:
    """Accepts connections on 127.0.0.1; after reading a request, lets ``behaviour`` answer it."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.stop = threading.Event()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}"

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                part = conn.recv(65536)
                if not part:
                    return
                data += part
            head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
            try:
                self.behaviour(conn, head, self.stop)
            except OSError:  # the client gave up: what every bounded engine does eventually
                return

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(timeout=5)


@contextlib.contextmanager
def serve(behaviour: Behaviour) -> Iterator[HostileServer]:
    server = HostileServer(behaviour)
    try:
        yield server
    finally:
        server.close()


def repeat(conn: socket.socket, data: bytes, stop: threading.Event, pause: float = 0.0) -> None:
    """Send ``data`` again and again (sleeping ``pause`` between sends) until the client or the test stops."""
    while not stop.is_set():
        conn.sendall(data)
        if pause:
            time.sleep(pause)


def engine_for(server: HostileServer, **options: object) -> OpenAIEngine:
    options.setdefault("retry", ONCE)
    options.setdefault("timeout", 1.0)
    return OpenAIEngine(server.url, "m", server_kind="openai", **options)  # type: ignore[arg-type]


REQUEST = GenerationRequest(prompt="Say something.", max_tokens=8)
SSE_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\n\r\n"


def _event(text: str) -> bytes:
    body = {"choices": [{"index": 0, "text": text, "finish_reason": None}]}
    return b"data: " + json.dumps(body).encode() + b"\n\n"


async def _drain(engine: OpenAIEngine) -> list[str]:
    pieces: list[str] = []
    async with engine.stream(REQUEST) as chunks:
        async for chunk in chunks:
            pieces.append(chunk.text)
    return pieces


# -- the attacks ------------------------------------------------------------------------------------


DRIPS = {
    "drip_headers": (b"HTTP/1.1 200 OK\r\nX-Drip: ", b"a"),
    "drip_body": (
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{",
        b" ",
    ),
    "sse_comment_drip": (SSE_HEAD, b": keep-alive\n\n"),
}


@pytest.mark.parametrize("attack", sorted(DRIPS))
async def test_dripping_server_ends_at_the_total_deadline(attack: str) -> None:
    head_bytes, drop = DRIPS[attack]

    def drip(conn: socket.socket, head: str, stop: threading.Event) -> None:
        conn.sendall(head_bytes)
        repeat(
            conn, drop, stop, _DRIP_S
        )  # each byte resets a per-read timeout; only a total deadline ends it

    with serve(drip) as server:
        async with engine_for(server) as engine:
            with pytest.raises(EngineError, match=r"timeout=1 s"):
                if attack == "sse_comment_drip":
                    await _drain(engine)
                else:
                    await engine.generate(REQUEST)


async def test_token_drip_past_max_tokens_is_cut_at_max_tokens() -> None:

    def tokens_forever(conn: socket.socket, head: str, stop: threading.Event) -> None:
        conn.sendall(SSE_HEAD)
        repeat(conn, _event("la "), stop)

    with serve(tokens_forever) as server:
        async with engine_for(server, timeout=60.0) as engine:
            pieces: list[str] = []
            with pytest.raises(EngineRequestError, match=r"more than max_tokens=8"):
                async with engine.stream(REQUEST) as chunks:
                    async for chunk in chunks:
                        pieces.append(chunk.text)
            assert pieces == ["la "] * REQUEST.max_tokens


async def test_endless_body_is_refused_at_the_byte_cap_with_bounded_memory() -> None:
    block = b"x" * 65536

    def endless_body(conn: socket.socket, head: str, stop: threading.Event) -> None:
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
        repeat(conn, block, stop)

    with serve(endless_body) as server:
        async with engine_for(server, timeout=60.0, max_response_bytes=2_000_000) as engine:
            tracemalloc.start()
            try:
                with pytest.raises(EngineRequestError, match=r"max_response_bytes=2000000"):
                    await engine.generate(REQUEST)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert peak < 40_000_000  # the cap plus buffers, not the 2.9 GB of the attack


async def test_endless_sse_line_is_refused_at_the_event_cap_with_bounded_memory() -> None:
    block = b"a" * 65536

    def endless_line(conn: socket.socket, head: str, stop: threading.Event) -> None:
        conn.sendall(SSE_HEAD + b"data: ")
        repeat(conn, block, stop)

    with serve(endless_line) as server:
        async with engine_for(server, timeout=60.0, max_event_bytes=500_000) as engine:
            tracemalloc.start()
            try:
                with pytest.raises(EngineRequestError, match=r"line longer than max_event_bytes=500000"):
                    await _drain(engine)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert peak < 40_000_000


async def test_endless_stream_of_short_events_is_refused_at_the_byte_cap() -> None:

    def empty_events(conn: socket.socket, head: str, stop: threading.Event) -> None:
        conn.sendall(SSE_HEAD)
        repeat(conn, _event("") * 200, stop)

    with serve(empty_events) as server:
        async with engine_for(server, timeout=60.0, max_response_bytes=1_000_000) as engine:
            with pytest.raises(EngineRequestError, match=r"max_response_bytes=1000000"):
                await _drain(engine)


async def test_echoed_authorization_header_never_reaches_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)

    def echo_auth(conn: socket.socket, head: str, stop: threading.Event) -> None:
        auth = next(line for line in head.split("\r\n") if line.lower().startswith("authorization:"))
        body = json.dumps({"error": {"message": f"invalid credentials: {auth}"}}).encode()
        conn.sendall(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            + body
        )

    with serve(echo_auth) as server:
        async with engine_for(server) as engine:
            for call in (engine.generate(REQUEST), _drain(engine)):
                with pytest.raises(EngineRequestError) as info:
                    await call
                message = str(info.value)
                assert "401" in message and "Bearer" in message  # the echo is quoted...
                assert API_KEY not in message and API_KEY[:20] not in message  # ...without the key
                assert REDACTED in message


async def test_huge_declared_body_is_refused_before_it_is_read() -> None:
    def huge(conn: socket.socket, head: str, stop: threading.Event) -> None:
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 99999999999\r\n\r\n"
        )
        repeat(conn, b" " * 65536, stop)

    with serve(huge) as server:
        async with engine_for(server, timeout=60.0) as engine:
            with pytest.raises(
                EngineRequestError, match=r"declares 99999999999 bytes, more than max_response_bytes"
            ):
                await engine.generate(REQUEST)
