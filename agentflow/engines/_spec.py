"""Build an engine from a one-line spec string (plan files, the CLI, ``AGENTFLOW_ENGINE``).

Valid forms::

    llamacpp                      embedded llama.cpp with the bundled SmolLM2-135M-Instruct GGUF
    llamacpp:  llamacpp:default   the same
    llamacpp:/path/to/model.gguf  embedded llama.cpp with that GGUF file
    test:                         TestEngine (deterministic, no model)
    replay:/path/recording.jsonl  ReplayEngine over a RecordingEngine file
    openai:<base_url>#<model>     OpenAI-compatible HTTP server, e.g. openai:http://127.0.0.1:8000/v1#smollm
    vllm:<model>                  in-process vLLM (needs the ``vllm`` extra)
"""

from __future__ import annotations

from agentflow.errors import ConfigError

from ._types import Engine

__all__ = ["ENGINE_SPEC_FORMS", "engine_from_spec"]

ENGINE_SPEC_FORMS: tuple[str, ...] = (
    "llamacpp",
    "llamacpp:default",
    "llamacpp:/path/to/model.gguf",
    "test:",
    "replay:/path/recording.jsonl",
    "openai:<base_url>#<model>",
    "vllm:<model>",
)


def _bad(spec: str, why: str) -> ConfigError:
    forms = ", ".join(repr(f) for f in ENGINE_SPEC_FORMS)
    return ConfigError(f"invalid engine spec {spec!r}: {why}; valid forms are {forms}")


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
    text = spec.strip()
    scheme, sep, rest = text.partition(":")
    scheme = scheme.lower()
    if scheme == "llamacpp":
        from ._llamacpp import LlamaCppEngine

        path = rest.strip()
        return LlamaCppEngine(model_path=None if path in ("", "default") else path)
    if scheme == "test":
        from ._testing import TestEngine

        if rest.strip():
            raise _bad(spec, "'test:' takes no argument")
        return TestEngine()
    if scheme == "replay":
        from ._replay import ReplayEngine

        if not rest.strip():
            raise _bad(spec, "'replay:' needs the path of a .jsonl recording")
        return ReplayEngine(rest.strip())
    if scheme == "openai":
        base_url, hash_, model = rest.strip().rpartition("#")
        if not hash_ or not base_url or not model:
            raise _bad(spec, "'openai:' needs '<base_url>#<model>'")
        from agentflow.engines._openai import OpenAIEngine

        return OpenAIEngine(base_url, model)
    if scheme == "vllm":
        if not rest.strip():
            raise _bad(spec, "'vllm:' needs a model name or path")
        from agentflow.engines._vllm import VLLMEngine

        return VLLMEngine(rest.strip())
    if not sep:
        raise _bad(spec, "no scheme before ':'")
    raise _bad(spec, f"unknown scheme {scheme!r}")
