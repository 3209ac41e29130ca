"""What the PostgreSQL journal and memory store share: parsing ``postgresql://`` URLs (passwords as
secret handles, never shown), a connection pool run in anyio worker threads, and error translation.

psycopg 3's synchronous API with ``psycopg_pool.ConnectionPool`` is used from worker threads under a
``CapacityLimiter`` the size of the pool, as the SQLite stores do: it works under every anyio backend
(asyncio and trio), and no asyncio task runs outside our task groups (psycopg's async pool starts its
own). Connections are opened on first use, so a store can be built anywhere.

URL forms: ``postgresql://user@host:5432/db`` (libpq's own ``PGPASSWORD``/``~/.pgpass`` apply), or
``postgresql://user@host/db?password_secret=NAME``: the password is ``secret(NAME)``, revealed when a
connection is opened (so it is also redacted from everything agentflow records). A password written in
the URL itself works too but is never displayed: messages and ``location`` show the URL without it.
``?schema=NAME`` picks the PostgreSQL schema that holds the tables (default ``agentflow``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import anyio
import anyio.to_thread

from agentflow.errors import AgentflowError, ConfigError
from agentflow.secrets import secret

if TYPE_CHECKING:
    import psycopg
    import psycopg_pool

__all__ = ["PgPool", "is_postgres_url", "safe_url"]

T = TypeVar("T")

_SCHEMES = ("postgresql://", "postgres://")


def is_postgres_url(location: object) -> bool:
    """Whether ``location`` names a PostgreSQL database (``postgresql://`` or ``postgres://``)."""
    return isinstance(location, str) and location.startswith(_SCHEMES)


def safe_url(url: str) -> str:
    """``url`` without a password written in it (what messages and ``location`` show)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit((parts.scheme, f"{user}{host}", parts.path, parts.query, parts.fragment))


_OPTIONS = ("password_secret", "schema")
"""URL query options that are agentflow's, not libpq's (taken out before connecting)."""


def _split(url: str) -> tuple[str, dict[str, str]]:
    """The conninfo to connect with, and agentflow's options from the URL's query."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    options: dict[str, str] = {}
    for key, value in query:
        if key in _OPTIONS:
            if key in options or not value:
                raise ConfigError(f"{safe_url(url)!r}: give {key}=... once, with a value")
            options[key] = value
    rest = [(k, v) for k, v in query if k not in _OPTIONS]
    conninfo = urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(rest), parts.fragment))
    return conninfo, options


