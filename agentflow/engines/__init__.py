"""LLM engines: the ``Engine`` protocol, the embedded llama.cpp engine, test doubles and engine specs.

Beyond ``Engine``, an engine may implement optional protocols a scheduler uses (``CacheEventSource``,
``PrefixPinning``, ``Prefilling``, ``CacheSalting``); middleware builds on ``WrapperEngine``. ``stream`` returns
an async context manager: ``async with engine.stream(request) as chunks: async for chunk in chunks: ...``.

Importing this package loads none of the engines' heavy libraries: llama.cpp, httpx, vLLM and Ray are imported
when an engine first needs them (the model loads on first use).
"""

from ._llamacpp import LlamaCppEngine, LlamaCppStats, default_model_path
from ._metrics import VLLMMetrics
from ._openai import OpenAIEngine, SecretHandle, ServerKind, StructuredOutputMode
from ._protocols import (
    CacheEvent,
    CacheEventSource,
    CacheListener,
    CacheListeners,
    CacheMirror,
    CacheSalting,
    LiveContext,
    Prefilling,
    PrefixPinning,
    SnapshotEvicted,
    SnapshotStored,
    Unsubscribe,
)
from ._ray import EngineFactory, RayEngine
from ._replay import RecordingEngine, ReplayEngine, request_key
from ._retry import RetryEvent, RetryPolicy
from ._schema_example import example_from_schema
from ._snapshots import (
    ReusePlan,
    SnapshotInfo,
    SnapshotMatch,
    SnapshotStore,
    common_prefix_len,
    plan_reuse,
)
from ._spec import ENGINE_SPEC_FORMS, EngineScheme, EngineSpecParts, engine_from_spec, parse_engine_spec
from ._testing import FunctionEngine, FunctionHandler, TestEngine
from ._text import render_messages, simple_tokenize
from ._types import (
    DEFAULT_BLOCK_SIZE,
    Capabilities,
    Chunk,
    ChunkStream,
    Completion,
    Engine,
    FinishReason,
    GenerationRequest,
    JsonSchema,
    Message,
    NamedToolChoice,
    PrefixCacheKind,
    RequestHints,
    Role,
    ToolCallRequest,
    ToolChoice,
    ToolSpec,
    Usage,
    closing_stream,
    open_stream,
)
from ._vllm import VLLMEngine
from ._wrapper import WrapperEngine

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "ENGINE_SPEC_FORMS",
    "CacheEvent",
    "CacheEventSource",
    "CacheListener",
    "CacheListeners",
    "CacheMirror",
    "CacheSalting",
    "Capabilities",
    "Chunk",
    "ChunkStream",
    "Completion",
    "Engine",
    "EngineFactory",
    "EngineScheme",
    "EngineSpecParts",
    "FinishReason",
    "FunctionEngine",
    "FunctionHandler",
    "GenerationRequest",
    "JsonSchema",
    "LiveContext",
    "LlamaCppEngine",
    "LlamaCppStats",
    "Message",
    "NamedToolChoice",
    "OpenAIEngine",
    "Prefilling",
    "PrefixCacheKind",
    "PrefixPinning",
    "RayEngine",
    "RecordingEngine",
    "ReplayEngine",
    "RequestHints",
    "RetryEvent",
    "RetryPolicy",
    "ReusePlan",
    "Role",
    "SecretHandle",
    "ServerKind",
    "SnapshotEvicted",
    "SnapshotInfo",
    "SnapshotMatch",
    "SnapshotStore",
    "SnapshotStored",
    "StructuredOutputMode",
    "TestEngine",
    "ToolCallRequest",
    "ToolChoice",
    "ToolSpec",
    "Unsubscribe",
    "Usage",
    "VLLMEngine",
    "VLLMMetrics",
    "WrapperEngine",
    "closing_stream",
    "common_prefix_len",
    "default_model_path",
    "engine_from_spec",
    "example_from_schema",
    "open_stream",
    "parse_engine_spec",
    "plan_reuse",
    "render_messages",
    "request_key",
    "simple_tokenize",
]
