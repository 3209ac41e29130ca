"""Build an engine from a one-line spec string (plan files, the CLI, ``AGENTFLOW_ENGINE``).

Valid forms::

    llamacpp                      embedded llama.cpp with the bundled SmolLM2-135M-Instruct GGUF
    llamacpp:  llamacpp:default   the same
    llamacpp:/path/to/model.gguf  embedded llama.cpp with that GGUF file
    test:                         TestEngine (deterministic, no model)
    replay:/path/recording.jsonl  ReplayEngine over a RecordingEngine file
    openai:<base_url>#<model>     OpenAI-compatible HTTP server, e.g. openai:http://127.0.0.1:8000/v1#smollm
    vllm:<model>                  in-process vLLM (needs the ``vllm`` extra)

``parse_engine_spec`` checks a spec without building anything (the plan loader uses it, so a bad spec
fails ``agentflow validate``); ``EngineSpecParts.destination`` is the URL an engine built from the spec
would send requests to, which a plan may only choose within the user's network allowlist
(``agentflow.network``).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Literal

from agentflow.errors import ConfigError

from ._types import Engine

__all__ = ["ENGINE_SPEC_FORMS", "EngineScheme", "EngineSpecParts", "engine_from_spec", "parse_engine_spec"]

ENGINE_SPEC_FORMS: tuple[str, ...] = (
    "llamacpp",
    "llamacpp:default",
    "llamacpp:/path/to/model.gguf",
    "test:",
    "replay:/path/recording.jsonl",
    "openai:<base_url>#<model>",
    "vllm:<model>",
)

EngineScheme = Literal["llamacpp", "test", "replay", "openai", "vllm"]
"""The engine kinds a spec can name."""

_HTTP_URL = re.compile(r"^https?://[^/?#\s]+", re.IGNORECASE)
_DEFAULT_HUB = "https://huggingface.co"


@dataclass(frozen=True, slots=True)
class EngineSpecParts:
    """A checked engine spec, not yet built.

    Attributes:
        scheme: The engine kind.
        target: What follows the scheme: a model path (``llamacpp``, ``vllm``; empty for the bundled
            model), a recording path (``replay``), or the server root (``openai``).
        model: The model name sent to an ``openai`` server (empty for other schemes).
    """

    scheme: EngineScheme
    target: str
    model: str = ""

    @property
    def destination(self) -> str | None:
        """The URL the engine would send requests to, or ``None`` when it reaches no network.

        ``openai`` specs reach their server. A ``vllm`` model that is not a local directory is
        downloaded from the model hub (``$HF_ENDPOINT``, by default https://huggingface.co), with the
        hub token from the environment if one is set.
        """
        if self.scheme == "openai":
            return self.target
        if self.scheme == "vllm" and not os.path.isdir(self.target):
            return os.environ.get("HF_ENDPOINT") or _DEFAULT_HUB
        return None


def _bad(spec: str, why: str) -> ConfigError:
    forms = ", ".join(repr(f) for f in ENGINE_SPEC_FORMS)
    return ConfigError(f"invalid engine spec {spec!r}: {why}; valid forms are {forms}")


def parse_engine_spec(spec: str) -> EngineSpecParts:
    """Check an engine spec and split it into its parts (no file is opened, nothing is imported).

    Raises:
        ConfigError: The spec is malformed or its scheme unknown (the message lists the valid forms).

    >>> parse_engine_spec("openai:http://127.0.0.1:8000/v1#smollm")
    EngineSpecParts(scheme='openai', target='http://127.0.0.1:8000/v1', model='smollm')
    """
    text = spec.strip()
    scheme, sep, rest = text.partition(":")
    scheme = scheme.lower()
    rest = rest.strip()
    if scheme == "llamacpp":
        return EngineSpecParts("llamacpp", "" if rest == "default" else rest)
    if scheme == "test":
        if rest:
            raise _bad(spec, "'test:' takes no argument")
        return EngineSpecParts("test", "")
    if scheme == "replay":
        if not rest:
            raise _bad(spec, "'replay:' needs the path of a .jsonl recording")
        return EngineSpecParts("replay", rest)
    if scheme == "openai":
        base_url, hash_, model = rest.rpartition("#")
        if not hash_ or not base_url or not model:
            raise _bad(spec, "'openai:' needs '<base_url>#<model>'")
        if not _HTTP_URL.match(base_url):
            raise _bad(
                spec, f"the server address {base_url!r} is not an http(s) URL such as http://127.0.0.1:8000"
            )
        return EngineSpecParts("openai", base_url, model)
    if scheme == "vllm":
        if not rest:
            raise _bad(spec, "'vllm:' needs a model name or path")
        return EngineSpecParts("vllm", rest)
    if not sep:
        raise _bad(spec, "no scheme before ':'")
    raise _bad(spec, f"unknown scheme {scheme!r}")


def engine_from_spec(spec: str) -> Engine:
    """Create the engine a spec string names.

    Imports of heavy backends (llama.cpp, httpx clients, vLLM) happen only for the scheme used.

    Args:
        spec: One of the forms in ``ENGINE_SPEC_FORMS``.

    Returns:
        A new engine; close it with ``await engine.aclose()``.

    Raises:
        ConfigError: The spec is malformed or its scheme unknown (the message lists the valid forms).
        EngineUnavailableError: The engine cannot be created (missing model file, extra not installed).

    >>> engine_from_spec("test:").name
    'test'
    """
    parts = parse_engine_spec(spec)
    match parts.scheme:
        case "llamacpp":
            from ._llamacpp import LlamaCppEngine

            return LlamaCppEngine(model_path=parts.target or None)
        case "test":
            from ._testing import TestEngine

            return TestEngine()
        case "replay":
            from ._replay import ReplayEngine

            return ReplayEngine(parts.target)
        case "openai":
            from agentflow.engines._openai import OpenAIEngine

            return OpenAIEngine(parts.target, parts.model)
        case "vllm":
            from agentflow.engines._vllm import VLLMEngine

            return VLLMEngine(parts.target)
