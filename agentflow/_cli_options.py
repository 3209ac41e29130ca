"""Command-line options that several ``agentflow`` commands share: the journal and the user's MCP servers.

Built-in commands (``agentflow.cli``) and sub-command modules (``agentflow.runs._cli``, ``agentflow.mcp._cli``)
import these, so listing the commands (``agentflow --help``) imports no sub-command module.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import TYPE_CHECKING

from agentflow.errors import ConfigError
from agentflow.secrets import Secret, secret

if TYPE_CHECKING:
    from agentflow.mcp import MCPSource

__all__ = [
    "DEFAULT_JOURNAL",
    "JOURNAL_ENV",
    "add_journal_arg",
    "add_mcp_flags",
    "default_journal",
    "journal_of",
    "journal_option",
    "mcp_allow_from_args",
    "parse_json_option",
]

DEFAULT_JOURNAL = ".agentflow/journal.db"
"""The journal file the CLI uses when neither ``--journal`` nor ``$AGENTFLOW_JOURNAL`` is given."""

JOURNAL_ENV = "AGENTFLOW_JOURNAL"
"""Environment variable naming the CLI's journal (a file path or a ``postgresql://`` URL)."""


def default_journal() -> str:
    """The CLI's journal: ``$AGENTFLOW_JOURNAL``, else ``.agentflow/journal.db``."""
    return os.environ.get(JOURNAL_ENV, "").strip() or DEFAULT_JOURNAL


def add_journal_arg(p: argparse.ArgumentParser) -> None:
    """``--journal`` as every run command takes it."""
    p.add_argument(
        "--journal",
        default=None,
        help=f"journal file or postgresql:// URL (default: ${JOURNAL_ENV} or {DEFAULT_JOURNAL})",
    )


def journal_of(args: argparse.Namespace) -> str:
    """The journal a parsed command names (``--journal``, else the default)."""
    given = getattr(args, "journal", None)
    return given if isinstance(given, str) and given else default_journal()


def journal_option(journal: str) -> str:
    """`` --journal J`` for commands printed as hints, or ``""`` for the default journal."""
    return "" if journal == default_journal() else f" --journal {journal}"


def parse_json_option(text: str, option: str) -> object:
    """The JSON value of a command-line option.

    Raises:
        ConfigError: it is not JSON (the message names the option).
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{option} must be JSON (e.g. '{{\"approve\": true}}' or '\"yes\"'), got {text!r}: {exc}"
        ) from exc


def add_mcp_flags(parser: argparse.ArgumentParser) -> None:
    """Add the user's MCP flags (``--mcp``, ``--allow-mcp``, ``--mcp-secret``) to a sub-command."""
    parser.add_argument(
        "--mcp",
        action="append",
        default=[],
        metavar="NAME=COMMAND|URL",
        help="an MCP server whose tools plans may use as NAME.<tool> (repeatable), e.g. "
        "--mcp 'weather=python weather_server.py' or --mcp docs=http://127.0.0.1:8000/mcp",
    )
    parser.add_argument(
        "--allow-mcp",
        action="append",
        default=[],
        metavar="PATTERN",
        help="let plans start/reach an MCP server they name with command:/url: matching PATTERN (repeatable)",
    )
    parser.add_argument(
        "--mcp-secret",
        action="append",
        default=[],
        metavar="SOURCE.TOOL.ARG=ENV",
        help="fill argument ARG of MCP tool SOURCE.TOOL with the secret in environment variable ENV, revealed "
        "only when the call is sent (the model never sees or fills it)",
    )


def _parse_secret(text: str) -> tuple[str, str, str, Secret]:
    target, sep, env = text.partition("=")
    parts = target.strip().split(".")
    if not sep or not env.strip() or len(parts) != 3 or not all(parts):
        raise ConfigError(
            f"--mcp-secret {text!r} is not SOURCE.TOOL.ARG=ENV; write e.g. "
            "--mcp-secret weather.forecast.api_key=WEATHER_API_KEY"
        )
    return parts[0], parts[1], parts[2], secret(env.strip())


def mcp_allow_from_args(args: argparse.Namespace) -> list[str | MCPSource]:
    """The ``allow_mcp=`` entries the user's flags stand for.

    Raises:
        ConfigError: A malformed flag, or a secret for a source not given with ``--mcp``.
    """
    from agentflow.mcp._source import parse_source

    sources = [parse_source(text) for text in getattr(args, "mcp", [])]
    by_name = {s.name: s for s in sources}
    bindings: dict[str, dict[str, dict[str, Secret]]] = {}
    for text in getattr(args, "mcp_secret", []):
        source, tool, arg, handle = _parse_secret(text)
        if source not in by_name:
            raise ConfigError(
                f"--mcp-secret {text!r} names MCP source {source!r}, which no --mcp defines "
                f"(defined: {', '.join(sorted(by_name)) or 'none'})"
            )
        bindings.setdefault(source, {}).setdefault(tool, {})[arg] = handle
    entries: list[str | MCPSource] = [
        dataclasses.replace(s, secrets=bindings[s.name]) if s.name in bindings else s for s in sources
    ]
    entries.extend(getattr(args, "allow_mcp", []))
    return entries
