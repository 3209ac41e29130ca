"""The user's network allowlist: which hosts a plan may make agentflow talk to.

A plan is data that may come from anyone; network destinations and credentials come from the user.
A destination the user gives directly (``--engine``, ``--trace-endpoint``, an engine or endpoint passed
in Python) is allowed by construction. A destination a *plan* chooses (``engine: {spec:
'openai:http://HOST/v1#m'}``, a ``vllm:`` model fetched from the model hub, ``telemetry: {endpoint:
...}``) is used only when its host is on the user's allowlist, and a plan's ``telemetry:
{capture_content: true}`` (prompts and outputs in spans) only when the user allows trace content.
The plan loader checks this, so ``agentflow validate`` and ``agentflow run`` refuse such a plan with
an error at file:line:column naming the host and how to allow it; nothing is sent before that.

The allowlist is the union of three user-side sources, read when a policy is built:

- flags: ``--allow-host HOST`` (repeatable) and ``--allow-trace-content`` on ``run`` and ``validate``;
- the environment: ``AGENTFLOW_ALLOW_HOSTS="127.0.0.1:8000,*.corp.example"`` and
  ``AGENTFLOW_ALLOW_TRACE_CONTENT=1``;
- a TOML file, ``$AGENTFLOW_CONFIG`` or else ``$XDG_CONFIG_HOME/agentflow/config.toml``
  (``~/.config/agentflow/config.toml``)::

      [network]
      allow_hosts = ["127.0.0.1:8000", "*.corp.example"]
      allow_trace_content = false

A host pattern is ``host`` (any port), ``host:port``, ``*.domain`` (any subdomain, not the domain
itself), ``[::1]:8000`` for IPv6, a URL (its host and port are used), or ``*`` (every host: turns the
check off). Hosts are compared by name, as written in the plan, after lower-casing.
"""

from __future__ import annotations

import os
import re
import stat
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from agentflow.errors import ConfigError

__all__ = [
    "CONFIG_ENV",
    "HOSTS_ENV",
    "TRACE_CONTENT_ENV",
    "HostPattern",
    "NetworkPolicy",
    "endpoint_of",
    "host_label",
    "user_config_path",
]

HOSTS_ENV = "AGENTFLOW_ALLOW_HOSTS"
"""Environment variable with host patterns plans may reach (comma- or space-separated)."""

TRACE_CONTENT_ENV = "AGENTFLOW_ALLOW_TRACE_CONTENT"
"""Environment variable that, set to ``1``/``true``/``yes``, lets plans capture content in traces."""

CONFIG_ENV = "AGENTFLOW_CONFIG"
"""Environment variable naming the user's config file (default: ``user_config_path()``)."""

_MAX_CONFIG_BYTES = 65_536
_DEFAULT_PORTS = {"http": 80, "https": 443}
_HOST_NAME = re.compile(r"^(\*\.)?[a-z0-9_]([a-z0-9_.-]*[a-z0-9_])?$")
_IPV6 = re.compile(r"^[0-9a-f:.]+$")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def endpoint_of(url: str) -> tuple[str, int]:
    """The (lower-cased host, port) an HTTP client connects to for ``url`` (httpx's own parser).

    Raises:
        ConfigError: ``url`` is not an absolute http(s) URL.

    >>> endpoint_of("http://Example.org/v1")
    ('example.org', 80)
    """
    import httpx  # deferred: only plans that name a URL need it

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise ConfigError(f"{url!r} is not a valid URL ({exc}); write e.g. http://127.0.0.1:8000") from None
    scheme = parsed.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parsed.host:
        raise ConfigError(f"{url!r} is not an http(s) URL with a host; write e.g. http://127.0.0.1:8000")
    port = parsed.port if parsed.port is not None else _DEFAULT_PORTS[scheme]
    return parsed.host.lower().rstrip("."), port


def _show(host: str, port: int | None) -> str:
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


@dataclass(frozen=True, slots=True)
class HostPattern:
    """One allowlist entry: a host name (or ``*.domain``, or ``*``) and an optional port.

    >>> HostPattern.parse("*.corp.example").matches("gpu1.corp.example", 8000)
    True
    >>> HostPattern.parse("127.0.0.1:8000").matches("127.0.0.1", 9000)
    False
    """

    host: str
    port: int | None = None

    @classmethod
    def parse(cls, text: str, *, where: str = "--allow-host") -> HostPattern:
        """Read ``host``, ``host:port``, ``*.domain[:port]``, ``[v6][:port]``, a URL, or ``*``.

        Raises:
            ConfigError: The text is not a host pattern (the message names ``where``).
        """
        raw = text.strip()
        if raw == "*":
            return cls("*")
        if "://" in raw:
            url_host, url_port = endpoint_of(raw)
            return cls(url_host, url_port)
        host, port_text = raw.lower(), ""
        if host.startswith("["):
            inner, bracket, tail = host[1:].partition("]")
            if not bracket or (tail and not tail.startswith(":")):
                raise ConfigError(f"{where} {text!r}: an IPv6 address is written [::1] or [::1]:8000")
            host, port_text = inner, tail[1:]
            valid = bool(_IPV6.match(host))
        elif host.count(":") > 1:
            valid = bool(_IPV6.match(host))
        else:
            host, _, port_text = host.partition(":")
            valid = bool(_HOST_NAME.match(host.rstrip(".")))
            host = host.rstrip(".")
        if not valid:
            raise ConfigError(
                f"{where} {text!r} is not a host pattern; write host, host:port, *.domain or [::1]:port"
            )
        port: int | None = None
        if port_text:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ConfigError(f"{where} {text!r}: the port {port_text!r} is not a number from 1 to 65535")
            port = int(port_text)
        return cls(host, port)

    def matches(self, host: str, port: int) -> bool:
        """Whether a connection to ``host:port`` (host lower-cased) is allowed by this entry."""
        if self.port is not None and self.port != port:
            return False
        if self.host == "*":
            return True
        if self.host.startswith("*."):
            return host.endswith(self.host[1:])
        return host == self.host

    def __str__(self) -> str:
        return _show(self.host, self.port)


