"""MCP servers as tool sources: what to connect to, and which sources the user allows plans to name.

An :class:`MCPSource` says how to reach one MCP server (a command to run over stdio, or a streamable HTTP
URL), what its tools are called here (``<name>.<tool>``), which of them to expose, their time limit, and
which tool arguments the *user* fills with secret handles. Nothing in this module talks to a server (and
the ``mcp`` SDK is not imported), so plans can be loaded and checked without starting anything.

Plans name sources under ``tools:``; a plan never widens what the user allowed (:class:`MCPAllowlist`):
a command or URL written in a plan runs only if the user allowed it (``--allow-mcp`` / ``allow_mcp=``),
and environment variables, HTTP headers and secrets come only from the user's own :class:`MCPSource`.
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import urlsplit

from agentflow.errors import ConfigError
from agentflow.secrets import Secret

__all__ = ["MCPAllowlist", "MCPSource", "parse_source"]

SOURCE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
"""Source names: identifiers (a source's tools are called ``<name>.<tool>``)."""

DEFAULT_TIMEOUT = 60.0
"""Seconds one tool call may take unless the source says otherwise."""

DEFAULT_CONNECT_TIMEOUT = 30.0
"""Seconds the handshake and each page of the tool listing may take."""

DEFAULT_MAX_RESULT_CHARS = 100_000
"""A tool result longer than this (as text) is cut, so a server cannot flood a prompt or the memory."""


def _frozen(mapping: Mapping[str, object]) -> Mapping[str, object]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class MCPSource:
    """One MCP server whose tools become registry tools named ``<name>.<tool>``.

    Build one with :meth:`stdio` or :meth:`http`. Every field is the user's choice; a plan can only name a
    source (see :class:`MCPAllowlist`).

    Attributes:
        name: The source's name; its tools are registered as ``<name>.<tool>``.
        command: The command that starts the server (stdio transport), or None.
        url: The streamable HTTP endpoint (``http://127.0.0.1:8000/mcp``), or None.
        env: Extra environment variables for a stdio server (values may be secret handles, revealed when the
            process starts). Nothing else of this process's environment is passed on but the basics
            (``HOME``, ``PATH``, ``USER``...), so secrets in the environment never reach the server by accident.
        headers: HTTP headers for an HTTP server (values may be secret handles, revealed when connecting).
        cwd: The working directory of a stdio server.
        tools: The server's tools to expose (their names on the server), or None for all of them.
        secrets: ``{tool: {argument: handle}}``: arguments the tool declares that the user fills with a
            secret. They are hidden from the tool's schema (a model never sees or fills them) and revealed only
            when the call is sent. This is the only way a secret value reaches an MCP server.
        timeout: Seconds one tool call may take.
        connect_timeout: Seconds the handshake and each page of the tool listing may take.
        max_result_chars: Longest tool result kept (as text); longer ones are cut.
    """

    name: str
    command: tuple[str, ...] | None = None
    url: str | None = None
    env: Mapping[str, str | Secret] = field(default_factory=dict)
    headers: Mapping[str, str | Secret] = field(default_factory=dict)
    cwd: str | None = None
    tools: tuple[str, ...] | None = None
    secrets: Mapping[str, Mapping[str, Secret]] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT
    max_result_chars: int = DEFAULT_MAX_RESULT_CHARS

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or SOURCE_NAME.fullmatch(self.name) is None:
            raise ConfigError(
                f"MCP source name {self.name!r} is invalid; use an identifier such as 'weather' "
                "(its tools are called weather.<tool>)"
            )
        if (self.command is None) == (self.url is None):
            raise ConfigError(
                f"MCP source {self.name!r} needs exactly one of command= (stdio) or url= (streamable HTTP)"
            )
        if self.command is not None:
            given: object = self.command  # callers without type checking may pass a plain string
            if (
                isinstance(given, str)
                or not self.command
                or not all(isinstance(part, str) and part for part in self.command)
            ):
                raise ConfigError(
                    f"MCP source {self.name!r}: command={self.command!r} must be a non-empty list of "
                    "non-empty strings, e.g. ['python', 'server.py']"
                )
            object.__setattr__(self, "command", tuple(self.command))
            if self.headers:
                raise ConfigError(f"MCP source {self.name!r}: headers= only applies to url= sources")
        if self.url is not None:
            _check_url(self.name, self.url)
            if self.env or self.cwd is not None:
                raise ConfigError(f"MCP source {self.name!r}: env= and cwd= only apply to command= sources")
        for what, mapping in (("env", self.env), ("headers", self.headers)):
            for key, value in mapping.items():
                if not isinstance(key, str) or not key or not isinstance(value, str | Secret):
                    raise ConfigError(
                        f"MCP source {self.name!r}: {what} entry {key!r}={value!r} must map a name to a "
                        "string or a secret handle"
                    )
        if self.tools is not None:
            listed: object = self.tools
            if isinstance(listed, str) or not all(isinstance(t, str) and t for t in self.tools):
                raise ConfigError(
                    f"MCP source {self.name!r}: tools={self.tools!r} must be a list of tool names"
                )
            object.__setattr__(self, "tools", tuple(self.tools))
        for tool_name, bound in self.secrets.items():
            for arg, handle in bound.items():
                if not isinstance(handle, Secret):
                    raise ConfigError(
                        f"MCP source {self.name!r}: secrets[{tool_name!r}][{arg!r}] must be a secret handle "
                        f"(agentflow.secrets.secret('NAME')), got {type(handle).__name__}"
                    )
        if not self.timeout > 0 or not self.connect_timeout > 0:
            raise ConfigError(
                f"MCP source {self.name!r}: timeout={self.timeout!r} and connect_timeout="
                f"{self.connect_timeout!r} must be positive numbers of seconds"
            )
        if not isinstance(self.max_result_chars, int) or self.max_result_chars < 1:
            raise ConfigError(
                f"MCP source {self.name!r}: max_result_chars={self.max_result_chars!r} must be an integer >= 1"
            )
        object.__setattr__(self, "env", _frozen(self.env))
        object.__setattr__(self, "headers", _frozen(self.headers))
        object.__setattr__(
            self, "secrets", MappingProxyType({t: _frozen(b) for t, b in self.secrets.items()})
        )

    @classmethod
    def stdio(
        cls,
        name: str,
        command: Iterable[str],
        *,
        env: Mapping[str, str | Secret] | None = None,
        cwd: str | None = None,
        tools: Iterable[str] | None = None,
        secrets: Mapping[str, Mapping[str, Secret]] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_result_chars: int = DEFAULT_MAX_RESULT_CHARS,
    ) -> MCPSource:
        """A server started as ``command`` and spoken to over its stdin/stdout.

        Raises:
            ConfigError: A bad name, command or option.
        """
        return cls(
            name,
            command=tuple(command),
            env=env or {},
            cwd=cwd,
            tools=tuple(tools) if tools is not None else None,
            secrets=secrets or {},
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_result_chars=max_result_chars,
        )

    @classmethod
    def http(
        cls,
        name: str,
        url: str,
        *,
        headers: Mapping[str, str | Secret] | None = None,
        tools: Iterable[str] | None = None,
        secrets: Mapping[str, Mapping[str, Secret]] | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        max_result_chars: int = DEFAULT_MAX_RESULT_CHARS,
    ) -> MCPSource:
        """A server at a streamable HTTP endpoint (``http://127.0.0.1:8000/mcp``).

        Raises:
            ConfigError: A bad name, URL or option.
        """
        return cls(
            name,
            url=url,
            headers=headers or {},
            tools=tuple(tools) if tools is not None else None,
            secrets=secrets or {},
            timeout=timeout,
            connect_timeout=connect_timeout,
            max_result_chars=max_result_chars,
        )

    @property
    def target(self) -> str:
        """Where the server is: its command line (shell-quoted) or its URL. Allowlists match this."""
        if self.command is not None:
            return shlex.join(self.command)
        assert self.url is not None
        return self.url

    @property
    def transport(self) -> str:
        """``"stdio"`` or ``"http"``."""
        return "stdio" if self.command is not None else "http"

    def restricted(
        self, tools: Iterable[str] | None = None, *, timeout: float | None = None, cwd: str | None = None
    ) -> MCPSource:
        """This source narrowed to ``tools`` (which must be a subset of the current ones), with another timeout.

        Raises:
            ConfigError: ``tools`` names a tool this source does not expose.
        """
        chosen = self.tools
        if tools is not None:
            wanted = tuple(tools)
            if self.tools is not None:
                outside = [t for t in wanted if t not in self.tools]
                if outside:
                    raise ConfigError(
                        f"MCP source {self.name!r} exposes only {list(self.tools)}; cannot also allow {outside}"
                    )
            chosen = wanted
        return MCPSource(
            self.name,
            command=self.command,
            url=self.url,
            env=self.env,
            headers=self.headers,
            cwd=cwd if cwd is not None and self.command is not None else self.cwd,
            tools=chosen,
            secrets=self.secrets,
            timeout=timeout if timeout is not None else self.timeout,
            connect_timeout=self.connect_timeout,
            max_result_chars=self.max_result_chars,
        )

    def __hash__(self) -> int:
        # The mappings are read-only views (unhashable); what identifies a source is hashed instead.
        return hash((self.name, self.command, self.url, self.tools, self.timeout))

    def __repr__(self) -> str:
        # Values of env and headers are left out: they may be credentials the user typed in.
        return f"MCPSource({self.name!r}, {self.transport}: {self.target!r})"


def _check_url(name: str, url: str) -> None:
    if not isinstance(url, str):
        raise ConfigError(f"MCP source {name!r}: url={url!r} must be a string")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"MCP source {name!r}: url {url!r} is not an http(s) URL; write e.g. http://127.0.0.1:8000/mcp"
        )
    if parts.username or parts.password:
        raise ConfigError(
            f"MCP source {name!r}: url {url!r} carries credentials; pass them as headers= with a secret handle"
        )