class PgPool:
    """A lazily opened psycopg connection pool whose calls run in anyio worker threads.

    Args:
        url: The database URL (see the module docstring).
        what: What the pool serves, for messages ("journal", "memory store").
        error: The error class failures are reported as (``JournalError``, ``MemoryStoreError``).
        max_size: Most connections (and worker threads) used at once.
        connect_timeout_s: How long to wait for the server before reporting it unreachable.
        settings: Server settings for every connection (``search_path``, timeouts).
    """

    def __init__(
        self,
        url: str,
        *,
        what: str,
        error: type[AgentflowError],
        max_size: int = 4,
        connect_timeout_s: float = 10.0,
        settings: dict[str, str] | None = None,
    ) -> None:
        if not is_postgres_url(url):
            raise ConfigError(f"{what} URL {url!r} must start with postgresql:// (or postgres://)")
        if importlib.util.find_spec("psycopg") is None or importlib.util.find_spec("psycopg_pool") is None:
            raise ConfigError(
                f"a PostgreSQL {what} needs psycopg 3 and psycopg-pool: pip install 'agentflow[postgres]'"
            )
        if max_size < 1:
            raise ConfigError(f"max_size={max_size!r} must be at least 1")
        self.url = safe_url(url)
        self._conninfo, self.options = _split(url)
        self._password_secret = self.options.get("password_secret")
        self._what = what
        self._error = error
        self.max_size = max_size
        self.connect_timeout_s = connect_timeout_s
        self._settings = dict(settings or {})
        # Opened on first use (in a worker thread), closed by close(); guarded by _open_lock.
        self._pool: psycopg_pool.ConnectionPool | None = None
        self._closed = False
        self._limiter: anyio.CapacityLimiter | None = None
        self._open_lock = anyio.Lock()

    @staticmethod
    def url_options(url: str) -> dict[str, str]:
        """agentflow's options in a URL's query (``schema``, ``password_secret``)."""
        return _split(url)[1]

    def connect_args(self) -> tuple[str, dict[str, object]]:
        """The conninfo and keyword arguments a connection is opened with (the password revealed here)."""
        kwargs: dict[str, object] = {"connect_timeout": max(1, round(self.connect_timeout_s))}
        if self._settings:
            kwargs["options"] = " ".join(f"-c {k}={v}" for k, v in self._settings.items())
        if self._password_secret is not None:
            kwargs["password"] = secret(self._password_secret).reveal()
        return self._conninfo, kwargs

    def check_reachable(self) -> None:
        """Connect once, directly: its error says why the server cannot be reached (a pool would only time
        out, retrying in the background)."""
        import psycopg

        conninfo, kwargs = self.connect_args()
        try:
            psycopg.connect(conninfo, **kwargs).close()  # type: ignore[arg-type]
        except psycopg.Error as exc:
            raise self.unreachable(exc) from exc

    def _open(self) -> psycopg_pool.ConnectionPool:
        import psycopg_pool

        self.check_reachable()
        _, kwargs = self.connect_args()
        pool = psycopg_pool.ConnectionPool(
            self._conninfo,
            min_size=1,
            max_size=self.max_size,
            kwargs=kwargs,
            open=False,
            name=f"agentflow-{self._what}",
        )
        try:
            pool.open(wait=True, timeout=self.connect_timeout_s)
        except Exception as exc:
            pool.close()
            raise self.unreachable(exc) from exc
        return pool

    def unreachable(self, exc: BaseException) -> AgentflowError:
        """The error for a server that cannot be reached (nothing was written)."""
        return self._error(
            f"cannot reach the PostgreSQL {self._what} at {self.url!r} within {self.connect_timeout_s:g} s "
            f"({type(exc).__name__}: {_first_line(exc)}); check that the server runs and accepts connections "
            "from this host, and the URL's user, database and password (PGPASSWORD, ~/.pgpass or "
            "?password_secret=NAME). Nothing was written"
        )

    async def call(self, fn: Callable[[psycopg.Connection[tuple[object, ...]]], T], what: str) -> T:
        """Run ``fn(connection)`` in a worker thread with a pooled connection; translate driver errors."""
        if self._closed:
            raise self._error(f"the PostgreSQL {self._what} at {self.url!r} is closed; open a new one")
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.max_size)
        if self._pool is None:
            async with self._open_lock:
                if self._pool is None:
                    self._pool = await anyio.to_thread.run_sync(self._open)
        pool = self._pool

        def run() -> T:
            with self.translate(what), pool.connection() as conn:
                return fn(conn)

        return await anyio.to_thread.run_sync(run, limiter=self._limiter)

    @contextmanager
    def translate(self, what: str) -> Iterator[None]:
        """Turn psycopg errors into this store's error class, naming the operation and the server."""
        import psycopg
        import psycopg_pool

        try:
            yield
        except (psycopg_pool.PoolTimeout, psycopg.OperationalError) as exc:
            if isinstance(exc, psycopg.errors.QueryCanceled):
                raise self._error(f"{what} on {self.url!r} was cancelled: {_first_line(exc)}") from exc
            raise self.unreachable(exc) from exc
        except psycopg.Error as exc:
            raise self._error(
                f"{what} failed on the PostgreSQL {self._what} at {self.url!r}: {type(exc).__name__}: "
                f"{_first_line(exc)}"
            ) from exc

    async def aclose(self) -> None:
        """Close every connection (idempotent)."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(pool.close)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no detail"