@dataclass(frozen=True, slots=True)
class NetworkPolicy:
    """What the user allows plans to reach: hosts, and whether spans may carry prompt/output text.

    ``NetworkPolicy()`` allows nothing; ``NetworkPolicy.from_user(...)`` adds the environment and
    the config file to what the caller gives (the CLI passes its flags).

    Attributes:
        hosts: The allowed host patterns.
        trace_content: Whether a plan's ``telemetry.capture_content: true`` is honoured.
    """

    hosts: tuple[HostPattern, ...] = ()
    trace_content: bool = False

    @classmethod
    def of(cls, hosts: Iterable[str] = (), *, trace_content: bool = False) -> NetworkPolicy:
        """A policy of exactly these host patterns (nothing read from the environment or files).

        Raises:
            ConfigError: A pattern is malformed.
        """
        return cls(tuple(HostPattern.parse(h) for h in hosts if h.strip()), trace_content)

    @classmethod
    def from_user(
        cls,
        hosts: Iterable[str] = (),
        *,
        trace_content: bool = False,
        environ: Mapping[str, str] | None = None,
        config_file: str | os.PathLike[str] | None = None,
    ) -> NetworkPolicy:
        """The user's allowlist: ``hosts`` (flags) plus ``AGENTFLOW_ALLOW_HOSTS`` plus the config file.

        Args:
            hosts: Host patterns given directly (the CLI's ``--allow-host``).
            trace_content: Given directly (the CLI's ``--allow-trace-content``).
            environ: The environment to read (default ``os.environ``).
            config_file: The config file (default ``$AGENTFLOW_CONFIG`` or ``user_config_path()``);
                a missing file is an empty one.

        Raises:
            ConfigError: A malformed pattern, variable or config file (the message names which).
        """
        env = os.environ if environ is None else environ
        patterns = [HostPattern.parse(h) for h in hosts if h.strip()]
        for item in re.split(r"[,\s]+", env.get(HOSTS_ENV, "")):
            if item:
                patterns.append(HostPattern.parse(item, where=f"${HOSTS_ENV} entry"))
        content = trace_content or _env_flag(env, TRACE_CONTENT_ENV)
        path = Path(config_file) if config_file is not None else user_config_path(env)
        file_hosts, file_content = _read_config(path)
        patterns.extend(file_hosts)
        return cls(tuple(dict.fromkeys(patterns)), content or file_content)

    def allows(self, url: str) -> bool:
        """Whether ``url``'s host and port are on the allowlist.

        Raises:
            ConfigError: ``url`` is not an http(s) URL.
        """
        host, port = endpoint_of(url)
        return any(p.matches(host, port) for p in self.hosts)


def host_label(url: str) -> str:
    """``host:port`` of ``url`` as an ``--allow-host`` argument would be written."""
    host, port = endpoint_of(url)
    return _show(host, port)


def user_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """The user's agentflow config file: ``$AGENTFLOW_CONFIG``, else ``$XDG_CONFIG_HOME/agentflow/config.toml``
    (``~/.config/agentflow/config.toml`` when ``XDG_CONFIG_HOME`` is unset)."""
    env = os.environ if environ is None else environ
    explicit = env.get(CONFIG_ENV)
    if explicit:
        return Path(explicit)
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "agentflow" / "config.toml"


def _env_flag(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"${name}={env[name]!r} is not a yes/no value; set it to 1 or 0")


def _read_config(path: Path) -> tuple[list[HostPattern], bool]:
    """The ``[network]`` table of the config file (nothing when the file does not exist)."""
    try:
        info = path.stat()
    except FileNotFoundError:
        return [], False
    except OSError as exc:
        raise ConfigError(f"cannot read the config file {str(path)!r}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode) or info.st_size > _MAX_CONFIG_BYTES:
        raise ConfigError(
            f"the config file {str(path)!r} is not a regular file of at most {_MAX_CONFIG_BYTES} bytes"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the config file {str(path)!r}: {exc}") from None
    table = data.get("network", {})
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: 'network' must be a table ([network])")
    unknown = sorted(set(table) - {"allow_hosts", "allow_trace_content"})
    if unknown:
        raise ConfigError(
            f"{path}: unknown key(s) {unknown} in [network]; allowed: allow_hosts, allow_trace_content"
        )
    hosts = table.get("allow_hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) for h in hosts):
        raise ConfigError(f"{path}: [network] allow_hosts must be a list of strings, got {hosts!r}")
    content = table.get("allow_trace_content", False)
    if not isinstance(content, bool):
        raise ConfigError(f"{path}: [network] allow_trace_content must be true or false, got {content!r}")
    where = f"{path}: allow_hosts entry"
    return [HostPattern.parse(h, where=where) for h in hosts], content