def parse_source(text: str) -> MCPSource:
    """A source from the CLI's ``NAME=COMMAND`` or ``NAME=URL`` (``weather=python weather.py``).

    Raises:
        ConfigError: The text is not ``NAME=...`` or the command/URL is invalid.
    """
    name, sep, rest = text.partition("=")
    name, rest = name.strip(), rest.strip()
    if not sep or not name or not rest:
        raise ConfigError(
            f"--mcp {text!r} is not NAME=COMMAND or NAME=URL; write e.g. --mcp 'weather=python weather.py' "
            "or --mcp docs=http://127.0.0.1:8000/mcp"
        )
    if rest.startswith(("http://", "https://")):
        return MCPSource.http(name, rest)
    try:
        command = shlex.split(rest)
    except ValueError as exc:
        raise ConfigError(f"--mcp {text!r}: cannot split the command ({exc}); check its quotes") from None
    return MCPSource.stdio(name, command)


class MCPAllowlist:
    """Which MCP sources a plan may use: the user's own sources, and commands/URLs the user allowed.

    A plan's ``tools:`` entry ``{mcp: NAME}`` uses the user's source ``NAME``; an entry that carries its own
    ``command:`` or ``url:`` is used only if that target matches one of the user's patterns (shell-style,
    matched against the shell-quoted command line or the URL), or is exactly the user's source of that name.

    >>> allow = MCPAllowlist(["http://127.0.0.1:*/mcp"])
    >>> allow.allows_target("http://127.0.0.1:8123/mcp"), allow.allows_target("http://evil.test/mcp")
    (True, False)
    """

    def __init__(self, entries: Iterable[str | MCPSource] = ()) -> None:
        sources: dict[str, MCPSource] = {}
        patterns: list[str] = []
        for entry in entries:
            if isinstance(entry, MCPSource):
                if entry.name in sources:
                    raise ConfigError(f"two MCP sources are named {entry.name!r}; give each its own name")
                sources[entry.name] = entry
            elif isinstance(entry, str) and entry.strip():
                patterns.append(entry.strip())
            else:
                raise ConfigError(
                    f"MCP allowlist entry {entry!r} must be an MCPSource or a command/URL pattern string"
                )
        self.sources: Mapping[str, MCPSource] = MappingProxyType(sources)
        self.patterns: tuple[str, ...] = tuple(patterns)

    def allows_target(self, target: str) -> bool:
        """Whether a command line or URL written in a plan matches one of the user's patterns."""
        return any(fnmatch.fnmatchcase(target, p) for p in self.patterns)

    def resolve(
        self,
        name: str,
        *,
        command: Iterable[str] | None = None,
        url: str | None = None,
        tools: Iterable[str] | None = None,
        timeout: float | None = None,
        cwd: str | None = None,
    ) -> MCPSource:
        """The source a plan's ``{mcp: name, command/url, tools, timeout}`` entry stands for.

        Args:
            name: The entry's source name.
            command: The command the plan wrote, if any.
            url: The URL the plan wrote, if any.
            tools: The tools the plan uses (narrows the source), if given.
            timeout: The per-call time limit the plan asks for, if given.
            cwd: Where a command written in the plan runs (the plan file's folder).

        Raises:
            ConfigError: The user did not allow it; the message says how to.
        """
        own = self.sources.get(name)
        if command is None and url is None:
            if own is None:
                defined = ", ".join(sorted(self.sources)) or "none"
                raise ConfigError(
                    f"MCP source {name!r} is not defined by the user (defined: {defined}); define it with "
                    f"--mcp '{name}=COMMAND' or --mcp {name}=URL (CLI), or allow_mcp=[MCPSource...]"
                )
            return own.restricted(tools, timeout=timeout)
        written = (
            MCPSource.stdio(name, command, cwd=cwd)
            if command is not None
            else MCPSource.http(name, url or "")
        )
        if own is not None:
            if own.target != written.target:
                raise ConfigError(
                    f"MCP source {name!r}: the plan says {written.target!r} but the user defined it as "
                    f"{own.target!r}; drop command/url from the plan to use the user's source"
                )
            return own.restricted(tools, timeout=timeout)
        if not self.allows_target(written.target):
            flag = shlex.quote(written.target)
            raise ConfigError(
                f"MCP source {name!r} ({written.transport}: {written.target!r}) is not allowed; if you trust "
                f"it, allow it with --allow-mcp {flag} (CLI) or allow_mcp=[...]"
            )
        return written.restricted(tools, timeout=timeout)


def require_sdk() -> None:
    """Raise a ``ConfigError`` saying how to install the MCP SDK when it is missing (it is an extra)."""
    import importlib.util

    if importlib.util.find_spec("mcp") is None or importlib.util.find_spec("mcp_types") is None:
        raise ConfigError(
            "MCP support needs the official MCP SDK, which is not installed: pip install 'agentflow[mcp]'"
        )
